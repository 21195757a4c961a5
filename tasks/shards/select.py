"""Exact selections at scale: global and per-group budgets from per-shard histograms.

The in-memory :func:`tasks.prune.select.select` ranks all rows by (key descending, seeded tie
ascending) within each group and keeps the top ``quota_g`` of group g. Here no process sees all
the scores. Instead, per group, the boundary — the (key, tie) of the last row kept — is found by
a radix select over per-shard histograms:

1. keys (float32 scores, negated for keep-easy) are mapped to uint32 in the same order
   (:func:`sortable_u32`);
2. each pass, every shard histograms the next ``bits`` bits of the keys of its rows that are still
   in their group's boundary region (rows whose higher bits equal the group's prefix); the driver
   adds the histograms and, walking the bins from the top, finds the bin where the group's
   remaining need is met (:func:`narrow`); rows in higher bins are kept, the bin becomes the new
   region;
3. as soon as the regions hold few rows (or all 32 bits are fixed), the shards send those rows'
   (key, tie) and the driver resolves the exact last kept row per group (:func:`resolve_boundary`);
4. each shard keeps ``key > K_g or (key == K_g and tie <= T_g)`` (:func:`select_mask`).

The seeded tie of global row i is the in-memory :func:`tie_breaker` value, generated for a shard
alone by advancing the PCG64 stream (:func:`shard_ties`), so the selected ids are the in-memory ones.
Budgets, quotas and the ``auto`` rule come from :mod:`tasks.prune.select` (:func:`plan_selection`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.prune.select import AUTO_ALPHA_THRESHOLD, allocate_quotas, auto_policy, resolve_budget

__all__ = [
    "PASS_BITS",
    "BoundaryState",
    "SelectionPlan",
    "boundary_candidates",
    "narrow",
    "plan_selection",
    "region_histogram",
    "resolve_boundary",
    "select_mask",
    "shard_ties",
    "sortable_u32",
    "start_boundary",
]

PASS_BITS = (11, 11, 10)  # 32 bits in three histogram passes of at most 2048 bins per group
NONE_SELECTED = np.int64(1) << 32  # a threshold above every key: the group keeps nothing


@dataclass(frozen=True)
class SelectionPlan:
    """What to select: ``quotas[g]`` rows of group g by ``resolved_policy`` ("hard" | "easy")."""

    policy: str
    resolved_policy: str
    balance: str
    budget: int
    n: int
    quotas: np.ndarray
    reason: str


def plan_selection(
    sizes: np.ndarray,
    dim: int,
    *,
    fraction: float,
    policy: str = "auto",
    balance: str = "none",
    auto_threshold: float = AUTO_ALPHA_THRESHOLD,
    auto_groups: int | None = None,
) -> SelectionPlan:
    """Budget, per-group quotas and the resolved policy from the group sizes alone.

    ``balance``: "none" (one global ranking, group 0 only), "proportional" or "equal" over the
    groups of ``sizes`` (clusters). ``auto`` divides the budget by ``auto_groups`` groups (default, as
    :func:`tasks.prune.select.select` without ``n_groups``: the non-empty groups when balancing, one
    otherwise); ``dim`` should be the effective dimension (:func:`tasks.prune.select.effective_dim`).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    budget = resolve_budget(n, fraction=fraction)
    if policy not in ("hard", "easy", "auto"):
        raise ValueError(f"policy={policy!r}: the sharded path supports hard, easy and auto")
    if balance == "none":
        quotas = np.array([budget], dtype=np.int64)
        n_groups = 1
    elif balance in ("proportional", "equal"):
        w = sizes.astype(np.float64) if balance == "proportional" else (sizes > 0).astype(np.float64)
        quotas = allocate_quotas(w, sizes, budget)
        n_groups = int((sizes > 0).sum())
    else:
        raise ValueError(f"balance={balance!r}: the sharded path supports none, proportional and equal")
    resolved, reason = policy, {"hard": "keep-hard: highest scores", "easy": "keep-easy: lowest scores"}.get(policy, "")
    if policy == "auto":
        dec = auto_policy(budget, n_groups if auto_groups is None else auto_groups, dim, threshold=auto_threshold)
        resolved, reason = dec.policy, dec.reason
    if balance != "none":
        reason += f"; {balance} balance over {sizes.size} groups"
    return SelectionPlan(policy, resolved, balance, budget, n, quotas, reason)


def sortable_u32(scores: np.ndarray, resolved_policy: str) -> np.ndarray:
    """(m,) uint32 keys ordered like the selection key (score for keep-hard, -score for keep-easy).

    IEEE float32 bits are monotone for non-negative values and reversed for negative ones: flip all
    bits of negatives, set the sign bit of non-negatives.
    """
    s = np.asarray(scores, dtype=np.float32)
    if resolved_policy == "easy":
        s = -s
    elif resolved_policy != "hard":
        raise ValueError(f"resolved_policy={resolved_policy!r} must be 'hard' or 'easy'")
    bits = s.view(np.uint32)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def shard_ties(seed: int, start: int, m: int) -> np.ndarray:
    """``tie_breaker(n, seed)[start:start + m]`` without generating the first ``start`` values.

    Each float64 of ``Generator.random`` consumes one 64-bit PCG64 output, so advancing the bit
    generator by ``start`` steps lands on row ``start``'s value.
    """
    rng = np.random.default_rng([int(seed), 0x7E1B])
    rng.bit_generator.advance(int(start))
    return rng.random(int(m))


