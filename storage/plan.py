"""Planner tables: the plan per run, its sources, alternatives, candidates, trainings and example ids.

Every save is idempotent: :func:`save_plan` deletes the run's rows from every plan table and inserts
the new ones in ONE transaction. One plan per run (the plan id is the run id); its example ids are
in ``plan_members`` and export like a selection (``winnow export <run_id> --to plan.parquet``).

Views
-----
- ``plan_report``: one row per alternative with predicted interval, measured accuracy and whether
  the interval contained it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from storage.db import Store, now, replace_run_rows
from tasks.errors import WinnowError

if TYPE_CHECKING:  # the outcome type only: listing plans must not import the planner (and torch)
    from tasks.plan.outcome import PlanOutcome

PLAN_TABLES = ("plan_runs", "plan_sources", "plan_options", "plan_candidates", "plan_trials", "plan_alternatives",
               "plan_members", "plan_predictor_validation")


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _tables(run_id: str, o: PlanOutcome) -> dict[str, pa.Table]:
    K = len(o.pools)
    chosen = o.chosen
    rid = lambda n: pa.array([run_id] * n, pa.string())  # noqa: E731
    t: dict[str, pa.Table] = {}
    t["plan_runs"] = pa.table({
        "run_id": rid(1), "target_n": [o.target_n], "budget": pa.array([o.budget], pa.float64()), "pools": [o.pools],
        "predictor_form": [o.screen.form], "predictor_mae": [o.screen.holdout_mae()], "predicted": [chosen.predicted],
        "lo": [chosen.lo], "hi": [chosen.hi], "level": [float(o.settings.get("level", 0.95))],
        "measured": pa.array([_nan_to_none(chosen.measured)], pa.float64()), "n_enumerated": [o.candidates.n_enumerated],
        "n_candidates": [len(o.candidates)], "rejected": [json.dumps(o.candidates.rejected)],
        "settings": [json.dumps(o.settings)], "seconds": [json.dumps({k: round(v, 3) for k, v in o.seconds.items()})],
        "created_at": pa.array([now()], pa.timestamp("us")),
    })
    t["plan_sources"] = pa.table({
        "run_id": rid(K), "pool_index": list(range(K)), "pool": [s.pool for s in o.plan], "source": [s.source for s in o.plan],
        "policy": [s.policy for s in o.plan], "keep_fraction": [s.fraction for s in o.plan], "n_pool": [s.n_pool for s in o.plan],
        "n_available": [s.n_available for s in o.plan], "n_taken": [s.n_taken for s in o.plan], "p": [s.p for s in o.plan],
        "cost_per_example": [s.cost for s in o.plan],
    })
    opts = [(i, j, op) for i, ops in enumerate(o.options) for j, op in enumerate(ops)]
    t["plan_options"] = pa.table({
        "run_id": rid(len(opts)), "pool_index": [i for i, _, _ in opts], "option_index": [j for _, j, _ in opts],
        "label": [op.label for _, _, op in opts], "policy": [op.policy for _, _, op in opts],
        "keep_fraction": [op.fraction for _, _, op in opts], "n_kept": [op.size for _, _, op in opts],
        "reason": [op.reason for _, _, op in opts],
    })
    C = len(o.candidates)
    design = np.zeros(C, dtype=bool)
    design[o.design] = True
    t["plan_candidates"] = pa.table({
        "run_id": rid(C), "candidate_id": np.arange(C, dtype=np.int32),
        "options": pa.array(o.candidates.options.astype(np.int32).tolist(), pa.list_(pa.int32())),
        "p": pa.array(o.candidates.p.tolist(), pa.list_(pa.float64())),
        "counts": pa.array(o.candidates.counts.tolist(), pa.list_(pa.int64())),
        "ot": o.candidate_ot.astype(np.float64), "screen": o.candidate_screen.astype(np.float64), "design": design,
    })
    tr = o.trials
    t["plan_trials"] = pa.table({
        "run_id": rid(len(tr)), "key": [r.key for r in tr], "stage": [r.stage for r in tr], "n": [r.n for r in tr],
        "rep": [r.rep for r in tr], "seed": pa.array([r.seed for r in tr], pa.uint64()),
        "accuracy": [r.accuracy for r in tr], "seconds": [r.seconds for r in tr],
    })
    al = o.alternatives
    t["plan_alternatives"] = pa.table({
        "run_id": rid(len(al)), "name": [a.name for a in al], "role": [a.role for a in al], "key": [a.key for a in al],
        "options": [a.options for a in al], "p": [a.p for a in al], "counts": [a.counts for a in al],
        "n_taken": [int(sum(a.counts)) for a in al], "ot": [a.ot for a in al], "screen": [a.screen for a in al],
        "predicted": [a.predicted for a in al], "lo": [a.lo for a in al], "hi": [a.hi for a in al],
        "boot_lo": pa.array([_nan_to_none(a.boot_lo) for a in al], pa.float64()),
        "boot_hi": pa.array([_nan_to_none(a.boot_hi) for a in al], pa.float64()),
        "measured": pa.array([_nan_to_none(a.measured) for a in al], pa.float64()),
        "measured_std": pa.array([_nan_to_none(a.measured_std) for a in al], pa.float64()),
        "n_measured": [a.n_measured for a in al], "contained": pa.array([a.contained for a in al], pa.bool_()),
        "note": [a.note for a in al],
    })
    ids = np.asarray(o.members["example_id"], dtype=np.int64)
    t["plan_members"] = pa.table({
        "run_id": rid(ids.size), "example_id": ids, "source_id": (ids >> 32).astype(np.int32),
        "row_index": ids & 0xFFFFFFFF, "pool": pa.array(list(o.members["pool"]), pa.string()),
    })
    v = o.screen.validation
    t["plan_predictor_validation"] = pa.table({
        "run_id": rid(len(v)), "form": [r.form for r in v], "split": [r.split for r in v], "n": [r.n for r in v],
        "mae": [r.mae for r in v], "rmse": [r.rmse for r in v], "r2": pa.array([_nan_to_none(r.r2) for r in v], pa.float64()),
        "chosen": [r.form == o.screen.form for r in v],
    })
    return t


def save_plan(store: Store, run_id: str, outcome: PlanOutcome) -> dict[str, int]:
    """Replace the run's plan rows in one transaction; returns rows written per table."""
    return replace_run_rows(store, run_id, PLAN_TABLES, _tables(run_id, outcome))


