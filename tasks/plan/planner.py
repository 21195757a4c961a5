"""The joint planner's steps between the search space and the trainings (pure functions).

1. :func:`reveal_rows` — the pool rows that enter the OT union (built once, like the mixture stage);
2. :func:`candidate_ot` — OT of every pruned mixture to the target as a reweighting of that one
   union measure, all candidates in batched Sinkhorn solves (:func:`tasks.mixture.batch.sinkhorn_batch`);
3. :func:`choose_design` — which candidates get pilots to fit the predictor: every unpruned grid
   mixture plus a seeded sample of pruned ones, stratified so every pool option appears;
4. :func:`baseline_specs` — the baselines at equal budget: the best mixture without pruning, the
   uniform mixture with random pruning, each pool alone (capped by availability and budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.mixture.extrapolate import PROBE_R_STAR, Repeats, repeated_sizes
from tasks.mixture.simplex import mixture_counts
from tasks.plan.space import CandidateSet, Constraints, PoolOption, union_weights


def reveal_rows(pool_sizes: Sequence[int], n: int, seed: int = 0) -> list[np.ndarray]:
    """At most ``n`` seeded rows per pool (sorted pool row indices)."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(int(s), size=min(n, int(s)), replace=False)).astype(np.int64) for s in pool_sizes]


@dataclass(frozen=True)
class OTValues:
    values: np.ndarray   # (C,)
    seconds: float
    n_iter: int
    converged: float     # share of candidates whose Sinkhorn converged
    raised: int = 0      # candidates solved again at a larger ε because they stalled at reg


def candidate_ot(
    C: np.ndarray,
    masks: Sequence[np.ndarray],
    option_idx: np.ndarray,
    p: np.ndarray,
    *,
    reg: float,
    tol: float = 1e-4,
    device: str = "cpu",
    chunk: int = 256,
    progress: bool = False,
) -> OTValues:
    """OT from each candidate's pruned mixture to the target: the dual lower bound of the batched
    entropic solve (the value the mixture stage's sweep reports; within ~1% of exact OT at small ε).

    C : (n_u, m) cost of the revealed union against the target; masks : per pool (n_options, r_i);
    option_idx, p : (B, K)."""
    from tasks.mixture.batch import sinkhorn_batch_until

    A = union_weights(masks, np.asarray(option_idx), np.asarray(p, dtype=np.float64))
    r = sinkhorn_batch_until(C, A, reg=reg, tol=tol, device=device, chunk=chunk, progress=progress)
    values = r.lower if r.lower is not None else r.values  # the dual bound the mixture sweep reports
    return OTValues(values=np.asarray(values, dtype=np.float64), seconds=float(r.seconds), n_iter=int(r.n_iter),
                    converged=float(np.mean(r.converged)), raised=int((r.row_reg > reg).sum()))


