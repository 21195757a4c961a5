"""Read-only ad-hoc SQL for `winnow query`: only SELECT/EXPLAIN, on a sandboxed read-only connection.

The connection is opened read-only with external access disabled and the configuration locked, so
even a SELECT cannot read arbitrary files (``read_csv('/etc/passwd')``), ATTACH, COPY … TO, INSTALL or
LOAD extensions; statements other than SELECT/EXPLAIN are refused before anything runs. The one
exception is the Parquet files behind winnow's own views (``shard_vectors_*``, ``shard_scores_*`` of
`winnow prune-sharded`): for every shard recorded in ``shard_files``, the file at winnow's own place for
it inside the database's artifacts folder is allowed by exact path (``allowed_paths``), so those views
can be queried; no other file is (the paths stored in the database are not trusted).

Limits: the query runs in a worker thread while the calling thread waits in short steps, so a timeout
(``con.interrupt()``) and Ctrl-C (KeyboardInterrupt, then ``con.interrupt()``) stop it within a fraction
of a second even while DuckDB is inside one long operation; results come back in batches of rows
(never the whole result in memory) and at most ``limit`` rows. Rows are fetched as Python values
(``fetchmany`` on a streaming result), so a query imports neither pyarrow nor numpy: `winnow query` starts in a fraction of
a second.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from storage.db import Store
from tasks.errors import WinnowError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
DEFAULT_TIMEOUT_S = 60.0
BATCH_ROWS = 2048
_DONE = object()


def check_read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> list:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise WinnowError(f"query does not parse: {str(err).splitlines()[0]}") from None
    if not statements:
        raise WinnowError("query is empty: give a SELECT statement, e.g. winnow query \"select * from runs\"")
    for st in statements:
        if st.type not in ALLOWED:
            kind = st.type.name.replace("_", " ")
            raise WinnowError(f"query refused: winnow query is read-only and runs only SELECT statements (got {kind})")
    return statements


_SET_ID = re.compile(r"(set|sharded)-[0-9a-f]+")
_LAYOUT = {"vectors": ("shards", ""), "scores": ("sharded", "scores")}  # storage.shards' folders


def view_files(con: duckdb.DuckDBPyConnection, store: Store) -> list[str]:
    """Absolute paths of the files winnow's own views read, rebuilt from winnow's own layout
    (``<artifacts>/shards/<set_id>/shard-NNNNN.parquet``, ``<artifacts>/sharded/<run_id>/scores/...``)
    from the ``(set_id, kind, shard)`` rows of ``shard_files``; the stored paths themselves are never
    trusted (the database file is the user's). A file must exist, and no link may lie below the
    artifacts folder on its way (the folder itself may be a link)."""
    found = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'shard_files' "
                        "AND table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()[0][0]
    if not found:  # a file from before the sharded path (or not winnow's)
        return []
    root = store.artifacts_dir.resolve()
    out = []
    for set_id, kind, shard in con.execute("SELECT DISTINCT set_id, kind, shard FROM shard_files ORDER BY 1, 2, 3").fetchall():
        if not (isinstance(set_id, str) and _SET_ID.fullmatch(set_id) and kind in _LAYOUT and isinstance(shard, int)
                and 0 <= shard <= 99_999):
            continue
        top, sub = _LAYOUT[kind]
        path = root / top / set_id / sub / f"shard-{shard:05d}.parquet"
        if path.is_file() and path.resolve() == path:
            out.append(str(path))
    return out


@contextmanager
def sandboxed(store: Store) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection that can read no file but those of :func:`view_files`, with the
    configuration locked. The allowed files are read on a connection sandboxed from the start; the
    query's connection then sets ``allowed_paths`` (DuckDB takes it only on a started database), turns
    file access off and locks the configuration before anything else runs on it."""
    with store.read(sandboxed=True) as con:
        allowed = view_files(con, store)

    def lock(con: duckdb.DuckDBPyConnection) -> None:
        if allowed:
            con.execute("SET allowed_paths = ?", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    with store.read(setup=lock) as con:
        yield con


def _user_error(err: BaseException) -> WinnowError:
    if isinstance(err, duckdb.PermissionException):
        return WinnowError(f"query refused: {str(err).splitlines()[0]} (winnow query cannot touch files outside the database)")
    return WinnowError(f"query failed: {str(err).splitlines()[0]}")


def stream_query(store: Store, sql: str, limit: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 batch_rows: int = BATCH_ROWS) -> Iterator[list[dict]]:
    """Run read-only SQL; yield the last statement's result as lists of at most ``batch_rows`` rows
    (one dict per row, column name → value).

    At most ``limit`` rows come back. The whole query (running and reading the result) may take
    ``timeout_s`` seconds; then it is interrupted and a :class:`WinnowError` says so. A KeyboardInterrupt
    in the calling thread interrupts the query too.
    """
    if not timeout_s > 0:
        raise WinnowError(f"--timeout {timeout_s}: must be a positive number of seconds")
    with sandboxed(store) as con:
        statements = check_read_only_sql(con, sql)
        results: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for st in statements[:-1]:
                    if stop.is_set():
                        return
                    con.execute(st.query).fetchall()
                if stop.is_set():
                    return
                rel = con.sql(statements[-1].query)
                if rel is None:  # e.g. EXPLAIN of nothing
                    put(_DONE)
                    return
                if limit is not None:
                    rel = rel.limit(limit)
                names = rel.columns
                if stop.is_set():
                    return
                result = con.execute(rel.sql_query())  # DuckDB 2: an execute() result streams as it is fetched
                while rows := result.fetchmany(batch_rows):
                    if not put([dict(zip(names, row)) for row in rows]):
                        return
                put(_DONE)
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                put(err)

        worker = threading.Thread(target=work, name="winnow-query", daemon=True)
        deadline = time.monotonic() + timeout_s
        worker.start()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WinnowError(f"query stopped after --timeout {timeout_s:g} s; narrow it (WHERE, LIMIT) "
                                      "or raise --timeout")
                try:
                    item = results.get(timeout=min(0.1, remaining))
                except queue.Empty:
                    continue
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, duckdb.Error):
                        raise _user_error(item) from None
                    raise item
                yield item
        finally:
            stop.set()
            # interrupt() stops only the statement running at that moment: repeat it until the worker is out,
            # or a statement that was still being planned when Ctrl-C came would run on (and block the close)
            give_up = time.monotonic() + 5
            while worker.is_alive() and time.monotonic() < give_up:
                con.interrupt()
                worker.join(timeout=0.05)


def run_query(store: Store, sql: str, limit: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict]:
    """Run read-only SQL and return the last statement's result as one list of row dicts (small results)."""
    return [row for batch in stream_query(store, sql, limit, timeout_s) for row in batch]
