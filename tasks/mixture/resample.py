"""Projektor's resample mode, kept for comparison with the weighted-union design.

For every mixture p, Projektor draws a fresh dataset D_p of N examples (round(p_i N) from source i)
and recomputes the label-aware OT distance OTDD(D_p, V) from scratch: label distances between
D_p's classes and the target's, then ``ot.emd2``. OT(p) is therefore noisy in p and costs a full
solve per mixture (Kang et al. 2023, Sec. 3; see mixture.md for why winnow defaults to weighting).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.mixture.labeldist import LabelMethod
from tasks.mixture.ot import CostScale, OTResult, ot_distance
from tasks.progress import track
from tasks.mixture.simplex import check_mixture, mixture_counts
from tasks.mixture.weighted import SweepResult


def draw_mixture(
    sources: Sequence[tuple[np.ndarray, np.ndarray]], p: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A dataset of n examples with round(p_i n) drawn without replacement from source i (with
    replacement only when a source has fewer examples than asked). Returns (X (n, d), y (n,))."""
    counts = mixture_counts(p, n)
    Xs, ys = [], []
    for (X, y), c in zip(sources, counts):
        if c == 0:
            continue
        idx = rng.choice(len(X), size=c, replace=c > len(X))
        Xs.append(X[idx])
        ys.append(y[idx])
    return np.concatenate(Xs), np.concatenate(ys)


def resample_ot(
    sources: Sequence[tuple[np.ndarray, np.ndarray]],
    target: tuple[np.ndarray, np.ndarray],
    p: np.ndarray,
    n: int,
    *,
    scale: CostScale | None = None,
    lambda_x: float = 1.0,
    lambda_y: float = 1.0,
    label_method: LabelMethod = "gaussian",
    solver: str = "exact",
    reg: float = 0.05,
    seed: int = 0,
) -> OTResult:
    """OTDD between one fresh draw of n examples from mixture p and the target (Projektor)."""
    p = check_mixture(p, len(sources))
    if n < 1:
        raise ValueError(f"n={n} examples per resampled mixture must be >= 1")
    Xp, yp = draw_mixture(sources, p, n, np.random.default_rng(seed))
    return ot_distance(Xp, yp, target[0], target[1], solver=solver, reg=reg, lambda_x=lambda_x, lambda_y=lambda_y,
                       label_method=label_method, scale=scale, seed=seed)


def resample_sweep(
    sources: Sequence[tuple[np.ndarray, np.ndarray]],
    target: tuple[np.ndarray, np.ndarray],
    grid: np.ndarray,
    n: int,
    *,
    solver: str = "exact",
    reg: float = 0.05,
    seed: int = 0,
    progress: bool = False,
    **cost: Any,
) -> SweepResult:
    """:func:`resample_ot` for every row of ``grid`` (G, K) with seeds ``seed + row``; no gradients.
    ``cost`` holds its ground-cost keywords (scale, lambda_x, lambda_y, label_method)."""
    grid = np.asarray(grid, dtype=np.float64)
    values, secs = np.zeros(len(grid)), np.zeros(len(grid))
    for g in track(range(len(grid)), "OT sweep (resample)", enabled=progress):
        t0 = time.perf_counter()
        values[g] = resample_ot(sources, target, grid[g], n, solver=solver, reg=reg, seed=seed + g, **cost).value
        secs[g] = time.perf_counter() - t0
    return SweepResult(grid=grid, values=values, grads=np.full((len(grid), grid.shape[1]), np.nan), seconds=secs,
                       n_iter=np.zeros(len(grid), dtype=np.int64), setup_seconds=0.0, solver=f"resample-{solver}",
                       reg=0.0 if solver == "exact" else reg, mode=f"resample-n{n}")
