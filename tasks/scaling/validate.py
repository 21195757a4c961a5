"""Rolling-origin validation of scaling-law forms against naive baselines, and form selection.

Extrapolation is what a scaling law is for, so a form is judged only on the largest scales it did
not see (Choshen et al. 2024, "A Hitchhiker's Guide to Scaling Law Estimation": random k-fold and
leave-one-out choose badly). Origin ``j`` holds out the ``k + j`` largest distinct scales — every
point beyond its cut, so deeper origins extrapolate further — and fits on everything smaller. Errors:

.. math::

    \\mathrm{ARE} = \\frac{1}{m}\\sum_i \\frac{|y_i - \\hat y_i|}{y_i}, \\qquad
    \\mathrm{RMSLE} = \\sqrt{\\frac{1}{m}\\sum_i (\\log \\hat y_i - \\log y_i)^2}

Every report carries two naive baselines fitted on the same training points: the *last value*
(``y`` at the largest training scale) and the *best small model* (lowest training ``y``). A form
that does not beat the better baseline is reported as such (Alabdulmohsin et al. 2022 show M2
losing to last-value on some NMT curves). Automatic selection uses held-out RMSLE only, and the
naive forecasts are candidates like any form: when one of them wins the held-out check it is the
predictor (``Selection.form`` is then ``"last_value"`` or ``"best_small"``). Candidates are compared
by their paired per-origin differences: the simplest candidate whose mean held-out RMSLE is within
max(one standard error of the paired difference, the scatter of single observations) of the lowest
wins (:func:`select_form`).

Short curves: a form with more parameters than training points is fitted with a Gaussian prior on
its exponent (:data:`EXPONENT_PRIOR`) instead of being skipped; the fit says so (``Validation.prior``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.errors import WinnowError
from tasks.scaling.fit import distinct_points, fit_form
from tasks.scaling.forms import get_form

Array = np.ndarray
BASELINES = ("last_value", "best_small")
NAIVE = BASELINES  # the naive forecasts, usable as predictors by ``select_form``
# Prior on the exponent for curves too short to pin it down: data-scaling exponents reported by
# Hestness et al. 2017 and Alabdulmohsin et al. 2022 lie mostly in 0.05..0.7 (fit coordinate = c).
EXPONENT_PRIOR: dict[str, tuple[str, float, float]] = {
    "m1": ("c", 0.3, 0.2), "m2": ("c", 0.3, 0.2), "pow4": ("c", 0.3, 0.2), "bnsl": ("c0", 0.3, 0.2),
}
# The forms `auto` compares by default, by number of variables. One variable: not m1 (B·x^−c), which is
# m2 with its irreducible floor E fixed at 0 — false for any error or loss curve (Hestness et al.
# 2017) — and which can pass a held-out check only when the data do not yet show the floor, i.e.
# exactly when extrapolating without it is riskiest; m1 stays available as a fixed form or candidate.
AUTO_CANDIDATES: dict[int, tuple[str, ...]] = {
    1: ("m2", "pow4", "bnsl"),
    2: ("chinchilla", "gadre"),
    3: ("data_constrained", "data_constrained_ot", "chinchilla", "gadre"),
}


def are(y: Array, y_hat: Array) -> float:
    """Absolute relative error, mean over points."""
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    return float(np.mean(np.abs(y - y_hat) / np.abs(y)))


def rmsle(y: Array, y_hat: Array) -> float:
    """Root mean squared log error (NaN/inf where a prediction is not positive)."""
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    with np.errstate(all="ignore"):
        return float(np.sqrt(np.mean((np.log(y_hat) - np.log(y)) ** 2)))


def scale_of(x: Array, x2: Array | None, sign: int = 1) -> Array:
    """The scale that orders points for hold-out, larger = a larger model: ``x`` (for two-variable data the
    first variable, N), or ``-x`` with ``sign = -1`` (a form whose x is a loss: :attr:`Form.scale_sign`)."""
    return sign * np.asarray(x, dtype=np.float64)


def scale_sign(names: Sequence[str]) -> int:
    """The common :attr:`Form.scale_sign` of the forms among ``names`` (naive forecasts follow them; +1 if
    there are none). Forms whose scales run in opposite directions cannot share one hold-out."""
    signs = {get_form(n).scale_sign for n in names if n not in NAIVE}
    if len(signs) > 1:
        raise ValueError(f"the forms {', '.join(n for n in names if n not in NAIVE)} cannot be compared: "
                          "downstream's x is a loss (a smaller x is a larger model), the others' x is a size")
    return signs.pop() if signs else 1


def holdout_mask(x: Array, k: int, origin: int = 0) -> tuple[Array, Array]:
    """``(train, test)`` boolean masks: test = the ``k`` distinct scales ranked ``origin+1..origin+k``
    from the top; train = every point at a smaller scale. ``x`` is a scale (:func:`scale_of`)."""
    x = np.asarray(x, dtype=np.float64)
    levels = np.unique(x)[::-1]
    if k < 1:
        raise WinnowError(f"holdout_largest={k} must be >= 1 for validation")
    if origin + k >= levels.size:
        raise WinnowError(
            f"cannot hold out {k} scale(s) at origin {origin}: the data have only {levels.size} distinct x value(s)"
        )
    test_levels = levels[origin : origin + k]
    test = np.isin(x, test_levels)
    train = x < test_levels.min()
    return train, test


def size_of(x: Array, x2: Array | None) -> Array:
    """Overall scale of each point for the last-value baseline: ``x``, or ``N * D`` (D = tokens seen)."""
    x = np.asarray(x, dtype=np.float64)
    if x2 is None:
        return x
    x2 = np.asarray(x2, dtype=np.float64)
    return x * (x2[:, 0] if x2.ndim == 2 else x2)


def baseline_predictions(x: Array, y: Array, x2: Array | None = None, sign: int = 1) -> dict[str, float]:
    """Constant predictions of the naive baselines from training points (``sign``: see :func:`scale_of`)."""
    size = sign * size_of(x, x2)
    last = float(np.mean(np.asarray(y)[size == size.max()]))
    return {"last_value": last, "best_small": float(np.min(y))}


@dataclass(frozen=True)
class Validation:
    """Held-out errors of one form at one or more rolling origins (means over origins).

    ``points`` lists the held-out points of origin 0 as ``(x, x2, y, y_hat)`` rows.
    """

    form: str
    holdout_largest: int
    origins: int
    are: float
    rmsle: float
    baseline_are: dict[str, float]
    baseline_rmsle: dict[str, float]
    beats_baseline: bool
    n_train: int
    n_test: int
    points: Array
    warning: str | None
    error: str | None = None
    params: dict[str, float] | None = None  # the validated fit (origin 0, training points only)
    prior: dict[str, tuple[float, float]] | None = None  # exponent prior used on a short curve
    unpinned: tuple[str, ...] = ()  # parameters the validated fit does not pin down
    train_rmsle: float | None = None  # RMS log residual of the validated fit on its training points (noise scale)
    origin_rmsle: tuple[float, ...] = ()  # held-out RMSLE at each origin (origin 0 first)

    @property
    def best_baseline(self) -> str:
        return min(self.baseline_rmsle, key=self.baseline_rmsle.__getitem__)  # the measure auto and the output use


def rolling_origin(
    form_name: str,
    x: Array,
    y: Array,
    x2: Array | None = None,
    *,
    holdout_largest: int = 1,
    origins: int = 1,
    delta: float = 1e-3,
    train_mask: Array | None = None,
    allow_prior: bool = False,
    sign: int | None = None,
) -> Validation:
    """Fit on smaller scales, predict the held-out largest ones, compare with the baselines.

    Origin ``o`` (0 .. ``origins`` − 1) holds out the ``holdout_largest + o`` largest distinct
    scales (every point beyond its cut) and fits on the smaller ones; errors are means over origins,
    ``origin_rmsle`` keeps each origin's.

    ``form_name`` may also be a naive forecast (:data:`NAIVE`): its "fit" is the baseline value.
    ``train_mask`` (n,) optionally restricts the training points of origin 0 further (e.g. the five
    runs Gadre et al. fit on); the held-out points are unchanged. ``allow_prior``: a form with more
    parameters than training points is fitted with :data:`EXPONENT_PRIOR` rather than refused.
    ``sign``: the direction of the scale (:func:`scale_of`); a form's own :attr:`Form.scale_sign` by
    default, +1 for a naive forecast.
    """
    naive = form_name in NAIVE
    form = None if naive else get_form(form_name)
    if sign is None:
        sign = 1 if form is None else form.scale_sign
    elif form is not None and sign != form.scale_sign:
        raise ValueError(f"sign={sign} contradicts form {form_name!r}, whose scale_sign is {form.scale_sign}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x2 = None if x2 is None else np.asarray(x2, dtype=np.float64)
    ares, rmsles, b_are, b_rmsle = [], [], {b: [] for b in BASELINES}, {b: [] for b in BASELINES}
    points = np.empty((0, 4))
    warning = None
    params = prior_used = train_rmsle = None
    unpinned: tuple[str, ...] = ()
    n_train = n_test = 0
    for o in range(origins):
        train, test = holdout_mask(scale_of(x, x2, sign), holdout_largest + o)
        if o == 0 and train_mask is not None:
            train = train & np.asarray(train_mask, dtype=bool)
        xt2 = None if x2 is None else x2[train]
        base = baseline_predictions(x[train], y[train], xt2, sign)
        if naive:
            pred = np.full(int(test.sum()), base[form_name])
            fit = None
        else:
            prior = short_curve_prior(form.name, distinct_points(x[train], xt2)) if allow_prior else None
            fit = fit_form(form, x[train], y[train], xt2, delta=delta, prior=prior)
            pred = form.predict(fit.theta, x[test], None if x2 is None else x2[test])
        ares.append(are(y[test], pred))
        rmsles.append(rmsle(y[test], pred))
        for b, v in base.items():
            b_are[b].append(are(y[test], np.full(test.sum(), v)))
            b_rmsle[b].append(rmsle(y[test], np.full(test.sum(), v)))
        if o == 0:
            n_train, n_test = int(train.sum()), int(test.sum())
            x2t = np.full(test.sum(), np.nan) if x2 is None else (x2[test][:, 0] if x2.ndim == 2 else x2[test])
            points = np.column_stack([x[test], x2t, y[test], pred])
            if fit is not None:
                warning, params, prior_used, unpinned = fit.warning, fit.params, fit.prior, fit.unpinned
                train_rmsle = rmsle(y[train], form.predict(fit.theta, x[train], xt2))
            else:
                params = {form_name: float(pred[0]) if pred.size else float("nan")}
    mean_b = {b: float(np.mean(v)) for b, v in b_are.items()}
    a = float(np.mean(ares))
    r = float(np.mean(rmsles))
    mean_br = {b: float(np.mean(v)) for b, v in b_rmsle.items()}
    return Validation(
        form=form_name,
        holdout_largest=holdout_largest,
        origins=origins,
        are=a,
        rmsle=r,
        baseline_are=mean_b,
        baseline_rmsle=mean_br,
        # by RMSLE, the measure the output prints and auto chooses by (ARE punishes over-prediction without
        # bound and under-prediction by at most 1, so the two disagree on badly extrapolating fits)
        beats_baseline=bool(np.isfinite(r) and r < min(mean_br.values())),
        n_train=n_train,
        n_test=n_test,
        points=points,
        warning=warning,
        params=params,
        prior=prior_used,
        unpinned=unpinned,
        train_rmsle=train_rmsle,
        origin_rmsle=tuple(float(v) for v in rmsles),
    )


def short_curve_prior(form_name: str, n_train: int) -> dict[str, tuple[float, float]] | None:
    """The exponent prior for ``form_name`` when ``n_train`` distinct design points (:func:`~tasks.scaling.fit.distinct_points`) cannot pin down its parameters."""
    form = get_form(form_name)
    if n_train >= form.p or form_name not in EXPONENT_PRIOR:
        return None
    name, mean, sd = EXPONENT_PRIOR[form_name]
    return {name: (mean, sd)}


@dataclass(frozen=True)
class Selection:
    """Outcome of automatic choice: the predictor (form or naive forecast) with the lowest held-out RMSLE.

    ``form`` is the chosen predictor (a form name, or ``"last_value"`` / ``"best_small"``);
    ``best_form`` the best-ranked fitted form (None when no form could be validated).
    """

    form: str
    validations: dict[str, Validation]
    beats_baseline: bool
    message: str
    best_form: str | None = None

    @property
    def naive(self) -> bool:
        return self.form in NAIVE

    def ranking(self) -> list[tuple[str, float, float, str]]:
        """``(predictor, RMSLE, ARE, note)`` rows, best first; failed candidates last."""
        ok = sorted((v.rmsle, n) for n, v in self.validations.items() if v.error is None and np.isfinite(v.rmsle))
        rows = [(n, self.validations[n].rmsle, self.validations[n].are, _note(n == self.form, self.validations[n])) for _, n in ok]
        rows += [(n, float("nan"), float("nan"), v.error or "not finite") for n, v in self.validations.items()
                 if not (v.error is None and np.isfinite(v.rmsle))]
        return rows


def _note(chosen: bool, v: Validation) -> str:
    """A ranking row's note: chosen, and whether the check judged a fit its training points do not pin down."""
    loose = f"validated fit leaves {', '.join(v.unpinned)} not pinned down" if v.unpinned else ""
    return "; ".join(t for t in ("chosen" if chosen else "", loose) if t)


