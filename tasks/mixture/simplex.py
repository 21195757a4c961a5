"""The probability simplex: validation, grids, a neighbour path through a grid, and projections.

Mixtures are points of the simplex Δ_K = {p ∈ R^K : p_i ≥ 0, Σ p_i = 1}. Selection needs the exact
Euclidean projection onto Δ_K (Duchi, Shalev-Shwartz, Singer, Chandra, ICML 2008, "Efficient
projections onto the l1-ball for learning in high dimensions", Fig. 1), and onto the simplex cut
by availability caps p_i ≤ u_i and a cost budget Σ c_i p_i ≤ β (solved exactly from the KKT
conditions by nested bisection on the two multipliers).
"""

from __future__ import annotations

import itertools

import numpy as np

from tasks.errors import WinnowError

SIMPLEX_TOL = 1e-6


def check_mixture(p: np.ndarray | list[float], k: int | None = None, *, name: str = "p") -> np.ndarray:
    """Return ``p`` as a float64 (K,) array, or a ValueError if it is not on the simplex.

    Parameters
    ----------
    p : (K,) mixture weights.
    k : expected number of sources (None: any K ≥ 1).
    """
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}={list(np.atleast_1d(arr))} must be a non-empty 1-d vector of weights")
    if k is not None and arr.size != k:
        raise ValueError(f"{name}={arr.tolist()} has {arr.size} weights but there are {k} sources")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}={arr.tolist()} contains a non-finite weight")
    if np.any(arr < -SIMPLEX_TOL):
        raise ValueError(f"{name}={arr.tolist()} has a negative weight; mixture weights must be >= 0")
    if abs(arr.sum() - 1.0) > SIMPLEX_TOL * max(1, arr.size):
        raise ValueError(f"{name}={arr.tolist()} sums to {arr.sum():.6g}; mixture weights must sum to 1")
    arr = np.clip(arr, 0.0, None)
    return arr / arr.sum()


def simplex_grid(k: int, step: float = 0.1) -> np.ndarray:
    """All p ∈ Δ_K with coordinates on multiples of ``step`` (66 points for K=3, step 0.1).

    Returns (n_points, K) float64, rows in lexicographic order of (p_1, …, p_{K-1}).
    """
    if k < 1:
        raise ValueError(f"k={k} sources: need at least 1")
    m = round(1.0 / step)
    if m < 1 or abs(m * step - 1.0) > 1e-9:
        raise WinnowError(f"grid step={step} must divide 1 (e.g. 0.1, 0.2, 0.25)")
    pts = [c + (m - sum(c),) for c in itertools.product(range(m + 1), repeat=k - 1) if sum(c) <= m]
    return np.asarray(pts, dtype=np.float64) / m


