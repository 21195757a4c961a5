"""Pilot runs: train the probe on N examples drawn from mixture p, evaluate on the target's test split.

A pilot (p, N, rep) draws round(p_i N) examples without replacement from pool i (largest-remainder
rounding so counts sum to N), trains the linear probe of :mod:`tasks.probe` and records the test
accuracy on the target's held-out split. Pilots are independent training jobs
(:func:`tasks.mixture.jobs.pilot_trials`); jobs of equal N are trained as one stacked
problem (:func:`train_probes_stacked`, the objective of ``tasks.probe.train_linear_probe``) in which
each probe touches only its own N rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.mixture.simplex import mixture_counts


@dataclass(frozen=True)
class PilotSpec:
    """One pilot training. mixture_id indexes the grid; seed drives the draw."""

    mixture_id: int
    p: tuple[float, ...]
    n: int
    rep: int
    seed: int


@dataclass(frozen=True)
class PilotResult(PilotSpec):
    """A pilot and its test accuracy; seconds is its share of its chunk's wall time."""

    accuracy: float
    seconds: float


@dataclass(frozen=True)
class Pools:
    """The training pools, concatenated. X : (n_total, d) float32; y : (n_total,) int64 codes in the
    target's label space; sizes : (K,) rows per pool (pool i is rows offsets[i]:offsets[i]+sizes[i])."""

    X: np.ndarray
    y: np.ndarray
    sizes: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @classmethod
    def from_blocks(cls, blocks: Sequence[tuple[np.ndarray, np.ndarray]]) -> "Pools":
        for i, (X, y) in enumerate(blocks):
            if len(X) == 0:
                raise ValueError(f"pool {i} is empty (0 examples)")
        return cls(X=np.concatenate([np.asarray(X, dtype=np.float32) for X, _ in blocks]),
                   y=np.concatenate([np.asarray(y, dtype=np.int64) for _, y in blocks]),
                   sizes=np.array([len(X) for X, _ in blocks], dtype=np.int64))


def pilot_seed(seed: int, mixture_id: int, n: int, rep: int) -> int:
    """Deterministic per-pilot seed (independent of chunking and execution order)."""
    return int(np.random.SeedSequence([seed, mixture_id, n, rep]).generate_state(1)[0])


def plan_pilots(grid: np.ndarray, sizes: Sequence[int], reps: int, seed: int = 0) -> list[PilotSpec]:
    """Every (grid point, pilot size, repetition). grid : (G, K)."""
    if reps < 1:
        raise ValueError(f"reps={reps} must be >= 1")
    if not sizes or min(sizes) < 1:
        raise ValueError(f"pilot sizes {list(sizes)} must be non-empty and >= 1")
    return [
        PilotSpec(mixture_id=g, p=tuple(float(x) for x in grid[g]), n=int(n), rep=r, seed=pilot_seed(seed, g, int(n), r))
        for n in sizes for g in range(len(grid)) for r in range(reps)
    ]


def check_pool_capacity(pool_sizes: np.ndarray, grid: np.ndarray, sizes: Sequence[int], names: Sequence[str]) -> None:
    """Every pilot draws without replacement: p_i N must fit into pool i for every grid point."""
    for n in sizes:
        need = np.max(np.stack([mixture_counts(p, int(n)) for p in grid]), axis=0)
        for i, (nm, have) in enumerate(zip(names, pool_sizes)):
            if need[i] > have:
                raise WinnowError(
                    f"pilot size {n} needs up to {need[i]} examples from pool {nm!r}, which has {have}: "
                    "lower the pilot sizes or enlarge the pool"
                )


def check_target_capacity(pool_sizes: np.ndarray, grid: np.ndarray, n: int, names: Sequence[str]) -> None:
    """Trainings at the target size draw without replacement too: some grid mixture must fit the pools
    at ``n`` (else no finalist or validation mixture can be trained there)."""
    if not any(np.all(mixture_counts(p, int(n)) <= pool_sizes) for p in grid):
        pools = ", ".join(f"{nm!r} {int(have)}" for nm, have in zip(names, pool_sizes))
        raise WinnowError(
            f"no grid mixture fits the pools at target_n={n} (pools: {pools}): lower extrapolation.target_n, "
            "set extrapolation.train_at_target: false, or enlarge the pools"
        )


