"""Extrapolating pilot performance to larger N (Projektor stage 2, and a proper scaling law).

Everything here works in **error space** (err = 1 − accuracy), not raw accuracy (a defect of the
reference code).

* ``log_n_map`` — Projektor's parameter-free map through two pilot sizes N0 < N1:

  .. math:: \\hat L(N) = \\frac{\\log(N/N_0)\\,\\hat L(N_1) - \\log(N/N_1)\\,\\hat L(N_0)}{\\log(N_1/N_0)}

  a straight line in log N (N0=1000, N1=1500, N=10,000 weighs the pilots +5.68 and −4.68).
* ``power_law`` — err = B·N^−c per mixture over ≥ 3 pilot sizes (scaling.md form M1, E = 0),
  fitted by the scaling module's ``fit_curve`` when present (else ``scipy.optimize.curve_fit``).
* ``loglinear_weights`` — the least-squares line through (log N_k, log err_k), as fixed weights
  w with log err(N) = Σ_k w_k log err_k: a differentiable power-law extrapolation used by mixture
  selection (for two sizes it is the power law through both points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError

EXTRAPOLATIONS = ("power_law", "log_n_map")


def log_n_weights(n0: float, n1: float, n: float) -> tuple[float, float]:
    """Weights (w0, w1) of the log-N map: L̂(N) = w0·L(N0) + w1·L(N1)."""
    if not 0 < n0 < n1:
        raise WinnowError(f"log-N map needs 0 < N0 < N1, got N0={n0}, N1={n1}")
    d = np.log(n1 / n0)
    return float(-np.log(n / n1) / d), float(np.log(n / n0) / d)


def log_n_map(n0: float, err0: np.ndarray, n1: float, err1: np.ndarray, n: float) -> np.ndarray:
    """Projektor's two-point map of errors at N0, N1 to N (arrays broadcast)."""
    w0, w1 = log_n_weights(n0, n1, n)
    return w0 * np.asarray(err0, dtype=np.float64) + w1 * np.asarray(err1, dtype=np.float64)


def loglinear_weights(sizes: Sequence[float], n: float) -> np.ndarray:
    """w (S,) with log err(n) = Σ w_k log err(N_k): OLS of log err on [1, log N], evaluated at log n."""
    s = np.log(np.asarray(sizes, dtype=np.float64))
    if s.size < 2 or np.unique(s).size < 2:
        raise WinnowError(f"power-law extrapolation needs >= 2 distinct pilot sizes, got {list(sizes)}")
    A = np.column_stack([np.ones_like(s), s])
    return np.array([1.0, np.log(n)]) @ np.linalg.pinv(A)


@dataclass(frozen=True)
class PowerLawFit:
    """err = B·N^−c for one mixture. prediction at the requested N (and an interval when available)."""

    B: float
    c: float
    prediction: float
    lo: float
    hi: float
    method: str


def _scipy_m1(sizes: np.ndarray, err: np.ndarray, n: float) -> PowerLawFit:
    from scipy.optimize import curve_fit

    def f(x: np.ndarray, logb: float, c: float) -> np.ndarray:
        return np.exp(logb) * x ** (-c)

    A = np.column_stack([np.ones(sizes.size), np.log(sizes)])
    b0, s0 = np.linalg.lstsq(A, np.log(err), rcond=None)[0]  # start from the log-log line
    try:
        (logb, c), _ = curve_fit(f, sizes, err, p0=(b0, -s0), maxfev=5000)
    except RuntimeError:
        logb, c = b0, -s0
    pred = float(np.exp(logb) * n ** (-c))
    return PowerLawFit(B=float(np.exp(logb)), c=float(c), prediction=pred, lo=float("nan"), hi=float("nan"), method="scipy_curve_fit")


def fit_power_law(sizes: Sequence[float], err: Sequence[float], n: float, *, bootstrap: int = 0, seed: int = 0) -> PowerLawFit:
    """Fit err = B·N^−c to (sizes, err) and predict at n (scaling module ``fit_curve``, form "m1")."""
    x = np.asarray(sizes, dtype=np.float64)
    y = np.clip(np.asarray(err, dtype=np.float64), 1e-6, None)
    if x.size < 2:
        raise WinnowError(f"a power law needs >= 2 pilot sizes, got {x.size}")
    try:
        from tasks.scaling.api import fit_curve  # type: ignore[import-not-found]
    except ImportError:
        return _scipy_m1(x, y, n)
    fit = fit_curve(x, y, form="m1", bootstrap=bootstrap, predict_at=(n,), seed=seed)
    params = {k.lower(): v for k, v in fit.params.items()}
    B = float(params.get("b", np.nan))
    c = float(params.get("c", params.get("alpha", np.nan)))
    lo = float(fit.pred_lo[0]) if fit.pred_lo is not None and len(fit.pred_lo) else float("nan")
    hi = float(fit.pred_hi[0]) if fit.pred_hi is not None and len(fit.pred_hi) else float("nan")
    return PowerLawFit(B=B, c=c, prediction=float(fit.predictions[0]), lo=lo, hi=hi, method="scaling.fit_curve:m1")


def extrapolate_errors(sizes: Sequence[float], err: np.ndarray, n: float, method: str = "power_law") -> np.ndarray:
    """Predicted error at n for every mixture. err : (S, G) errors at the pilot sizes → (G,).

    ``log_n_map`` uses the two largest pilot sizes; ``power_law`` fits every mixture over all sizes.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    err = np.atleast_2d(np.asarray(err, dtype=np.float64))
    if err.shape[0] != sizes.size:
        raise WinnowError(f"err has {err.shape[0]} rows but there are {sizes.size} pilot sizes")
    if method == "log_n_map":
        if sizes.size < 2:
            raise WinnowError("the log-N map needs two pilot sizes")
        o = np.argsort(sizes)[-2:]
        return log_n_map(sizes[o[0]], err[o[0]], sizes[o[1]], err[o[1]], n)
    if method == "power_law":
        return np.array([fit_power_law(sizes, err[:, g], n).prediction for g in range(err.shape[1])])
    raise WinnowError(f"extrapolation={method!r} must be one of {EXTRAPOLATIONS}")
