"""Runs and their attempts.

A run is one (flow, config): its id is a hash of the config, and its results (every table keyed by
``run_id``) are replaced by each attempt, so a rerun ends with the same rows. Every attempt is also
a row of ``run_attempts`` (status, Prefect flow-run id, error, start/end, the source versions read),
so failed and crashed attempts stay visible next to completed ones. A running attempt keeps a lease
file fresh (:class:`Lease`); one whose lease expired is crashed (:func:`mark_crashed`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from storage.db import Store, now, one, rows
from tasks.errors import StoreLockedError, WinnowError

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


def heartbeat_seconds() -> float:
    """Seconds between two heartbeats of a running attempt (``WINNOW_HEARTBEAT_S``, default 15)."""
    return _env_seconds("WINNOW_HEARTBEAT_S", 15.0)


def lease_seconds() -> float:
    """A running attempt whose lease file is older than this is crashed (``WINNOW_LEASE_S``, default 60).

    Must stay well above the heartbeat interval: a busy machine may delay a heartbeat by seconds."""
    return max(_env_seconds("WINNOW_LEASE_S", 60.0), 2 * heartbeat_seconds())


def _env_seconds(name: str, default: float) -> float:
    import math
    import os

    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise WinnowError(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def lease_path(store: Store, attempt_id: str) -> Path:
    """The lease file of an attempt: its modification time is the attempt's last heartbeat."""
    return store.artifacts_dir / "leases" / f"{attempt_id}.lease"


class Lease:
    """Keeps an attempt's lease file fresh from a daemon thread while the attempt runs.

    The heartbeat is a file, not a DuckDB row: a connection from a second thread of the writing
    process would conflict with the flow's own (read-only and read-write connections cannot be open
    at once in one process). Readers judge a ``running`` attempt by the file's age
    (:func:`attempt_is_stale`); the next writer records the verdict (:func:`mark_crashed`).
    """

    def __init__(self, store: Store, attempt_id: str, every_s: float | None = None) -> None:
        import threading

        self.path = lease_path(store, attempt_id)
        self.every_s = heartbeat_seconds() if every_s is None else every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"winnow-lease-{attempt_id}", daemon=True)
        self._abandoned = False

    def __enter__(self) -> "Lease":
        import os
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        self._thread.start()
        return self

    def _beat(self) -> None:
        import os

        while not self._stop.wait(self.every_s):
            try:
                os.utime(self.path)
            except OSError:
                pass  # the file system hiccuped: the next beat tries again; a missing file reads as stale

    def abandon(self, error: str) -> None:
        """The attempt failed and even that could not be written (the lock was held past every wait):
        leave the verdict in the lease file, expired at once, so every reader reads the attempt as
        ``failed`` with ``error`` and the next writer records it (:func:`mark_crashed`)."""
        import os

        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.path.write_text(json.dumps({"host": _host(), "pid": os.getpid(), "failed": error}))
            os.utime(self.path, (0, 0))
            self._abandoned = True
        except OSError:
            pass  # no file at all reads as crashed once the lease has run out

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._abandoned:
            return
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # only when no other attempt holds a lease
        except OSError:
            pass


def _host() -> str:
    import socket

    return socket.gethostname()


#: the one write that records a failed attempt waits at least this long for the lock (WINNOW_LOCK_TIMEOUT
#: may be shorter): a writer that lost the lock mid-run still leaves its verdict, not a 'running' row
FINAL_WRITE_LOCK_S = 30.0


def final_write_store(store: Store) -> Store:
    """``store`` with the lock wait of the write that ends an attempt (:data:`FINAL_WRITE_LOCK_S` at least)."""
    return Store(store.path, lock_timeout_s=max(store.lock_timeout_s, FINAL_WRITE_LOCK_S))


def abandoned_error(store: Store, attempt_id: str) -> str | None:
    """The error a :meth:`Lease.abandon`-ed attempt left in its lease file (None for any other attempt)."""
    try:
        data = json.loads(lease_path(store, attempt_id).read_text())
    except (OSError, ValueError):
        return None
    err = data.get("failed") if isinstance(data, dict) else None
    return str(err) if err else None


def attempt_is_stale(store: Store, attempt_id: str, lease_s: float, started_at: datetime | None, at: datetime | None = None) -> bool:
    """True when a ``running`` attempt has not renewed its lease for ``lease_s`` seconds (0 = no lease kept)."""
    if not lease_s:
        return False
    at = at or now()
    try:
        beat = datetime.fromtimestamp(lease_path(store, attempt_id).stat().st_mtime, timezone.utc).replace(tzinfo=None)
    except OSError:  # no lease file: judged from the start (the file is made before the attempt row)
        beat = started_at or at
    return (at - beat).total_seconds() > lease_s