PURE_MIN_DF = 10  # an estimate along one variable competes for the smallest only with this many degrees of freedom
PURE_POOLED_MIN_DF = 4  # below this, all variables and replicates together give no estimate


def pure_error(x: Array, y: Array, x2: Array | None = None) -> float | None:
    """Model-free scale of the noise of single observations (log scale), or None where the design gives none.

    From two sources that do not depend on any form: replicates (points with equal variables: their
    scatter about their mean) and, along each variable in turn, the lines of points whose other
    variables are equal — at each interior point of a line, with ``t`` the log of the varying variable,
    the pseudo-residual of Gasser, Sroka & Jennen-Steinmetz (1986, *Biometrika* 73: "Residual variance
    and residual pattern in nonlinear regression")

    .. math::

        \\tilde e_i = \\frac{a_i \\log y_{i-1} + b_i \\log y_{i+1} - \\log y_i}{\\sqrt{a_i^2 + b_i^2 + 1}},
        \\quad a_i = \\frac{t_{i+1} - t_i}{t_{i+1} - t_{i-1}}, \\ b_i = \\frac{t_i - t_{i-1}}{t_{i+1} - t_{i-1}}

    (on replicate means, each weight divided by its count), which has the noise's variance wherever the
    curve is locally straight in (log x, log y). Curvature between neighbours inflates it, misfit of a
    form never does; the residuals of a fitted form are the other way round (a form that misses the
    curve's shape inflates them). Curvature inflates the estimate of each variable along that variable
    only, while the noise is the same for all, so the result is the smallest of the per-variable
    estimates (each pooled with the replicates, ``sqrt(sum of squares / degrees of freedom)``) among
    those with at least :data:`PURE_MIN_DF` degrees of freedom. When none has that many, the estimate
    pools every variable and the replicates, and is None below :data:`PURE_POOLED_MIN_DF` degrees of
    freedom (too few to say anything about the noise).
    """
    cols = [np.asarray(x, dtype=np.float64).ravel()]
    if x2 is not None:
        x2 = np.asarray(x2, dtype=np.float64)
        cols += list(x2.T) if x2.ndim == 2 else [x2.ravel()]
    with np.errstate(all="ignore"):
        v, ly = np.log(np.column_stack(cols)), np.log(np.asarray(y, dtype=np.float64).ravel())
    ok = np.all(np.isfinite(v), axis=1) & np.isfinite(ly)
    v, ly = v[ok], ly[ok]
    if ly.size < 2:
        return None
    pts, inv = np.unique(v, axis=0, return_inverse=True)
    inv = inv.ravel()
    count = np.bincount(inv, minlength=len(pts)).astype(np.float64)
    mean = np.bincount(inv, weights=ly, minlength=len(pts)) / count
    rep_ss, rep_df = float(np.sum((ly - mean[inv]) ** 2)), int(ly.size - len(pts))
    per_var: list[tuple[float, int]] = []
    for j in range(pts.shape[1]):
        others = np.delete(pts, j, axis=1)
        order = np.lexsort((pts[:, j], *others.T[::-1])) if others.shape[1] else np.argsort(pts[:, j])
        o, t, m, n = others[order], pts[order, j], mean[order], count[order]
        same = np.all(o[2:] == o[:-2], axis=1)  # i-1, i, i+1 on one line (sorted: the middle one too)
        if not same.any():
            continue
        gap = t[2:][same] - t[:-2][same]
        a, b = (t[2:][same] - t[1:-1][same]) / gap, (t[1:-1][same] - t[:-2][same]) / gap
        scale = np.sqrt(a * a / n[:-2][same] + b * b / n[2:][same] + 1.0 / n[1:-1][same])
        e = (a * m[:-2][same] + b * m[2:][same] - m[1:-1][same]) / scale
        df = rep_df + int(e.size)
        per_var.append((float(np.sqrt((rep_ss + float(np.sum(e**2))) / df)), df))
    eligible = [s for s, df in per_var if df >= PURE_MIN_DF]
    if eligible:
        return min(eligible)
    # no variable has enough lines: pool them all with the replicates (the minimum of a few noisy
    # estimates would under-state the noise), and say nothing from fewer than PURE_POOLED_MIN_DF
    ss = rep_ss + sum(s * s * df - rep_ss for s, df in per_var)
    df = rep_df + sum(df - rep_df for _, df in per_var)
    return float(np.sqrt(ss / df)) if df >= PURE_POOLED_MIN_DF else None


