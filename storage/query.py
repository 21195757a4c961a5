"""Read-only ad-hoc SQL for `winnow query`: only SELECT/EXPLAIN, on a sandboxed read-only connection.

The connection is opened read-only with external access disabled and the configuration locked, so
even a SELECT cannot read arbitrary files (``read_csv('/etc/passwd')``), ATTACH, COPY … TO, INSTALL or
LOAD extensions; statements other than SELECT/EXPLAIN are refused before anything runs.

Limits: the query runs in a worker thread while the calling thread waits in short steps, so a timeout
(``con.interrupt()``) and Ctrl-C (KeyboardInterrupt, then ``con.interrupt()``) stop it within a fraction
of a second even while DuckDB is inside one long operation; results come back in batches of rows
(never the whole result in memory) and at most ``limit`` rows. Rows are fetched as Python values
(``fetchmany`` on a streaming result), so a query imports neither pyarrow nor numpy: `winnow query` starts in a fraction of
a second.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

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
    with store.read(sandboxed=True) as con:
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
