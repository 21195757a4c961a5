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
from tasks.scaling.fit import distinct_points, fit_form
from tasks.scaling.forms import Form, get_form
from tasks.scaling.validate import (
    NAIVE, Selection, Validation, baseline_predictions, holdout_mask, rolling_origin, scale_of, scale_sign, select_form, short_curve_prior,
)

Array = np.ndarray
AUTO_ORIGINS = 4  # rolling origins of auto's held-out check on a long curve


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
    near_lo: Array | None = None  # (k,) range of the near-optimal solutions' predictions
    near_hi: Array | None = None
    n_near: int = 1
    unpinned: tuple[str, ...] = ()  # parameters the data do not pin down (near-optimal spread)
    prior: dict[str, tuple[float, float]] | None = None  # exponent prior used on a short curve


def split_targets(predict_at: Sequence[float] | Array, predict_at_x2: Sequence[float] | Array | None, n_vars: int) -> tuple[Array, Array | None]:
    """Prediction points as ``(x (k,), x2 (k,) | None)``; a clear error if they do not suit the form."""
    p = np.asarray(predict_at, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] not in (2, 3) or predict_at_x2 is not None:
            raise WinnowError(f"predict_at of shape {p.shape}: give (k,) sizes, (k, 2) pairs N:D or (k, 3) triples N:D:U")
        p, p2 = p[:, 0], (p[:, 1] if p.shape[1] == 2 else p[:, 1:])
    else:
        p = p.ravel()
        p2 = None
        if predict_at_x2 is not None:
            p2 = np.asarray(predict_at_x2, dtype=np.float64)
            p2 = p2 if p2.ndim == 2 else p2.ravel()
    if n_vars == 2 and p.size and (p2 is None or p2.shape != p.shape):
        raise WinnowError("a two-variable form needs each prediction point as a pair (x, x2), e.g. --predict 1.4e9:2.8e10")
    if n_vars == 3 and p.size and (p2 is None or p2.shape != (p.size, 2)):
        raise WinnowError("a data-constrained form needs each prediction point as N:D:U (parameters, tokens seen, unique tokens), "
                          "e.g. --predict 1e9:1e11:1e10")
    if n_vars == 1 and p2 is not None and p2.size:
        raise WinnowError("a one-variable form takes prediction sizes, not pairs")
    for v in (p, p2):
        if v is not None and v.size and (not np.isfinite(v).all() or (v <= 0).any()):
            raise WinnowError(f"prediction sizes must be finite and > 0, got {v.tolist()}")
    return p, (p2 if n_vars >= 2 else None)