def select_form(
    x: Array,
    y: Array,
    x2: Array | None = None,
    *,
    candidates: Sequence[str] | None = None,
    holdout_largest: int = 1,
    origins: int = 1,
    delta: float = 1e-3,
    naive: bool = True,
    allow_prior: bool = True,
    parsimony: bool = True,
) -> Selection:
    """Choose among ``candidates`` (and, with ``naive``, the naive forecasts) by rolling-origin
    held-out RMSLE only (never by training fit): :func:`validate_candidates`, then :func:`choose_predictor`
    with the model-free noise scale (:func:`pure_error`) of origin 0's training points.

    ``candidates`` default to :data:`AUTO_CANDIDATES` for the number of variables. A form with more
    parameters than training points is fitted with an exponent prior when it has one
    (:data:`EXPONENT_PRIOR`, ``allow_prior``), otherwise skipped (recorded with ``error``).
    """
    if candidates is None:
        candidates = list(AUTO_CANDIDATES[1 if x2 is None else (3 if np.ndim(x2) == 2 else 2)])
    pool = [c for c in candidates if c not in NAIVE] + [b for b in NAIVE if naive or b in candidates]
    sign = scale_sign(pool)
    vals = validate_candidates(x, y, x2, pool, holdout_largest=holdout_largest, origins=origins, delta=delta,
                               allow_prior=allow_prior, sign=sign)
    try:
        train = holdout_mask(scale_of(x, x2, sign), holdout_largest)[0]
    except WinnowError:  # too few scales: choose_predictor reports why no candidate could be validated
        train = np.zeros(np.size(x), dtype=bool)
    pure = pure_error(np.asarray(x)[train], np.asarray(y)[train], None if x2 is None else np.asarray(x2)[train])
    return choose_predictor(vals, parsimony=parsimony, pure=pure)


