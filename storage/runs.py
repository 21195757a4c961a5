"""Runs: one row per (flow, config). A rerun of the same config is the same run and replaces its rows."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from storage.db import Store, now, one, rows
from tasks.errors import WinnowError

RUN_TABLES_QUERY = """
SELECT table_name FROM information_schema.columns
WHERE column_name = 'run_id' AND table_name <> 'runs' AND table_schema = 'main'
  AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')
ORDER BY table_name
"""


def make_run_id(flow: str, config_json: str) -> str:
    """Deterministic run id ``<flow>-<sha256(canonical config)[:12]>``."""
    return f"{flow}-{hashlib.sha256(config_json.encode()).hexdigest()[:12]}"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("winnow")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+{sha}" if sha else v


def start_run(store: Store, run_id: str, flow: str, name: str, config_json: str, prefect_flow_run_id: str | None) -> None:
    """Insert or reset the run row to status 'running' (a rerun keeps the same id)."""
    with store.write() as con:
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        con.execute(
            "INSERT INTO runs (run_id, flow, name, config, config_hash, code_version, status, started_at, prefect_flow_run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
            [run_id, flow, name, config_json, run_id.rsplit("-", 1)[-1], code_version(), now(), prefect_flow_run_id],
        )


def finish_run(store: Store, run_id: str, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
    with store.write() as con:
        con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ?, error = ? WHERE run_id = ?",
            [status, now(), json.dumps(summary, default=str) if summary is not None else None, error, run_id],
        )


def list_runs(store: Store, limit: int = 50) -> list[dict]:
    with store.read() as con:
        return rows(con.execute(
            "SELECT run_id, flow, name, status, started_at, finished_at, "
            "round(epoch(finished_at) - epoch(started_at), 1) AS seconds, prefect_flow_run_id "
            "FROM runs ORDER BY started_at DESC LIMIT ?", [limit]))


def show_run(store: Store, run_id: str) -> dict:
    """The run row, its sources and the number of rows it owns in every table keyed by run_id."""
    with store.read() as con:
        runs = rows(con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        if not runs:
            near = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE run_id LIKE ? LIMIT 5", [f"%{run_id}%"]).fetchall()]
            hint = f" (did you mean: {', '.join(near)})" if near else " (see `winnow runs`)"
            raise WinnowError(f"no run {run_id!r}{hint}")
        run = runs[0]
        run["sources"] = rows(con.execute(
            "SELECT s.source_id, s.name, s.version, s.n_rows FROM run_sources r JOIN sources s USING (source_id) "
            "WHERE r.run_id = ? ORDER BY s.name", [run_id]))
        counts = {}
        for (table,) in con.execute(RUN_TABLES_QUERY).fetchall():
            n = one(con.execute(f'SELECT count(*) FROM "{table}" WHERE run_id = ?', [run_id]))[0]
            if n:
                counts[table] = n
        run["tables"] = counts
        return run


def delete_runrows(con: duckdb.DuckDBPyConnection, table: str, run_id: str) -> None:
    """Delete a run's rows from one table (the first half of an idempotent delete-then-insert)."""
    con.execute(f'DELETE FROM "{table}" WHERE run_id = ?', [run_id])


def run_exists(store: Store, run_id: str) -> bool:
    with store.read() as con:
        return one(con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]))[0] > 0


def delete_run(store: Store, run_id: str, drop_sources: list[int] = ()) -> None:
    """Remove every row of a run (all tables keyed by run_id, then the run) in one transaction.

    ``drop_sources`` are source versions this run registered: they go too (with their examples and
    embeddings) unless another run uses them, and their side files are deleted after the commit.
    """
    files: list[str] = []
    with store.write() as con:
        for (table,) in con.execute(RUN_TABLES_QUERY).fetchall():
            delete_runrows(con, table, run_id)
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        for sid in drop_sources:
            if one(con.execute("SELECT count(*) FROM run_sources WHERE source_id = ?", [sid]))[0]:
                continue
            files += [r[0] for r in con.execute(
                "SELECT parquet_path FROM embeddings WHERE source_id = ? UNION ALL "
                "SELECT weights_path FROM embeddings WHERE source_id = ? AND weights_path IS NOT NULL UNION ALL "
                "SELECT parquet_path FROM sources WHERE source_id = ?", [sid, sid, sid]).fetchall()]
            for table in ("embeddings", "examples", "sources"):
                con.execute(f"DELETE FROM {table} WHERE source_id = ?", [sid])
    for f in files:
        store.resolve(f).unlink(missing_ok=True)
