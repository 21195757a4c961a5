"""Scaling-law tables: ``fits`` (one row per fitted curve) and ``predictions`` (its predictions).

Both are keyed by ``run_id``; :func:`save_fits` replaces a run's rows in one transaction
(delete-then-insert), so a rerun of the same config leaves exactly one copy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from storage.db import Store


FIT_COLUMNS = (
    "run_id", "fit_key", "form", "formula", "x_col", "x2_col", "y_col", "space", "n_points", "n_groups",
    "n_starts", "loss", "stable", "warning", "params", "param_ci", "bootstrap", "level", "holdout_largest",
    "holdout_are", "holdout_rmsle", "baseline_are", "beats_baseline", "selection", "plot_path", "created_at",
)
PRED_COLUMNS = ("run_id", "fit_key", "kind", "x", "x2", "y_pred", "y_lo", "y_hi", "y_obs", "level")


@dataclass(frozen=True)
class PredictionRow:
    kind: str
    x: float
    x2: float | None
    y_pred: float | None
    y_lo: float | None = None
    y_hi: float | None = None
    y_obs: float | None = None


@dataclass(frozen=True)
class FitRecord:
    """One fitted curve as stored (built by the flow from a ``tasks.scaling.api.FitReport``)."""

    fit_key: str
    form: str
    formula: str
    x_col: str
    x2_col: str | None
    y_col: str
    space: str
    n_points: int
    n_groups: int
    n_starts: int
    loss: float
    stable: bool
    warning: str | None
    params: dict[str, float]
    param_ci: dict[str, tuple[float, float]]
    bootstrap: int
    level: float
    holdout_largest: int
    holdout_are: float | None = None
    holdout_rmsle: float | None = None
    baseline_are: dict[str, float] | None = None
    beats_baseline: bool | None = None
    selection: str | None = None
    plot_path: str | None = None
    predictions: list[PredictionRow] = field(default_factory=list)


def _num(v: float | None) -> float | None:
    """NaN/inf -> NULL (and JSON null); plain float otherwise."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _json(obj: object) -> str:
    def clean(o: object) -> object:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, float):
            return _num(o)
        return o

    return json.dumps(clean(obj), sort_keys=True)


def save_fits(store: Store, run_id: str, records: list[FitRecord]) -> None:
    """Replace the run's rows in ``fits`` and ``predictions`` with ``records`` (one transaction)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    keys = [r.fit_key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate fit_key in one run: {keys}")
    fit_rows = [
        [
            run_id, r.fit_key, r.form, r.formula, r.x_col, r.x2_col, r.y_col, r.space, int(r.n_points),
            int(r.n_groups), int(r.n_starts), float(r.loss), bool(r.stable), r.warning, _json(r.params),
            _json({k: list(v) for k, v in r.param_ci.items()}), int(r.bootstrap), float(r.level),
            int(r.holdout_largest), _num(r.holdout_are), _num(r.holdout_rmsle),
            None if r.baseline_are is None else _json(r.baseline_are),
            None if r.beats_baseline is None else bool(r.beats_baseline), r.selection, r.plot_path, now,
        ]
        for r in records
    ]
    pred_rows = [
        [run_id, r.fit_key, p.kind, float(p.x), _num(p.x2), _num(p.y_pred), _num(p.y_lo), _num(p.y_hi), _num(p.y_obs), float(r.level)]
        for r in records
        for p in r.predictions
    ]
    with store.write() as con:
        con.execute("DELETE FROM predictions WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM fits WHERE run_id = ?", [run_id])
        if fit_rows:
            con.executemany(f"INSERT INTO fits ({', '.join(FIT_COLUMNS)}) VALUES ({', '.join('?' * len(FIT_COLUMNS))})", fit_rows)
        if pred_rows:
            con.executemany(
                f"INSERT INTO predictions ({', '.join(PRED_COLUMNS)}) VALUES ({', '.join('?' * len(PRED_COLUMNS))})", pred_rows
            )


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def load_fits(store: Store, run_id: str) -> list[dict]:
    """The run's fits, JSON columns decoded, ordered by fit_key."""
    with store.read() as con:
        rows = _dicts(con.execute("SELECT * FROM fits WHERE run_id = ? ORDER BY fit_key", [run_id]))
    for r in rows:
        for c in ("params", "param_ci", "baseline_are"):
            if r[c] is not None:
                r[c] = json.loads(r[c])
    return rows


def load_predictions(store: Store, run_id: str, fit_key: str | None = None) -> list[dict]:
    """The run's predictions (optionally of one fit), ordered by fit_key, kind, x, x2."""
    sql = "SELECT * FROM predictions WHERE run_id = ?"
    args: list = [run_id]
    if fit_key is not None:
        sql += " AND fit_key = ?"
        args.append(fit_key)
    with store.read() as con:
        return _dicts(con.execute(sql + " ORDER BY fit_key, kind, x, x2", args))