def choose_design(cands: CandidateSet, n_design: int, seed: int = 0) -> np.ndarray:
    """Candidate indices to pilot: all unpruned ones, plus ``n_design`` pruned ones chosen so that
    every (pool, option) that occurs among feasible candidates is covered before any repeats."""
    unpruned = cands.unpruned()
    pruned = np.setdiff1d(np.arange(len(cands)), unpruned)
    if n_design <= 0 or pruned.size == 0:
        return unpruned
    rng = np.random.default_rng(seed)
    order = rng.permutation(pruned)
    chosen: list[int] = []
    seen: set[tuple[int, int]] = set()
    # first pass: a candidate that brings an unseen (pool, option) used by a pool it draws from
    for c in order:
        if len(chosen) >= n_design:
            break
        new = {(i, int(o)) for i, o in enumerate(cands.options[c]) if o != 0 and cands.counts[c, i] > 0} - seen
        if new:
            chosen.append(int(c))
            seen |= new
    rest = [int(c) for c in order if int(c) not in set(chosen)]
    chosen += rest[: max(0, n_design - len(chosen))]
    return np.concatenate([unpruned, np.sort(np.array(chosen, dtype=np.int64))])


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline at equal budget: options (K,) option indices, p (K,), counts (K,) at N, a note
    when it could not take N examples."""

    name: str
    options: np.ndarray
    p: np.ndarray
    counts: np.ndarray
    note: str = ""


def capped_counts(p: np.ndarray, options: Sequence[PoolOption], cons: Constraints) -> tuple[np.ndarray, str]:
    """Counts at N for mixture p, reduced where availability or a budget binds (scaled down as a whole,
    keeping the proportions), with a note saying what bound. Availability is ``max_epochs`` passes over
    each pool, as for every candidate (:meth:`Constraints.check`): with repeats allowed, a baseline may
    repeat examples too."""
    counts = mixture_counts(p, cons.target_n)
    avail = np.array([o.size for o in options])
    reach = np.floor(cons.max_epochs * avail)
    notes = []
    scale = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        s_av = np.min(np.where(counts > 0, reach / np.maximum(counts, 1), np.inf))
    if s_av < 1:
        scale = min(scale, s_av)
        notes.append("availability")
    spend = counts * cons.costs
    if cons.budget is not None and spend.sum() > cons.budget:
        scale = min(scale, cons.budget / spend.sum())
        notes.append("budget")
    if cons.source_budget is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            s_sb = np.min(np.where(spend > 0, cons.source_budget / np.maximum(spend, 1e-300), np.inf))
        if s_sb < 1:
            scale = min(scale, s_sb)
            notes.append("source_budget")
    if scale >= 1:
        return counts, ""
    n = int(np.floor(scale * cons.target_n))
    if n <= 0:
        raise WinnowError(f"baseline p={np.round(p, 3).tolist()} cannot take any example under the constraints")
    c = mixture_counts(p, n)
    while not all(bool(v[0]) for v in cons.check(c[None], avail[None]).values()):
        n -= 1
        if n <= 0:
            raise WinnowError(f"baseline p={np.round(p, 3).tolist()} cannot take any example under the constraints")
        c = mixture_counts(p, n)
    return c, f"takes {int(c.sum())} < N={cons.target_n} examples ({' and '.join(notes)} binds)"


def baseline_specs(
    options: Sequence[Sequence[PoolOption]],
    cands: CandidateSet,
    screen_acc: np.ndarray,
    cons: Constraints,
    pool_names: Sequence[str],
) -> list[BaselineSpec]:
    """The three baselines of the validation mode.

    * best_mixture_unpruned — the unpruned candidate with the best screened accuracy at N;
    * uniform_random_pruning — p = 1/K, each pool randomly pruned to the rows it gives (a uniform
      random draw of c_i rows is exactly random pruning at keep fraction c_i/n_i);
    * alone:<pool> — each pool by itself, unpruned.

    A baseline that cannot take a single example under the constraints (e.g. a pool whose one
    example costs more than the budget) is left out; the caller reports the missing names.
    """
    K = len(options)
    out = []
    unpruned = cands.unpruned()
    if unpruned.size:
        b = int(unpruned[np.argmax(screen_acc[unpruned])])
        out.append(BaselineSpec("best_mixture_unpruned", cands.options[b].copy(), cands.p[b].copy(), cands.counts[b].copy()))
    none = np.zeros(K, dtype=np.int64)
    first = [opts[0] for opts in options]
    u = np.full(K, 1.0 / K)
    specs = [("uniform_random_pruning", u)] + [(f"alone:{pool_names[i]}", np.eye(K)[i]) for i in range(K)]
    for name, p in specs:
        try:
            c, note = capped_counts(p, first, cons)
        except WinnowError:
            continue
        out.append(BaselineSpec(name, none.copy(), p, c, note))
    return out


# ------------------------------------------------------------------ finalists, baselines, the plan
@dataclass(frozen=True)
class Entry:
    """A candidate to confirm: a finalist or a baseline. key : trial key (shared when a baseline is
    also a finalist); options : (K,) option indices; p : (K,); counts : (K,) rows taken at N."""

    key: str
    role: str
    name: str
    options: np.ndarray
    p: np.ndarray
    counts: np.ndarray
    note: str = ""

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def confirm_entries(cands: CandidateSet, finalists: Sequence[int], baselines: Sequence[BaselineSpec],
                    names: Sequence[str] | None = None) -> list[Entry]:
    """Finalists (candidate indices, best first; ``names`` default finalist-1, ...) then baselines; a
    baseline equal to a finalist shares its key."""
    names = list(names) if names is not None else [f"finalist-{j + 1}" for j in range(len(finalists))]
    out = [Entry(f"c{c}", "finalist", nm, cands.options[c], cands.p[c], cands.counts[c]) for c, nm in zip(finalists, names)]
    for b in baselines:
        same = [e for e in out if np.array_equal(e.options, b.options) and np.allclose(e.p, b.p) and np.array_equal(e.counts, b.counts)]
        out.append(Entry(same[0].key if same else f"b:{b.name}", "baseline", b.name, b.options, b.p, b.counts, b.note))
    return out


def unique_by_key(entries: Sequence[Entry]) -> list[Entry]:
    seen: dict[str, Entry] = {}
    for e in entries:
        seen.setdefault(e.key, e)
    return list(seen.values())


def pilot_counts(e: Entry, sizes: Sequence[int], n_target: int) -> dict[int, np.ndarray] | None:
    """Per pilot size, the counts of an entry that takes fewer than N rows (a capped baseline): the same
    proportions as at N, n·(its rows)/N rows; None for an entry that takes N."""
    if e.n >= n_target:
        return None
    return {int(n): mixture_counts(e.counts / e.n, max(1, int(round(n * e.n / n_target)))) for n in sizes}


def materialize(idx: np.ndarray, pool_sizes: np.ndarray, pool_ids: Sequence[np.ndarray], pool_names: Sequence[str],
                counts: np.ndarray) -> dict[str, np.ndarray]:
    """The plan's example ids from its rows of the concatenated pools, checked against its counts per pool
    (a repeated row counts each time); each distinct example is listed once."""
    K = len(pool_sizes)
    pool_of = np.repeat(np.arange(K), pool_sizes)
    got = np.bincount(pool_of[idx], minlength=K)
    if not np.array_equal(got, counts):
        raise RuntimeError(f"plan members per pool {got.tolist()} differ from the plan's counts {np.asarray(counts).tolist()}")
    idx = np.unique(idx)
    return {"example_id": np.concatenate(pool_ids)[idx], "pool": np.asarray(pool_names, dtype=object)[pool_of[idx]]}


@dataclass(frozen=True)
class EffectiveSizes:
    """Where candidates repeat a pool, their forecasts run on the effective-size axis.

    pilots : (C, S) effective size of each pilot draw; target : (C,) effective N; at_n : the
    :class:`~tasks.mixture.extrapolate.Repeats` at N (epochs per pool, for the output)."""

    pilots: np.ndarray
    target: np.ndarray
    at_n: Repeats
    nominal_pilots: np.ndarray  # (C, S) rows drawn, a repeated row counted each time

    @property
    def repeated(self) -> bool:
        """True when some candidate repeats a pool at N or in a pilot."""
        return bool(self.at_n.repeated.any() or np.any(np.abs(self.pilots - self.nominal_pilots) > 1e-9))


def effective_sizes(options: Sequence[Sequence[PoolOption]], option_idx: np.ndarray, p: np.ndarray, counts: np.ndarray,
                    sizes: Sequence[int], counts_at: Sequence[dict[int, np.ndarray] | None] | None = None,
                    r_star: float = PROBE_R_STAR) -> EffectiveSizes:
    """Effective sizes (:func:`tasks.mixture.extrapolate.repeated_sizes`) of candidates (option_idx, p,
    counts at N: (C, K)) at N and at every pilot size; ``counts_at`` per candidate overrides the pilot
    counts (a capped baseline). Without repetition every effective size is the nominal one.
    ``r_star``: that of the planner's trainer, the full-batch probe (0: a repeat adds nothing)."""
    option_idx = np.atleast_2d(option_idx)
    unique = np.array([[options[i][int(o)].size for i, o in enumerate(row)] for row in option_idx], dtype=np.float64)
    at_n = repeated_sizes(p, 0, unique, counts=counts, r_star=r_star)
    eff, nominal = [], []
    for s in sizes:
        c = np.stack([ca[int(s)] if ca else mixture_counts(pj, int(s))
                      for pj, ca in zip(np.atleast_2d(p), counts_at or [None] * len(unique))])
        eff.append(repeated_sizes(p, int(s), unique, counts=c, r_star=r_star).n_effective)
        nominal.append(c.sum(1).astype(np.float64))
    return EffectiveSizes(pilots=np.stack(eff, axis=1), target=at_n.n_effective, at_n=at_n,
                          nominal_pilots=np.stack(nominal, axis=1))
