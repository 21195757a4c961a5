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
import tempfile
import threading
import time
from datetime import datetime, timezone
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import duckdb

from tasks.errors import StoreLockedError, WinnowError
from tasks.files import current_umask, special_file_kind

if TYPE_CHECKING:  # annotations only: read-only commands never import pyarrow from here
    import pyarrow as pa

DEFAULT_DB = Path(".winnow") / "winnow.duckdb"
STORAGE_COMPATIBILITY = "v1.5.0"
DEFAULT_LOCK_TIMEOUT_S = 120.0


def env_lock_timeout_s() -> float:
    """Seconds a writer waits for the file lock: ``WINNOW_LOCK_TIMEOUT`` (default 120)."""
    raw = os.environ.get("WINNOW_LOCK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 <= value <= 86_400):  # also refuses NaN and inf
        raise WinnowError(f"WINNOW_LOCK_TIMEOUT={raw!r}: expected seconds between 0 and 86400 (e.g. 120); "
                          "fix or unset the environment variable")
    return value


def resolve_db_path(cli_value: str | Path | None = None, config_value: str | Path | None = None) -> Path:
    """``--db`` beats ``WINNOW_DB`` beats the config's ``db`` beats ``./.winnow/winnow.duckdb``."""
    if cli_value is not None and not str(cli_value).strip():
        raise WinnowError("--db is empty: give the path of a DuckDB file (or leave --db out for $WINNOW_DB "
                          "or ./.winnow/winnow.duckdb)")
    env = os.environ.get("WINNOW_DB")
    if env is not None and env != "" and not env.strip():
        raise WinnowError("WINNOW_DB is blank: set it to the path of a DuckDB file, or unset it")
    for value in (cli_value, env or None, config_value):
        if value:
            return Path(value).expanduser()
    return DEFAULT_DB


#: a DuckDB file with no block written yet is its header alone (3 x 4 KiB); a table needs a block beyond it
_BLANK_SIZE = 3 * 4096


# ------------------------------------------------------------------------------------- safe writes
def safe_write(target: str | Path, write: Callable[[BinaryIO], None], *, force: bool = False,
               what: str = "file", option: str = "") -> Path:
    """Write a file the safe way; every file winnow writes goes through here.

    ``write`` receives a binary file object opened on a fresh temporary file that ``mkstemp`` created
    (``O_CREAT | O_EXCL``: it never opens a name that exists, so a symlink planted at any temp name is
    not followed) in the target's folder; the data is fsynced, then moved onto ``target`` in one step.
    Without ``force`` the move is a hard link that fails if ``target`` appeared meanwhile (nothing is
    ever overwritten); with ``force`` it is a rename, which replaces a symlink at ``target`` itself,
    never the file it points to. The temporary file is removed on every exit path.

    Problems with the place (a file where a folder should be, a directory or special file at the
    target, no permission) are :class:`WinnowError` naming ``option`` (e.g. ``--to``).
    """
    target = Path(target)
    label = f"{option} {target}" if option else str(target)
    parent = check_target(target, force=force, what=what, option=option)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as err:
        raise WinnowError(f"cannot write {label}: {err.strerror or err}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600; a written file gets the usual mode
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target, follow_symlinks=False)
            except FileExistsError:
                raise WinnowError(f"{label} already exists; pass --force to overwrite it") from None
            except OSError:  # no hard links on this file system: check, then rename
                if target.is_symlink() or target.exists():
                    raise WinnowError(f"{label} already exists; pass --force to overwrite it") from None
                os.replace(tmp, target)
        _fsync_dir(parent)
    except OSError as err:
        raise WinnowError(f"cannot write {label}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_target(target: str | Path, *, force: bool = False, what: str = "file", option: str = "") -> Path:
    """The checks of :func:`safe_write` without writing (call it before expensive work); returns the folder."""
    target = Path(target)
    label = f"{option} {target}" if option else str(target)
    parent = target.parent if str(target.parent) else Path(".")
    for up in [parent, *parent.parents]:  # the first existing ancestor must be a folder
        if up.exists() or up.is_symlink():
            if not up.is_dir():
                raise WinnowError(f"{label}: {up} is a file, not a folder; choose another {what} path")
            break
    if target.is_symlink() or target.exists():
        kind = special_file_kind(target) if target.exists() else None
        if target.is_dir():
            raise WinnowError(f"{label} is a directory; give a file name inside it")
        if kind is not None:
            raise WinnowError(f"{label} is {kind}, not a regular file; choose another {what} path")
        if not force:
            raise WinnowError(f"{label} already exists; pass --force to overwrite it")
    return parent


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


class Store:
    """Handle on one winnow DuckDB file (cheap to create; opens connections only when used)."""

    def __init__(self, path: str | Path, *, lock_timeout_s: float | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout_s = env_lock_timeout_s() if lock_timeout_s is None else lock_timeout_s
        self._schema_checked = False
        self._check_type()  # stat calls only: a directory, special file or file-as-folder fails at once

    # ------------------------------------------------------------------ paths
    @property
    def artifacts_dir(self) -> Path:
        """Folder of Parquet/weights side files: ``<db dir>/<db stem>.artifacts``."""
        return self.path.parent / f"{self.path.stem}.artifacts"

    def resolve(self, stored_path: str) -> Path:
        """Absolute path of a side file recorded (relative to the DB folder) in a table."""
        p = Path(stored_path)
        return p if p.is_absolute() else self.path.parent / p

    def owns(self, path: str | Path) -> bool:
        """Whether ``path`` is the database file, its write-ahead log, or anything inside its artifacts folder
        (links resolved): files winnow's tables refer to, which a user-named output must never replace."""
        p = Path(path).expanduser().resolve()
        if p in (self.path, Path(f"{self.path}.wal")):
            return True
        art = self.artifacts_dir.resolve()
        return p == art or art in p.parents

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.path.parent)

    @property
    def exists(self) -> bool:
        """Whether there is a database to read: a file, and not a blank DuckDB file (one ``duckdb.connect``
        made and left: only the 12 KiB header, no write-ahead log), which holds no tables and is treated as
        no database yet — reads say so, and the first write creates winnow's tables in it."""
        if not self.path.is_file():
            return False
        try:
            blank = self.path.stat().st_size <= _BLANK_SIZE and not Path(f"{self.path}.wal").exists()
            if blank:
                with open(self.path, "rb") as fh:
                    blank = fh.read(12)[8:12] == b"DUCK"
        except OSError:
            return True  # unreadable: the connection reports why
        return not blank

    # ------------------------------------------------------------ connections
    def _check_type(self) -> None:
        """Refuse a directory or a special file (FIFO, socket, device) by type, before opening it."""
        if self.path.is_dir():
            raise WinnowError(f"database path is a directory, not a DuckDB file: {self.path} (use --db or WINNOW_DB)")
        kind = special_file_kind(self.path)
        if kind is not None:
            raise WinnowError(f"database path {self.path} is {kind}, not a DuckDB file (use --db or WINNOW_DB)")
        for up in self.path.parents:
            if up.exists():
                if not up.is_dir():
                    raise WinnowError(f"database path {self.path}: {up} is a file, not a folder (use --db or WINNOW_DB)")
                break
        if self.path.is_file() and not _has_duckdb_magic(self.path):
            raise WinnowError(f"cannot open database {self.path}: the file exists, but it is not a valid DuckDB database "
                              "file (use --db or WINNOW_DB with a winnow file or a new path)")

    def _check_location(self) -> None:
        self._check_type()
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
            self._check_schema(con, migrate)
            self._schema_checked = True

    def _not_winnow(self, why: str) -> WinnowError:
        return WinnowError(f"{self.path} is not a usable winnow database ({why}); it was left untouched: "
                           "pass --db with a winnow file or a new path")

    def _check_winnow_file(self, con: duckdb.DuckDBPyConnection) -> None:
        """A file without winnow's version table must be empty: never add tables to someone else's DuckDB file."""
        try:
            names = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()").fetchall()]
            if "winnow_meta" not in names:
                if names:
                    raise self._not_winnow(f"it holds other tables ({', '.join(sorted(names)[:5])}) and no winnow_meta")
                return
            rows = con.execute("SELECT value FROM winnow_meta WHERE key = 'schema_version'").fetchall()
        except duckdb.Error as err:
            raise self._not_winnow(str(err).splitlines()[0]) from None
        value = rows[0][0] if rows else None
        if value is None or not str(value).strip().isdigit():
            raise self._not_winnow(f"winnow_meta.schema_version is {value!r}, not a version number")

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction: commit when the block ends, roll back and re-raise on any error.

        A commit also settles the side files this thread wrote since its last commit (see
        :meth:`discard_uncommitted`): the transaction that records them is this one."""
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
            _settle_side_files(self.path)
        finally:
            con.close()

    @contextmanager
    def read(self, *, sandboxed: bool = False,
             setup: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection. ``sandboxed`` also forbids file access, ATTACH and config changes.
        ``setup`` runs on the connection first, before anything reads the file (settings that DuckDB
        accepts only on a started database, such as ``allowed_paths``)."""
        self._check_type()
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
            if setup is not None:
                setup(con)
            self._verify(con)
            yield con
        finally:
            con.close()

    def _verify(self, con: duckdb.DuckDBPyConnection) -> None:
        """A winnow file this code can read: refuse someone else's DuckDB file or a newer schema."""
        from storage.schema import check_readable

        self._check_schema(con, check_readable)

    def _check_schema(self, con: duckdb.DuckDBPyConnection, step: Callable[[duckdb.DuckDBPyConnection, Path], None]) -> None:
        """Refuse a foreign file, then run ``step`` (migrate / check readable); its failures name this file."""
        self._check_winnow_file(con)
        try:
            step(con, self.path)
        except WinnowError:
            raise
        except (duckdb.Error, ValueError) as err:
            raise self._not_winnow(str(err).splitlines()[0]) from None

    # ------------------------------------------------------------ side files
    def write_parquet(self, table: pa.Table, kind: str, key: str) -> str:
        """Write ``table`` to ``<artifacts>/<kind>/<key>.parquet`` atomically; return the path to record.

        The file is written under a temporary name, fsynced and renamed, so a reader (or a crash)
        never sees half a file. Keys should be content-derived so that a rerun rewrites the same file.
        """
        target = self.artifacts_dir / kind / f"{key}.parquet"
        import pyarrow.parquet as pq  # only writers pay for pyarrow: read-only commands start faster

        existed = target.exists()
        safe_write(target, lambda fh: pq.write_table(table, fh, compression="zstd", use_dictionary=False),
                   force=True, what="artifact")
        if not existed:
            _note_side_file(self.path, target)
        return self.relative(target)

    def adopt_file(self, staged: Path, kind: str, name: str) -> str:
        """Move a finished file (written by a task in a staging folder) into the artifacts tree."""
        target = self.artifacts_dir / kind / name
        target.parent.mkdir(parents=True, exist_ok=True)
        existed = target.exists()
        os.replace(staged, target)
        if not existed:
            _note_side_file(self.path, target)
        return self.relative(target)

    def discard_uncommitted(self) -> list[Path]:
        """Delete the side files this process created (:meth:`write_parquet`, :meth:`adopt_file`) whose
        recording transaction never committed, e.g. because the lock could not be had; returns them.

        Only files that did not exist before are tracked, so a file an earlier row refers to is never
        removed. Called by the pipeline when an attempt fails."""
        with _SIDE_FILES_LOCK:
            keys = [k for k in _SIDE_FILES if k[0] == str(self.path)]
            files = [f for k in keys for f in _SIDE_FILES.pop(k)]
        for f in files:
            f.unlink(missing_ok=True)
        return files

    def remove_if_empty(self) -> bool:
        """Delete the database file when it holds no rows at all (only winnow's version table), with its
        artifacts folder when that holds no files: what a command refused late leaves on a path it
        created, so that bad input writes nothing. Returns whether it removed the file; never raises.

        The file is unlinked while this process holds DuckDB's exclusive lock on it, so no other
        process has it open; one that opens the path afterwards starts a new file."""
        try:  # one attempt, no lock wait: a file another process holds is in use, so it stays
            con = duckdb.connect(str(self.path), config={"storage_compatibility_version": STORAGE_COMPATIBILITY})
        except Exception:  # noqa: BLE001 - locked or unreadable: someone uses it, keep it
            return False
        try:
            names = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                "AND table_name <> 'winnow_meta'").fetchall()]
            if any(con.execute(f'SELECT 1 FROM "{n}" LIMIT 1').fetchone() for n in names):
                return False
            self.path.unlink()
        except (duckdb.Error, OSError):
            return False
        finally:
            con.close()
        Path(f"{self.path}.wal").unlink(missing_ok=True)
        _remove_empty_tree(self.artifacts_dir)
        return True

    def check_usable(self) -> None:
        """Refuse, before any data is read, a database path that cannot work: a directory or special file,
        an unwritable place, a file that is not DuckDB, someone else's DuckDB file, a newer schema.
        Opens the file read-only for a moment; a file locked by a writer is left to the writer's checks."""
        self._check_location()
        if not self.exists:
            return
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.IOException as err:
            if _is_lock_error(err):
                return
            raise WinnowError(f"cannot open database {self.path}: {str(err).splitlines()[0]} (use --db or WINNOW_DB)") from None
        except duckdb.Error as err:
            raise WinnowError(f"cannot open database {self.path}: {str(err).splitlines()[0]} (use --db or WINNOW_DB)") from None
        try:
            self._verify(con)
        finally:
            con.close()

    def staging_dir(self) -> Path:
        """A folder on the same file system as the artifacts, for tasks that stream large outputs.

        The database is checked first (:meth:`check_usable`): staging is the first step of a run, and
        an unusable database must be refused before any data is read."""
        self.check_usable()
        d = self.artifacts_dir / "staging"
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WinnowError(f"cannot create the artifacts folder next to the database: {err}") from None
        _sweep_dead_staging(d)
        return d


