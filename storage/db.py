"""The DuckDB store: one file, a versioned schema, short write transactions and Parquet side files.

DuckDB lets one process write a file at a time, so every write here is a short transaction from the
flow process: open, write, commit, close. A second writer waits (bounded, with backoff) while the lock
is held, then goes on; readers open read-only. Files are written with
``storage_compatibility_version = v1.5.0`` so that the ``duckdb`` CLI from PyPI (1.5.x) can read them.

Large arrays never go into table rows: :meth:`Store.write_parquet` writes a Parquet file next to the
database (temp name, fsync, atomic rename) and returns the path that a table then records.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import datetime, timezone
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import SchemaTooNewError, StoreLockedError, WinnowError

DEFAULT_DB = Path(".winnow") / "winnow.duckdb"
STORAGE_COMPATIBILITY = "v1.5.0"
LOCK_TIMEOUT_S = float(os.environ.get("WINNOW_LOCK_TIMEOUT", "120"))


def resolve_db_path(cli_value: str | Path | None = None, config_value: str | Path | None = None) -> Path:
    """``--db`` beats ``WINNOW_DB`` beats the config's ``db`` beats ``./.winnow/winnow.duckdb``."""
    for value in (cli_value, os.environ.get("WINNOW_DB") or None, config_value):
        if value:
            return Path(value).expanduser()
    return DEFAULT_DB


def _is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


class Store:
    """Handle on one winnow DuckDB file (cheap to create; opens connections only when used)."""

    def __init__(self, path: str | Path, *, lock_timeout_s: float | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout_s = LOCK_TIMEOUT_S if lock_timeout_s is None else lock_timeout_s
        self._schema_checked = False

    # ------------------------------------------------------------------ paths
    @property
    def artifacts_dir(self) -> Path:
        """Folder of Parquet/weights side files: ``<db dir>/<db stem>.artifacts``."""
        return self.path.parent / f"{self.path.stem}.artifacts"

    def resolve(self, stored_path: str) -> Path:
        """Absolute path of a side file recorded (relative to the DB folder) in a table."""
        p = Path(stored_path)
        return p if p.is_absolute() else self.path.parent / p

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.path.parent)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    # ------------------------------------------------------------ connections
    def _check_location(self) -> None:
        if self.path.is_dir():
            raise WinnowError(f"database path is a directory, not a DuckDB file: {self.path}")
        parent = self.path.parent
        if parent.exists() and not os.access(parent, os.W_OK):
            raise WinnowError(f"cannot write the database: folder {parent} is not writable (use --db or WINNOW_DB)")
        if self.exists and not os.access(self.path, os.W_OK):
            raise WinnowError(f"cannot write the database: {self.path} is read-only (use --db or WINNOW_DB)")

    def _connect_rw(self) -> duckdb.DuckDBPyConnection:
        self._check_location()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
            except duckdb.IOException as err:
                if not _is_lock_error(err):
                    raise WinnowError(f"cannot open database {self.path}: {err}") from None
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"database {self.path} stayed locked by another process for {self.lock_timeout_s:.0f} s; "
                        "try again when the other run has finished (or raise WINNOW_LOCK_TIMEOUT)"
                    ) from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
            except duckdb.Error as err:
                raise WinnowError(f"cannot open database {self.path}: {err}") from None

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        from storage.schema import migrate

        if not self._schema_checked:
            migrate(con, self.path)
            self._schema_checked = True

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction: commit when the block ends, roll back and re-raise on any error."""
        con = self._connect_rw()
        try:
            self._ensure_schema(con)
            con.begin()
            try:
                yield con
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.close()

    @contextmanager
    def read(self, *, sandboxed: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection. ``sandboxed`` also forbids file access, ATTACH and config changes."""
        if not self.exists:
            raise WinnowError(f"no winnow database at {self.path}: run `winnow demo` or `winnow run CONFIG` first (or pass --db)")
        config = {"enable_external_access": False, "lock_configuration": True} if sandboxed else {}
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=True, config=config)
                break
            except duckdb.IOException as err:
                if not _is_lock_error(err) or time.monotonic() >= deadline:
                    raise WinnowError(f"cannot open database {self.path} for reading: {err}") from None
                time.sleep(0.1)
            except duckdb.Error as err:
                raise WinnowError(f"cannot open database {self.path} for reading: {err}") from None
        try:
            from storage.schema import check_readable

            check_readable(con, self.path)
            yield con
        finally:
            con.close()

    # ------------------------------------------------------------ side files
    def write_parquet(self, table: pa.Table, kind: str, key: str) -> str:
        """Write ``table`` to ``<artifacts>/<kind>/<key>.parquet`` atomically; return the path to record.

        The file is written under a temporary name, fsynced and renamed, so a reader (or a crash)
        never sees half a file. Keys should be content-derived so that a rerun rewrites the same file.
        """
        target = self.artifacts_dir / kind / f"{key}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd", use_dictionary=False)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return self.relative(target)

    def adopt_file(self, staged: Path, kind: str, name: str) -> str:
        """Move a finished file (written by a task in a staging folder) into the artifacts tree."""
        target = self.artifacts_dir / kind / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        return self.relative(target)

    def staging_dir(self) -> Path:
        """A folder on the same file system as the artifacts, for tasks that stream large outputs."""
        self._check_location()
        d = self.artifacts_dir / "staging"
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WinnowError(f"cannot create the artifacts folder next to the database: {err}") from None
        return d


def one(cursor: duckdb.DuckDBPyConnection) -> tuple | None:
    """First row of an executed query, consuming the whole result.

    DuckDB 2 keeps a half-read result open on the connection (``fetchone`` leaves one), which blocks
    the next ``con.sql``; always drain results through this helper.
    """
    rows = cursor.fetchall()
    return rows[0] if rows else None


def rows(cursor: duckdb.DuckDBPyConnection) -> list[dict]:
    """All rows of an executed query as dicts keyed by column name."""
    cols = [d[0] for d in cursor.description]
    return [dict(zip(cols, r)) for r in cursor.fetchall()]


def now() -> datetime:
    """The time stored in TIMESTAMP columns: UTC, without a time zone."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    """INSERT the rows of an Arrow table into ``table`` by column name (registered, never formatted SQL).

    If the INSERT fails inside a transaction, that error is what surfaces (not the unregister's)."""
    if data.num_rows == 0:
        return
    view = f"_winnow_{table}_rows"
    con.register(view, data)
    try:
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        con.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{view}"')
    finally:
        try:
            con.unregister(view)
        except duckdb.Error:  # the transaction is already aborted
            pass


def replace_run_rows(store: Store, run_id: str, owned: Sequence[str], tables: dict[str, pa.Table]) -> dict[str, int]:
    """A stage's idempotent write: delete ``run_id``'s rows from every table it ``owned``, insert ``tables``,
    all in one transaction. Returns rows written per table."""
    with store.write() as con:
        for name in owned:
            con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
        for name, data in tables.items():
            insert_arrow(con, name, data)
    return {name: data.num_rows for name, data in tables.items()}