def _stale_attempts(con: duckdb.DuckDBPyConnection, store: Store) -> list[tuple[str, str, datetime]]:
    at = now()
    out = []
    for attempt_id, run_id, lease_s, started_at in con.execute(
            "SELECT attempt_id, run_id, lease_seconds, started_at FROM run_attempts WHERE status = 'running'").fetchall():
        if attempt_is_stale(store, attempt_id, lease_s, started_at, at):
            out.append((attempt_id, run_id, at))
    return out


def _mark_crashed(con: duckdb.DuckDBPyConnection, store: Store, only: str | None = None) -> list[str]:
    """Inside a write transaction: record every running attempt whose lease expired as ``crashed``."""
    marked = []
    for attempt_id, run_id, at in _stale_attempts(con, store):
        if only is not None and attempt_id != only:
            continue
        path = lease_path(store, attempt_id)
        status, why = "failed", abandoned_error(store, attempt_id)
        if why is None:
            status = "crashed"
            try:
                last = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
                why = f"crashed: no heartbeat since {last} UTC (the process running it died or lost the machine)"
            except OSError:
                why = "crashed: its process never kept a heartbeat (it died before the run started writing)"
        con.execute("UPDATE run_attempts SET status = ?, ended_at = ?, error = ? WHERE attempt_id = ? AND status = 'running'",
                    [status, at, why, attempt_id])
        con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE run_id = ? AND status = 'running' AND NOT EXISTS "
            "(SELECT 1 FROM run_attempts a WHERE a.run_id = runs.run_id AND a.status = 'running')", [status, at, why, run_id])
        path.unlink(missing_ok=True)
        marked.append(attempt_id)
    return marked


def mark_crashed(store: Store) -> list[str]:
    """Record every running attempt whose lease expired as ``crashed`` (its run row too); returns their ids."""
    if not store.exists:
        return []
    with store.read() as con:
        if not _stale_attempts(con, store):
            return []
    with store.write() as con:
        return _mark_crashed(con, store)


def new_attempt_id() -> str:
    import uuid

    return uuid.uuid4().hex[:16]


def start_run(store: Store, run_id: str, flow: str, name: str, config_json: str, prefect_flow_run_id: str | None,
              *, attempt_id: str | None = None, lease_s: float = 0.0) -> str:
    """Start a new attempt of ``run_id``: a new ``run_attempts`` row (status 'running') and the run row
    set to 'running' (created on the first attempt). Returns the attempt id.

    ``lease_s`` > 0 says the caller keeps a :class:`Lease` for ``attempt_id``; 0 = no heartbeat (the
    attempt is never judged crashed). Attempts of other runs whose lease expired are recorded as
    crashed in the same transaction.
    """
    import os
    import socket

    attempt_id = attempt_id or new_attempt_id()
    at = now()
    with store.write() as con:
        _mark_crashed(con, store)
        n = one(con.execute("SELECT coalesce(max(attempt), 0) + 1 FROM run_attempts WHERE run_id = ?", [run_id]))[0]
        con.execute(
            "INSERT INTO run_attempts (attempt_id, run_id, attempt, flow, name, status, prefect_flow_run_id, code_version, "
            "host, pid, lease_seconds, started_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
            [attempt_id, run_id, n, flow, name, prefect_flow_run_id, code_version(), socket.gethostname(), os.getpid(),
             float(lease_s), at],
        )
        values = [flow, name, config_json, run_id.rsplit("-", 1)[-1], code_version(), at, prefect_flow_run_id]
        if one(con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]))[0]:
            con.execute(
                "UPDATE runs SET flow = ?, name = ?, config = ?, config_hash = ?, code_version = ?, status = 'running', "
                "started_at = ?, prefect_flow_run_id = ?, finished_at = NULL, error = NULL WHERE run_id = ?", [*values, run_id])
        else:
            con.execute(
                "INSERT INTO runs (flow, name, config, config_hash, code_version, started_at, prefect_flow_run_id, run_id, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')", [*values, run_id])
    return attempt_id


def finish_run(store: Store, run_id: str, status: str, summary: dict[str, Any] | None = None, error: str | None = None,
               *, attempt_id: str | None = None) -> None:
    """End an attempt (``attempt_id``, default: the run's latest running one) and the run row with ``status``."""
    at = now()
    with store.write() as con:
        if attempt_id is None:
            row = one(con.execute("SELECT attempt_id FROM run_attempts WHERE run_id = ? AND status = 'running' "
                                  "ORDER BY attempt DESC LIMIT 1", [run_id]))
            attempt_id = row[0] if row else None
        if attempt_id is not None:  # 'crashed' by a reader that gave up on a slow heartbeat: the attempt knows better
            con.execute("UPDATE run_attempts SET status = ?, ended_at = ?, error = ? WHERE attempt_id = ?",
                        [status, at, error, attempt_id])
        con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ?, error = ? WHERE run_id = ?",
            [status, at, json.dumps(summary, default=str) if summary is not None else None, error, run_id],
        )


