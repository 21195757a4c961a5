"""Crash safety and concurrency of the store: SIGKILL mid-ingest, two writers at once, a held lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import VOLATILE, db_fingerprint, referenced_files_exist
from storage.db import Store
from tasks.errors import StoreLockedError

ROOT = Path(__file__).resolve().parents[1]

INGEST_SCRIPT = textwrap.dedent("""
    import sys
    from configs.base import parse_config
    from storage.db import Store
    from storage.sources import register_sources
    from tasks.ingest import stage_source
    cfg = parse_config({"sources": [{"name": "big", "kind": "npz", "path": sys.argv[2], "batch_rows": 5000},
                                    {"name": "digits", "kind": "sklearn_digits"}]})
    store = Store(sys.argv[1])
    staged = [stage_source(s, store.staging_dir()) for s in cfg.sources]
    register_sources(store, staged, run_id="crash-test")
""")


def _ingest(db: Path) -> subprocess.Popen:
    data = db.parent.parent / "big.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, X=rng.random((80_000, 48), dtype=np.float32), y=rng.integers(0, 10, 80_000))
    return subprocess.Popen([sys.executable, "-c", INGEST_SCRIPT, str(db), str(data)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _consistent(db: Path) -> None:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "winnow_meta" not in tables:  # killed inside the schema migration: it rolled back whole
            assert not tables & {"sources", "examples"}
            return
        orphans = con.execute("SELECT count(*) FROM examples WHERE source_id NOT IN (SELECT source_id FROM sources)").fetchall()[0][0]
        short = con.execute(
            "SELECT count(*) FROM sources s WHERE n_rows <> (SELECT count(*) FROM examples e WHERE e.source_id = s.source_id)"
        ).fetchall()[0][0]
    finally:
        con.close()
    assert orphans == 0 and short == 0
    assert referenced_files_exist(db)


def test_sigkill_at_any_point_of_ingestion_then_rerun_equals_a_clean_run(tmp_path):
    clean = tmp_path / "clean" / "w.duckdb"
    clean.parent.mkdir()
    p = _ingest(clean)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    expected = db_fingerprint(clean, ignore=VOLATILE)
    for i, delay in enumerate((1.0, 2.5, 4.0)):
        db = tmp_path / f"killed{i}" / "w.duckdb"
        db.parent.mkdir()
        p = _ingest(db)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        if db.exists():
            _consistent(db)  # whatever the kill left is a consistent database (all or nothing per transaction)
        p = _ingest(db)
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
        assert db_fingerprint(db, ignore=VOLATILE) == expected
        _consistent(db)


def _writer(db: str, prefix: str, n: int) -> None:
    from storage.runs import start_run

    store = Store(db, lock_timeout_s=60)
    for i in range(n):
        start_run(store, f"{prefix}-{i}", "test", "t", "{}", None)


def test_two_processes_writing_at_once_both_complete_without_losing_a_write(tmp_path):
    db = tmp_path / "w.duckdb"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db), name, 25)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0
    with Store(db).read() as con:
        ids = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
    assert ids == {f"{x}-{i}" for x in "ab" for i in range(25)}


def _hold_lock(db: str, seconds: float, ready) -> None:
    import duckdb

    con = duckdb.connect(db, config={"storage_compatibility_version": "v1.5.0"})
    ready.set()
    time.sleep(seconds)
    con.close()


def test_a_writer_that_cannot_get_the_lock_fails_cleanly_before_writing(tmp_path):
    db = tmp_path / "l.duckdb"
    _writer(str(db), "seed", 1)
    before = db_fingerprint(db)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(db), 6.0, ready))
    holder.start()
    assert ready.wait(60)
    from storage.runs import start_run

    t0 = time.monotonic()
    with pytest.raises(StoreLockedError, match="stayed locked"):
        start_run(Store(db, lock_timeout_s=1.5), "late", "test", "t", "{}", None)
    assert time.monotonic() - t0 < 5
    holder.join(timeout=30)
    assert db_fingerprint(db) == before
    start_run(Store(db, lock_timeout_s=5), "late", "test", "t", "{}", None)  # and succeeds once it is free
