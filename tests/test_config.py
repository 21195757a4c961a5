"""Config validation: every problem is one WinnowError naming the file and the key."""

from __future__ import annotations

import re

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
    ("sources:\n  - {name: a, kind: mnist, max_rows: true}\n", "max_rows: true is not a number"),
    ("sources:\n  - {name: a, kind: csv, path: a.csv, label: y, features: y}\n", "features name the label column 'y'"),
    ("sources:\n  - {name: a, kind: csv, path: a.csv, label: y, features: [f, s], split: s}\n",
     "features name the split column 's'"),
    ("sources:\n  - {name: a, kind: csv, path: a.csv, label: y, split: y}\n", "label and split name the same column 'y'"),
    ("sources:\n  - {name: a, kind: mnist}\nprune: {metrics: [ssp], policies: [hard, hard]}\n",
     "key 'prune.policies': 'hard' is listed twice"),
    ("sources:\n  - {name: a, kind: mnist}\nprune: {metrics: [ssp], counts: [10, 10]}\n", "'prune.counts': 10 is listed twice"),
    ("sources:\n  - {name: a, kind: mnist}\ndeploy: {name: 'a/b'}\n", "contains /, which Prefect does not allow"),
    ("sources:\n  - {name: a, kind: mnist}\ndeploy: {schedules: [{interval_seconds: 60, timezone: Mars/Olympus}]}\n",
     "unknown time zone 'Mars/Olympus'"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("sources: [\n", "not valid YAML"),
    ("task_runner: {kind: spark}\nsources:\n  - {name: a, kind: mnist}\n", "key 'task_runner.kind'"),
    ("sources:\n  - {name: a, kind: mnist}\nextrapolate: {form: downstream}\n",
     "form 'downstream' cannot fit a pilot curve"),
    ("sources:\n  - {name: a, kind: mnist}\nextrapolate: {form: auto, candidates: [m2, chinchilla]}\n",
     "candidate form 'chinchilla' cannot fit a pilot curve"),
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


@pytest.mark.parametrize("text,message", [
    ("sources:\n  - {name: a, kind: mnist}\nsources:\n  - {name: b, kind: mnist}\n", "key 'sources' appears twice"),
    ("sources:\n  - {name: a, kind: mnist, seed: -1}\n", "key 'sources.0.seed': a seed must be a whole number"),
    ("sources:\n  - {name: a, kind: mnist, seed: 18446744073709551616}\n", "key 'sources.0.seed'"),
    ("sources:\n  - {name: a, kind: mnist}\nextrapolate: {huber_delta: .inf}\n", "key 'extrapolate.huber_delta': numbers must be finite"),
    ("sources:\n  - {name: a, kind: mnist}\nmixture:\n  pools: [{name: p, source: a, class_proportions: {'0': .nan}}]\n",
     "numbers must be finite"),
    ("sources:\n  - {name: a, kind: csv, path: x.csv, delimiter: ';;'}\n", "key 'sources.0.delimiter'"),
    ("sources:\n  - {name: a, kind: csv, path: x.csv, delimiter: ''}\n", "key 'sources.0.delimiter'"),
    ("sources:\n  - {name: a, kind: csv, path: x.csv, features: []}\n", "features is an empty list"),
    ("sources:\n  - {name: a, kind: image_dir, path: x, image_size: [0, 0]}\n", "image_size sides must be between 1 and 4096"),
    ("sources:\n  - {name: a, kind: image_dir, path: x, image_size: [100000, 100000]}\n", "between 1 and 4096"),
    ("db: ''\nsources:\n  - {name: a, kind: mnist}\n", "key 'db': db is empty"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", "expands to more than"),
])
def test_hardened_config_values_are_refused_with_the_key(tmp_path, text, message):
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(WinnowError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_special_files_as_configs_are_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(WinnowError, match="is a FIFO"):
        load_config(tmp_path / "pipe.yaml")
    with pytest.raises(WinnowError, match="is a device"):
        load_config("/dev/zero")


def test_config_db_resolves_against_the_config_folder(tmp_path):
    path = write_yaml(tmp_path / "sub" / "c.yaml", "db: out/w.duckdb\nsources:\n  - {name: a, kind: mnist}\n")
    assert load_config(path).db == (tmp_path / "sub" / "out" / "w.duckdb").resolve()


def test_a_stage_that_reads_another_stages_results_runs_with_it():
    """extrapolate fits this run's mixture pilots: `--only extrapolate` alone can only fail, so it is refused
    up front and the message says how to run it."""
    from flows.stages import enabled_stages

    cfg = load_config(builtin_config("demo"))
    with pytest.raises(WinnowError, match="reads the mixture stage's results of the same run: run both: "
                                          "--only mixture --only extrapolate"):
        enabled_stages(cfg, ["extrapolate"])
    assert [s.name for s in enabled_stages(cfg, ["mixture", "extrapolate"])] == ["mixture", "extrapolate"]
    assert "extrapolate" in [s.name for s in enabled_stages(cfg)]
    no_mixture = cfg.model_copy(update={"mixture": None, "plan": None})
    with pytest.raises(WinnowError, match="add a 'mixture' section"):
        enabled_stages(no_mixture)


def test_mixture_predictor_lists_and_a_bad_cron_are_config_errors(tmp_path):
    """A form or bandwidth listed twice failed after the pilots with a database constraint error (exit 1),
    a negative bandwidth silently meant 'no correction' and won ties; a bad cron string was an internal error."""
    from configs.base import parse_config
    from flows.ops import _schedules

    mix = "mixture: {pools: [{name: p, source: a}, {name: q, source: a}], target: {source: a}, predictor: %s}\n"
    for pred, message in [("{forms: [ot, ot]}", "key 'mixture.predictor.forms': 'ot' is listed twice"),
                          ("{bandwidths: [0.1, -1]}", "bandwidths must be >= 0")]:
        with pytest.raises(WinnowError, match=re.escape(message)):
            load_config(write_yaml(tmp_path / "m.yaml", "sources:\n  - {name: a, kind: mnist}\n" + mix % pred))
    cfg = parse_config({"sources": [{"name": "a", "kind": "mnist"}], "deploy": {"schedules": [{"cron": "61 * * * *"}]}})
    with pytest.raises(WinnowError, match=r"key 'deploy.schedules.0.cron': Invalid cron string"):
        _schedules(cfg)