def _dicts(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def is_plan(store: Store, plan_id: str) -> bool:
    """Whether ``plan_id`` names a stored plan (a run id of the plan stage)."""
    if not store.exists:
        return False
    with store.read() as con:
        return bool(con.execute("SELECT count(*) FROM plan_runs WHERE run_id = ?", [plan_id]).fetchall()[0][0])


def load_plan(store: Store, plan_id: str) -> dict[str, Any]:
    """The plan header, its sources and alternatives (dicts), or a WinnowError listing recent plans."""
    with store.read() as con:
        head = _dicts(con.execute("SELECT * FROM plan_runs WHERE run_id = ?", [plan_id]))
        if not head:
            recent = [r[0] for r in con.execute("SELECT run_id FROM plan_runs ORDER BY created_at DESC LIMIT 5").fetchall()]
            hint = f" (recent: {', '.join(recent)})" if recent else " (no plans stored yet: run `winnow plan CONFIG`)"
            raise WinnowError(f"no plan {plan_id!r}{hint}")
        sources = _dicts(con.execute("SELECT * FROM plan_sources WHERE run_id = ? ORDER BY pool_index", [plan_id]))
        alts = _dicts(con.execute(
            "SELECT * FROM plan_alternatives WHERE run_id = ? ORDER BY CASE role WHEN 'plan' THEN 0 WHEN 'finalist' THEN 1 ELSE 2 END, name",
            [plan_id]))
    return {"plan": head[0], "sources": sources, "alternatives": alts}


def load_plan_members(store: Store, plan_id: str) -> tuple[dict[str, Any], pa.Table]:
    """(header, members) of a plan in the shape of :func:`storage.prune.load_selection`:
    members = example_id, source_id, row_index (+ pool), ordered by example_id."""
    info = load_plan(store, plan_id)
    with store.read() as con:
        members = con.sql("SELECT example_id, source_id, row_index, pool FROM plan_members WHERE run_id = ? ORDER BY example_id",
                          params=[plan_id]).to_arrow_table()
    return info["plan"], members


def list_plans(store: Store) -> list[dict[str, Any]]:
    with store.read() as con:
        return _dicts(con.execute(
            "SELECT run_id, target_n, predicted, lo, hi, measured, predictor_form, n_candidates, created_at "
            "FROM plan_runs ORDER BY created_at DESC"))