@dataclass
class BoundaryState:
    """Per-group radix state: ``prefix`` (the fixed high bits of the boundary key), ``fixed`` (how
    many bits), ``need`` (rows still to take from the group's region; 0 only for a quota of 0)."""

    prefix: np.ndarray
    fixed: int
    need: np.ndarray
    passes: int = 0


def start_boundary(quotas: np.ndarray) -> BoundaryState:
    q = np.asarray(quotas, dtype=np.int64)
    return BoundaryState(prefix=np.zeros(q.size, dtype=np.int64), fixed=0, need=q.copy())


def _in_region(u: np.ndarray, g: np.ndarray, state: BoundaryState) -> np.ndarray:
    if state.fixed == 0:
        return state.need[g] > 0
    return ((u.astype(np.int64) >> (32 - state.fixed)) == state.prefix[g]) & (state.need[g] > 0)


def region_histogram(u: np.ndarray, g: np.ndarray, state: BoundaryState, bits: int) -> np.ndarray:
    """(G, 2**bits) int64 counts of the next ``bits`` key bits of one shard's rows in the region."""
    G = state.need.size
    sel = _in_region(u, g, state)
    shift = 32 - state.fixed - bits
    b = (u[sel].astype(np.int64) >> shift) & ((1 << bits) - 1)
    return np.bincount(g[sel].astype(np.int64) * (1 << bits) + b, minlength=G << bits).reshape(G, 1 << bits)


def narrow(state: BoundaryState, counts: np.ndarray, bits: int) -> tuple[BoundaryState, int]:
    """Fix ``bits`` more bits of every group's boundary from the summed histograms (G, 2**bits).

    Returns the new state and the number of rows in the new regions."""
    G, B = counts.shape
    need = state.need.copy()
    prefix = state.prefix.copy()
    region = 0
    for gi in np.flatnonzero(need > 0):
        desc = counts[gi, ::-1]
        cum = np.cumsum(desc)
        j = int(np.searchsorted(cum, need[gi]))  # first bin (from the top) where the need is met
        if j >= B:
            raise RuntimeError(f"group {gi}: histograms hold {int(cum[-1])} rows, fewer than the {int(need[gi])} needed")
        need[gi] -= int(cum[j - 1]) if j > 0 else 0
        prefix[gi] = (prefix[gi] << bits) | (B - 1 - j)
        region += int(desc[j])
    for gi in np.flatnonzero(state.need == 0):
        prefix[gi] <<= bits
    return BoundaryState(prefix=prefix, fixed=state.fixed + bits, need=need, passes=state.passes + 1), region


def boundary_candidates(u: np.ndarray, tie: np.ndarray, g: np.ndarray, state: BoundaryState) -> tuple[np.ndarray, ...]:
    """One shard's rows in the boundary regions: (group, key, tie)."""
    sel = _in_region(u, g, state)
    return g[sel].astype(np.int64), u[sel].astype(np.int64), tie[sel]


def resolve_boundary(state: BoundaryState, cand: Sequence[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """The exact last kept row of every group: thresholds ``(K (G,) int64, T (G,) float64)``.

    ``cand`` are the shards' :func:`boundary_candidates`. Within a group's region the rows are ranked
    by (key descending, tie ascending) and the ``need``-th one is the boundary; a group with quota 0
    keeps nothing (K above every key).
    """
    G = state.need.size
    K = np.empty(G, dtype=np.int64)
    T = np.full(G, np.inf)
    gs = np.concatenate([c[0] for c in cand]) if cand else np.empty(0, dtype=np.int64)
    ks = np.concatenate([c[1] for c in cand]) if cand else np.empty(0, dtype=np.int64)
    ts = np.concatenate([c[2] for c in cand]) if cand else np.empty(0)
    order = np.lexsort((ts, -ks, gs))
    gs, ks, ts = gs[order], ks[order], ts[order]
    starts = np.searchsorted(gs, np.arange(G))
    for gi in range(G):
        need = int(state.need[gi])
        if need == 0:  # quota 0
            K[gi], T[gi] = NONE_SELECTED, -np.inf
            continue
        j = starts[gi] + need - 1
        if j >= gs.size or gs[j] != gi:
            raise RuntimeError(f"group {gi}: the boundary region holds fewer than the {need} rows still needed")
        K[gi], T[gi] = ks[j], ts[j]
    return K, T


def select_mask(u: np.ndarray, tie: np.ndarray, g: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(m,) bool rows of one shard kept: key above the group's boundary, or equal with tie <= T."""
    k = u.astype(np.int64)
    return (k > K[g]) | ((k == K[g]) & (tie <= T[g]))
