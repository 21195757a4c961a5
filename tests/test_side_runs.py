"""Commands that compute and store outside the pipeline leave a row in ``runs``: ``prune-sharded``,
``experiment perceptron`` and ``embed`` (through the installed console script, as a user runs them).

Each run is listed by ``winnow runs`` as completed, ``winnow show`` prints its summary and config, a
rerun is a second attempt of the same row (never a second row), and ``report``/``export`` either work
or refuse in one line. ``recorded_run`` itself: a failure leaves 'failed' with the error, bad input
found late in a new run leaves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from helpers import write_yaml

WINNOW = Path(sys.executable).parent / "winnow"
SMALL_SHARDED = ("name: tiny\n"
                 "source: {kind: synthetic_embeddings, n: 3000, d: 8, clusters: 6, duplicate_rate: 0.05, seed: 2}\n"
                 "shard_rows: 1024\nk: 4\nkmeans_iters: 3\nsemdedup_eps: [0.01]\nfraction: 0.3\npolicy: hard\n"
                 "task_runner: {kind: threads, max_workers: 2}\n")


@pytest.fixture
def cli(prefect_harness, tmp_path):
    """Run the console script in a subprocess against the session's Prefect test server."""
    if not WINNOW.exists():
        pytest.skip("package not installed as a console script")
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "NO_COLOR": "1", "COLUMNS": "200"}

    def run(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([str(WINNOW), *map(str, args)], capture_output=True, text=True, timeout=600, env=env,
                              cwd=tmp_path)

    return run


def _runs(cli, db: Path) -> list[dict]:
    p = cli("runs", "--db", db, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _run_rows(db: Path, run_id: str) -> tuple[int, int]:
    """(rows in runs, attempts in run_attempts) of one run."""
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT (SELECT count(*) FROM runs WHERE run_id = ?), "
                           "(SELECT count(*) FROM run_attempts WHERE run_id = ?)", [run_id, run_id]).fetchone()


def _shown(cli, db: Path, run_id: str) -> str:
    p = cli("show", run_id, "--db", db)
    assert p.returncode == 0, p.stderr
    assert "config:" in p.stdout and "summary:" in p.stdout, p.stdout
    return p.stdout


def test_prune_sharded_is_a_run_its_views_query_and_export_works(cli, tmp_path, db_path):
    config = write_yaml(tmp_path / "tiny.yaml", SMALL_SHARDED)
    p = cli("prune-sharded", config, "--db", db_path, "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    run_id = summary["run_id"]
    listed = [r for r in _runs(cli, db_path) if r["run_id"] == run_id]
    assert [(r["status"], r["flow"]) for r in listed] == [("completed", "prune-sharded")]
    shown = _shown(cli, db_path, run_id)
    assert '"shard_rows": 1024' in shown and "sharded_members" in shown and f"kept {summary['n_kept']:,}" in shown

    # the scores view reads Parquet files: allowed in the query sandbox because winnow registered them
    scores_view = next(v for v in summary["views"] if v.startswith("shard_scores_"))
    p = cli("query", f"select count(*) AS n from {scores_view}", "--db", db_path, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"n": 3000}]
    shard = next((tmp_path / "store").rglob("shard-00000.parquet"))
    for sql in ("select * from read_csv('/etc/hostname')", f"select count(*) from read_parquet('{config}')"):
        p = cli("query", sql, "--db", db_path)
        assert p.returncode == 2 and "cannot touch files" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert shard.exists()

    assert cli("prune-sharded", config, "--db", db_path, "--json").returncode == 0
    assert _run_rows(db_path, run_id) == (1, 2)  # a second attempt of the same run, no second row

    out = tmp_path / "kept.csv"
    p = cli("export", run_id, "--to", out, "--db", db_path)
    assert p.returncode == 0, p.stderr
    kept = out.read_text().split()
    assert kept[0] == '"row_index"' and len(kept) - 1 == summary["n_kept"]
    p = cli("report", run_id, "--db", db_path, "--out", tmp_path / "reports")
    assert p.returncode == 0, p.stderr
    assert run_id in (tmp_path / "reports" / f"{run_id}.html").read_text()


def test_an_unreadable_embeddings_parquet_is_refused_before_the_run_is_recorded(cli, tmp_path):
    bad = tmp_path / "emb.parquet"
    bad.write_text("row_index,vector\n0,1\n")
    config = write_yaml(tmp_path / "bad.yaml", SMALL_SHARDED.replace(
        "source: {kind: synthetic_embeddings, n: 3000, d: 8, clusters: 6, duplicate_rate: 0.05, seed: 2}",
        f"source: {{kind: embeddings_parquet, path: {bad}}}"))
    db = tmp_path / "store" / "w.duckdb"
    p = cli("prune-sharded", config, "--db", db)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "cannot read embeddings Parquet" in lines[0], p.stderr
    assert not db.exists()


def test_perceptron_is_a_run_and_export_refuses_it(cli, tmp_path, db_path):
    args = ("experiment", "perceptron", "--db", db_path, "--n", "10", "--alphas", "1,2", "--fractions", "1,0.5",
            "--seeds", "1", "--json")
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    listed = [r for r in _runs(cli, db_path) if r["run_id"] == run_id]
    assert [(r["status"], r["flow"]) for r in listed] == [("completed", "perceptron")]
    shown = _shown(cli, db_path, run_id)
    assert '"alphas": [' in shown and "test error at alpha_tot=2" in shown and "perceptron_results" in shown
    assert cli(*args).returncode == 0
    assert _run_rows(db_path, run_id) == (1, 2)
    p = cli("export", run_id, "--to", tmp_path / "x.csv", "--db", db_path)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "is a perceptron run, not a selection" in lines[0], p.stderr
    assert not (tmp_path / "x.csv").exists()


def test_embed_is_a_run_and_embedding_nothing_exits_2_writing_nothing(cli, tmp_path, db_path):
    config = write_yaml(tmp_path / "run.yaml", "sources:\n  - {name: digits, kind: sklearn_digits, max_rows: 200}\n"
                                               "encoder: {kind: pca, dim: 8}\n")
    p = cli("embed", config, "--db", db_path, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [(e["source"], e["dim"]) for e in out["embeddings"]] == [("digits", 8)]
    run_id = out["run_id"]
    listed = [r for r in _runs(cli, db_path) if r["run_id"] == run_id]
    assert [(r["status"], r["flow"]) for r in listed] == [("completed", "embed")]
    shown = _shown(cli, db_path, run_id)
    assert '"kind": "pca"' in shown and "digits: pca 200 x 8" in shown
    assert cli("embed", config, "--db", db_path).returncode == 0
    assert _run_rows(db_path, run_id) == (1, 2)

    # no source fits the encoder: one line naming the source and the encoder kind; nothing written
    text = write_yaml(tmp_path / "text.yaml", "sources:\n  - {name: digits, kind: sklearn_digits, max_rows: 50}\n"
                                              "encoder: {kind: minilm}\n")
    with duckdb.connect(str(db_path), read_only=True) as con:
        before = con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_attempts), "
                             "(SELECT count(*) FROM sources)").fetchone()
    p = cli("embed", text, "--db", db_path)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "nothing to embed" in lines[0] and "'minilm'" in lines[0] and "'digits'" in lines[0]
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_attempts), "
                           "(SELECT count(*) FROM sources)").fetchone() == before
    fresh = tmp_path / "fresh" / "w.duckdb"
    p = cli("embed", text, "--db", fresh)
    assert p.returncode == 2 and "nothing to embed" in p.stderr and not fresh.exists()


# ------------------------------------------------------------------------ recorded_run (no Prefect)
def test_a_failed_recorded_run_says_failed_with_its_error_and_a_rerun_reuses_the_row(store):
    from storage.runs import list_runs, recorded_run, recorded_run_of, show_run

    with pytest.raises(RuntimeError, match="diverged") as err:
        with recorded_run(store, "side-abc", "side", "x", '{"a": 1}') as rec:
            rec.summary = {"lines": ["half"]}
            raise RuntimeError("diverged")
    assert recorded_run_of(err.value) == "side-abc"  # the CLI may say that `winnow runs` keeps the error
    run = show_run(store, "side-abc")
    assert run["status"] == "failed" and run["error"] == "RuntimeError: diverged"
    with recorded_run(store, "side-abc", "side", "x", '{"a": 1}') as rec:
        rec.summary = {"lines": ["done"]}
    run = show_run(store, "side-abc")
    assert run["status"] == "completed" and json.loads(run["summary"]) == {"lines": ["done"]}
    assert [a["status"] for a in run["attempts"]] == ["failed", "completed"]
    assert [r["run_id"] for r in list_runs(store)] == ["side-abc", "side-abc"]  # two attempts, one run


def test_bad_input_found_late_in_a_new_recorded_run_leaves_no_row(store):
    from storage.runs import recorded_run, recorded_run_of, run_exists
    from tasks.errors import WinnowError

    with recorded_run(store, "side-old", "side", "x", "{}"):
        pass
    with pytest.raises(WinnowError) as err:
        with recorded_run(store, "side-new", "side", "x", "{}"):
            raise WinnowError("bad row")
    assert not run_exists(store, "side-new") and run_exists(store, "side-old")
    assert recorded_run_of(err.value) is None  # no row records it
    with pytest.raises(WinnowError):  # a run seen before keeps its row, marked failed
        with recorded_run(store, "side-old", "side", "x", "{}"):
            raise WinnowError("bad row")
    with duckdb.connect(str(store.path), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs WHERE run_id = 'side-old'").fetchone() == (
            "failed", "bad input: bad row")