def validate_candidates(x: Array, y: Array, x2: Array | None, pool: Sequence[str], **rolling: Any) -> dict[str, Validation]:
    """:func:`rolling_origin` (with its keyword arguments ``rolling``) of every predictor in ``pool``; one
    that cannot be validated is recorded with ``error``. Two-variable forms see D = tokens seen of
    three-variable data."""
    vals: dict[str, Validation] = {}
    for name in pool:
        xs2 = x2
        if name in ("chinchilla", "gadre") and x2 is not None and np.ndim(x2) == 2:
            xs2 = np.asarray(x2)[:, 0]
        try:
            vals[name] = rolling_origin(name, x, y, xs2, **rolling)
        except WinnowError as err:
            h, o = rolling.get("holdout_largest", 1), rolling.get("origins", 1)
            vals[name] = Validation(name, h, o, np.nan, np.nan, {}, {}, False, 0, 0, np.empty((0, 4)), None, str(err))
    return vals


def choose_predictor(vals: dict[str, Validation], *, parsimony: bool = True, pure: float | None = None) -> Selection:
    """The predictor with the lowest held-out RMSLE, or with ``parsimony`` the simplest one tied with it.

    ``parsimony`` (Breiman et al.'s one-standard-error rule): a lower held-out error is evidence only
    when it exceeds its own uncertainty. For every candidate, the per-origin differences of its
    held-out RMSLE from the lowest-scoring candidate's are paired (same training points, same
    held-out points) and give a standard error. The origins are nested — a deeper origin's held-out
    points include the shallower ones' — so the noise of those shared points is common to all of them
    and the paired scatter under-states it; the margin is therefore at least the scatter of single
    observations. That scatter is the smaller of two estimates that err upwards in different ways: the
    median over the forms of the RMS log residual of their validated fits (too large when every form
    misses the curve's shape) and ``pure``, the model-free :func:`pure_error` of the training points
    (too large where the curve bends between neighbouring points; used only beside a validated form).
    The candidates within
    ``max(SE, scatter)`` of the lowest held-out RMSLE count as tied, and the simplest of them wins:
    last value, then best small, then forms by number of parameters. With a single origin the margin
    is the scatter alone.
    """
    ok = {n: v for n, v in vals.items() if v.error is None and np.isfinite(v.rmsle)}
    if not ok:
        reasons = "; ".join(f"{n}: {v.error}" for n, v in vals.items())
        raise WinnowError(f"no candidate form could be validated ({reasons})")
    rank = {b: i + 1 for i, b in enumerate(NAIVE)}  # exact ties: a form, then last value, then best small
    top = min(ok, key=lambda n: (ok[n].rmsle, rank.get(n, 0)))
    ok_forms = [n for n in ok if n not in NAIVE]
    best_form = min(ok_forms, key=lambda n: ok[n].rmsle) if ok_forms else None
    margins = {n: 0.0 for n in ok}
    how = ""
    if parsimony:
        margins, how = _tie_margins(ok, top, pure)
    within = [n for n in ok if ok[n].rmsle - ok[top].rmsle <= margins[n]]
    complexity = {"last_value": -2.0, "best_small": -1.0}
    best = min(within, key=lambda n: (complexity.get(n, get_form(n).p if n not in NAIVE else 0), ok[n].rmsle))
    simpler = ""
    if best != top:
        simpler = (f" ({best} is the simplest candidate within {how} of the lowest held-out RMSLE, {top} "
                   f"{ok[top].rmsle:.4g}: the difference {ok[best].rmsle - ok[top].rmsle:.3g} is not evidence)")
    if best_form is not None and best not in NAIVE:
        best_form = best
    v = ok[best]
    if best in NAIVE:
        runner = f"best form {best_form} has held-out RMSLE {ok[best_form].rmsle:.4g}" if best_form else "no form could be validated"
        msg = (f"chose the naive forecast {best.replace('_', ' ')}: held-out RMSLE {v.rmsle:.4g}; {runner}{simpler}. "
               "no form beats the naive baseline, so the prediction is the naive forecast")
        beats = False
    else:
        bname = min(v.baseline_rmsle, key=v.baseline_rmsle.__getitem__)
        msg = (f"chose {best}: held-out RMSLE {v.rmsle:.4g} vs best naive forecast {bname.replace('_', ' ')} "
               f"{v.baseline_rmsle[bname]:.4g}{simpler}")
        beats = v.rmsle < v.baseline_rmsle[bname]
        if not beats:
            msg = (f"no form beats the naive baseline: best form {best} has held-out RMSLE {v.rmsle:.4g}, "
                   f"{bname} has {v.baseline_rmsle[bname]:.4g}; treat the extrapolation with suspicion")
    return Selection(form=best, validations=vals, beats_baseline=beats, message=msg, best_form=best_form)