def pilot_indices(spec: PilotSpec, pools: Pools) -> np.ndarray:
    """Row indices into ``pools`` for one pilot (drawn without replacement per pool)."""
    rng = np.random.default_rng(spec.seed)
    counts = mixture_counts(np.asarray(spec.p), spec.n)
    parts = []
    for off, size, c in zip(pools.offsets, pools.sizes, counts):
        if c > size:
            raise RuntimeError(f"pilot p={spec.p} N={spec.n} needs {c} rows from a pool of {size}")
        if c:
            parts.append(off + rng.choice(size, size=c, replace=False))
    return np.concatenate(parts).astype(np.int64)


def train_probes_stacked(
    Xs: np.ndarray,
    Ys: np.ndarray,
    X_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    n_classes: int,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
) -> np.ndarray:
    """B independent linear probes on B equal-size training sets, solved as one stacked problem.

    Same objective as ``tasks.probe.train_linear_probe`` (standardisation from each probe's own
    rows, mean cross-entropy + ½λ‖W‖², L-BFGS with strong Wolfe from zero), but each probe only
    touches its own N rows: the cost is B·N·d·C per evaluation, where the shared-pool batched
    solver pays B·(rows of all probes)·d·C. The summed objective is block-diagonal, so its minimiser
    is the tuple of the individual minimisers.

    Xs : (B, N, d) float32; Ys : (B, N) int64; X_eval : (m, d); y_eval : (m,). Returns (B,) accuracies.
    """
    import torch

    X = torch.from_numpy(np.ascontiguousarray(Xs, dtype=np.float32))
    B, N, d = X.shape
    mean = X.mean(1, keepdim=True)
    std = X.std(1, unbiased=False, keepdim=True)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    Z = (X - mean) / std
    Y = torch.from_numpy(np.asarray(Ys, dtype=np.int64))
    W = torch.zeros(B, d, n_classes, requires_grad=True)
    b = torch.zeros(B, 1, n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.5) + 10, history_size=20,
                            tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> "torch.Tensor":
        opt.zero_grad()
        logits = torch.bmm(Z, W) + b
        nll = torch.nn.functional.cross_entropy(logits.reshape(B * N, n_classes), Y.reshape(-1), reduction="sum") / N
        loss = nll + 0.5 * weight_decay * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        Xe = torch.from_numpy(np.ascontiguousarray(X_eval, dtype=np.float32))
        Ze = (Xe[None] - mean) / std  # (B, m, d)
        pred = (torch.bmm(Ze, W) + b).argmax(2).numpy()
    return (pred == np.asarray(y_eval)[None, :]).mean(1)


def pilot_results(specs: Sequence[PilotSpec], results: Sequence) -> list[PilotResult]:
    """PilotResults of ``specs`` from the TrialResults of :func:`tasks.mixture.jobs.pilot_trials` (matched by key, n, rep)."""
    by = {(r.key, r.n, r.rep): r for r in results}
    out = []
    for s in specs:
        r = by[(str(s.mixture_id), s.n, s.rep)]
        out.append(PilotResult(mixture_id=s.mixture_id, p=s.p, n=s.n, rep=s.rep, seed=s.seed, accuracy=r.accuracy,
                               seconds=r.seconds))
    return out


@dataclass(frozen=True)
class PilotTable:
    """Pilot accuracies aggregated over repetitions. grid : (G, K); sizes : (S,);
    median, mean, std : (S, G) accuracy statistics over reps; reps : (S, G, R) raw values (nan if missing)."""

    grid: np.ndarray
    sizes: np.ndarray
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    reps: np.ndarray


def aggregate_pilots(results: Sequence[PilotResult], grid: np.ndarray) -> PilotTable:
    """Median/mean/std over repetitions for every (size, mixture)."""
    sizes = np.array(sorted({r.n for r in results}), dtype=np.int64)
    R = max(r.rep for r in results) + 1
    vals = np.full((len(sizes), len(grid), R), np.nan)
    si = {int(n): i for i, n in enumerate(sizes)}
    for r in results:
        vals[si[r.n], r.mixture_id, r.rep] = r.accuracy
    with np.errstate(all="ignore"):
        return PilotTable(grid=np.asarray(grid), sizes=sizes, median=np.nanmedian(vals, axis=2),
                          mean=np.nanmean(vals, axis=2), std=np.nanstd(vals, axis=2), reps=vals)
