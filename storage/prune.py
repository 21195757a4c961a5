"""Prune-stage tables: scores, selections (+ members), pruning curves, SemDeDup report, perceptron.

Every save is idempotent: delete the run's rows, then insert, in one transaction (a rerun of the same
config replaces them). Bulk rows go in as registered Arrow tables, never as formatted SQL.

Views
-----
- ``latest_selection``: the members of the newest selection per (source, metric, policy, budget).
- ``pruning_curve_summary``: mean / std accuracy over seeds per (run, source, metric, policy, fraction).
- ``perceptron_summary``: mean / std test error over seeds per (run, N, θ, α_tot, f, policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from storage.db import Store, one
from tasks.errors import WinnowError

__all__ = [
    "DDL",
    "PRUNE_TABLES",
    "SelectionHeader",
    "save_prune_results",
    "save_perceptron",
    "list_selections",
    "load_selection",
    "load_pruning_curve",
    "load_pruning_curve_summary",
    "load_perceptron_summary",
    "load_scores",
]

DDL: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS scores (
        run_id VARCHAR NOT NULL,
        source_id INTEGER NOT NULL,
        example_id BIGINT NOT NULL,
        metric VARCHAR NOT NULL,
        seed INTEGER NOT NULL,
        score DOUBLE NOT NULL,              -- higher = harder
        group_key INTEGER                   -- cluster (label-free metrics) or class (supervised)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS selections (
        run_id VARCHAR NOT NULL,
        selection_id VARCHAR NOT NULL,      -- '<run_id>:<source>:<metric>:<policy>:<budget>'
        source_id INTEGER NOT NULL,
        source_name VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        policy VARCHAR NOT NULL,            -- as requested (hard | easy | auto | ccs | random)
        resolved_policy VARCHAR NOT NULL,   -- what ran (auto -> hard | easy)
        balance VARCHAR NOT NULL,
        fraction DOUBLE NOT NULL,           -- n_kept / n_pool
        budget_spec VARCHAR NOT NULL,       -- 'f=0.3' or 'n=1000'
        n_pool BIGINT NOT NULL,
        n_kept BIGINT NOT NULL,
        reason VARCHAR NOT NULL,            -- how the rows were chosen (auto: which branch and why)
        created_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS selection_members (
        run_id VARCHAR NOT NULL,
        selection_id VARCHAR NOT NULL,
        example_id BIGINT NOT NULL,
        source_id INTEGER NOT NULL,
        row_index BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS pruning_curve (
        run_id VARCHAR NOT NULL,
        source_id INTEGER NOT NULL,
        metric VARCHAR NOT NULL,            -- 'full' for the all-rows probe
        policy VARCHAR NOT NULL,
        resolved_policy VARCHAR NOT NULL,
        fraction DOUBLE NOT NULL,
        seed INTEGER NOT NULL,
        n_kept BIGINT NOT NULL,
        accuracy DOUBLE NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS semdedup_report (
        run_id VARCHAR NOT NULL,
        source_id INTEGER NOT NULL,
        eps DOUBLE NOT NULL,
        n_pool BIGINT NOT NULL,
        n_removed BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS perceptron_results (
        run_id VARCHAR NOT NULL,
        n_dim INTEGER NOT NULL,
        theta DOUBLE NOT NULL,
        alpha_tot DOUBLE NOT NULL,
        fraction DOUBLE NOT NULL,
        policy VARCHAR NOT NULL,
        seed INTEGER NOT NULL,
        n_train BIGINT NOT NULL,
        n_kept BIGINT NOT NULL,
        test_error DOUBLE NOT NULL
    )
    """,
    """
    CREATE OR REPLACE VIEW latest_selection AS
    WITH ranked AS (
        SELECT *, row_number() OVER (
            PARTITION BY source_id, metric, policy, budget_spec ORDER BY created_at DESC, selection_id
        ) AS rn
        FROM selections
    )
    SELECT r.selection_id, r.run_id, r.source_name, r.metric, r.policy, r.resolved_policy, r.fraction,
           m.example_id, m.source_id, m.row_index
    FROM ranked r JOIN selection_members m ON m.run_id = r.run_id AND m.selection_id = r.selection_id
    WHERE r.rn = 1
    """,
    """
    CREATE OR REPLACE VIEW pruning_curve_summary AS
    SELECT run_id, source_id, metric, policy, fraction,
           string_agg(DISTINCT resolved_policy, ',') AS resolved_policy,
           avg(accuracy) AS mean_accuracy, coalesce(stddev_pop(accuracy), 0) AS std_accuracy,
           count(*) AS n_seeds, avg(n_kept) AS n_kept
    FROM pruning_curve
    GROUP BY run_id, source_id, metric, policy, fraction
    """,
    """
    CREATE OR REPLACE VIEW perceptron_summary AS
    SELECT run_id, n_dim, theta, alpha_tot, fraction, policy,
           avg(test_error) AS mean_error, coalesce(stddev_pop(test_error), 0) AS std_error, count(*) AS n_seeds
    FROM perceptron_results
    GROUP BY run_id, n_dim, theta, alpha_tot, fraction, policy
    """,
]

