"""Rolling-origin validation of scaling-law forms against naive baselines, and form selection.

Extrapolation is what a scaling law is for, so a form is judged only on the largest scales it did
not see (Choshen et al. 2024, "A Hitchhiker's Guide to Scaling Law Estimation": random k-fold and
leave-one-out choose badly). Origin ``j`` holds out the ``k`` distinct scales just below the ``j``
largest ones and fits on everything smaller. Errors:

.. math::

    \\mathrm{ARE} = \\frac{1}{m}\\sum_i \\frac{|y_i - \\hat y_i|}{y_i}, \\qquad
    \\mathrm{RMSLE} = \\sqrt{\\frac{1}{m}\\sum_i (\\log \\hat y_i - \\log y_i)^2}

Every report carries two naive baselines fitted on the same training points: the *last value*
(``y`` at the largest training scale) and the *best small model* (lowest training ``y``). A form
that does not beat the better baseline is reported as such (Alabdulmohsin et al. 2022 show M2
losing to last-value on some NMT curves); automatic selection only ranks held-out error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.scaling.fit import fit_form
from tasks.scaling.forms import get_form

Array = np.ndarray
BASELINES = ("last_value", "best_small")


def are(y: Array, y_hat: Array) -> float:
    """Absolute relative error, mean over points."""
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    return float(np.mean(np.abs(y - y_hat) / np.abs(y)))


def rmsle(y: Array, y_hat: Array) -> float:
    """Root mean squared log error (NaN/inf where a prediction is not positive)."""
    y, y_hat = np.asarray(y, dtype=np.float64), np.asarray(y_hat, dtype=np.float64)
    with np.errstate(all="ignore"):
        return float(np.sqrt(np.mean((np.log(y_hat) - np.log(y)) ** 2)))


def scale_of(x: Array, x2: Array | None) -> Array:
    """The scale that orders points for hold-out: ``x`` (for two-variable data the first variable, N)."""
    return np.asarray(x, dtype=np.float64)


def holdout_mask(x: Array, k: int, origin: int = 0) -> tuple[Array, Array]:
    """``(train, test)`` boolean masks: test = the ``k`` distinct scales ranked ``origin+1..origin+k``
    from the top; train = every point at a smaller scale."""
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


def baseline_predictions(x: Array, y: Array, x2: Array | None = None) -> dict[str, float]:
    """Constant predictions of the naive baselines from training points."""
    x = np.asarray(x, dtype=np.float64)
    size = x if x2 is None else x * np.asarray(x2, dtype=np.float64)
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

    @property
    def best_baseline(self) -> str:
        return min(self.baseline_are, key=self.baseline_are.__getitem__)


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
) -> Validation:
    """Fit on smaller scales, predict the held-out largest ones, compare with the baselines.

    ``train_mask`` (n,) optionally restricts the training points of origin 0 further (e.g. the five
    runs Gadre et al. fit on); the held-out points are unchanged.
    """
    form = get_form(form_name)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x2 = None if x2 is None else np.asarray(x2, dtype=np.float64)
    ares, rmsles, b_are, b_rmsle = [], [], {b: [] for b in BASELINES}, {b: [] for b in BASELINES}
    points = np.empty((0, 4))
    warning = None
    n_train = n_test = 0
    for o in range(origins):
        train, test = holdout_mask(scale_of(x, x2), holdout_largest, o)
        if o == 0 and train_mask is not None:
            train = train & np.asarray(train_mask, dtype=bool)
        xt2 = None if x2 is None else x2[train]
        fit = fit_form(form, x[train], y[train], xt2, delta=delta)
        pred = form.predict(fit.theta, x[test], None if x2 is None else x2[test])
        ares.append(are(y[test], pred))
        rmsles.append(rmsle(y[test], pred))
        base = baseline_predictions(x[train], y[train], xt2)
        for b, v in base.items():
            b_are[b].append(are(y[test], np.full(test.sum(), v)))
            b_rmsle[b].append(rmsle(y[test], np.full(test.sum(), v)))
        if o == 0:
            n_train, n_test = int(train.sum()), int(test.sum())
            x2t = np.full(test.sum(), np.nan) if x2 is None else x2[test]
            points = np.column_stack([x[test], x2t, y[test], pred])
            warning = fit.warning
    mean_b = {b: float(np.mean(v)) for b, v in b_are.items()}
    a = float(np.mean(ares))
    return Validation(
        form=form.name,
        holdout_largest=holdout_largest,
        origins=origins,
        are=a,
        rmsle=float(np.mean(rmsles)),
        baseline_are=mean_b,
        baseline_rmsle={b: float(np.mean(v)) for b, v in b_rmsle.items()},
        beats_baseline=bool(np.isfinite(a) and a < min(mean_b.values())),
        n_train=n_train,
        n_test=n_test,
        points=points,
        warning=warning,
    )


@dataclass(frozen=True)
class Selection:
    """Outcome of automatic form choice: the form with the lowest held-out ARE."""

    form: str
    validations: dict[str, Validation]
    beats_baseline: bool
    message: str


def select_form(
    x: Array,
    y: Array,
    x2: Array | None = None,
    *,
    candidates: Sequence[str] | None = None,
    holdout_largest: int = 1,
    origins: int = 1,
    delta: float = 1e-3,
) -> Selection:
    """Choose among ``candidates`` by rolling-origin held-out ARE only (never by training fit).

    Forms with more parameters than training points are skipped (recorded with ``error``).
    """
    if candidates is None:
        candidates = ["chinchilla", "gadre"] if x2 is not None else ["m1", "m2", "pow4", "bnsl"]
    vals: dict[str, Validation] = {}
    for name in candidates:
        try:
            vals[name] = rolling_origin(name, x, y, x2, holdout_largest=holdout_largest, origins=origins, delta=delta)
        except WinnowError as err:
            vals[name] = Validation(name, holdout_largest, origins, np.nan, np.nan, {}, {}, False, 0, 0, np.empty((0, 4)), None, str(err))
    ok = {n: v for n, v in vals.items() if v.error is None and np.isfinite(v.are)}
    if not ok:
        reasons = "; ".join(f"{n}: {v.error}" for n, v in vals.items())
        raise WinnowError(f"no candidate form could be validated ({reasons})")
    best = min(ok, key=lambda n: ok[n].are)
    v = ok[best]
    bname = v.best_baseline
    if v.beats_baseline:
        msg = f"chose {best}: held-out ARE {v.are:.4f} vs best baseline {bname} {v.baseline_are[bname]:.4f}"
    else:
        msg = (
            f"no form beats the naive baseline: best form {best} has held-out ARE {v.are:.4f}, "
            f"{bname} has {v.baseline_are[bname]:.4f}; treat the extrapolation with suspicion"
        )
    return Selection(form=best, validations=vals, beats_baseline=v.beats_baseline, message=msg)
