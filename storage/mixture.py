"""Mixture-stage tables: pools, OT values and sweeps, pilot results, predictor fits and validation,
extrapolations and the chosen mixture.

Every save is idempotent: :func:`save_mixture` deletes the run's rows from every mixture table and
inserts the new ones in ONE transaction (a rerun of the same config replaces them). Rows go in as
registered Arrow tables. Mixtures are stored as ``p DOUBLE[]`` (one weight per pool, in the order
of ``mixture_pools.pool_index``).

Views
-----
- ``mixture_surface``: median pilot accuracy per (run, N, mixture) next to its weighted OT value.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from storage.db import Store, replace_run_rows

if TYPE_CHECKING:  # the outcome type only
    from tasks.mixture.outcome import MixtureOutcome

MIXTURE_TABLES = (
    "mixture_pools", "ot_distances", "ot_sweeps", "pilot_results", "predictor_fits",
    "predictor_validation", "mixture_extrapolations", "mixture_selections",
)


def _f(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _plist(p: Any) -> list[float]:
    return [float(v) for v in np.asarray(p, dtype=np.float64).ravel()]


def _tables(o: MixtureOutcome, run_id: str) -> dict[str, pa.Table]:
    t: dict[str, list[dict]] = {name: [] for name in MIXTURE_TABLES}
    for i, pool in enumerate(o.pools):
        t["mixture_pools"].append(dict(run_id=run_id, pool_index=i, pool=pool.name, source=pool.source,
                                       n_rows=pool.n_rows, class_counts=json.dumps(pool.class_counts)))
    for rec in o.sweeps:
        s = rec.sweep
        t["ot_sweeps"].append(dict(run_id=run_id, sweep=rec.label, solver=s.solver, mode=s.mode, reg=float(s.reg),
                                   n_mixtures=len(s.values), setup_seconds=float(s.setup_seconds), total_seconds=s.total_seconds))
        for g in range(len(s.values)):
            grad = None if np.isnan(s.grads[g]).any() else _plist(s.grads[g])
            t["ot_distances"].append(dict(run_id=run_id, sweep=rec.label, mixture_id=g, p=_plist(s.grid[g]), solver=s.solver,
                                          reg=float(s.reg if s.regs is None else s.regs[g]), n=rec.n, value=float(s.values[g]), grad=grad,
                                          seconds=float(s.seconds[g]), n_iter=int(s.n_iter[g])))
    for kind, rows in (("pilot", o.pilots), ("target", o.target_runs), *o.final_runs.items()):
        for r in rows:
            t["pilot_results"].append(dict(run_id=run_id, kind=kind, mixture_id=r.mixture_id, p=_plist(r.p), n=r.n, rep=r.rep,
                                           seed=int(r.seed), metric="accuracy", value=float(r.accuracy), seconds=float(r.seconds)))
    for f in o.fits:
        t["predictor_fits"].append(dict(run_id=run_id, n=f.n, form=f.form, coefficients=json.dumps(f.as_dict()),
                                        ridge=float(f.ridge), train_rmse=float(f.train_rmse), chosen=f.form == o.chosen_form))
    for v in o.validation:
        t["predictor_validation"].append(dict(run_id=run_id, n=v.n, form=v.form, split=v.split, mae=v.mae, rmse=v.rmse,
                                              r2=_f(v.r2), n_train=v.n_train, n_test=v.n_test))
    for e in o.extrapolations:
        t["mixture_extrapolations"].append(dict(run_id=run_id, mixture_id=e.mixture_id, p=_plist(e.p), n_target=e.n_target,
                                                method=e.method, basis=e.source, predicted=float(e.predicted), measured=_f(e.measured)))
    if o.selection is not None:
        s = o.selection
        r = s.result
        t["mixture_selections"].append(dict(
            run_id=run_id, p=_plist(r.p), n_target=r.n_target, form=s.form, extrapolation=s.extrapolation,
            predicted=float(r.predicted), predicted_lo=_f(r.lo), predicted_hi=_f(r.hi), measured=_f(s.measured),
            best_grid_p=None if s.best_grid_p is None else _plist(s.best_grid_p), best_grid_measured=_f(s.best_grid_measured),
            regret=_f(s.regret), best_pilot_grid_p=None if s.best_pilot_grid_p is None else _plist(s.best_pilot_grid_p),
            pilot_pick_regret=_f(s.pilot_pick_regret), path=json.dumps(np.round(r.path, 6).tolist()),
        ))
    return {name: pa.Table.from_pylist(rows) for name, rows in t.items() if rows}


def save_mixture(store: Store, run_id: str, outcome: MixtureOutcome) -> dict[str, int]:
    """Replace the run's rows in every mixture table with ``outcome`` (one transaction); returns rows per table."""
    return replace_run_rows(store, run_id, MIXTURE_TABLES, _tables(outcome, run_id))


def _rows(store: Store, sql: str, params: list[Any]) -> list[dict]:
    with store.read() as con:
        cur = con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def load_pilot_results(store: Store, run_id: str, kind: str = "pilot") -> list[dict]:
    return _rows(store, "SELECT * FROM pilot_results WHERE run_id = ? AND kind = ? ORDER BY n, mixture_id, rep", [run_id, kind])


def load_selection(store: Store, run_id: str) -> dict | None:
    rows = _rows(store, "SELECT * FROM mixture_selections WHERE run_id = ?", [run_id])
    return rows[0] if rows else None