def _tie_margins(ok: dict[str, Validation], top: str, pure: float | None = None) -> tuple[dict[str, float], str]:
    """Per candidate, how far above the lowest held-out RMSLE still counts as a tie, and the words for it:
    the larger of one standard error of its paired per-origin differences from ``top`` (several
    origins) and the scatter of single observations (see :func:`choose_predictor`)."""
    scatter = [v.train_rmsle for n, v in ok.items() if n not in NAIVE and v.train_rmsle is not None and np.isfinite(v.train_rmsle)]
    # the median over the forms: a flexible form's own residuals under-state the noise (it fits
    # some of it), a misfitting form's over-state it
    noise = float(np.median(scatter)) if scatter else 0.0
    words = f"the residual scatter {noise:.3g}"
    if pure is not None and scatter and pure < noise:  # no fitted form: no misfit to guard against
        noise, words = pure, f"the model-free scatter {pure:.3g}"
    e_top = np.asarray(ok[top].origin_rmsle)
    if e_top.size < 2 or any(len(v.origin_rmsle) != e_top.size for v in ok.values()):
        return {n: noise for n in ok}, words
    out = {}
    for n, v in ok.items():
        d = np.asarray(v.origin_rmsle) - e_top
        se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if np.all(np.isfinite(d)) else 0.0
        out[n] = max(se, noise)
    return out, f"the larger of one standard error of its paired difference over {e_top.size} origins and {words}"
