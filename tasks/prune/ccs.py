"""Coverage-centric coreset selection (CCS) — Zheng et al. 2023, "Coverage-centric coreset
selection for high pruning rates". Wraps any difficulty score.

1. Drop the β hardest fraction (highest scores: mislabel-prone at aggressive pruning).
2. Split the remaining score range into ``n_strata`` equal-width strata.
3. Allocate the budget from the smallest stratum up:
   :math:`m_s = \\min(|S_s|, \\lceil \\text{remaining} / \\text{strata left} \\rceil)`.
4. Sample :math:`m_s` members uniformly (seeded) inside each stratum.

Rounding up in step 3 makes the quotas sum exactly to the budget: a stratum that is not
exhausted is at least as large as every smaller one before it, so the last stratum can always
absorb the remainder. When fewer than ``budget`` examples survive step 1, β is lowered to
``(n - budget) / n`` (recorded in the result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


__all__ = ["CCSResult", "ccs_select", "ccs_quotas"]


@dataclass(frozen=True)
class CCSResult:
    """indices : (budget,) int64 sorted kept rows; stratum : (n,) int64 stratum of each row
    (-1 for the dropped hard tail); quotas : (n_strata,) int64 kept per stratum;
    sizes : (n_strata,) int64 rows per stratum; n_dropped_hard : rows removed in step 1;
    beta_used : the effective β."""

    indices: np.ndarray
    stratum: np.ndarray
    quotas: np.ndarray
    sizes: np.ndarray
    n_dropped_hard: int
    beta_used: float


def ccs_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Budget per stratum, filled from the smallest stratum up (step 3 above); sums to ``budget``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget > sizes.sum():
        raise ValueError(f"budget={budget} exceeds the {int(sizes.sum())} rows available in the strata")
    quotas = np.zeros_like(sizes)
    order = np.argsort(sizes, kind="stable")
    remaining = int(budget)
    nonempty = order[sizes[order] > 0]
    left = len(nonempty)
    for s in nonempty:
        q = min(int(sizes[s]), -(-remaining // left))  # ceil
        quotas[s] = q
        remaining -= q
        left -= 1
    return quotas


def ccs_select(scores: np.ndarray, budget: int, *, beta: float = 0.1, n_strata: int = 50, seed: int = 0) -> CCSResult:
    """Stratified coverage selection of ``budget`` rows over any score (higher = harder).

    Parameters
    ----------
    scores : (n,) finite float scores.
    budget : rows to keep, 1 <= budget <= n.
    beta : hard fraction to drop first, in [0, 1).
    n_strata : equal-width strata over the remaining score range (>= 1).
    seed : seeds the sampling inside strata.

    Examples
    --------
    >>> r = ccs_select(np.arange(100.0), 20, beta=0.1, n_strata=10, seed=0)
    >>> len(r.indices), int(r.indices.max()) < 90
    (20, True)
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array; got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores has {int((~np.isfinite(scores)).sum())} non-finite values")
    n = scores.size
    if not (0.0 <= beta < 1.0):
        raise ValueError(f"beta={beta} must be in [0, 1) (ccs_beta)")
    if n_strata < 1:
        raise ValueError(f"n_strata={n_strata} must be >= 1 (ccs_strata)")
    if not (1 <= budget <= n):
        raise ValueError(f"budget={budget} must be in [1, n={n}]")
    rng = np.random.default_rng(seed)
    n_drop = min(int(np.floor(beta * n)), n - budget)
    # hardest first; equal scores in a seeded random order (never row order: rows may be sorted by class)
    order = np.lexsort((np.random.default_rng([int(seed), 0x7E1B]).random(n), -scores))
    stratum = np.full(n, -1, dtype=np.int64)
    rest = order[n_drop:]
    lo, hi = scores[rest].min(), scores[rest].max()
    width = (hi - lo) / n_strata
    if width > 0:
        stratum[rest] = np.minimum(((scores[rest] - lo) / width).astype(np.int64), n_strata - 1)
    else:
        stratum[rest] = 0
    sizes = np.bincount(stratum[rest], minlength=n_strata).astype(np.int64)
    quotas = ccs_quotas(sizes, budget)
    # uniform sampling inside strata: random key, sort by (stratum, key), first m_s of each
    key = rng.random(rest.size)
    o = np.lexsort((key, stratum[rest]))
    by = rest[o]
    st = stratum[by]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(by.size) - starts[st]
    chosen = by[rank < quotas[st]]
    return CCSResult(
        indices=np.sort(chosen).astype(np.int64),
        stratum=stratum,
        quotas=quotas,
        sizes=sizes,
        n_dropped_hard=int(n_drop),
        beta_used=float(n_drop / n),
    )