PRUNE_TABLES = ("scores", "selections", "selection_members", "pruning_curve", "semdedup_report")


@dataclass(frozen=True)
class SelectionHeader:
    """One selection's header row (members are stored separately)."""

    selection_id: str
    source_id: int
    source_name: str
    metric: str
    policy: str
    resolved_policy: str
    balance: str
    fraction: float
    budget_spec: str
    n_pool: int
    n_kept: int
    reason: str


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table | None, columns: list[str]) -> None:
    if data is None or data.num_rows == 0:
        return
    name = f"_winnow_{table}_rows"
    con.register(name, data)
    try:
        cols = ", ".join(columns)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}")
    finally:
        con.unregister(name)


def save_prune_results(
    store: Store,
    run_id: str,
    *,
    scores: pa.Table | None,
    selections: list[SelectionHeader],
    members: pa.Table | None,
    curve: pa.Table | None = None,
    semdedup: pa.Table | None = None,
) -> None:
    """Replace everything the prune stage stored for ``run_id`` in one transaction.

    Parameters
    ----------
    scores : columns source_id, example_id, metric, seed, score, group_key.
    selections : headers; members : columns selection_id, example_id, source_id, row_index.
    curve : columns source_id, metric, policy, resolved_policy, fraction, seed, n_kept, accuracy.
    semdedup : columns source_id, eps, n_pool, n_removed.
    """
    ids = [s.selection_id for s in selections]
    if len(set(ids)) != len(ids):
        raise WinnowError("duplicate selection ids in one prune run")
    created = _now()
    with store.write() as con:
        for table in PRUNE_TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])

        def with_run(t: pa.Table | None) -> pa.Table | None:
            if t is None:
                return None
            return t.append_column("run_id", pa.array([run_id] * t.num_rows, pa.string()))

        _insert(con, "scores", with_run(scores),
                ["run_id", "source_id", "example_id", "metric", "seed", "score", "group_key"])
        if selections:
            head = pa.table({
                "run_id": [run_id] * len(selections),
                "selection_id": ids,
                "source_id": [s.source_id for s in selections],
                "source_name": [s.source_name for s in selections],
                "metric": [s.metric for s in selections],
                "policy": [s.policy for s in selections],
                "resolved_policy": [s.resolved_policy for s in selections],
                "balance": [s.balance for s in selections],
                "fraction": [float(s.fraction) for s in selections],
                "budget_spec": [s.budget_spec for s in selections],
                "n_pool": [int(s.n_pool) for s in selections],
                "n_kept": [int(s.n_kept) for s in selections],
                "reason": [s.reason for s in selections],
                "created_at": pa.array([created] * len(selections), pa.timestamp("us")),
            })
            _insert(con, "selections", head, list(head.column_names))
        _insert(con, "selection_members", with_run(members),
                ["run_id", "selection_id", "example_id", "source_id", "row_index"])
        _insert(con, "pruning_curve", with_run(curve),
                ["run_id", "source_id", "metric", "policy", "resolved_policy", "fraction", "seed", "n_kept", "accuracy"])
        _insert(con, "semdedup_report", with_run(semdedup),
                ["run_id", "source_id", "eps", "n_pool", "n_removed"])