def _remove_empty_tree(root: Path) -> None:
    """Remove ``root`` and its sub-folders, bottom-up, as long as they hold no files."""
    if not root.is_dir() or root.is_symlink():
        return
    for d, _, _ in sorted(os.walk(root), key=lambda t: -len(Path(t[0]).parts)):
        try:
            os.rmdir(d)
        except OSError:  # a file (or a link) below: keep it and every folder above it
            pass


def _has_duckdb_magic(path: Path) -> bool:
    """A DuckDB file starts with a checksum and ``DUCK``. DuckDB itself opens an existing ``.csv``,
    ``.parquet`` or ``.json`` path as an in-memory database over that file (read-only: a 'Catalog Error'),
    so the header is checked first. An unreadable file passes: opening it reports why."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return True
    return head[8:12] == b"DUCK"


# Side files written but not yet recorded by a committed transaction, per (database, thread): a thread
# writes its Parquet files, then the transaction that records them; its commit settles them.
_SIDE_FILES: dict[tuple[str, int], list[Path]] = {}
_SIDE_FILES_LOCK = threading.Lock()


def _note_side_file(db: Path, path: Path) -> None:
    with _SIDE_FILES_LOCK:
        _SIDE_FILES.setdefault((str(db), threading.get_ident()), []).append(path)


def _settle_side_files(db: Path) -> None:
    with _SIDE_FILES_LOCK:
        _SIDE_FILES.pop((str(db), threading.get_ident()), None)


def _sweep_dead_staging(folder: Path) -> None:
    """Remove staged files left by processes that no longer exist (a SIGKILLed run)."""
    from tasks.ingest import staged_owner_pid

    for p in folder.glob("*.parquet"):
        pid = staged_owner_pid(p)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except OSError:  # alive under another user
            pass


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
