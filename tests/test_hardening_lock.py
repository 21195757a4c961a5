"""Lock starvation mid-run: a reader holds the DuckDB file while the embed stage writes, and the writer's
lock wait (``WINNOW_LOCK_TIMEOUT=1``) runs out.

The losing writer must leave nothing it can clean behind: no ``running`` row once it has returned (the
failure is recorded by the final write, which waits longer; if even that fails, every reader reads the
attempt as failed and the next writer records it), no embeddings file without its row, no lease or
staged file.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import duckdb
import numpy as np
import pytest

from helpers import referenced_files_exist, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows


def _hold_read(db: str, seconds: float, ready) -> None:
    con = duckdb.connect(db, read_only=True)
    ready.set()
    time.sleep(seconds)
    con.close()


def _q(db, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def starved(tmp_path, monkeypatch):
    """A config whose embed write meets a reader holding the file for ``hold`` seconds; returns run(hold)."""
    import flows.embed

    rng = np.random.default_rng(3)
    rows = ["a,b,c,y"] + [f"{rng.normal():.4f},{rng.normal():.4f},{rng.normal():.4f},{i % 3}" for i in range(120)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cfg = write_yaml(tmp_path / "c.yaml", "name: starve\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n"
                     "encoder: {kind: pca, dim: 2}\n")
    db = tmp_path / "w.duckdb"
    real = flows.embed.save_embeddings
    holders = []

    def run(hold: float):
        def save_while_read(store, **kw):  # the reader arrives just before the embed stage writes
            ctx = mp.get_context("spawn")
            ready = ctx.Event()
            holder = ctx.Process(target=_hold_read, args=(str(db), hold, ready))
            holder.start()
            holders.append(holder)
            assert ready.wait(120)
            return real(store, **kw)

        monkeypatch.setattr(flows.embed, "save_embeddings", save_while_read)
        monkeypatch.setenv("WINNOW_LOCK_TIMEOUT", "1")
        from flows.pipeline import run_config
        from tasks.errors import StoreLockedError

        with pytest.raises(StoreLockedError, match="stayed locked"):
            run_config(cfg, str(db), progress=False)
        return holders[-1]

    yield db, run
    for h in holders:
        h.join(timeout=60)


def _left_behind(db) -> list[str]:
    art = db.parent / f"{db.stem}.artifacts"
    return sorted(str(p.relative_to(art)) for p in art.rglob("*")
                  if p.is_file() and p.parts[len(art.parts)] in ("embeddings", "leases", "staging"))


def test_a_writer_that_loses_the_lock_mid_run_records_its_failure_and_leaves_no_file(starved):
    db, run = starved
    holder = run(hold=4.0)  # longer than WINNOW_LOCK_TIMEOUT, shorter than the final write's wait
    holder.join(timeout=60)
    attempts = _q(db, "SELECT status, error FROM run_attempts")
    assert [a[0] for a in attempts] == ["failed"] and "stayed locked" in attempts[0][1]
    assert _q(db, "SELECT status FROM runs") == [("failed",)]
    assert _q(db, "SELECT count(*) FROM embeddings") == [(0,)]
    assert _left_behind(db) == []  # the vectors' Parquet file went with the row that never came
    assert referenced_files_exist(db)


def test_when_even_the_final_write_is_starved_readers_see_failed_and_the_next_writer_records_it(starved, monkeypatch):
    import storage.runs
    from storage.db import Store
    from storage.runs import list_runs, mark_crashed

    monkeypatch.setattr(storage.runs, "FINAL_WRITE_LOCK_S", 0.2)
    db, run = starved
    holder = run(hold=8.0)
    store = Store(db, lock_timeout_s=30)
    seen = list_runs(store)  # a reader, while the other reader still holds the file
    assert [r["status"] for r in seen] == ["failed"] and "stayed locked" in seen[0]["error"]
    assert _left_behind(db) == [f"leases/{_q(db, 'SELECT attempt_id FROM run_attempts')[0][0]}.lease"]
    holder.join(timeout=60)
    assert mark_crashed(store)  # the next writer records the verdict the lease file holds
    attempts = _q(db, "SELECT status, error FROM run_attempts")
    assert [a[0] for a in attempts] == ["failed"] and "stayed locked" in attempts[0][1]
    assert _q(db, "SELECT status FROM runs") == [("failed",)]
    assert _left_behind(db) == []
    assert referenced_files_exist(db)
