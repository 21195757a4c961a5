"""Config validation: every problem is one WinnowError naming the file and the key."""

from __future__ import annotations

import pytest

from configs.base import builtin_config, load_config
from helpers import write_yaml
from tasks.errors import WinnowError


@pytest.mark.parametrize("text,message", [
    ("sources:\n  - {name: a, kind: mnist, colour: red}\n", "key 'sources.0.colour': unknown key"),
    ("sources:\n  - {name: a, kind: mnist}\nfoo: 1\n", "key 'foo': unknown key"),
    ("sources:\n  - {name: a, kind: mnist, seed: abc}\n", "key 'sources.0.seed'"),
    ("sources:\n  - {name: a, kind: mnist, test_fraction: 1.5}\n", "key 'sources.0.test_fraction'"),
    ("sources:\n  - {name: a, kind: tarball}\n", "key 'sources.0.kind'"),
    ("sources:\n  - {name: a, kind: csv}\n", "needs a 'path'"),
    ("sources:\n  - {name: a, kind: mnist}\n  - {name: a, kind: sklearn_digits}\n", "duplicate source name 'a'"),
    ("sources: []\n", "key 'sources'"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("sources: [\n", "not valid YAML"),
    ("task_runner: {kind: spark}\nsources:\n  - {name: a, kind: mnist}\n", "key 'task_runner.kind'"),
])
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(WinnowError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_directory_config_paths(tmp_path):
    with pytest.raises(WinnowError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(WinnowError, match="is a directory"):
        load_config(tmp_path)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = write_yaml(tmp_path / "cfg" / "run.yaml", "sources:\n  - {name: a, kind: csv, path: data/a.csv, label: y}\n")
    cfg = load_config(path)
    assert cfg.sources[0].path == (tmp_path / "cfg" / "data" / "a.csv").resolve()


def test_shipped_demo_config_is_valid_and_hash_is_stable():
    cfg = load_config(builtin_config("demo"))
    assert {s.kind for s in cfg.sources} >= {"mnist", "sklearn_digits"}
    assert cfg.hash() == load_config(builtin_config("demo")).hash()
    with pytest.raises(WinnowError, match="no shipped config named 'nope'"):
        builtin_config("nope")