@dataclass
class RecordedRun:
    """The attempt :func:`recorded_run` keeps: fill ``summary`` (stored with the run when the block ends);
    ``drop_sources``: source versions this attempt registered, removed with a refused new run."""

    run_id: str
    attempt_id: str
    summary: dict[str, Any] = field(default_factory=dict)
    drop_sources: list[int] = field(default_factory=list)


@contextmanager
def recorded_run(store: Store, run_id: str, flow: str, name: str, config_json: str,
                 prefect_flow_run_id: str | None = None, summary: dict[str, Any] | None = None) -> Iterator[RecordedRun]:
    """One attempt of ``run_id`` around a block: the run/attempt rows, lease and failure record of every
    command that computes and stores (the pipeline, ``prune-sharded``, ``experiment perceptron``), so
    ``winnow runs``/``show``/``report`` find them. ``summary`` starts the attempt's summary.

    Call it after the input checks and before the first write. The attempt and run rows say 'running'
    (a lease keeps them alive; a killed process reads 'crashed'); a block that ends normally marks them
    'completed' with ``summary``. An exception marks them 'failed' with the error (the final write waits
    for the lock at least :data:`FINAL_WRITE_LOCK_S`; if even that fails, the verdict stays in the lease
    file for the next writer); the exception goes on. A :class:`WinnowError` (bad input found late) in a
    run never seen before removes the run instead, as if it had been refused, and the database file too
    when this command created it and it holds nothing else (:meth:`Store.remove_if_empty`). A rerun (same config, same
    ``run_id``) is a new attempt of the same run row: never a second run row.
    """
    lease_s = lease_seconds()  # a bad WINNOW_LEASE_S / WINNOW_HEARTBEAT_S is refused before anything is written
    fresh = not store.path.exists()  # this command creates the file: a refusal removes it again
    existed = store.exists and run_exists(store, run_id)
    rec = RecordedRun(run_id, new_attempt_id(), summary if summary is not None else {})
    try:
        with _attempt(store, rec, existed, flow, name, config_json, prefect_flow_run_id, lease_s):
            yield rec
    except StoreLockedError:
        raise
    except WinnowError:
        if fresh and not existed:
            store.remove_if_empty()
        raise


@contextmanager
def _attempt(store: Store, rec: RecordedRun, existed: bool, flow: str, name: str, config_json: str,
             prefect_flow_run_id: str | None, lease_s: float) -> Iterator[None]:
    """The body of :func:`recorded_run`: the attempt's lease and rows around the block."""
    run_id = rec.run_id
    with Lease(store, rec.attempt_id) as lease:
        start_run(store, run_id, flow, name, config_json, prefect_flow_run_id, attempt_id=rec.attempt_id, lease_s=lease_s)
        try:
            yield
            finish_run(store, run_id, "completed", rec.summary, attempt_id=rec.attempt_id)
        except StoreLockedError as err:
            _failed(store, lease, rec, f"lock: {err}")
            _mark_recorded(err, run_id)
            raise
        except WinnowError as err:
            _failed(store, lease, rec, f"bad input: {err}", drop=not existed)
            if existed:
                _mark_recorded(err, run_id)
            raise
        except BaseException as err:
            what = "interrupted (Ctrl-C or SIGINT)" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
            _failed(store, lease, rec, what)
            _mark_recorded(err, run_id)
            raise


def _mark_recorded(err: BaseException, run_id: str) -> None:
    """Note on a failure that a run row records (so the CLI can say `winnow runs` shows it)."""
    try:
        err.winnow_recorded_run = run_id  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # an exception type without a __dict__: the CLI says less
        pass


def recorded_run_of(err: BaseException) -> str | None:
    """The run whose row records this failure (:func:`recorded_run`), None when no run row does."""
    return getattr(err, "winnow_recorded_run", None)


def _failed(store: Store, lease: Lease, rec: RecordedRun, error: str, drop: bool = False) -> None:
    """Record a failed attempt of :func:`recorded_run` (``drop``: remove the run instead); never raises."""
    store.discard_uncommitted()
    try:
        final = final_write_store(store)
        if drop:
            delete_run(final, rec.run_id, drop_sources=rec.drop_sources)
        else:
            finish_run(final, rec.run_id, "failed", rec.summary or None, error=error, attempt_id=rec.attempt_id)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        lease.abandon(error)


