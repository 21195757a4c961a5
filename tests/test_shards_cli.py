"""`winnow prune-sharded` end to end: the shipped example validates, a small run writes its tables once,
bad configs exit 2 with one line naming file and key, and write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from helpers import write_yaml

ROOT = Path(__file__).resolve().parent.parent
SMALL = ("name: small\n"
         "source: {kind: synthetic_embeddings, n: 40000, d: 16, clusters: 20, duplicate_rate: 0.05, seed: 1}\n"
         "shard_rows: 16384\nk: 8\nkmeans_iters: 5\nsemdedup_eps: [0.01]\nfraction: 0.3\npolicy: hard\n"
         "task_runner: {kind: threads, max_workers: 2}\n")


def test_the_shipped_example_is_a_valid_config():
    from configs.sharded import ShardedConfig

    cfg = ShardedConfig(**yaml.safe_load((ROOT / "configs" / "sharded-synthetic.yaml").read_text()))
    assert cfg.source.n == 1_000_000 and cfg.fraction == 0.3 and cfg.task_runner.kind == "threads"


@pytest.mark.usefixtures("prefect_harness")
def test_prune_sharded_runs_and_a_rerun_adds_no_rows(winnow, tmp_path, db_path):
    config = write_yaml(tmp_path / "small.yaml", SMALL)
    code, out, err = winnow("prune-sharded", config, "--db", db_path, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_rows"] == 40_000 and summary["n_shards"] == 3 and summary["n_kept"] == 12_000
    counts = lambda: duckdb.connect(str(db_path), read_only=True).execute(  # noqa: E731
        "select (select count(*) from sharded_runs), (select count(*) from sharded_members), "
        "(select count(*) from sharded_dedup_removed)").fetchone()
    first = counts()
    assert first[0] == 1 and first[1] == 12_000 and first[2] > 0  # planted near-copies removed
    assert winnow("prune-sharded", config, "--db", db_path, "--json")[0] == 0
    assert counts() == first


def test_bad_sharded_configs_exit_2_with_one_line_and_write_nothing(tmp_path):
    exe = Path(sys.executable).parent / "winnow"
    if not exe.exists():
        pytest.skip("package not installed as a console script")
    db = tmp_path / "store" / "x.duckdb"
    cases = [
        (write_yaml(tmp_path / "key.yaml", SMALL + "shard_row: 5\n"), "key.yaml: key 'shard_row': unknown key"),
        (write_yaml(tmp_path / "val.yaml", SMALL.replace("fraction: 0.3", "fraction: 3")), "val.yaml: key 'fraction'"),
        (write_yaml(tmp_path / "list.yaml", "- a\n- b\n"), "list.yaml: a config must be a YAML mapping, got list"),
        (write_yaml(tmp_path / "twice.yaml", SMALL + "seed: 1\nseed: 2\n"), "twice.yaml"),
        (tmp_path / "missing.yaml", "missing.yaml"),
    ]
    for path, message in cases:
        out = subprocess.run([str(exe), "prune-sharded", str(path), "--db", str(db)], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PREFECT_HOME": str(tmp_path / "ph")})
        assert out.returncode == 2, (path, out.stdout, out.stderr)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr, out.stderr
        assert not db.exists()
