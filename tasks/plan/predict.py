"""The planner's predictors: screen every candidate from OT + pilots, confirm finalists by a scaling law.

Screening (Projektor-style, Kang et al. 2023, applied to *pruned* mixtures): at each pilot size N_s
the median pilot accuracy of the design candidates is regressed on features of (p, OT(p, pruning))
(:mod:`tasks.mixture.predictor`; the form is chosen by held-out error over random splits of the
design). Every candidate's predicted pilot accuracies are extrapolated to the target N by the power
law through them in log-error space, err(N) = exp(Σ_s w_s log err(N_s)) with the least-squares
weights of :func:`tasks.mixture.extrapolate.loglinear_weights`.

Confirmation: the finalists (and the baselines) get pilots of their own at every pilot size; the
scaling stage's fit (:func:`tasks.scaling.api.fit_curve`, form m1 err = B·N^−c by default) with its
bootstrap gives the prediction at N and its interval.

The bootstrap resamples pilot points, so it sees pilot noise but not whether the law holds beyond
the pilots. :func:`holdout_residuals` measures that on the same pilots: fit every confirmed
candidate without its largest pilot size, predict that size, and take the log-error residuals
r = log(err_pred / err_obs). :func:`calibrated_interval` widens the bootstrap interval to
err_hat · exp(±w), w = q_level(|r|) · log(N / n_max) / log(n_max / n_prev) — the held-out error per
unit of log-extrapolation distance, scaled to the distance from the largest pilot to N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.mixture.extrapolate import loglinear_weights
from tasks.mixture.predictor import (
    BASELINES, OT_FORMS, PredictorFit, ValidationRow, choose_form, fit_predictor, random_splits, validate_forms,
)

ERR_FLOOR = 1e-4


@dataclass(frozen=True)
class ScreenModel:
    """Fitted screening predictors. fits : chosen form, one per pilot size (ascending);
    validation : held-out errors of every form and baseline; sizes : (S,) pilot sizes."""

    form: str
    fits: list[PredictorFit]
    validation: list[ValidationRow]
    sizes: np.ndarray

    def predict_pilots(self, P: np.ndarray, ot: np.ndarray) -> np.ndarray:
        """Predicted accuracy (S, C) at each pilot size for candidates P (C, K) with OT values (C,)."""
        return np.stack([f.predict(P, ot) for f in self.fits])

    def predict_at(self, P: np.ndarray, ot: np.ndarray, n: float | np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
        """Predicted accuracy (C,) at size n (power law through the predicted pilot errors). For
        candidates that repeat a pool: n (C,) their effective N and ``sizes`` (C, S) the effective
        sizes of their pilots (:func:`tasks.plan.planner.effective_sizes`)."""
        return extrapolate_accuracy(self.sizes if sizes is None else sizes, self.predict_pilots(P, ot), n)

    def holdout_mae(self, form: str | None = None) -> float:
        rows = [v.mae for v in self.validation if v.form == (form or self.form)]
        return float(np.mean(rows)) if rows else float("nan")


def extrapolate_accuracy(sizes: Sequence[float] | np.ndarray, acc: np.ndarray, n: float | np.ndarray) -> np.ndarray:
    """acc (S, C) at pilot sizes → (C,) at n by the least-squares power law in log error.

    sizes : (S,) shared, or (C, S) per candidate; n : one size, or (C,) one per candidate (the
    effective sizes of candidates that repeat a pool)."""
    err = np.clip(1.0 - np.asarray(acc, dtype=np.float64), ERR_FLOOR, 1.0)
    at, sz = np.asarray(n, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    if at.ndim == 0 and sz.ndim == 1:
        log_err = loglinear_weights(sz, float(at)) @ np.log(err)
    else:
        C = err.shape[1]
        at, sz = np.broadcast_to(at, (C,)), np.broadcast_to(sz, (C, err.shape[0]))
        w = np.stack([loglinear_weights(sz[c], float(at[c])) for c in range(C)])     # (C, S)
        log_err = np.einsum("cs,sc->c", w, np.log(err))
    return 1.0 - np.minimum(np.exp(log_err), 1.0)  # the law in log error: accuracy stays in [0, 1)


def fit_screen(
    P: np.ndarray,
    ot: np.ndarray,
    acc: np.ndarray,
    sizes: Sequence[int],
    *,
    forms: Sequence[str] = OT_FORMS,
    baselines: Sequence[str] = BASELINES,
    n_splits: int = 10,
    test_fraction: float = 0.3,
    ridge: float = 1e-4,
    seed: int = 0,
) -> ScreenModel:
    """Fit the screening predictor on design candidates.

    Parameters
    ----------
    P : (D, K) design mixtures; ot : (D,) their OT to the target (with their pruning);
    acc : (S, D) median pilot accuracy per pilot size; sizes : (S,) ascending.
    """
    P = np.asarray(P, dtype=np.float64)
    acc = np.atleast_2d(np.asarray(acc, dtype=np.float64))
    D = P.shape[0]
    if acc.shape != (len(sizes), D):
        raise ValueError(f"accuracies have shape {acc.shape}; expected ({len(sizes)}, {D})")
    if D < 6:
        raise WinnowError(f"the planner needs at least 6 design candidates to fit its predictor, got {D}: raise "
                          "plan.design, or offer more pruning options (plan.policies, plan.fractions)")
    n_test = max(1, int(round(test_fraction * D)))
    splits = {"random": random_splits(D, n_test, n_splits, seed)}
    validation: list[ValidationRow] = []
    for s, n in enumerate(sizes):
        validation += validate_forms(P, ot, acc[s], splits, forms=list(forms) + list(baselines), n=int(n), ridge=ridge)
    form = choose_form(validation, forms)
    fits = [fit_predictor(form, P, ot, acc[s], n=int(n), ridge=ridge) for s, n in enumerate(sizes)]
    return ScreenModel(form=form, fits=fits, validation=validation, sizes=np.asarray(sizes, dtype=np.int64))


@dataclass(frozen=True)
class CurvePrediction:
    """Accuracy predicted at n from a candidate's own pilots: point, [lo, hi] bootstrap interval,
    the fitted law's parameters and the number of pilot points."""

    predicted: float
    lo: float
    hi: float
    params: dict[str, float]
    n_points: int
    form: str


