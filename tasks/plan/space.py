"""The planner's search space: pruned pools, and (pruning option per pool, mixture) candidates under
availability and cost constraints.

A **pruning option** of pool i is (policy, keep fraction f): the pruning stage's scores of the pool
(:mod:`tasks.prune.registry`) ranked by the policy keep round(f·n_i) rows, the pruned pool P_i.
"none" (f = 1) keeps the whole pool and is always an option.

A **candidate** is one option per pool plus a mixture p on the grid. For the target size N it takes
c_i = round(p_i·N) rows (largest remainder, Σ c_i = N) drawn from P_i. It is feasible when

* availability: c_i ≤ |P_i| for every pool — or c_i ≤ max_epochs·|P_i| when examples may be repeated
  (``Constraints.max_epochs`` > 1: a pool pruned below p_i·N is then seen c_i/|P_i| times, and the
  forecasts use the effective size of :func:`tasks.mixture.extrapolate.repeated_sizes`);
* budget: Σ_i c_i·cost_i ≤ budget (if set);
* per-source budget: c_i·cost_i ≤ source_budget_i (if set);
* p lies on the simplex (the grid does, by construction).

Options of pools with c_i = 0 do not change the candidate, so they are canonicalised to "none" and
duplicates are dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.mixture.simplex import mixture_counts
from tasks.prune.registry import MetricParams, compute_metric, metric_spec, select_by_metric
from tasks.prune.select import select

NONE = "none"


@dataclass(frozen=True)
class PoolOption:
    """One way to prune one pool. kept : sorted row indices into the pool (int64)."""

    pool: int
    policy: str          # "none" or "metric:keep:balance"
    fraction: float      # 1.0 for "none"
    kept: np.ndarray
    reason: str = ""

    @property
    def label(self) -> str:
        return NONE if self.policy == NONE else f"{self.policy}@{self.fraction:g}"

    @property
    def size(self) -> int:
        return int(self.kept.size)


def policy_name(key: tuple[str, str, str]) -> str:
    metric, keep, balance = key
    return f"{metric}:{keep}:{balance}"


def pool_options(
    X: np.ndarray,
    y: np.ndarray,
    *,
    pool: int,
    policies: Sequence[tuple[str, str, str]],
    fractions: Sequence[float],
    metric_k: int = 10,
    seed: int = 0,
) -> list[PoolOption]:
    """Every pruning option of one pool: "none", then each policy × keep fraction.

    Parameters
    ----------
    X : (n, d) pool features (the mixture stage's aligned feature space); y : (n,) label codes,
        used by supervised metrics and by class balance ("equal" / "proportional" quotas per class).
    policies : (metric, keep, balance) triples; fractions : keep fractions in (0, 1).
    """
    n = X.shape[0]
    out = [PoolOption(pool, NONE, 1.0, np.arange(n, dtype=np.int64), "the whole pool")]
    params = MetricParams(k=max(2, min(metric_k, n - 1)))
    scores: dict[str, object] = {}
    for metric, keep, balance in policies:
        if metric not in scores:
            spec = metric_spec(metric)
            scores[metric] = compute_metric(metric, X, y=y if spec.needs_labels else None, params=params, seed=seed)
        ms = scores[metric]
        for f in fractions:
            count = max(1, int(round(f * n)))
            if balance == "none":
                sel = select_by_metric(ms, keep, count=count, seed=seed)
            else:
                sel = select(ms.scores, count=count, policy=keep if metric != "random" else "random",
                             groups=np.asarray(y, dtype=np.int64), balance=balance, seed=seed)
            out.append(PoolOption(pool, policy_name((metric, keep, balance)), float(f), np.sort(sel.indices).astype(np.int64),
                                  sel.reason))
    return out


@dataclass(frozen=True)
class Constraints:
    """target_n : N; costs : (K,) cost per example of each pool; budget : total cost allowed (or None);
    source_budget : (K,) max cost per pool (inf where unset), or None; max_epochs : how many times a
    pool's examples may be seen (1: never repeated)."""

    target_n: int
    costs: np.ndarray
    budget: float | None = None
    source_budget: np.ndarray | None = None
    max_epochs: float = 1.0

    def check(self, counts: np.ndarray, avail: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean masks (..., ) per constraint for counts (..., K) against availability avail (..., K)."""
        spend = counts * self.costs
        out = {"availability": np.all(counts <= np.floor(self.max_epochs * avail), axis=-1)}
        out["budget"] = (spend.sum(-1) <= self.budget + 1e-9) if self.budget is not None else np.ones(out["availability"].shape, bool)
        if self.source_budget is not None:
            out["source_budget"] = np.all(spend <= self.source_budget + 1e-9, axis=-1)
        else:
            out["source_budget"] = np.ones(out["availability"].shape, bool)
        return out


@dataclass(frozen=True)
class CandidateSet:
    """Feasible candidates. options : (C, K) option index per pool; p : (C, K); counts : (C, K) rows taken
    at N; n_enumerated : before constraints and deduplication; rejected : candidates dropped per
    constraint (a candidate can fail several)."""

    options: np.ndarray
    p: np.ndarray
    counts: np.ndarray
    n_enumerated: int
    rejected: dict[str, int]

    def __len__(self) -> int:
        return int(self.p.shape[0])

    def unpruned(self) -> np.ndarray:
        """Indices of candidates that prune no pool."""
        return np.flatnonzero(np.all(self.options == 0, axis=1))


def enumerate_candidates(
    options: Sequence[Sequence[PoolOption]],
    grid: np.ndarray,
    cons: Constraints,
    *,
    max_candidates: int = 50_000,
) -> CandidateSet:
    """Every (option per pool, grid mixture) that satisfies the constraints, deduplicated.

    Raises a WinnowError naming the binding constraint when nothing is feasible, and one naming the
    knobs when the product is larger than ``max_candidates``.
    """
    K = len(options)
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or grid.shape[1] != K:
        raise ValueError(f"mixture grid has shape {grid.shape}; expected (G, {K}) for {K} pools")
    sizes = [np.array([o.size for o in opts]) for opts in options]
    n_configs = int(np.prod([len(s) for s in sizes]))
    total = n_configs * len(grid)
    if total > max_candidates:
        raise WinnowError(
            f"the plan would enumerate {total:,} candidates ({n_configs:,} pruning configurations x {len(grid)} mixtures) "
            f"> plan.max_candidates={max_candidates:,}: use fewer policies or fractions, or a coarser grid_step"
        )
    counts_g = np.stack([mixture_counts(p, cons.target_n) for p in grid])            # (G, K)
    configs = np.array(list(itertools.product(*[range(len(s)) for s in sizes])), dtype=np.int64)  # (F, K)
    avail = np.stack([sizes[i][configs[:, i]] for i in range(K)], axis=1)            # (F, K)
    ok = cons.check(counts_g[None, :, :], avail[:, None, :])                         # each (F, G)
    feasible = ok["availability"] & ok["budget"] & ok["source_budget"]
    rejected = {k: int((~np.broadcast_to(v, feasible.shape)).sum()) for k, v in ok.items()}
    fi, gi = np.nonzero(feasible)
    opt = configs[fi].copy()
    cnt = counts_g[gi]
    opt[cnt == 0] = 0                       # unused pools: the option is irrelevant
    key = np.column_stack([opt, gi])
    _, first = np.unique(key, axis=0, return_index=True)
    first = np.sort(first)
    if first.size == 0:
        binding = ", ".join(f"{k} rejects {v:,}" for k, v in rejected.items() if v) or "none"
        raise WinnowError(
            f"no (pruning, mixture) candidate is feasible for target_n={cons.target_n}: pools hold "
            f"{[int(s[0]) for s in sizes]} examples unpruned, costs {cons.costs.tolist()}, budget {cons.budget}; "
            f"of {total:,} candidates {binding}: lower target_n, raise the budget or add data"
        )
    return CandidateSet(options=opt[first], p=grid[gi[first]], counts=cnt[first], n_enumerated=total, rejected=rejected)


def revealed_masks(options: Sequence[Sequence[PoolOption]], revealed: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per pool, a (n_options, r_i) 0/1 float32 matrix: which revealed rows each option keeps.

    revealed : per pool, the pool row indices that enter the OT union (in union order)."""
    out = []
    for i, (opts, rows) in enumerate(zip(options, revealed)):
        M = np.stack([np.isin(rows, o.kept) for o in opts]).astype(np.float32)
        empty = [o.label for o, m in zip(opts, M) if m.sum() == 0]
        if empty:
            raise WinnowError(f"pool {i}: options {empty} keep none of the {rows.size} revealed rows; raise plan.reveal")
        out.append(M)
    return out


def union_weights(masks: Sequence[np.ndarray], option_idx: np.ndarray, p: np.ndarray) -> np.ndarray:
    """OT source weights (C, n_u) on the union of revealed rows for candidates (option_idx (C, K), p (C, K)).

    Pruning reweights the same union measure: row x of pool i gets p_i / |R_i ∩ P_i| if the pool's
    option keeps it, else 0 (so no new cost matrix is needed)."""
    parts = []
    for i, M in enumerate(masks):
        sel = M[option_idx[:, i]]                                    # (C, r_i)
        parts.append(sel * (p[:, i] / sel.sum(1))[:, None])
    return np.concatenate(parts, axis=1)


def draw_rows(option: PoolOption, count: int, rng: np.random.Generator, *, repeat: bool = False) -> np.ndarray:
    """``count`` distinct rows of a pruned pool (pool row indices, sorted). With ``repeat``, a count
    above the pool's size takes every row ``count // size`` times plus a draw of the remainder."""
    passes, rest = divmod(count, option.size) if repeat else (0, count)
    if rest > option.size:
        raise ValueError(f"pool {option.pool} option {option.label} holds {option.size} rows, {count} requested")
    if rest == option.size:
        passes, rest = passes + 1, 0
    parts = [option.kept] * passes + ([rng.choice(option.kept, size=rest, replace=False)] if rest else [])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
