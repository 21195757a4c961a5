"""Read everything a run left in the store, for reports: the run row, its sources, and its tables.

Stage tables are discovered, not hard-coded: every base table or view with a ``run_id`` column that
holds rows for the run is returned (tables that do not exist or hold nothing are simply absent), so a
report works with whatever stages ran. Per-example tables (those with an ``example_id`` column, e.g.
``scores``, ``selections``: up to millions of rows) come back aggregated in SQL — one row per group of
their categorical columns with ``n_examples`` and the mean/min/max of each numeric column — never raw.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from storage.db import Store
from storage.runs import show_run
from tasks.report import ReportData

MAX_ROWS = 10_000
NUMERIC = ("DOUBLE", "FLOAT", "REAL", "DECIMAL")
SKIP_COLUMNS = {"run_id"}
SKIP_TABLES = ("runs", "run_sources", "run_attempts")  # shown as the run, its sources and its history
PER_EXAMPLE = {"example_id", "row_index"}


def _run_relations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, list[tuple[str, str]]]]:
    """(name, [(column, type), ...]) of every table/view with a run_id column, except :data:`SKIP_TABLES`."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name NOT IN (SELECT unnest(?::VARCHAR[])) AND table_name IN "
        "(SELECT table_name FROM information_schema.columns WHERE column_name = 'run_id' AND table_schema = 'main') "
        "ORDER BY table_name, ordinal_position", [list(SKIP_TABLES)]
    ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, col, typ in rows:
        out.setdefault(table, []).append((col, typ))
    return list(out.items())


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_numeric(typ: str) -> bool:
    return typ.upper().startswith(NUMERIC)


def _is_key(col: str, typ: str) -> bool:
    """Grouping columns of a per-example table: text/boolean labels and integer ids/seeds."""
    t = typ.upper()
    if t.startswith(("VARCHAR", "BOOLEAN")):
        return True
    return t in ("INTEGER", "BIGINT", "SMALLINT", "UBIGINT") and (col.endswith("_id") or col == "seed")


def _aggregate_sql(table: str, cols: list[tuple[str, str]]) -> str:
    """Per-example table -> one row per group of its categorical columns (counts, numeric summaries)."""
    keys = [c for c, t in cols if c not in SKIP_COLUMNS and c not in PER_EXAMPLE and _is_key(c, t)]
    nums = [c for c, t in cols if _is_numeric(t)]
    select = [_q(k) for k in keys] + ["count(*) AS n_examples"]
    for c in nums:
        select += [f"avg({_q(c)}) AS {_q('mean_' + c)}", f"min({_q(c)}) AS {_q('min_' + c)}",
                   f"max({_q(c)}) AS {_q('max_' + c)}"]
    group = f" GROUP BY {', '.join(_q(k) for k in keys)} ORDER BY {', '.join(_q(k) for k in keys)}" if keys else ""
    return f"SELECT {', '.join(select)} FROM {_q(table)} WHERE run_id = ?{group} LIMIT {MAX_ROWS + 1}"


def load_report_data(store: Store, run_id: str) -> ReportData:
    """The run (``WinnowError`` if unknown), its sources and each non-empty run table (see module doc)."""
    run = show_run(store, run_id)
    tables: dict[str, pa.Table] = {}
    aggregated: set[str] = set()
    truncated: set[str] = set()
    with store.read() as con:
        sources = [dict(zip([d[0] for d in cur.description], r)) for cur in [con.execute(
            "SELECT s.source_id, s.name, s.version, s.kind, s.n_rows, s.n_train, s.n_test, s.n_features, "
            "s.label_names, s.content_hash FROM run_sources r JOIN sources s USING (source_id) "
            "WHERE r.run_id = ? ORDER BY s.name", [run_id])] for r in cur.fetchall()]
        for name, cols in _run_relations(con):
            names = [c for c, _ in cols]
            if "example_id" in names:
                sql = _aggregate_sql(name, cols)
                aggregated.add(name)
            else:
                keep = [c for c in names if c not in SKIP_COLUMNS]
                sql = f"SELECT {', '.join(_q(c) for c in keep)} FROM {_q(name)} WHERE run_id = ? LIMIT {MAX_ROWS + 1}"
            table = con.sql(sql, params=[run_id]).to_arrow_table()
            if table.num_rows == 0:
                aggregated.discard(name)
                continue
            if table.num_rows > MAX_ROWS:
                table = table.slice(0, MAX_ROWS)
                truncated.add(name)
            tables[name] = table
    return ReportData(run=run, sources=sources, tables=tables, aggregated=frozenset(aggregated),
                      truncated=frozenset(truncated))