def snake_order(grid: np.ndarray) -> np.ndarray:
    """A permutation of grid rows such that consecutive points are grid neighbours where possible.

    Boustrophedon order over the leading coordinates: consecutive mixtures differ by one grid step
    in most places, so a solver warm-started from the previous point starts close to its optimum.
    """
    keys = np.round(np.asarray(grid)[:, :-1] * 1e6).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    if keys.shape[1] == 0:
        return order
    out: list[int] = []
    first = keys[order, 0]
    for j, v in enumerate(np.unique(first)):
        block = order[first == v]
        out.extend(block if j % 2 == 0 else block[::-1])
    return np.asarray(out, dtype=np.int64)


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of v onto Δ_K (Duchi et al. 2008, Fig. 1).

    .. math:: \\Pi(v) = \\max(v - \\theta, 0), \\quad
              \\theta = \\frac{1}{\\rho}\\Big(\\sum_{i \\le \\rho} u_i - 1\\Big),\\;
              \\rho = \\max\\{j : u_j - \\tfrac{1}{j}(\\sum_{i\\le j} u_i - 1) > 0\\}

    with u = v sorted in decreasing order. v : (K,) → (K,).
    """
    v = np.asarray(v, dtype=np.float64)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    j = np.arange(1, v.size + 1)
    rho = np.nonzero(u - css / j > 0)[0][-1]
    theta = css[rho] / (rho + 1)
    return np.maximum(v - theta, 0.0)


def _sum_one_box(v: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """argmin ‖x − v‖ s.t. Σx = 1, 0 ≤ x ≤ upper: x = clip(v − τ, 0, upper), τ by bisection."""
    lo, hi = v.min() - 1.0 - upper.max(), v.max()
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        s = np.clip(v - tau, 0.0, upper).sum()
        if s > 1.0:
            lo = tau
        else:
            hi = tau
        if hi - lo < 1e-15:
            break
    return np.clip(v - 0.5 * (lo + hi), 0.0, upper)


def feasible_region_check(upper: np.ndarray | None, cost: np.ndarray | None, budget: float | None, k: int) -> None:
    """Raise WinnowError if caps/budget leave no mixture (Σ u_i < 1, or min over the capped simplex of c·p > β):
    the pools or the budget of the config cannot be met (bad input, not a bug)."""
    u = np.ones(k) if upper is None else np.asarray(upper, dtype=np.float64)
    if u.shape != (k,) or np.any(u < 0):
        raise ValueError(f"availability caps {u.tolist()} must be {k} values >= 0")
    if u.sum() < 1.0 - 1e-9:
        raise WinnowError(f"availability caps {np.round(u, 4).tolist()} sum to {u.sum():.4f} < 1: no mixture is feasible")
    if budget is not None:
        c = np.asarray(cost, dtype=np.float64)
        # cheapest feasible mixture: fill the cheapest sources up to their caps
        rem, cheapest = 1.0, 0.0
        for i in np.argsort(c):
            take = min(u[i], rem)
            cheapest += take * c[i]
            rem -= take
        if cheapest > budget + 1e-12:
            raise WinnowError(f"budget={budget:.6g} per example is below the cheapest feasible mixture cost {cheapest:.6g}")


def project_capped_simplex(
    v: np.ndarray,
    upper: np.ndarray | None = None,
    cost: np.ndarray | None = None,
    budget: float | None = None,
) -> np.ndarray:
    """Exact Euclidean projection onto {p ∈ Δ_K : p ≤ upper, cost·p ≤ budget}.

    KKT: p(τ, λ) = clip(v − τ − λ c, 0, u) with τ making Σp = 1 and λ ≥ 0 the smallest value with
    c·p ≤ β (c·p(λ) is non-increasing in λ). Without caps and budget this equals
    :func:`project_simplex`.

    Parameters
    ----------
    v : (K,) point to project.
    upper : (K,) caps in [0, 1] (e.g. available_i / N), or None.
    cost : (K,) cost per example of each source; budget : cost per example allowed (β).
    """
    v = np.asarray(v, dtype=np.float64)
    k = v.size
    if upper is None and budget is None:
        return project_simplex(v)
    feasible_region_check(upper, cost, budget, k)
    u = np.minimum(np.ones(k) if upper is None else np.asarray(upper, dtype=np.float64), 1.0)
    p = _sum_one_box(v, u)
    if budget is None:
        return p
    c = np.asarray(cost, dtype=np.float64)
    if c @ p <= budget + 1e-12:
        return p
    lo, hi = 0.0, 1.0
    while c @ _sum_one_box(v - hi * c, u) > budget and hi < 1e12:
        hi *= 2.0
    for _ in range(200):
        lam = 0.5 * (lo + hi)
        if c @ _sum_one_box(v - lam * c, u) > budget:
            lo = lam
        else:
            hi = lam
        if hi - lo < 1e-14 * max(1.0, hi):
            break
    return _sum_one_box(v - hi * c, u)


def mixture_counts(p: np.ndarray, n: int) -> np.ndarray:
    """Per-source example counts for n examples from mixture p: round(p_i n), fixed by largest
    remainder so that they sum to exactly n. Returns (K,) int64."""
    p = np.asarray(p, dtype=np.float64)
    raw = p * n
    counts = np.floor(raw).astype(np.int64)
    short = int(n - counts.sum())
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts
