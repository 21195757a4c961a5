"""Lineage and history: a run computes on exactly the source versions it pinned, and every attempt is a row.

The a/b/a repro of issue 15: config a (the whole file), config b (the same source with max_rows), then
a again on the same database. The third run must read version 1 (what its own file produced), not the
newer version 2 that b registered.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from helpers import write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

STAGES = """encoder: {kind: pca, dim: 2}
prune: {metrics: [ssp], policies: [easy], fractions: [0.5], k: 3, semdedup_eps: []}
"""


def _q(db, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture
def configs(tmp_path):
    rng = np.random.default_rng(7)
    rows = ["a,b,c,y"] + [f"{rng.normal():.4f},{rng.normal():.4f},{rng.normal():.4f},{i % 3}" for i in range(240)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    a = write_yaml(tmp_path / "a.yaml", "name: a\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n" + STAGES)
    b = write_yaml(tmp_path / "b.yaml", "name: b\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y, max_rows: 120}\n"
                   + STAGES)
    return a, b


def test_a_b_a_the_third_run_computes_on_the_version_its_config_produced(configs, tmp_path, winnow):
    a, b = configs
    db = tmp_path / "w.duckdb"
    runs = []
    for cfg in (a, b, a):
        code, out, err = winnow("run", cfg, "--db", db, "--json")
        assert code == 0, err
        runs.append(json.loads(out))
    first, second, third = runs
    assert first["run_id"] == third["run_id"] != second["run_id"]
    assert [(s["name"], s["version"]) for s in second["sources"]] == [("tab", 2)]
    assert [(s["name"], s["version"], s["new"]) for s in third["sources"]] == [("tab", 1, False)]

    v1, v2 = (_q(db, "SELECT source_id, n_train FROM sources WHERE name = 'tab' AND version = ?", [v])[0] for v in (1, 2))
    rid = third["run_id"]
    assert _q(db, "SELECT source_id FROM run_sources WHERE run_id = ?", [rid]) == [(v1[0],)]
    # every score of the third run belongs to version 1, one per training row of version 1
    assert _q(db, "SELECT DISTINCT source_id FROM scores WHERE run_id = ?", [rid]) == [(v1[0],)]
    assert _q(db, "SELECT count(DISTINCT example_id) FROM scores WHERE run_id = ?", [rid]) == [(v1[1],)]
    assert _q(db, "SELECT DISTINCT source_id FROM scores WHERE run_id = ?", [second["run_id"]]) == [(v2[0],)]
    assert _q(db, "SELECT DISTINCT source_id FROM selections WHERE run_id = ?", [rid]) == [(v1[0],)]

    # history: three attempts, two of them of the same run; `winnow show` names the pinned version
    code, out, _ = winnow("runs", "--db", db, "--json")
    attempts = json.loads(out)
    assert [(r["run_id"], r["attempt"], r["status"], r["sources"]) for r in attempts] == [
        (rid, 2, "completed", "tab v1"), (second["run_id"], 1, "completed", "tab v2"), (rid, 1, "completed", "tab v1")]
    code, out, _ = winnow("show", rid, "--db", db, "--json")
    shown = json.loads(out)
    assert [(s["name"], s["version"]) for s in shown["sources"]] == [("tab", 1)]
    assert [a["status"] for a in shown["attempts"]] == ["completed", "completed"]


def test_a_failed_attempt_stays_listed_after_a_later_success(configs, tmp_path, winnow, monkeypatch):
    import flows.prune

    a, _ = configs
    db = tmp_path / "w.duckdb"
    real = flows.prune.save_prune

    def broken(*args, **kwargs):
        raise RuntimeError("disk went away while writing the selections")

    monkeypatch.setattr(flows.prune, "save_prune", broken)
    code, _, err = winnow("run", a, "--db", db)
    assert code == 1 and "disk went away" in err and "Traceback" not in err
    monkeypatch.setattr(flows.prune, "save_prune", real)
    code, _, err = winnow("run", a, "--db", db)
    assert code == 0, err

    code, out, _ = winnow("runs", "--db", db, "--json")
    attempts = json.loads(out)
    assert [(r["attempt"], r["status"]) for r in attempts] == [(2, "completed"), (1, "failed")]
    assert "disk went away" in attempts[1]["error"] and attempts[1]["finished_at"] is not None
    assert attempts[0]["prefect_flow_run_id"] != attempts[1]["prefect_flow_run_id"]
    # the table view shows both attempts too
    code, out, _ = winnow("runs", "--db", db)
    assert code == 0 and "failed" in out and "completed" in out


def test_a_refused_run_writes_nothing_even_when_only_a_stage_check_can_tell(configs, tmp_path, winnow):
    """A source that became too small for a stage is refused by the preflight on the staged data:
    no new version registered, the completed run untouched, no staged file left."""
    from helpers import db_fingerprint

    a = write_yaml(tmp_path / "counts.yaml", "name: counts\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n"
                   "encoder: {kind: pca, dim: 2}\nprune: {metrics: [ssp], policies: [easy], counts: [100], k: 3, semdedup_eps: []}\n")
    db = tmp_path / "w.duckdb"
    code, _, err = winnow("run", a, "--db", db)
    assert code == 0, err
    # the file shrank: 60 rows, about 48 of them train rows, too few for counts: [100]
    (tmp_path / "t.csv").write_text("a,b,c,y\n" + "".join(f"{i},{i % 5},{i % 7},{i % 3}\n" for i in range(60)))
    before = db_fingerprint(db)
    files_before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "w.artifacts").rglob("*"))
    code, _, err = winnow("run", a, "--db", db)
    assert code == 2 and "count=100 exceeds" in err, err
    assert db_fingerprint(db) == before
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "w.artifacts").rglob("*")) == files_before


def test_stale_running_attempt_reads_crashed_and_the_next_writer_records_it(tmp_path, monkeypatch):
    import os
    import time

    from storage.db import Store
    from storage.runs import Lease, lease_path, list_runs, start_run

    store = Store(tmp_path / "w.duckdb")
    with Lease(store, "dead", every_s=3600):
        start_run(store, "pipeline-aaa", "pipeline", "x", "{}", "fr-1", attempt_id="dead", lease_s=30)
        assert [r["status"] for r in list_runs(store)] == ["running"]
        old = time.time() - 31
        os.utime(lease_path(store, "dead"), (old, old))  # its process stopped renewing 31 s ago
        assert [r["status"] for r in list_runs(store)] == ["crashed"]
        with store.read() as con:  # not yet recorded: reading never writes
            assert con.execute("SELECT status FROM run_attempts").fetchall() == [("running",)]
        start_run(store, "pipeline-bbb", "pipeline", "y", "{}", "fr-2")  # the next writer records the verdict
    with store.read() as con:
        got = con.execute("SELECT run_id, status, error FROM run_attempts ORDER BY run_id").fetchall()
        run_status = con.execute("SELECT status FROM runs WHERE run_id = 'pipeline-aaa'").fetchall()
    assert [(r[0], r[1]) for r in got] == [("pipeline-aaa", "crashed"), ("pipeline-bbb", "running")]
    assert "no heartbeat" in got[0][2] or "never kept a heartbeat" in got[0][2]
    assert run_status == [("crashed",)]


def test_a_requested_version_pins_that_version_and_latest_the_newest(tmp_path):
    """What a config's ``version:`` asks for (the pipeline passes it on): run_sources and the attempt say so."""
    from configs.base import parse_config
    from storage.db import Store
    from storage.runs import start_run
    from storage.sources import load_source, pinned, register_run_sources
    from tasks.ingest import stage_source

    store = Store(tmp_path / "w.duckdb")
    for n in (30, 40):  # two versions of 'tab'
        (tmp_path / "t.csv").write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(n)))
        spec = parse_config({"sources": [{"name": "tab", "kind": "csv", "path": str(tmp_path / "t.csv"), "label": "y"}]}).sources[0]
        register_run_sources(store, [stage_source(spec, store.staging_dir())])
    (tmp_path / "t.csv").write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))  # back to version 1's content
    for requested, want in ((None, 1), ({"tab": "latest"}, 2), ({"tab": 2}, 2)):
        attempt = start_run(store, "pipeline-x", "pipeline", "x", "{}", None)
        _, pins = register_run_sources(store, [stage_source(spec, store.staging_dir())], "pipeline-x", attempt, requested)
        with store.read() as con:
            linked = con.execute("SELECT s.version FROM run_sources r JOIN sources s USING (source_id) "
                                 "WHERE run_id = 'pipeline-x'").fetchall()
            described = con.execute("SELECT sources FROM run_attempts WHERE attempt_id = ?", [attempt]).fetchall()[0][0]
        assert linked == [(want,)] and json.loads(described)[0]["version"] == want
        with pinned(store, pins):
            assert load_source(store, "tab").version == want
    assert load_source(store, "tab").version == 2  # outside a run: the latest