def fit_curve(
    x: Sequence[float] | Array, y: Sequence[float] | Array, *, form: str = "m2", x2: Sequence[float] | Array | None = None,
    groups: Sequence | Array | None = None, bootstrap: int = 0, predict_at: Sequence[float] | Array = (), seed: int = 0,
    huber_delta: float = 1e-3, level: float = 0.95, predict_at_x2: Sequence[float] | Array | None = None,
    prior: dict[str, tuple[float, float]] | None = None,
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
    prior : ``{name: (mean, sd)}`` Gaussian prior on fit coordinates (short curves).

    With ``bootstrap > 0`` the prediction interval is the hull of the bootstrap percentile interval
    and the range of the near-optimal solutions' predictions (``near_lo``/``near_hi``, always set):
    when the data do not pin a parameter down (``unpinned``), the interval says how much that moves
    the prediction.
    """
    f = get_form(form)
    if bootstrap < 0:
        raise WinnowError(f"bootstrap={bootstrap} must be >= 0")
    px, px2 = split_targets(predict_at, predict_at_x2, f.n_vars)
    x_arr = np.asarray(x, dtype=np.float64).ravel()
    x2_arr = _x2_array(x2)
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    ms = fit_form(f, x_arr, y_arr, x2_arr, delta=huber_delta, prior=prior)
    preds = f.predict(ms.theta, px, px2) if px.size else np.empty(0)
    near = ms.near_theta if ms.near_theta is not None and len(ms.near_theta) else ms.theta[None, :]
    if px.size:
        near_preds = f.predict(near, px, px2)
        near_lo, near_hi = np.nanmin(near_preds, axis=0), np.nanmax(near_preds, axis=0)
    else:
        near_lo = near_hi = np.empty(0)
    nan_ci = {n: (float("nan"), float("nan")) for n in f.names}
    lo = hi = np.full(px.size, np.nan)
    boot_theta = None
    n_groups = group_index(None if groups is None else np.asarray(groups), x_arr.size)[1]
    if bootstrap:
        b = bootstrap_fit(
            f, x_arr, y_arr, ms.theta, x2=x2_arr, groups=None if groups is None else np.asarray(groups),
            n_boot=bootstrap, seed=seed, delta=huber_delta, level=level, predict_x=px, predict_x2=px2,
            prior=ms.prior,
        )
        nan_ci, lo, hi, boot_theta = b.param_ci, b.pred_lo, b.pred_hi, b.theta
        lo, hi = np.fmin(lo, near_lo), np.fmax(hi, near_hi)
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
        near_lo=np.asarray(near_lo, dtype=np.float64),
        near_hi=np.asarray(near_hi, dtype=np.float64),
        n_near=int(len(near)),
        unpinned=ms.unpinned,
        prior=ms.prior,
    )


def _x2_array(x2: Sequence[float] | Array | None) -> Array | None:
    """``x2`` as float64: ``(n,)`` for two-variable data, ``(n, 2)`` [D, U] for three-variable data."""
    if x2 is None:
        return None
    a = np.asarray(x2, dtype=np.float64)
    return a if a.ndim == 2 else a.ravel()


@dataclass(frozen=True)
class FitReport:
    """Everything ``winnow fit`` prints and stores.

    Two fits, kept apart: ``validation`` is the *validated* fit (training points only: the held-out
    errors and ``validation.params`` come from it); ``fit`` is the *final* fit on all points (its
    parameters and intervals are what is printed as "parameters"). ``predictor`` is what the
    predictions come from: ``fit.form``, or a naive forecast (``"last_value"``, ``"best_small"``)
    when ``auto`` found that it wins the held-out check. ``predictions``/``pred_lo``/``pred_hi`` are
    the reported ones (aligned with ``fit.predict_at``); ``interval_method`` says what the interval
    covers.
    """

    fit: CurveFit
    validation: Validation | None
    selection: Selection | None
    holdout_mask: Array | None  # (n,) True for the points held out in validation (origin 0)
    x: Array  # (n,) the data that were fitted
    y: Array
    x2: Array | None
    predictor: str = ""
    predictions: Array | None = None
    pred_lo: Array | None = None
    pred_hi: Array | None = None
    interval_method: str = ""
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    target_x2: Array | None = None  # the targets' other variables as requested ([D, U] on three-variable data)

    @property
    def naive(self) -> bool:
        return self.predictor in NAIVE


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
    naive: bool = True,
    origins: int | None = None,
) -> FitReport:
    """Validate (rolling origin, ``holdout_largest`` scales), choose the predictor if ``form == "auto"``,
    then fit on all points and predict with an interval.

    ``form="auto"`` needs ``holdout_largest >= 1``: the candidate forms and (with ``naive``) the naive
    forecasts are compared by held-out RMSLE only, over ``origins`` rolling origins, each scored on
    every point beyond its cut (default for ``auto``: up to :data:`AUTO_ORIGINS`, as many as leave at
    least half the distinct scales to the deepest origin's fit; 1 for a given form); the simplest
    candidate within the margin of the best wins — the larger of one standard error of the paired
    per-origin differences and the noise of single observations
    (:func:`~tasks.scaling.validate.choose_predictor`). A form with more
    parameters than training points is fitted with an exponent prior
    (:data:`~tasks.scaling.validate.EXPONENT_PRIOR`) instead of being refused.

    Every prediction carries an interval: the hull of the run bootstrap (``bootstrap > 0``), the
    predictions of all near-optimal solutions, a band of ``z * held-out RMSLE`` (widened in
    proportion to how much further the target lies than the held-out points did), and for a fit
    with a prior, the exponent moved by two prior standard deviations.
    """
    x_arr = np.asarray(x, dtype=np.float64).ravel()
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    x2_arr = _x2_array(x2)
    if holdout_largest < 0:
        raise WinnowError(f"holdout_largest={holdout_largest} must be >= 0")
    levels = int(np.unique(x_arr).size)
    if holdout_largest and holdout_largest >= levels:
        raise WinnowError(
            f"--holdout-largest {holdout_largest} needs at least {holdout_largest + 1} distinct x values "
            f"(one left to fit on); the data have {levels}"
        )
    notes: list[str] = []
    selection = validation = None
    if origins is None and form == "auto":
        # as many origins as keep at least half the scales (and 2) in the deepest one's fit, at most AUTO_ORIGINS
        cap = levels - holdout_largest - max(2, -(-levels // 2)) + 1
        n_orig = max(1, min(AUTO_ORIGINS, cap)) if holdout_largest else 1
    else:
        n_orig = max(1, min(int(origins or 1), levels - holdout_largest - 1)) if holdout_largest else 1
        if origins is not None and holdout_largest and n_orig < origins:
            notes.append(f"origins={origins} asks for more rolling origins than {levels} distinct x values allow "
                         f"(the deepest must leave two scales to fit on): used {n_orig}")
    if form == "auto":
        if holdout_largest < 1:
            raise WinnowError("form 'auto' chooses by held-out error: set holdout_largest >= 1 (--holdout-largest 1)")
        selection = select_form(x_arr, y_arr, x2_arr, candidates=candidates, holdout_largest=holdout_largest,
                                delta=huber_delta, naive=naive, origins=n_orig)
        predictor = selection.form
        validation = selection.validations[predictor]
        # no form validated: the parameters shown come from a form of the pool's own direction (m1 for
        # sizes; for downstream, whose x is a loss, the pool's form: a size law on a loss axis means nothing)
        pool_forms = [n for n in selection.validations if n not in NAIVE]
        fallback = "m1" if scale_sign(pool_forms) == 1 else pool_forms[0]
        fit_name = selection.best_form or fallback
    else:
        f = get_form(form)
        if f.n_vars >= 2 and x2_arr is None:
            words = {2: "two", 3: "three"}[f.n_vars]
            raise WinnowError(f"form {form!r} takes {words} variables ({', '.join(f.x_names)}); pass x2 (--x2 COL)")
        predictor = fit_name = form
        if holdout_largest:
            validation = rolling_origin(form, x_arr, y_arr, _x2_for(form, x2_arr), holdout_largest=holdout_largest,
                                        origins=n_orig, delta=huber_delta, allow_prior=True)
    if validation is not None and validation.prior:
        notes.append(f"short curve: the validated {validation.form} fit used a prior on its exponent "
                     f"({_prior_text(validation.prior)}), too few training points to fit it freely")
    sign = scale_sign([fit_name])
    mask = holdout_mask(scale_of(x_arr, x2_arr, sign), holdout_largest)[1] if validation is not None else None
    prior = short_curve_prior(fit_name, distinct_points(x_arr, _x2_for(fit_name, x2_arr)))
    data_vars = 1 if x2_arr is None else (3 if x2_arr.ndim == 2 else 2)
    px, px2 = split_targets(predict_at, predict_at_x2, data_vars)
    fit = fit_curve(
        x_arr, y_arr, form=fit_name, x2=_x2_for(fit_name, x2_arr), groups=groups, bootstrap=bootstrap,
        predict_at=px, predict_at_x2=_x2_for(fit_name, px2), seed=seed,
        huber_delta=huber_delta, level=level, prior=prior,
    )
    if prior:
        notes.append(f"short curve: the final {fit_name} fit used a prior on its exponent ({_prior_text(prior)})")
    if bootstrap and groups is None:
        notes.append("bootstrap: no run column (--group), so every point was resampled as its own run; if the points "
                     "are checkpoints of fewer training runs, the interval is too narrow")
    preds, lo, hi, method = _predict_with_interval(fit, predictor, validation, x_arr, y_arr, x2_arr, level, sign)
    warnings = ([fit.warning] if fit.warning else []) + interval_warnings(fit)
    if fit.predict_at.size:
        zero = np.isfinite(lo) & (hi - lo <= 1e-12 * np.abs(preds))
        if zero.any():
            why = ", ".join(["every bootstrap replicate predicts the same" if fit.bootstrap else "no bootstrap", "a stable fit",
                             "no held-out check" if validation is None else "a held-out error of 0"])
            warnings.append(f"the prediction interval has zero width at {int(zero.sum())} target(s): nothing measured its "
                            f"uncertainty ({why}); do not read it as certainty")
    if predictor in NAIVE:
        notes.append(f"predictions are the naive {predictor.replace('_', ' ')} forecast (it won the held-out check); "
                     f"the parameters shown are the best form's ({fit_name}) final fit, for reference")
    return FitReport(
        fit=fit, validation=validation, selection=selection, holdout_mask=mask, x=x_arr, y=y_arr, x2=x2_arr,
        predictor=predictor, predictions=preds, pred_lo=lo, pred_hi=hi, interval_method=method,
        notes=tuple(notes), warnings=tuple(warnings), target_x2=px2,
    )


def _x2_for(form_name: str, x2: Array | None) -> Array | None:
    """Two-variable forms given three-variable data see D = tokens seen."""
    if x2 is not None and x2.ndim == 2 and get_form(form_name).n_vars == 2:
        return x2[:, 0]
    return x2


def _prior_text(prior: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{k} ~ N({m:g}, {s:g}^2)" for k, (m, s) in prior.items())


def _stretch(x: Array, validation: Validation, targets: Array, sign: int = 1, d: Array | None = None,
             targets_d: Array | None = None) -> Array:
    """How much further (in log x, in the direction of the scale: :func:`scale_of`) each target lies
    beyond the data than the held-out points lay beyond their training points (>= 1). With a second
    variable ``d`` (tokens seen) a target beyond the data in D counts too, in the same unit: a target
    7x beyond the largest D at a measured N is an extrapolation, not an interior point."""
    test_x = validation.points[:, 0] if validation.points.size else np.empty(0)
    u = sign * np.log(x)
    train_u = u[u < (sign * np.log(test_x)).min()] if test_x.size else np.empty(0)
    if not train_u.size or targets.size == 0:
        return np.ones(targets.size)
    gap = float(sign * np.log(np.mean(test_x)) - np.max(train_u))
    if not gap > 0:
        return np.ones(targets.size)
    s = np.maximum(1.0, (sign * np.log(targets) - np.max(u)) / gap)
    if d is not None and targets_d is not None and targets_d.size == targets.size:
        s = np.maximum(s, (np.log(targets_d) - np.log(np.max(d))) / gap)
    return s


def _predict_with_interval(
    fit: CurveFit, predictor: str, validation: Validation | None, x: Array, y: Array, x2: Array | None, level: float,
    sign: int = 1,
) -> tuple[Array, Array, Array, str]:
    """Reported predictions and the hull interval described in :func:`fit_report` (``sign``: :func:`scale_of`)."""
    from statistics import NormalDist

    px = fit.predict_at
    parts: list[str] = []
    if predictor in NAIVE:
        preds = np.full(px.size, baseline_predictions(x, y, x2, sign)[predictor])
        lo, hi = preds.copy(), preds.copy()
    else:
        preds = fit.predictions.copy()
        lo, hi = np.fmin(fit.pred_lo, preds), np.fmax(fit.pred_hi, preds)
        lo, hi = np.fmin(lo, fit.near_lo), np.fmax(hi, fit.near_hi)
        if fit.bootstrap:
            parts.append(f"run bootstrap ({fit.bootstrap} replicates, {int(round(fit.level * 100))}% percentile)")
        if fit.n_near > 1:
            parts.append(f"predictions of {fit.n_near} near-optimal solutions"
                         + (f" (not pinned down: {', '.join(fit.unpinned)})" if fit.unpinned else ""))
        if fit.prior and px.size:
            form = get_form(fit.form)
            for name, (m, s) in fit.prior.items():
                j = form.names.index(name)
                th = np.repeat(fit.theta[None, :], 2, axis=0)
                th[:, j] = np.clip([m - 2 * s, m + 2 * s], form.lower[j], form.upper[j])
                pp = form.predict(th, px, fit.predict_at_x2)
                lo, hi = np.fmin(lo, pp.min(axis=0)), np.fmax(hi, pp.max(axis=0))
            parts.append("the exponent prior's +-2 sd")
    if validation is not None and np.isfinite(validation.rmsle) and px.size:
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        e = validation.rmsle
        noise = ""
        if predictor not in NAIVE:  # the scatter of single observations around the final fit
            with np.errstate(all="ignore"):
                r = np.log(y) - np.log(get_form(fit.form).predict(fit.theta, x, _x2_for(fit.form, x2)))
            s = float(np.sqrt(np.mean(r[np.isfinite(r)] ** 2))) if np.isfinite(r).any() else 0.0
            e = float(np.hypot(e, s))
            noise = f" and residual scatter {s:.3g}"
        d, td = _tokens(x2), _tokens(fit.predict_at_x2)
        w = z * e * _stretch(x, validation, px, sign, d, td)
        lo, hi = np.fmin(lo, preds * np.exp(-w)), np.fmax(hi, preds * np.exp(w))
        parts.append(f"held-out error band ({z:.2f} x [held-out RMSLE {validation.rmsle:.3g}{noise}], "
                     "widened with extrapolation distance)")
    method = ("hull of: " + "; ".join(parts)) if parts else "none (nothing measured the uncertainty)"
    return preds, lo, hi, method


def _tokens(x2: Array | None) -> Array | None:
    """The D (tokens seen) column of two- or three-variable data, None for one variable."""
    if x2 is None:
        return None
    x2 = np.asarray(x2, dtype=np.float64)
    return x2[:, 0] if x2.ndim == 2 else x2


def interval_warnings(fit: CurveFit) -> list[str]:
    """Specific warnings for parameters on a box bound and parameter intervals of zero width."""
    form: Form = get_form(fit.form)
    out: list[str] = []
    lower, upper = form.lower, form.upper
    for j, (name, q) in enumerate(zip(form.names, form.params)):
        th = float(fit.theta[j])
        for side, b in (("lower", lower[j]), ("upper", upper[j])):
            if np.isfinite(b) and abs(th - b) <= 1e-6 * max(1.0, abs(b)):
                val = f"exp({b:g})" if q.log else f"{b:g}"
                out.append(f"{name} sits on its {side} bound ({val}): the data push it outside the form's range, so its "
                           "value (and interval) is a limit of the search box, not an estimate")
        if fit.bootstrap and fit.boot_theta is not None:
            col = fit.boot_theta[:, j]
            col = col[np.isfinite(col)]
            lo, hi = fit.param_ci[name]
            if col.size and np.isfinite(lo) and np.isfinite(hi):
                at_bound = np.mean((np.abs(col - lower[j]) <= 1e-6 * max(1.0, abs(lower[j])))
                                   | (np.abs(col - upper[j]) <= 1e-6 * max(1.0, abs(upper[j]))))
                if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
                    out.append(f"the interval of {name} has zero width: all {col.size} bootstrap replicates gave the same "
                               f"value ({fit.n_groups} run(s) to resample{'; it sits on a bound' if at_bound > 0.5 else ''}); "
                               "the bootstrap cannot see its uncertainty")
                elif at_bound >= 0.025:
                    out.append(f"the interval of {name} reaches a bound of the search box ({at_bound:.0%} of bootstrap "
                               "replicates sit on it): that end of the interval is the box, not the data")
    return out
