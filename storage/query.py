"""Read-only ad-hoc SQL for `winnow query`: only SELECT/EXPLAIN, on a sandboxed read-only connection.

The connection is opened read-only with external access disabled and the configuration locked, so
even a SELECT cannot read arbitrary files (``read_csv('/etc/passwd')``), ATTACH, COPY … TO, INSTALL or
LOAD extensions; statements other than SELECT/EXPLAIN are refused before anything runs.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from storage.db import Store
from tasks.errors import WinnowError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> list:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise WinnowError(f"query does not parse: {err}") from None
    if not statements:
        raise WinnowError("query is empty")
    for st in statements:
        if st.type not in ALLOWED:
            kind = st.type.name.replace("_", " ")
            raise WinnowError(f"query refused: winnow query is read-only and runs only SELECT statements (got {kind})")
    return statements


def run_query(store: Store, sql: str, limit: int | None = None) -> pa.Table:
    """Run read-only SQL and return the last statement's result as an Arrow table."""
    with store.read(sandboxed=True) as con:
        statements = check_read_only_sql(con, sql)
        try:
            for st in statements[:-1]:
                con.execute(st.query)
            rel = con.sql(statements[-1].query)
            if limit is not None:
                rel = rel.limit(limit)
            return rel.to_arrow_table()
        except duckdb.PermissionException as err:
            raise WinnowError(f"query refused: {str(err).splitlines()[0]} (winnow query cannot touch files outside the database)") from None
        except duckdb.Error as err:
            raise WinnowError(f"query failed: {str(err).splitlines()[0]}") from None