def confirm_curve(
    sizes: np.ndarray,
    accuracies: np.ndarray,
    n: float,
    *,
    form: str = "m1",
    bootstrap: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> CurvePrediction:
    """Fit the scaling law to one candidate's pilots (sizes (m,), accuracies (m,)) and predict at n.

    The fit runs in error space (1 − accuracy); the interval is the scaling stage's bootstrap over
    pilot points (each pilot is an independent draw and training)."""
    from tasks.scaling.api import fit_curve

    x = np.asarray(sizes, dtype=np.float64)
    err = np.clip(1.0 - np.asarray(accuracies, dtype=np.float64), ERR_FLOOR, 1.0)
    if np.unique(x).size < 2:
        raise WinnowError(f"a scaling law needs pilots at >= 2 sizes, got {sorted(set(x.tolist()))}")
    fit = fit_curve(x, err, form=form, bootstrap=bootstrap, predict_at=(float(n),), seed=seed, level=level)
    pred = float(np.clip(fit.predictions[0], ERR_FLOOR, 1.0))
    lo_e, hi_e = (float(np.clip(v, 0.0, 1.0)) for v in (fit.pred_lo[0], fit.pred_hi[0]))
    return CurvePrediction(predicted=1.0 - pred, lo=1.0 - hi_e, hi=1.0 - lo_e, params=dict(fit.params),
                           n_points=int(x.size), form=fit.form)


def holdout_residuals(pilots: dict[str, tuple[np.ndarray, np.ndarray]], *, form: str = "m1") -> np.ndarray:
    """log(err_pred / err_obs) at each candidate's largest pilot size from a fit on its smaller sizes.

    pilots : key -> (sizes (m,), accuracies (m,)); candidates with fewer than 3 distinct sizes are skipped."""
    from tasks.scaling.api import fit_curve

    out = []
    for sizes, accs in pilots.values():
        x = np.asarray(sizes, dtype=np.float64)
        err = np.clip(1.0 - np.asarray(accs, dtype=np.float64), ERR_FLOOR, 1.0)
        levels = np.unique(x)
        if levels.size < 3:
            continue
        keep = x < levels[-1]
        fit = fit_curve(x[keep], err[keep], form=form, predict_at=(float(levels[-1]),))
        out.append(float(np.log(fit.predictions[0]) - np.log(np.median(err[~keep]))))
    return np.asarray(out, dtype=np.float64)


def calibrated_interval(pred: CurvePrediction, n: float, sizes: np.ndarray, residuals: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(lo, hi, w): the bootstrap interval of ``pred`` widened by the held-out extrapolation error.

    sizes : the candidate's pilot sizes; w : the half-width in log error that was applied (0 when
    there are no residuals or n does not extrapolate beyond the pilots)."""
    levels = np.unique(np.asarray(sizes, dtype=np.float64))
    if residuals.size == 0 or levels.size < 3 or n <= levels[-1]:
        return pred.lo, pred.hi, 0.0
    q = float(np.quantile(np.abs(residuals), level))
    w = q * float(np.log(n / levels[-1]) / np.log(levels[-1] / levels[-2]))
    err = max(1.0 - pred.predicted, ERR_FLOOR)
    lo = min(pred.lo, 1.0 - min(err * np.exp(w), 1.0))
    hi = max(pred.hi, 1.0 - err * np.exp(-w))
    return float(lo), float(hi), w


@dataclass(frozen=True)
class Confirmation:
    """Per key: the scaling-law prediction at its N and the reported interval; the held-out residuals."""

    curves: dict[str, CurvePrediction]
    intervals: dict[str, tuple[float, float]]
    residuals: np.ndarray


def confirm_all(
    pilots: dict[str, tuple[np.ndarray, np.ndarray]],
    n_at: dict[str, float],
    *,
    form: str = "m1",
    bootstrap: int = 500,
    level: float = 0.95,
    interval: str = "calibrated",
    seed: int = 0,
) -> Confirmation:
    """Fit every confirmed candidate's own pilots (key -> (sizes, accuracies)) and predict at n_at[key]
    (sizes and n_at effective where a pool is repeated), with the bootstrap interval or the calibrated one (:func:`calibrated_interval`)."""
    if interval not in ("calibrated", "bootstrap"):
        raise ValueError(f"interval={interval!r} must be 'calibrated' or 'bootstrap'")
    residuals = holdout_residuals(pilots, form=form)
    curves, intervals = {}, {}
    for k, (xs, accs) in pilots.items():
        curves[k] = confirm_curve(xs, accs, n_at[k], form=form, bootstrap=bootstrap, level=level, seed=seed)
        lo, hi, _ = calibrated_interval(curves[k], n_at[k], xs, residuals, level)
        intervals[k] = (lo, hi) if interval == "calibrated" else (curves[k].lo, curves[k].hi)
    return Confirmation(curves=curves, intervals=intervals, residuals=residuals)
