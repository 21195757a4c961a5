"""Trainings of the planner: pilots on pruned mixtures, confirmation pilots, and validation at N.

A trial draws c_i = round(p_i·n) rows (largest remainder) from each pool's *pruned* pool P_i without
replacement, trains the linear probe of :mod:`tasks.mixture.pilots` on them and scores the target's
held-out split. Trials of equal n are trained together as one stacked problem
(:func:`tasks.mixture.pilots.train_probes_stacked`); chunks of trials are the unit a Prefect task runs.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.mixture.pilots import Pools, train_index_sets
from tasks.mixture.simplex import mixture_counts
from tasks.plan.space import PoolOption, draw_rows


@dataclass(frozen=True)
class Trial:
    """One training: ``key`` names the candidate, idx : (n,) rows of the concatenated pools."""

    key: str
    stage: str           # design | confirm | validate
    n: int
    rep: int
    seed: int
    idx: np.ndarray


@dataclass(frozen=True)
class TrialResult:
    key: str
    stage: str
    n: int
    rep: int
    seed: int
    accuracy: float
    seconds: float


def trial_seed(seed: int, key: str, stage: str, n: int, rep: int) -> int:
    """Deterministic per-trial seed, independent of execution order and chunking."""
    h = zlib.crc32(f"{key}|{stage}".encode())
    return int(np.random.SeedSequence([seed, h, n, rep]).generate_state(1)[0])


def candidate_rows(options: Sequence[PoolOption], counts: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of the concatenated pools for one draw: counts[i] rows from pool i's pruned pool."""
    parts = [offsets[o.pool] + draw_rows(o, int(c), rng) for o, c in zip(options, counts) if c > 0]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def make_trials(
    key: str,
    stage: str,
    options: Sequence[PoolOption],
    p: np.ndarray,
    sizes: Sequence[int],
    reps: int,
    offsets: np.ndarray,
    seed: int = 0,
    counts_at: dict[int, np.ndarray] | None = None,
) -> list[Trial]:
    """Trials of one candidate at every size × repetition. ``counts_at`` overrides the counts for a
    size (used for a baseline capped by availability); a trial's ``n`` is the rows it trains on."""
    out = []
    for n in sizes:
        counts = counts_at[n] if counts_at and n in counts_at else mixture_counts(p, int(n))
        for r in range(reps):
            s = trial_seed(seed, key, stage, int(n), r)
            idx = candidate_rows(options, counts, offsets, np.random.default_rng(s))
            out.append(Trial(key, stage, int(counts.sum()), r, s, idx))
    return out


def chunk_trials(trials: Sequence[Trial], rows_budget: int = 20_000) -> list[list[Trial]]:
    """Group trials of equal training-set size into chunks of about ``rows_budget`` rows."""
    chunks: list[list[Trial]] = []
    by_n: dict[int, list[Trial]] = {}
    for t in trials:
        by_n.setdefault(int(t.idx.size), []).append(t)
    for n in sorted(by_n):
        same = by_n[n]
        per = max(1, rows_budget // max(n, 1))
        chunks.extend(same[i:i + per] for i in range(0, len(same), per))
    return chunks


def run_trials(
    trials: Sequence[Trial],
    pools: Pools,
    X_eval: np.ndarray,
    y_eval: np.ndarray,
    *,
    n_classes: int,
    weight_decay: float = 1e-3,
    max_iter: int = 100,
    threads: int | None = 1,
) -> list[TrialResult]:
    """Train one chunk (all trials with the same number of rows) as one stacked problem."""
    if not trials:
        return []
    rows = {int(t.idx.size) for t in trials}
    if len(rows) != 1:
        raise WinnowError(f"a trial chunk must hold one training-set size, got {sorted(rows)}")
    accs, share = train_index_sets(np.stack([t.idx for t in trials]), pools, X_eval, y_eval, n_classes=n_classes,
                                   weight_decay=weight_decay, max_iter=max_iter, threads=threads)
    return [TrialResult(t.key, t.stage, t.n, t.rep, t.seed, float(a), share) for t, a in zip(trials, accs)]


def median_by(results: Sequence[TrialResult], keys: Sequence[str], sizes: Sequence[int], stage: str) -> np.ndarray:
    """(S, len(keys)) median accuracy per size and key over repetitions (nan where missing)."""
    vals: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if r.stage == stage:
            vals.setdefault((r.key, r.n), []).append(r.accuracy)
    out = np.full((len(sizes), len(keys)), np.nan)
    for j, k in enumerate(keys):
        for s, n in enumerate(sizes):
            v = vals.get((k, int(n)))
            if v:
                out[s, j] = float(np.median(v))
    return out
