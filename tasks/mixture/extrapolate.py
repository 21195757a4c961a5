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
* ``repeated_sizes`` — when a mixture p at N asks a pool for more examples than it holds
  (c_k = p_k·N > U_k, a pool pruned below N·p_k), its examples are seen c_k/U_k times. Repeated
  examples are worth less than new ones: the forecast is made at the *effective* size
  N' = Σ_k D'_k with Muennighoff et al. 2023's D' = U + U·R*·(1 − exp(−R/R*)), R = c/U − 1
  (Eq. 5; R* = ``tasks.scaling.R_STAR_D`` = 15.4, measured on language models trained one pass per
  epoch), instead of at N as if every repeated example were new. ``r_star=0`` is the limit where a
  repeat adds nothing (D' = min(c, U)): the project's full-batch linear probe (mean loss, fixed
  weight decay) gives the *identical* model on k whole passes of U rows as on the U rows
  (:data:`PROBE_R_STAR`). ``extrapolate_errors(..., n_effective=...)`` predicts each mixture at its own N'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.mixture.simplex import mixture_counts
from tasks.scaling.forms import R_STAR_D, effective_data

EXTRAPOLATIONS = ("power_law", "log_n_map")
# R* of the project's probe trainer: its objective is a mean over the training rows, so k whole
# passes of U rows define the same problem as the U rows (digits, 150 rows x 1, 2, 4, 8 passes: test
# accuracy 0.8978 each time, training loss equal to 6 digits); partial passes only re-weight
# (1.5 and 2.5 passes: 0.904, 0.893). Repeated examples are worth nothing new: R* -> 0.
PROBE_R_STAR = 0.0


def log_n_weights(n0: float, n1: float, n: float) -> tuple[float, float]:
    """Weights (w0, w1) of the log-N map: L̂(N) = w0·L(N0) + w1·L(N1)."""
    if not 0 < n0 < n1:
        raise ValueError(f"log-N map needs 0 < N0 < N1, got N0={n0}, N1={n1}")
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
        raise ValueError(f"power-law extrapolation needs >= 2 distinct pilot sizes, got {list(sizes)}")
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
        raise ValueError(f"a power law needs >= 2 pilot sizes, got {x.size}")
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


def extrapolate_errors(sizes: Sequence[float], err: np.ndarray, n: float, method: str = "power_law",
                       n_effective: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Predicted error at n for every mixture. err : (S, G) errors at the pilot sizes → (G,).

    ``log_n_map`` uses the two largest pilot sizes; ``power_law`` fits every mixture over all sizes.
    ``n_effective`` (G,) predicts mixture g at its own effective size instead of n (a mixture whose
    pools are repeated at n: :func:`repeated_sizes`).
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    err = np.atleast_2d(np.asarray(err, dtype=np.float64))
    if err.shape[0] != sizes.size:
        raise ValueError(f"err has {err.shape[0]} rows but there are {sizes.size} pilot sizes")
    at = np.full(err.shape[1], float(n)) if n_effective is None else np.asarray(n_effective, dtype=np.float64).ravel()
    if at.size != err.shape[1]:
        raise ValueError(f"n_effective has {at.size} values for {err.shape[1]} mixtures")
    if method == "log_n_map":
        if sizes.size < 2:
            raise ValueError("the log-N map needs two pilot sizes")
        o = np.argsort(sizes)[-2:]
        return np.array([log_n_map(sizes[o[0]], err[o[0], g], sizes[o[1]], err[o[1], g], at[g]) for g in range(err.shape[1])])
    if method == "power_law":
        return np.array([fit_power_law(sizes, err[:, g], at[g]).prediction for g in range(err.shape[1])])
    raise ValueError(f"extrapolation={method!r} must be one of {EXTRAPOLATIONS}")


@dataclass(frozen=True)
class Repeats:
    """How often mixtures see their pools' examples at a target size.

    counts : (G, K) examples taken from each pool; unique : (G, K) distinct examples it holds;
    epochs : (G, K) counts / unique, the times each example is seen (≤ 1: no repetition);
    n_effective : (G,) Σ_k D'_k, the worth of the draw in new examples (= N without repetition);
    r_star : the R*_D used.
    """

    counts: np.ndarray
    unique: np.ndarray
    epochs: np.ndarray
    n_effective: np.ndarray
    r_star: float

    @property
    def repeated(self) -> np.ndarray:
        """(G,) True where some pool is seen more than once."""
        return np.any(self.counts > self.unique, axis=1)

    def describe(self, g: int, names: Sequence[str]) -> str:
        """One line for mixture g, e.g. ``pool b seen 2.50x; effective N 9,871 of 12,000 (R*=15.4)``; '' without repetition."""
        rep = [f"{names[k]} seen {self.epochs[g, k]:.2f}x" for k in range(self.counts.shape[1]) if self.counts[g, k] > self.unique[g, k]]
        if not rep:
            return ""
        return f"{', '.join(rep)}; effective N {self.n_effective[g]:,.0f} of {int(self.counts[g].sum()):,} (R*={self.r_star:g})"


def repeated_sizes(P: np.ndarray, n: int, unique: Sequence[float] | np.ndarray, *, counts: np.ndarray | None = None,
                   r_star: float = R_STAR_D) -> Repeats:
    """Repetitions and effective size of mixtures P (G, K) taking n examples from pools of ``unique`` rows.

    unique : (K,) or (G, K) distinct examples per pool (a pruned pool's kept rows); counts : (G, K)
    the examples taken (default: the largest-remainder counts of p·n). A pool asked for c ≤ U
    examples contributes c; one asked for c > U contributes D' = U + U·R*·(1 − exp(−(c/U − 1)/R*)),
    or U when ``r_star`` is 0 (repeats add nothing, :data:`PROBE_R_STAR`).

    >>> r = repeated_sizes(np.array([[0.5, 0.5]]), 1000, [2000, 100])
    >>> r.epochs.round(2).tolist(), round(float(r.n_effective[0]), 1)
    ([[0.25, 5.0]], 952.3)
    """
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    c = np.stack([mixture_counts(p, int(n)) for p in P]) if counts is None else np.atleast_2d(np.asarray(counts))
    u = np.broadcast_to(np.asarray(unique, dtype=np.float64), c.shape)
    if np.any(u[c > 0] <= 0):
        raise ValueError("a pool that mixtures draw from holds no examples")
    if not r_star >= 0:
        raise ValueError(f"r_star={r_star!r} must be >= 0")
    c = c.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        epochs = np.where(u > 0, c / u, 0.0)
    if r_star == 0:
        d = np.minimum(c, u)
    else:
        d = np.where(c > u, effective_data(np.where(c > u, u, 1.0), c, r_star), c)
    return Repeats(counts=c, unique=np.array(u), epochs=epochs, n_effective=d.sum(axis=1), r_star=float(r_star))