def run_flow(store: Store, run_id: str) -> str | None:
    """The flow name of a stored run (``pipeline``, ``prune-sharded``, ``perceptron``, ...), None if there is none."""
    if not store.exists:
        return None
    with store.read() as con:
        row = one(con.execute("SELECT flow FROM runs WHERE run_id = ?", [run_id]))
    return None if row is None else str(row[0])


def attempt_for_flow_run(store: Store, flow_run_id: str) -> dict | None:
    """The attempt a Prefect flow run wrote (None when it never reached the database), status judged by its lease."""
    if not store.exists:
        return None
    with store.read() as con:
        found = rows(con.execute(f"SELECT * FROM {_attempts(con)} WHERE prefect_flow_run_id = ? ORDER BY started_at DESC LIMIT 1",
                                 [str(flow_run_id)]))
    if not found:
        return None
    return _judged(store, found)[0]


#: a file written before run history (schema < 4) and not yet opened by a writer: its runs as attempt 1
_ATTEMPTS_OF_OLD_FILE = (
    "(SELECT run_id || '@1' AS attempt_id, run_id, 1 AS attempt, flow, name, status, prefect_flow_run_id, code_version, "
    "NULL AS host, NULL AS pid, 0.0 AS lease_seconds, started_at, finished_at AS ended_at, error, NULL AS source_ids, "
    "NULL AS sources FROM runs)"
)


def _attempts(con: duckdb.DuckDBPyConnection) -> str:
    """``run_attempts``, or the runs of a file that predates it (read-only commands never migrate)."""
    has = one(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'run_attempts' "
                          "AND table_schema = 'main'"))[0]
    return "run_attempts" if has else _ATTEMPTS_OF_OLD_FILE


def _judged(store: Store, attempts: list[dict]) -> list[dict]:
    """``running`` attempts whose lease expired read as ``crashed`` (the next writer records it)."""
    at = now()
    for a in attempts:
        if a["status"] == "running" and attempt_is_stale(store, a["attempt_id"], a.get("lease_seconds") or 0, a["started_at"], at):
            failed = abandoned_error(store, a["attempt_id"])
            a["status"] = "crashed" if failed is None else "failed"
            a["error"] = a.get("error") or failed or "crashed: no heartbeat within its lease (not yet recorded)"
    return attempts


def list_runs(store: Store, limit: int = 50) -> list[dict]:
    """Every attempt of every run, newest first: failed and crashed attempts next to completed ones.

    ``status`` of a running attempt whose lease expired reads ``crashed``; ``sources`` names the
    source versions the attempt read."""
    with store.read() as con:
        found = rows(con.execute(
            "SELECT run_id, attempt, flow, name, status, started_at, ended_at AS finished_at, "
            "round(epoch(ended_at) - epoch(started_at), 1) AS seconds, prefect_flow_run_id, error, sources, "
            f"attempt_id, lease_seconds FROM {_attempts(con)} ORDER BY started_at DESC, attempt DESC LIMIT ?", [limit]))
    for r in _judged(store, found):
        srcs = json.loads(r["sources"]) if isinstance(r["sources"], str) else (r["sources"] or [])
        r["sources"] = ", ".join(f"{s['name']} v{s['version']}" for s in srcs)
        del r["lease_seconds"]
    return found


def show_run(store: Store, run_id: str) -> dict:
    """The run row, the source versions it reads (``run_sources``), its attempts and the number of rows
    it owns in every table keyed by run_id."""
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
            if table == "run_attempts":  # the history, listed below
                continue
            n = one(con.execute(f'SELECT count(*) FROM "{table}" WHERE run_id = ?', [run_id]))[0]
            if n:
                counts[table] = n
        run["tables"] = counts
        attempts = rows(con.execute(
            "SELECT attempt, status, started_at, ended_at, prefect_flow_run_id, error, sources, attempt_id, lease_seconds "
            f"FROM {_attempts(con)} WHERE run_id = ? ORDER BY attempt", [run_id]))
    for a in _judged(store, attempts):
        srcs = json.loads(a["sources"]) if isinstance(a["sources"], str) else (a["sources"] or [])
        a["sources"] = ", ".join(f"{s['name']} v{s['version']}" for s in srcs)
        del a["lease_seconds"], a["attempt_id"]
    run["attempts"] = attempts
    if attempts and run["status"] == "running" and attempts[-1]["status"] in ("crashed", "failed"):
        run["status"], run["error"] = attempts[-1]["status"], attempts[-1]["error"]
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
