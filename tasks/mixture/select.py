"""Choosing the mixture: projected gradient ascent of predicted accuracy at the target size.

Objective (mixture.md, "Choosing the mixture"): with stage-1 predictors acc_k(p) = φ(p, OT(p))·θ_k
fitted at pilot sizes N_k and an extrapolation to the target N,

* ``power_law``: err(N, p) = exp(Σ_k w_k log(1 − acc_k(p))), w from :func:`loglinear_weights`
  (the log-log least-squares line, i.e. err = B·N^−c through the predicted pilot errors);
* ``log_n_map``: err(N, p) = w0 (1 − acc_0(p)) + w1 (1 − acc_1(p)) (Projektor's map, two largest sizes);

maximise acc(N, p) = 1 − err(N, p) over the feasible set {p ∈ Δ_K, p_i N ≤ available_i,
Σ_i cost_i p_i ≤ budget}. The gradient is exact: ∂acc_k/∂p chains the predictor's features through
∂OT/∂p (the dual potentials, :mod:`tasks.mixture.weighted`), the *mapped* gradient rather than the
N0-only one (a defect of the reference code). Steps are normalised tangent-space gradients with a
decaying step size, followed by the exact projection of :func:`project_capped_simplex`; several
starts (vertices, centre, best grid point) and the best iterate wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.mixture.extrapolate import log_n_weights, loglinear_weights
from tasks.mixture.predictor import PredictorFit
from tasks.mixture.simplex import feasible_region_check, project_capped_simplex

OTFn = Callable[[np.ndarray], tuple[float, np.ndarray]]  # p -> (OT(p), ∂OT/∂p)


@dataclass(frozen=True)
class Objective:
    """Predicted accuracy at ``n_target`` from stage-1 fits (one per pilot size) and an extrapolation."""

    fits: Sequence[PredictorFit]
    n_target: int
    extrapolation: str = "power_law"

    def __post_init__(self) -> None:
        if not self.fits:
            raise ValueError("selection needs at least one fitted predictor")
        if self.extrapolation not in ("power_law", "log_n_map", "none"):
            raise ValueError(f"extrapolation={self.extrapolation!r} must be power_law, log_n_map or none")

    def _weights(self) -> tuple[list[PredictorFit], np.ndarray, str]:
        fits = sorted(self.fits, key=lambda f: f.n)
        if self.extrapolation == "none" or len(fits) == 1:
            return fits[-1:], np.array([1.0]), "linear"
        if self.extrapolation == "log_n_map":
            w0, w1 = log_n_weights(fits[-2].n, fits[-1].n, self.n_target)
            return fits[-2:], np.array([w0, w1]), "linear"
        return fits, loglinear_weights([f.n for f in fits], self.n_target), "log"

    def value_grad(self, p: np.ndarray, ot_value: float, ot_grad: np.ndarray) -> tuple[float, np.ndarray]:
        """(predicted accuracy at n_target, its gradient (K,)) at p."""
        fits, w, kind = self._weights()
        accs = np.array([float(f.predict(p[None], np.array([ot_value]))[0]) for f in fits])
        grads = np.stack([f.grad(p, ot_value, ot_grad) for f in fits])
        errs = 1.0 - accs
        if kind == "linear":
            return float(1.0 - w @ errs), w @ grads
        errs_c = np.clip(errs, 1e-4, 1.0)
        err_t = float(np.exp(w @ np.log(errs_c)))
        if err_t >= 1.0:  # predicted accuracy stays in [0, 1]
            return 0.0, np.zeros_like(grads[0])
        return 1.0 - err_t, err_t * (w / errs_c) @ grads


@dataclass(frozen=True)
class SelectionResult:
    """Chosen mixture and how it was found.

    p : (K,) chosen mixture; predicted : predicted accuracy at n_target; lo, hi : approximate
    interval (± 1.96 × the predictor's held-out RMSE); path : (T, K) iterates of the winning start;
    path_values : (T,); starts : (S, K) starting points; start_values : (S,) final value per start.
    """

    p: np.ndarray
    predicted: float
    lo: float
    hi: float
    n_target: int
    path: np.ndarray
    path_values: np.ndarray
    starts: np.ndarray
    start_values: np.ndarray


def default_starts(k: int, grid: np.ndarray | None = None, grid_values: np.ndarray | None = None) -> np.ndarray:
    """Vertices, the centre and (if given) the best grid point by predicted value."""
    starts = [np.eye(k)[i] for i in range(k)] + [np.full(k, 1.0 / k)]
    if grid is not None and grid_values is not None:
        starts.append(np.asarray(grid)[int(np.nanargmax(grid_values))])
    return np.array(starts)


def select_mixture(
    objective: Objective,
    ot_fn: OTFn,
    *,
    starts: np.ndarray,
    available: Sequence[float] | None = None,
    cost: Sequence[float] | None = None,
    budget: float | None = None,
    steps: int = 20,
    step_size: float = 0.15,
    decay: float = 0.8,
    rmse: float = 0.0,
    tol_p: float = 1e-3,
) -> SelectionResult:
    """Projected gradient ascent from each start; returns the best iterate found.

    Parameters
    ----------
    ot_fn : p ↦ (OT(p), ∂OT/∂p).
    starts : (S, K) starting mixtures (projected onto the feasible set first).
    available : (K,) examples available per source; caps p_i ≤ available_i / n_target.
    cost, budget : (K,) cost per example of each source and the allowed mean cost per example.
    tol_p : stop a start when an iterate moves, or the step size falls, below this (max-norm).
    """
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    k = starts.shape[1]
    upper = None
    if available is not None:
        av = np.asarray(available, dtype=np.float64)
        if av.shape != (k,) or np.any(av < 0):
            raise ValueError(f"available={list(available)} must be {k} counts >= 0")
        upper = np.minimum(av / objective.n_target, 1.0)
    if (cost is None) != (budget is None):
        raise ValueError("cost and budget go together: give both or neither")
    c = None if cost is None else np.asarray(cost, dtype=np.float64)
    if c is not None and (c.shape != (k,) or np.any(c < 0)):
        raise ValueError(f"cost={list(cost)} must be {k} values >= 0")
    feasible_region_check(upper, c, budget, k)

    def proj(v: np.ndarray) -> np.ndarray:
        return project_capped_simplex(v, upper, c, budget)

    best = (-np.inf, None, None, None)
    finals = []
    for s in starts:
        p = proj(s)
        path, vals = [p.copy()], []
        eta = step_size
        top_v, top_p = -np.inf, p
        for _ in range(steps):
            ot_v, ot_g = ot_fn(p)
            v, g = objective.value_grad(p, ot_v, ot_g)
            vals.append(v)
            if v > top_v:
                top_v, top_p = v, p.copy()
            gt = g - g.mean()  # tangent space of Σp = 1
            norm = np.linalg.norm(gt)
            if norm < 1e-12:
                break
            p_new = proj(p + eta * gt / norm)
            eta *= decay
            if np.abs(p_new - p).max() < tol_p or eta < tol_p:
                p = p_new
                path.append(p.copy())
                break
            p = p_new
            path.append(p.copy())
        if len(vals) < len(path):
            ot_v, ot_g = ot_fn(p)
            v, _ = objective.value_grad(p, ot_v, ot_g)
            vals.append(v)
            if v > top_v:
                top_v, top_p = v, p.copy()
        finals.append(top_v)
        if top_v > best[0]:
            best = (top_v, top_p, np.array(path), np.array(vals))
    v, p, path, vals = best
    return SelectionResult(p=p, predicted=float(v), lo=float(v - 1.96 * rmse), hi=float(v + 1.96 * rmse),
                           n_target=objective.n_target, path=path, path_values=vals, starts=starts,
                           start_values=np.array(finals))
