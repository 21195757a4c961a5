"""Public entry points for scaling-law extrapolation.

:func:`fit_curve` is the contract other stages call (see the briefing): fit one form, optionally
bootstrap it by run, and predict at target sizes with percentile intervals.
:func:`fit_report` is what ``winnow fit`` runs: optional automatic form choice by held-out error,
rolling-origin validation against naive baselines, then the final fit on all points.

>>> import numpy as np
>>> x = np.geomspace(1e3, 1e6, 12)
>>> fit = fit_curve(x, 0.5 + 40.0 * x ** -0.5, form="m2", predict_at=[1e8])
>>> round(fit.params["c"], 4), round(float(fit.predictions[0]), 4)
(0.5, 0.504)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.scaling.bootstrap import bootstrap_fit, group_index
from tasks.scaling.fit import fit_form
from tasks.scaling.forms import get_form
from tasks.scaling.validate import Selection, Validation, holdout_mask, rolling_origin, select_form

Array = np.ndarray


@dataclass(frozen=True)
class CurveFit:
    """A fitted form with (approximate, run-bootstrap percentile) intervals.

    ``predictions``, ``pred_lo``, ``pred_hi`` are aligned with ``predict_at`` (and ``predict_at_x2``
    for two-variable forms); intervals are NaN when ``bootstrap == 0``. ``theta`` holds the fit
    coordinates of the point estimate and ``boot_theta`` (B, p) those of the replicates.
    """

    form: str
    params: dict[str, float]
    param_ci: dict[str, tuple[float, float]]
    predictions: Array
    pred_lo: Array
    pred_hi: Array
    loss: float
    n_starts: int
    stable: bool
    warning: str | None
    predict_at: Array
    predict_at_x2: Array | None
    theta: Array
    boot_theta: Array | None
    n_points: int
    n_groups: int
    bootstrap: int
    level: float
    spread: dict[str, float]
    seconds: float


def split_targets(predict_at: Sequence[float] | Array, predict_at_x2: Sequence[float] | Array | None, n_vars: int) -> tuple[Array, Array | None]:
    """Prediction points as ``(x (k,), x2 (k,) | None)``; a clear error if they do not suit the form."""
    p = np.asarray(predict_at, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] != 2 or predict_at_x2 is not None:
            raise WinnowError(f"predict_at of shape {p.shape}: give (k,) sizes, or (k, 2) pairs for a two-variable form")
        p, p2 = p[:, 0], p[:, 1]
    else:
        p = p.ravel()
        p2 = None if predict_at_x2 is None else np.asarray(predict_at_x2, dtype=np.float64).ravel()
    if n_vars == 2 and p.size and (p2 is None or p2.shape != p.shape):
        raise WinnowError("a two-variable form needs each prediction point as a pair (x, x2), e.g. --predict 1.4e9:2.8e10")
    if n_vars == 1 and p2 is not None and p2.size:
        raise WinnowError("a one-variable form takes prediction sizes, not pairs")
    if p.size and (not np.isfinite(p).all() or (p <= 0).any()):
        raise WinnowError(f"prediction sizes must be finite and > 0, got {p.tolist()}")
    return p, (p2 if n_vars == 2 else None)


def fit_curve(
    x: Sequence[float] | Array,
    y: Sequence[float] | Array,
    *,
    form: str = "m2",
    x2: Sequence[float] | Array | None = None,
    groups: Sequence | Array | None = None,
    bootstrap: int = 0,
    predict_at: Sequence[float] | Array = (),
    seed: int = 0,
    huber_delta: float = 1e-3,
    level: float = 0.95,
    predict_at_x2: Sequence[float] | Array | None = None,
) -> CurveFit:
    """Fit ``form`` to ``(x[, x2], y)`` and predict at ``predict_at``.

    Parameters
    ----------
    x : (n,) sizes (data, parameters, steps or compute), > 0. For two-variable forms: N.
    y : (n,) values to fit, > 0, in error space (loss or 1 - accuracy), never accuracy.
    form : registered form name (:data:`tasks.scaling.forms.FORMS`); "m1" is the pure power law.
    x2 : (n,) second variable for two-variable forms (D for chinchilla/gadre).
    groups : (n,) run label per point; the bootstrap resamples whole runs.
    bootstrap : number of bootstrap replicates (0 = none, intervals NaN).
    predict_at : (k,) sizes, or (k, 2) pairs for a two-variable form.
    seed : seed of the bootstrap resampling.
    huber_delta : Huber threshold on log residuals.
    level : central coverage of the intervals.
    """
    f = get_form(form)
    if bootstrap < 0:
        raise WinnowError(f"bootstrap={bootstrap} must be >= 0")
    px, px2 = split_targets(predict_at, predict_at_x2, f.n_vars)
    x_arr = np.asarray(x, dtype=np.float64).ravel()
    x2_arr = None if x2 is None else np.asarray(x2, dtype=np.float64).ravel()
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    ms = fit_form(f, x_arr, y_arr, x2_arr, delta=huber_delta)
    preds = f.predict(ms.theta, px, px2) if px.size else np.empty(0)
    nan_ci = {n: (float("nan"), float("nan")) for n in f.names}
    lo = hi = np.full(px.size, np.nan)
    boot_theta = None
    n_groups = group_index(None if groups is None else np.asarray(groups), x_arr.size)[1]
    if bootstrap:
        b = bootstrap_fit(
            f, x_arr, y_arr, ms.theta, x2=x2_arr, groups=None if groups is None else np.asarray(groups),
            n_boot=bootstrap, seed=seed, delta=huber_delta, level=level, predict_x=px, predict_x2=px2,
        )
        nan_ci, lo, hi, boot_theta = b.param_ci, b.pred_lo, b.pred_hi, b.theta
    return CurveFit(
        form=f.name,
        params=ms.params,
        param_ci=nan_ci,
        predictions=np.asarray(preds, dtype=np.float64),
        pred_lo=np.asarray(lo, dtype=np.float64),
        pred_hi=np.asarray(hi, dtype=np.float64),
        loss=ms.loss,
        n_starts=ms.n_starts,
        stable=ms.stable,
        warning=ms.warning,
        predict_at=px,
        predict_at_x2=px2,
        theta=ms.theta,
        boot_theta=boot_theta,
        n_points=int(x_arr.size),
        n_groups=n_groups,
        bootstrap=bootstrap,
        level=level,
        spread=ms.spread,
        seconds=ms.seconds,
    )


@dataclass(frozen=True)
class FitReport:
    """Everything ``winnow fit`` prints and stores: the final fit, validation and form choice."""

    fit: CurveFit
    validation: Validation | None
    selection: Selection | None
    holdout_mask: Array | None  # (n,) True for the points held out in validation (origin 0)
    x: Array  # (n,) the data that were fitted
    y: Array
    x2: Array | None


def fit_report(
    x: Sequence[float] | Array,
    y: Sequence[float] | Array,
    *,
    form: str = "auto",
    x2: Sequence[float] | Array | None = None,
    groups: Sequence | Array | None = None,
    holdout_largest: int = 1,
    bootstrap: int = 0,
    predict_at: Sequence[float] | Array = (),
    predict_at_x2: Sequence[float] | Array | None = None,
    seed: int = 0,
    huber_delta: float = 1e-3,
    level: float = 0.95,
    candidates: Sequence[str] | None = None,
) -> FitReport:
    """Validate (rolling origin, ``holdout_largest`` scales), choose the form if ``form == "auto"``,
    then fit it on all points with bootstrap intervals and predictions.

    ``form="auto"`` needs ``holdout_largest >= 1``: forms are ranked by held-out error only.
    """
    x_arr = np.asarray(x, dtype=np.float64).ravel()
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    x2_arr = None if x2 is None else np.asarray(x2, dtype=np.float64).ravel()
    if holdout_largest < 0:
        raise WinnowError(f"holdout_largest={holdout_largest} must be >= 0")
    selection = validation = None
    if form == "auto":
        if holdout_largest < 1:
            raise WinnowError("form 'auto' chooses by held-out error: set holdout_largest >= 1 (--holdout-largest 1)")
        selection = select_form(x_arr, y_arr, x2_arr, candidates=candidates, holdout_largest=holdout_largest, delta=huber_delta)
        form = selection.form
        validation = selection.validations[form]
    else:
        f = get_form(form)
        if f.n_vars == 2 and x2_arr is None:
            raise WinnowError(f"form {form!r} takes two variables ({', '.join(f.x_names)}); pass x2 (--x2 COL)")
        if holdout_largest:
            validation = rolling_origin(form, x_arr, y_arr, x2_arr, holdout_largest=holdout_largest, delta=huber_delta)
    mask = None
    if validation is not None:
        mask = holdout_mask(x_arr, holdout_largest)[1]
    fit = fit_curve(
        x_arr, y_arr, form=form, x2=x2_arr, groups=groups, bootstrap=bootstrap, predict_at=predict_at,
        predict_at_x2=predict_at_x2, seed=seed, huber_delta=huber_delta, level=level,
    )
    return FitReport(fit=fit, validation=validation, selection=selection, holdout_mask=mask, x=x_arr, y=y_arr, x2=x2_arr)