def save_perceptron(store: Store, run_id: str, rows: pa.Table) -> None:
    """Replace the perceptron rows of ``run_id``; columns as in the ``perceptron_results`` table."""
    with store.write() as con:
        con.execute("DELETE FROM perceptron_results WHERE run_id = ?", [run_id])
        _insert(con, "perceptron_results", rows.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string())),
                ["run_id", "n_dim", "theta", "alpha_tot", "fraction", "policy", "seed", "n_train", "n_kept", "test_error"])


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def list_selections(store: Store, run_id: str | None = None) -> list[dict[str, Any]]:
    """Selection headers (newest first), optionally of one run."""
    sql = ("SELECT selection_id, run_id, source_name, metric, policy, resolved_policy, balance, fraction, "
           "n_kept, n_pool, reason FROM selections")
    with store.read() as con:
        if run_id is None:
            return _dicts(con.execute(sql + " ORDER BY created_at DESC, selection_id"))
        return _dicts(con.execute(sql + " WHERE run_id = ? ORDER BY selection_id", [run_id]))


def load_selection(store: Store, selection_id: str) -> tuple[dict[str, Any], pa.Table]:
    """Header and members (example_id, source_id, row_index; by example_id) of one selection.

    ``selection_id`` may also be ``latest:<source>:<metric>:<policy>:<budget>`` (newest such selection).
    """
    with store.read() as con:
        if selection_id.startswith("latest:"):
            parts = selection_id.split(":")
            if len(parts) != 5:
                raise WinnowError(f"{selection_id!r}: use latest:<source>:<metric>:<policy>:<f=0.3|n=1000>")
            rows = _dicts(con.execute(
                "SELECT * FROM selections WHERE source_name = ? AND metric = ? AND policy = ? AND budget_spec = ? "
                "ORDER BY created_at DESC, selection_id LIMIT 1", parts[1:]))
        else:
            rows = _dicts(con.execute("SELECT * FROM selections WHERE selection_id = ?", [selection_id]))
        if not rows:
            known = [r[0] for r in con.execute(
                "SELECT selection_id FROM selections ORDER BY created_at DESC, selection_id LIMIT 5").fetchall()]
            hint = f" (recent: {', '.join(known)})" if known else " (no selections stored yet: run `winnow prune CONFIG`)"
            raise WinnowError(f"no selection {selection_id!r}{hint}")
        head = rows[0]
        # no ORDER BY: members are stored in example_id order, so a plain scan (DuckDB keeps insertion
        # order) is usually sorted already; checking that is ~0.5 ms against ~4 ms for the SQL sort
        members = con.sql(
            "SELECT example_id, source_id, row_index FROM selection_members WHERE run_id = ? AND selection_id = ?",
            params=[head["run_id"], head["selection_id"]]).to_arrow_table()
    eid = members.column("example_id").to_numpy()
    if eid.size > 1 and not bool(np.all(eid[1:] >= eid[:-1])):
        members = members.take(np.argsort(eid, kind="stable"))
    return head, members


def load_scores(store: Store, run_id: str, metric: str | None = None) -> pa.Table:
    with store.read() as con:
        if metric is None:
            return con.sql("SELECT * FROM scores WHERE run_id = ? ORDER BY metric, seed, example_id",
                           params=[run_id]).to_arrow_table()
        return con.sql("SELECT * FROM scores WHERE run_id = ? AND metric = ? ORDER BY seed, example_id",
                       params=[run_id, metric]).to_arrow_table()


def load_pruning_curve(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as con:
        return _dicts(con.execute(
            "SELECT * FROM pruning_curve WHERE run_id = ? ORDER BY source_id, metric, policy, fraction DESC, seed", [run_id]))


def load_pruning_curve_summary(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as con:
        return _dicts(con.execute(
            "SELECT * FROM pruning_curve_summary WHERE run_id = ? ORDER BY source_id, metric, policy, fraction DESC", [run_id]))


def load_perceptron_summary(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as con:
        return _dicts(con.execute(
            "SELECT * FROM perceptron_summary WHERE run_id = ? ORDER BY alpha_tot, fraction DESC, policy", [run_id]))


def count_rows(store: Store, table: str, run_id: str | None = None) -> int:
    """Rows in one of this module's tables (optionally of a run) — for tests and summaries."""
    if table not in PRUNE_TABLES + ("perceptron_results",):
        raise WinnowError(f"{table!r} is not a prune table")
    with store.read() as con:
        if run_id is None:
            return int(one(con.execute(f"SELECT count(*) FROM {table}"))[0])
        return int(one(con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]))[0])
