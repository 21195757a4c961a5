"""Scaling curves of the mixture stage's pilots: one law per mixture, in error space ``1 - accuracy``.

The pipeline's ``extrapolate`` stage (flows/fit.py) loads the run's ``pilot_results``, turns them
into columns with :func:`pilots_from_rows`, fits them with :func:`extrapolate_pilots` and stores the
:class:`PilotFit` s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from configs.scaling import ExtrapolateConfig
from tasks.errors import WinnowError
from tasks.scaling.api import FitReport, fit_report


@dataclass(frozen=True)
class PilotFit:
    """The fit of one mixture's pilot curve (``report`` None when it was skipped, with ``note``)."""

    key: str
    report: FitReport | None
    note: str | None


def _columns(pilots: Any) -> dict[str, np.ndarray]:
    if hasattr(pilots, "column_names"):  # pyarrow Table
        return {c: np.asarray(pilots.column(c).to_pylist()) for c in pilots.column_names}
    if isinstance(pilots, Mapping):
        return {k: np.asarray(v) for k, v in pilots.items()}
    raise ValueError(f"pilots must be a pyarrow Table or a mapping of columns, got {type(pilots).__name__}")


def extrapolate_pilots(
    pilots: Any,
    cfg: ExtrapolateConfig,
    *,
    key_col: str = "mixture",
    size_col: str = "size",
    accuracy_col: str = "accuracy",
    group_col: str | None = "seed",
) -> list[PilotFit]:
    """Fit one scaling curve per mixture to pilot results, in error space ``1 - accuracy``.

    Parameters
    ----------
    pilots : pyarrow Table or mapping of columns with ``key_col`` (mixture name), ``size_col``
        (training-set size, > 0), ``accuracy_col`` (in [0, 1]) and optionally ``group_col`` (the
        pilot run, e.g. its seed: the bootstrap resamples whole runs).
    cfg : the ``extrapolate`` section (form, target sizes, bootstrap, hold-out, Huber delta, seed).

    A mixture whose pilots have too few scales for the configured hold-out is fitted without
    validation (noted); one with a zero error (accuracy 1) is skipped (noted): log space needs y > 0.
    """
    cols = _columns(pilots)
    for c in (key_col, size_col, accuracy_col):
        if c not in cols:
            raise ValueError(f"pilot results have no column {c!r} (columns: {', '.join(cols)})")
    keys = cols[key_col].astype(str)
    size = cols[size_col].astype(np.float64)
    acc = cols[accuracy_col].astype(np.float64)
    if ((acc < 0) | (acc > 1) | ~np.isfinite(acc)).any():
        raise ValueError(f"pilot column {accuracy_col!r} must hold accuracies in [0, 1]")
    groups_all = cols[group_col].astype(str) if group_col and group_col in cols else None
    out: list[PilotFit] = []
    for key in sorted(set(keys.tolist())):
        m = keys == key
        err = 1.0 - acc[m]
        if (err <= 0).any():
            out.append(PilotFit(key, None, f"skipped: error 0 (accuracy 1) at size {size[m][err <= 0][0]:g}; a power law in log space needs error > 0"))
            continue
        g = None if groups_all is None else np.char.add(groups_all[m], "")
        note = None
        kwargs = dict(x2=None, groups=g, bootstrap=cfg.bootstrap, predict_at=cfg.target_sizes, seed=cfg.seed,
                      huber_delta=cfg.huber_delta, level=cfg.level)
        try:
            rep = fit_report(size[m], err, form=cfg.form, holdout_largest=cfg.holdout_largest, candidates=cfg.candidates, **kwargs)
        except WinnowError as e:
            too_few = any(msg in str(e) for msg in ("cannot hold out", "no candidate form", "distinct x values"))
            if cfg.holdout_largest == 0 or not too_few:
                out.append(PilotFit(key, None, f"skipped: {e}"))
                continue
            form = "m2" if cfg.form == "auto" else cfg.form
            note = f"not validated ({e}); fitted {form} on all points"
            try:
                rep = fit_report(size[m], err, form=form, holdout_largest=0, **kwargs)
            except WinnowError as e2:
                out.append(PilotFit(key, None, f"skipped: {e2}"))
                continue
        out.append(PilotFit(key, _at_most_one(rep), note))
    return out


def _at_most_one(rep: FitReport) -> FitReport:
    """An error rate is at most 1: clip predictions and interval ends above it (a law in log space knows
    no ceiling), and say so in the interval method."""
    if rep.predictions is None or not np.any(np.concatenate([rep.predictions, rep.pred_hi]) > 1.0):
        return rep
    return replace(rep, predictions=np.minimum(rep.predictions, 1.0), pred_lo=np.minimum(rep.pred_lo, 1.0),
                   pred_hi=np.minimum(rep.pred_hi, 1.0), interval_method=rep.interval_method + "; clipped at error 1")


def pilots_from_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """Columns for :func:`extrapolate_pilots` from ``storage.mixture.load_pilot_results`` rows
    (mixture_id, n, rep, metric, value): one curve per mixture; each pilot is its own run. A pilot's
    seed is drawn from (mixture, n, rep) (:func:`tasks.mixture.pilots.pilot_seed`), so repetition r at
    two sizes shares nothing: grouping by ``rep`` gave the run bootstrap only ``reps`` units (3 by
    default), and its intervals covered 70-75 % at a nominal 90 %."""
    acc = [r for r in rows if r["metric"] == "accuracy"]
    return {
        "mixture": np.array([f"mixture-{int(r['mixture_id'])}" for r in acc], dtype=object),
        "size": np.array([float(r["n"]) for r in acc]),
        "accuracy": np.array([float(r["value"]) for r in acc]),
        "seed": np.array([f"{int(r['n'])}-{int(r['rep'])}" for r in acc], dtype=object),
    }
