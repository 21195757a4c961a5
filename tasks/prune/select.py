"""Turning scores into selections: budgets, policies, group balance and the ``auto`` rule.

Scores follow the project convention *higher = harder*. A selection keeps ``budget`` rows:

* ``hard`` — the highest scores; ``easy`` — the lowest; ``random`` — uniform (seeded);
* ``ccs`` — coverage-centric stratified sampling over the score (:mod:`tasks.prune.ccs`);
* ``auto`` — ``hard`` or ``easy`` by the rule of the perceptron theory (Sorscher et al. 2022,
  Fig. 1; :func:`auto_policy`): keep easy examples when data is scarce, hard ones when abundant.

Ranking happens within groups (classes or clusters) according to ``balance``:

* ``none`` — one global ranking, optionally with a minimum per-group share
  (``min_group_share``: each group first gets ``share * budget / n_groups`` of its own best rows,
  as SSP suggests, then the rest is filled globally);
* ``proportional`` — each group keeps the same fraction of its rows;
* ``equal`` — the same count per group, capped at the group size, excess redistributed;
* ``weighted`` — quotas proportional to ``group_weights`` (DBP's p_j), capped and redistributed.

Quotas are integers summing exactly to the budget (:func:`allocate_quotas`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tasks.prune.ccs import ccs_select

__all__ = [
    "AUTO_ALPHA_THRESHOLD",
    "AutoDecision",
    "SelectOptions",
    "Selection",
    "allocate_quotas",
    "auto_policy",
    "effective_dim",
    "effective_dim_rows",
    "participation_ratio",
    "resolve_budget",
    "select",
    "random_scores",
    "tie_breaker",
]

Policy = Literal["hard", "easy", "auto", "ccs", "random"]
Balance = Literal["none", "proportional", "equal", "weighted"]
POLICIES = ("hard", "easy", "auto", "ccs", "random")
BALANCES = ("none", "proportional", "equal", "weighted")

#: Threshold on the data abundance α = kept rows / (groups × embedding dim) at and above which
#: ``auto`` keeps hard examples. Calibrated on the teacher-student perceptron (``winnow experiment
#: perceptron``, N=100, 5 seeds, θ=0): keep-hard beats keep-easy once α_kept = f·α_tot >= 3.2
#: (α_tot=8, f=0.4; α_tot=16, f=0.2; α_tot=32, f=0.1) and loses at α_kept <= 2.4 (α_tot=4, f=0.6;
#: α_tot=16, f=0.1: hard 0.327 vs easy 0.084). Table in docs/pruning.md.
AUTO_ALPHA_THRESHOLD = 3.0


def resolve_budget(n: int, *, fraction: float | None = None, count: int | None = None) -> int:
    """Rows to keep out of ``n`` from exactly one of ``fraction`` in (0, 1] or ``count`` in [1, n].

    A fraction rounds to the nearest count, at least 1.
    """
    if n < 1:
        raise ValueError(f"nothing to select from: n={n}")
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction or count for the budget")
    if fraction is not None:
        f = float(fraction)
        if not (0.0 < f <= 1.0) or not np.isfinite(f):
            raise ValueError(f"fraction={fraction} must be in (0, 1]")
        return max(1, min(n, int(round(f * n))))
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ValueError(f"count={count!r} must be an integer")
    if not (1 <= count <= n):
        raise ValueError(f"count={count} must be in [1, n={n}]")
    return int(count)


def allocate_quotas(weights: np.ndarray, caps: np.ndarray, budget: int) -> np.ndarray:
    """Integer quotas q_g <= caps_g with sum(q) = budget, proportional to ``weights`` where possible.

    Water-filling: give each group ``weights_g / sum(weights) * remaining``; groups that hit their
    cap are frozen and their excess is shared among the rest in proportion to their weights; the
    final fractional parts are rounded by largest remainder (never beyond a cap). Groups with zero
    weight receive rows only when the others are exhausted.
    """
    w = np.asarray(weights, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    if w.shape != caps.shape:
        raise ValueError(f"weights shape {w.shape} != caps shape {caps.shape}")
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("group weights must be finite and >= 0")
    if budget > caps.sum():
        raise ValueError(f"budget={budget} exceeds the {int(caps.sum())} rows in all groups")
    q, rem = _waterfill(w, caps.astype(np.float64), float(budget))
    if rem > 1e-9:  # positive-weight groups are full: zero-weight groups take the rest evenly
        q2, rem = _waterfill(np.ones_like(w), caps - q, rem)
        q += q2
    out = np.minimum(np.floor(q + 1e-9).astype(np.int64), caps)
    short = budget - int(out.sum())
    if short > 0:  # largest remainders; each such group has room (its q is fractional below cap)
        frac = np.where(out < caps, q - out, -np.inf)
        out[np.argsort(-frac, kind="stable")[:short]] += 1
    return out


def _waterfill(w: np.ndarray, room0: np.ndarray, budget: float) -> tuple[np.ndarray, float]:
    """Real-valued quotas proportional to ``w`` capped at ``room0``; returns (q, unplaced budget)."""
    q = np.zeros(room0.shape, dtype=np.float64)
    active = (room0 > 0) & (w > 0)
    remaining = budget
    while remaining > 1e-9 and active.any():
        share = np.where(active, w, 0.0) / w[active].sum() * remaining
        room = room0 - q
        hit = active & (share >= room)
        if hit.any():
            remaining -= float(room[hit].sum())
            q[hit] = room0[hit]
            active &= ~hit
        else:
            q += share
            remaining = 0.0
    return q, remaining


@dataclass(frozen=True)
class AutoDecision:
    """What ``auto`` chose and why: policy "hard" | "easy", the data abundance α, the threshold."""

    policy: Literal["hard", "easy"]
    alpha: float
    threshold: float
    reason: str


def effective_dim(E: np.ndarray, *, sample: int = 5000, seed: int = 0) -> int:
    """Participation ratio of the embeddings' covariance, :math:`(\\sum_i \\lambda_i)^2 / \\sum_i \\lambda_i^2`,
    of the L2-normalised rows (a seeded sample of at most ``sample``), rounded, at least 1.

    The perceptron theory's N is the number of dimensions the data actually varies in: for the
    isotropic inputs of the teacher-student experiment the ratio is N itself (so the calibration of
    :data:`AUTO_ALPHA_THRESHOLD` carries over), while learned embeddings put most of their variance in
    far fewer directions than their nominal width (a 128-d contrastive encoder or 384-d MiniLM), and
    ``kept / (groups * nominal dim)`` would call abundant data scarce.
    """
    E = np.asarray(E)
    rows = effective_dim_rows(E.shape[0], sample=sample, seed=seed)
    return participation_ratio(E if rows is None else E[rows])


def effective_dim_rows(n: int, *, sample: int = 5000, seed: int = 0) -> np.ndarray | None:
    """The seeded sample of row indices (sorted) :func:`effective_dim` reads; None when it reads all ``n``.
    The sharded path gathers these rows from its shards, so both paths estimate on the same rows."""
    if n <= sample:
        return None
    return np.sort(np.random.default_rng([int(seed), 0xD1E]).choice(n, sample, replace=False))


def participation_ratio(E: np.ndarray) -> int:
    """:func:`effective_dim` of exactly these rows (no sampling)."""
    E = np.asarray(E, dtype=np.float64)
    X = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    X = X - X.mean(axis=0)
    lam = np.clip(np.linalg.eigvalsh(X.T @ X / max(X.shape[0] - 1, 1)), 0.0, None)
    if lam.sum() <= 0:
        return 1
    return max(1, int(round(lam.sum() ** 2 / (lam ** 2).sum())))


def auto_policy(budget: int, n_groups: int, dim: int, *, threshold: float = AUTO_ALPHA_THRESHOLD) -> AutoDecision:
    """The keep-easy / keep-hard rule of the perceptron theory, applied explicitly.

    In the teacher-student perceptron (Sorscher et al. 2022, Fig. 1) with α = P/N examples per
    dimension, keeping the *hardest* examples beats random only when the kept data is abundant;
    with scarce data keeping the *easiest* is better. Per group (class or cluster) a linear read-out
    in ``dim`` dimensions sees ``budget / n_groups`` kept examples, so

    .. math::  \\alpha = \\frac{\\text{budget}}{n_\\text{groups} \\cdot \\text{dim}}, \\qquad
               \\text{policy} = \\text{hard if } \\alpha \\ge \\alpha^* \\text{ else easy}.

    Parameters
    ----------
    budget : rows kept; n_groups : classes or clusters (>= 1); dim : embedding dimension (>= 1).
    threshold : α* (default :data:`AUTO_ALPHA_THRESHOLD`, calibrated on the perceptron).
    """
    if n_groups < 1 or dim < 1:
        raise ValueError(f"auto policy needs n_groups >= 1 and dim >= 1; got n_groups={n_groups}, dim={dim}")
    if not (threshold > 0):
        raise ValueError(f"auto threshold={threshold} must be > 0 (prune.auto_alpha)")
    alpha = budget / (n_groups * dim)
    if alpha >= threshold:
        pol, why = "hard", "abundant data: keep-hard beats random (Sorscher et al. 2022, Fig. 1)"
        cmp = ">="
    else:
        pol, why = "easy", "scarce data: keep-easy beats random (Sorscher et al. 2022, Fig. 1)"
        cmp = "<"
    reason = (
        f"auto -> keep-{pol}: alpha = kept/(groups*dim) = {budget}/({n_groups}*{dim}) = {alpha:.3g} "
        f"{cmp} threshold {threshold:g}; {why}"
    )
    return AutoDecision(policy=pol, alpha=float(alpha), threshold=float(threshold), reason=reason)


@dataclass(frozen=True)
class SelectOptions:
    """How scores become a selection, besides the budget (the prune config's selection knobs).

    balance : "auto" | "none" | "proportional" | "equal" — "auto" means proportional over the
        metric's own groups (clusters / classes) when it has any, else none: a pruned subset then
        keeps every cluster's share, as a random subset does in expectation.
    min_group_share, auto_threshold, ccs_beta, ccs_strata : see :func:`select`.
    """

    balance: str = "none"
    min_group_share: float = 0.0
    auto_threshold: float = AUTO_ALPHA_THRESHOLD
    ccs_beta: float = 0.1
    ccs_strata: int = 50


@dataclass(frozen=True)
class Selection:
    """A selection of rows.

    indices : (budget,) int64 sorted row indices kept.
    policy : the requested policy; resolved_policy : what ran ("hard"/"easy"/"ccs"/"random").
    budget : rows kept; fraction : budget / n; balance : the balance mode.
    reason : one line saying how the rows were chosen (the ``auto`` branch and why).
    quotas : (n_groups,) kept per group when groups were used, else None.
    """

    indices: np.ndarray
    policy: str
    resolved_policy: str
    budget: int
    n: int
    balance: str
    reason: str
    quotas: np.ndarray | None = field(default=None)

    @property
    def fraction(self) -> float:
        return self.budget / self.n

    def mask(self) -> np.ndarray:
        m = np.zeros(self.n, dtype=bool)
        m[self.indices] = True
        return m


def random_scores(n: int, seed: int) -> np.ndarray:
    """Uniform random scores (the ``random`` metric): any policy on them is a seeded random subset."""
    return np.random.default_rng(seed).random(n).astype(np.float32)


def tie_breaker(n: int, seed: int) -> np.ndarray:
    """(n,) seeded uniform keys that order rows of equal score.

    Ties must not be broken by row order: a coarse score (forgetting counts, quantised distances)
    on rows stored sorted by class would otherwise keep whole classes and drop others.
    """
    return np.random.default_rng([int(seed), 0x7E1B]).random(n)


def _rank_desc(key: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Row indices by descending ``key``, equal keys in the seeded random order of ``tie``."""
    return np.lexsort((tie, -key))


def _top_within_groups(key: np.ndarray, groups: np.ndarray, quotas: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Rows with the ``quotas[g]`` largest ``key`` in each group g (ties in the random order ``tie``)."""
    n = key.size
    order = np.lexsort((tie, -key, groups))
    g_sorted = groups[order]
    sizes = np.bincount(groups, minlength=quotas.size)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(n) - starts[g_sorted]
    return order[rank < quotas[g_sorted]]


def _check_groups(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.zeros(n, dtype=np.int64), 1
    g = np.asarray(groups)
    if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must be (n,) = ({n},) integer ids; got shape {g.shape}, dtype {g.dtype}")
    if n and g.min() < 0:
        raise ValueError(f"group ids must be >= 0; got {int(g.min())}")
    return g.astype(np.int64), int(g.max()) + 1 if n else 0


def select(
    scores: np.ndarray,
    *,
    fraction: float | None = None,
    count: int | None = None,
    policy: Policy = "hard",
    groups: np.ndarray | None = None,
    balance: Balance = "none",
    group_weights: np.ndarray | None = None,
    min_group_share: float = 0.0,
    dim: int | None = None,
    n_groups: int | None = None,
    auto_threshold: float = AUTO_ALPHA_THRESHOLD,
    ccs_beta: float = 0.1,
    ccs_strata: int = 50,
    seed: int = 0,
) -> Selection:
    """Select rows by score under a policy, a budget and a group balance.

    Parameters
    ----------
    scores : (n,) finite floats, higher = harder.
    fraction / count : the budget, exactly one (fraction in (0, 1], count in [1, n]).
    policy : "hard" | "easy" | "auto" | "ccs" | "random".
    groups : (n,) int group ids (classes or clusters) for balance / min share / auto; optional.
    balance : "none" | "proportional" | "equal" | "weighted" (needs ``group_weights``).
    group_weights : (n_groups,) non-negative weights for ``balance="weighted"``.
    min_group_share : in [0, 1]; with balance "none", each group first keeps
        ``floor(share * budget / n_groups)`` of its own rows (capped at its size).
    dim : embedding dimension, needed by ``auto``; n_groups : groups for ``auto`` (default:
        number of distinct ``groups``, or 1).
    auto_threshold : α* of :func:`auto_policy`.
    ccs_beta, ccs_strata : CCS options; seed : for random / ccs sampling and for the order of
        rows with equal scores (seeded random, never row order).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D; got shape {scores.shape}")
    n = scores.size
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"scores has a non-finite value {scores[bad]} at row {bad}")
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} must be one of {', '.join(POLICIES)}")
    if balance not in BALANCES:
        raise ValueError(f"balance={balance!r} must be one of {', '.join(BALANCES)}")
    if not (0.0 <= min_group_share <= 1.0):
        raise ValueError(f"min_group_share={min_group_share} must be in [0, 1]")
    budget = resolve_budget(n, fraction=fraction, count=count)
    g, G = _check_groups(groups, n)
    if balance != "none" and groups is None:
        raise ValueError(f"balance={balance!r} needs group ids (classes or clusters)")

    resolved, reason = policy, ""
    if policy == "auto":
        if dim is None:
            raise ValueError("policy 'auto' needs the embedding dimension (dim)")
        groups_for_alpha = n_groups if n_groups is not None else (len(np.unique(g)) if groups is not None else 1)
        dec = auto_policy(budget, groups_for_alpha, dim, threshold=auto_threshold)
        resolved, reason = dec.policy, dec.reason
    if resolved == "ccs":
        if balance != "none" or min_group_share > 0:
            raise ValueError("policy 'ccs' stratifies by score itself; use balance: none and min_group_share: 0")
        r = ccs_select(scores, budget, beta=ccs_beta, n_strata=ccs_strata, seed=seed)
        reason = (
            f"ccs: dropped the {r.n_dropped_hard} hardest (beta={r.beta_used:.3g}), "
            f"sampled {budget} over {int((r.sizes > 0).sum())} non-empty strata"
        )
        if r.n_dropped_hard == n - budget:  # the hard cut alone removed every row to drop
            reason += (f"; at this budget ccs is keep-easy (the hard cut beta={ccs_beta:g} covers all "
                       f"{n - budget} rows to drop: no stratified sampling; a smaller ccs_beta samples strata)")
        return Selection(r.indices, policy, "ccs", budget, n, balance, reason, None)

    if resolved == "hard":
        key = scores
    elif resolved == "easy":
        key = -scores
    else:  # random
        key = np.random.default_rng(seed).random(n)
    if not reason:
        reason = {"hard": "keep-hard: highest scores", "easy": "keep-easy: lowest scores", "random": "uniform random"}[
            resolved
        ]

    sizes = np.bincount(g, minlength=G).astype(np.int64)
    tie = tie_breaker(n, seed)
    quotas = None
    if balance == "none" and (min_group_share == 0 or groups is None):
        chosen = _rank_desc(key, tie)[:budget]
    elif balance == "none":
        present = sizes > 0  # an empty group id (k-means can leave a cluster empty) takes no share
        floor_q = np.minimum(sizes, int(np.floor(min_group_share * budget / int(present.sum()))))
        first = _top_within_groups(key, g, floor_q, tie)
        rest_mask = np.ones(n, dtype=bool)
        rest_mask[first] = False
        rest = np.flatnonzero(rest_mask)
        fill = rest[_rank_desc(key[rest], tie[rest])[: budget - first.size]]
        chosen = np.concatenate([first, fill])
        quotas = np.bincount(g[chosen], minlength=G)
        reason += f"; min share {min_group_share:g} -> >= {int(floor_q[present].min())} per group"
    else:
        if balance == "proportional":
            w = sizes.astype(np.float64)
        elif balance == "equal":
            w = (sizes > 0).astype(np.float64)
        else:
            if group_weights is None:
                raise ValueError("balance 'weighted' needs group_weights (e.g. DBP's cluster weights)")
            w = np.asarray(group_weights, dtype=np.float64)
            if w.shape != (G,) and w.shape[0] >= G:
                w = w[:G]
            if w.shape != (G,):
                raise ValueError(f"group_weights has shape {w.shape}; expected ({G},)")
        quotas = allocate_quotas(w, sizes, budget)
        chosen = _top_within_groups(key, g, quotas, tie)
        reason += f"; {balance} balance over {int((sizes > 0).sum())} groups"
    return Selection(np.sort(chosen).astype(np.int64), policy, resolved, budget, n, balance, reason, quotas)
