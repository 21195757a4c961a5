"""Prune-stage tables: scores, selections (+ members), pruning curves, SemDeDup report, perceptron.

Every save is idempotent: delete the run's rows, then insert, in one transaction (a rerun of the same
config replaces them). Bulk rows go in as registered Arrow tables, never as formatted SQL.
:func:`save_prune` stores a whole :class:`~tasks.prune.outcome.PruneOutcome`: ranked selections and
de-duplication selections alike (policy ``dedup``, one per threshold, members = the kept rows), so
``winnow export`` works on both and :func:`load_removed` gives the rows a de-duplication removed.

Views
-----
- ``latest_selection``: the members of the newest selection per (source, metric, policy, budget).
- ``pruning_curve_summary``: mean / std accuracy over seeds per (run, source, metric, policy, fraction).
- ``perceptron_summary``: mean / std test error over seeds per (run, N, θ, α_tot, f, policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from storage.db import Store, now, replace_run_rows, rows
from tasks.errors import WinnowError

if TYPE_CHECKING:  # the outcome type only: reading selections must not import torch
    from tasks.prune.outcome import PruneOutcome

__all__ = [
    "PRUNE_TABLES",
    "SelectionHeader",
    "save_prune",
    "save_prune_results",
    "load_removed",
    "save_perceptron",
    "list_selections",
    "load_selection",
    "load_pruning_curve",
    "load_pruning_curve_summary",
    "load_perceptron_summary",
    "load_scores",
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


def _with_run(t: pa.Table | None, run_id: str) -> pa.Table | None:
    if t is None:
        return None
    return t.append_column("run_id", pa.array([run_id] * t.num_rows, pa.string()))


def save_prune_results(
    store: Store,
    run_id: str,
    *,
    scores: pa.Table | None,
    selections: list[SelectionHeader],
    members: pa.Table | None,
    curve: pa.Table | None = None,
    semdedup: pa.Table | None = None,
) -> dict[str, int]:
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
        raise ValueError("duplicate selection ids in one prune run")
    created = now()
    tables: dict[str, pa.Table | None] = {"scores": _with_run(scores, run_id)}
    if selections:
        tables["selections"] = pa.table({
            "run_id": [run_id] * len(selections),
            "selection_id": ids,
            "source_id": pa.array([s.source_id for s in selections], pa.int32()),
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
    tables["selection_members"] = _with_run(members, run_id)
    tables["pruning_curve"] = _with_run(curve, run_id)
    tables["semdedup_report"] = _with_run(semdedup, run_id)
    return replace_run_rows(store, run_id, PRUNE_TABLES, {k: v for k, v in tables.items() if v is not None})


_CURVE_SCHEMA = pa.schema([("source_id", pa.int32()), ("metric", pa.string()), ("policy", pa.string()),
                           ("resolved_policy", pa.string()), ("fraction", pa.float64()), ("seed", pa.int32()),
                           ("n_kept", pa.int64()), ("accuracy", pa.float64())])
_SEMDEDUP_SCHEMA = pa.schema([("source_id", pa.int32()), ("eps", pa.float64()), ("n_pool", pa.int64()),
                              ("n_removed", pa.int64())])


def _members(sid: str, source_id: int, ids: np.ndarray, row_index: np.ndarray) -> pa.Table:
    k = ids.size
    return pa.table({"selection_id": pa.array([sid] * k, pa.string()), "example_id": pa.array(ids),
                     "source_id": pa.array(np.full(k, source_id, dtype=np.int32)), "row_index": pa.array(row_index)})


def save_prune(store: Store, run_id: str, outcome: "PruneOutcome") -> dict[str, int]:
    """Replace the run's rows in every prune table with ``outcome`` (one transaction); rows per table.

    Selection ids are ``<run_id>:<source>:<metric>:<policy>:<budget>``; a de-duplication's policy
    is ``dedup`` and its budget the threshold's spec (``rel=0.25``, ``eps=0.01``, ``exact``).
    """
    scores, headers, members, curve, sem = [], [], [], [], []
    for so in outcome.sources:
        res, ids, row_idx = so.result, so.example_ids, so.row_index
        for m, ms in res.scores.items():
            n = ms.scores.shape[0]
            scores.append(pa.table({
                "source_id": pa.array(np.full(n, so.source_id, dtype=np.int32)),
                "example_id": pa.array(ids),
                "metric": pa.array([m] * n, pa.string()),
                "seed": pa.array(np.full(n, outcome.seed, dtype=np.int32)),
                "score": pa.array(ms.scores.astype(np.float64)),
                "group_key": pa.array(ms.groups.astype(np.int32)) if ms.groups is not None else pa.nulls(n, pa.int32()),
            }))
        for rs in res.selections:
            sel = rs.selection
            sid = f"{run_id}:{so.name}:{rs.metric}:{rs.policy}:{rs.spec}"
            headers.append(SelectionHeader(sid, so.source_id, so.name, rs.metric, rs.policy, sel.resolved_policy,
                                           sel.balance, sel.fraction, rs.spec, sel.n, sel.budget, sel.reason))
            members.append(_members(sid, so.source_id, ids[sel.indices], row_idx[sel.indices]))
        for d in res.dedup:
            sid = f"{run_id}:{so.name}:{d.method}:dedup:{d.spec}"
            kept = np.flatnonzero(d.keep)
            reason = f"{d.reason}; removed {d.n_removed} of {d.n} ({d.n_removed / d.n:.1%})"
            headers.append(SelectionHeader(sid, so.source_id, so.name, d.method, "dedup", "dedup", "none",
                                           kept.size / d.n, d.spec, d.n, kept.size, reason))
            members.append(_members(sid, so.source_id, ids[kept], row_idx[kept]))
            if d.eps is not None:
                sem.append({"source_id": so.source_id, "eps": d.eps, "n_pool": d.n, "n_removed": d.n_removed})
        if res.curve is not None:
            curve += [{"source_id": so.source_id, "metric": p.metric, "policy": p.policy,
                       "resolved_policy": p.resolved_policy, "fraction": p.fraction, "seed": p.seed,
                       "n_kept": p.n_kept, "accuracy": p.accuracy} for p in res.curve.points]
    sem = list({(r["source_id"], r["eps"]): r for r in sem}.values())  # two specs may resolve to one eps
    return save_prune_results(
        store, run_id,
        scores=pa.concat_tables(scores) if scores else None,
        selections=headers,
        members=pa.concat_tables(members) if members else None,
        curve=pa.Table.from_pylist(curve, schema=_CURVE_SCHEMA) if curve else None,
        semdedup=pa.Table.from_pylist(sem, schema=_SEMDEDUP_SCHEMA) if sem else None,
    )


def save_perceptron(store: Store, run_id: str, results: pa.Table) -> None:
    """Replace the perceptron rows of ``run_id``; columns as in the ``perceptron_results`` table."""
    replace_run_rows(store, run_id, ["perceptron_results"], {"perceptron_results": _with_run(results, run_id)})


def list_selections(store: Store, run_id: str | None = None) -> list[dict[str, Any]]:
    """Selection headers (newest first), optionally of one run."""
    sql = ("SELECT selection_id, run_id, source_name, metric, policy, resolved_policy, balance, fraction, "
           "n_kept, n_pool, reason FROM selections")
    with store.read() as con:
        if run_id is None:
            return rows(con.execute(sql + " ORDER BY created_at DESC, selection_id"))
        out = rows(con.execute(sql + " WHERE run_id = ? ORDER BY selection_id", [run_id]))
        if not out and not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone():
            raise WinnowError(f"no run {run_id!r} in {store.path} (`winnow runs` lists them)")
        return out


def load_selection(store: Store, selection_id: str) -> tuple[dict[str, Any], pa.Table]:
    """Header and members (example_id, source_id, row_index; by example_id) of one selection.

    ``selection_id`` may also be ``latest:<source>:<metric>:<policy>:<budget>`` (newest such selection).
    """
    with store.read() as con:
        if selection_id.startswith("latest:"):
            parts = selection_id.split(":")
            if len(parts) != 5:
                raise WinnowError(f"{selection_id!r}: use latest:<source>:<metric>:<policy>:<f=0.3|n=1000>")
            found = rows(con.execute(
                "SELECT * FROM selections WHERE source_name = ? AND metric = ? AND policy = ? AND budget_spec = ? "
                "ORDER BY created_at DESC, selection_id LIMIT 1", parts[1:]))
        else:
            found = rows(con.execute("SELECT * FROM selections WHERE selection_id = ?", [selection_id]))
        if not found:
            known = [r[0] for r in con.execute(
                "SELECT selection_id FROM selections ORDER BY created_at DESC, selection_id LIMIT 5").fetchall()]
            hint = f" (recent: {', '.join(known)})" if known else " (no selections stored yet: run `winnow prune CONFIG`)"
            raise WinnowError(f"no selection {selection_id!r}{hint}")
        head = found[0]
        # no ORDER BY: members are stored in example_id order, so a plain scan (DuckDB keeps insertion
        # order) is usually sorted already; checking that is ~0.5 ms against ~4 ms for the SQL sort
        members = con.sql(
            "SELECT example_id, source_id, row_index FROM selection_members WHERE run_id = ? AND selection_id = ?",
            params=[head["run_id"], head["selection_id"]]).to_arrow_table()
    eid = members.column("example_id").to_numpy()
    if eid.size > 1 and not bool(np.all(eid[1:] >= eid[:-1])):
        members = members.take(np.argsort(eid, kind="stable"))
    return head, members


def load_removed(store: Store, selection_id: str) -> pa.Table:
    """The pool rows a selection left out (example_id, source_id, row_index; by example_id).

    For a de-duplication (policy ``dedup``) these are the removed duplicates. The pool is the
    selection's source's ``train`` rows, as in the prune stage. ``selection_id`` as in
    :func:`load_selection`.
    """
    head, _ = load_selection(store, selection_id)
    with store.read() as con:
        return con.sql(
            "SELECT e.example_id, e.source_id, e.row_index FROM examples e "
            "WHERE e.source_id = ? AND e.split = 'train' AND NOT EXISTS ("
            "  SELECT 1 FROM selection_members m WHERE m.run_id = ? AND m.selection_id = ? "
            "  AND m.example_id = e.example_id) ORDER BY e.example_id",
            params=[head["source_id"], head["run_id"], head["selection_id"]]).to_arrow_table()


def load_scores(store: Store, run_id: str, metric: str | None = None) -> pa.Table:
    with store.read() as con:
        if metric is None:
            return con.sql("SELECT * FROM scores WHERE run_id = ? ORDER BY metric, seed, example_id",
                           params=[run_id]).to_arrow_table()
        return con.sql("SELECT * FROM scores WHERE run_id = ? AND metric = ? ORDER BY seed, example_id",
                       params=[run_id, metric]).to_arrow_table()


def load_pruning_curve(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as con:
        return rows(con.execute(
            "SELECT * FROM pruning_curve WHERE run_id = ? ORDER BY source_id, metric, policy, fraction DESC, seed", [run_id]))


def load_pruning_curve_summary(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as con:
        return rows(con.execute(
            "SELECT * FROM pruning_curve_summary WHERE run_id = ? ORDER BY source_id, metric, policy, fraction DESC", [run_id]))


def load_perceptron_summary(store: Store, run_id: str) -> list[dict[str, Any]]:
    with store.read() as con:
        return rows(con.execute(
            "SELECT * FROM perceptron_summary WHERE run_id = ? ORDER BY alpha_tot, fraction DESC, policy", [run_id]))
