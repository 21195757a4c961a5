"""Trainings of the planner: pilots on pruned mixtures, confirmation pilots, and validation at N.

A trial draws c_i = round(p_i·n) rows (largest remainder) from each pool's *pruned* pool P_i without
replacement, trains the linear probe of :mod:`tasks.mixture.pilots` on them and scores the target's
held-out split. Trials of equal n are trained together as one stacked problem
(:func:`tasks.mixture.pilots.train_probes_stacked`); chunks of trials are the unit a Prefect task runs.
The training-job model itself (:class:`Trial`, :class:`TrialResult`, chunking) is
:mod:`tasks.mixture.jobs`, shared with the mixture stage's pilots.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.mixture.jobs import Trial, TrialResult, chunk_trials, run_trials, trial_seed
from tasks.mixture.simplex import mixture_counts
from tasks.plan.space import PoolOption, draw_rows

__all__ = ["Trial", "TrialResult", "candidate_rows", "chunk_trials", "make_trials", "median_by", "run_trials", "trial_seed"]


def candidate_rows(options: Sequence[PoolOption], counts: np.ndarray, offsets: np.ndarray, rng: np.random.Generator,
                   repeat: bool = False) -> np.ndarray:
    """Rows of the concatenated pools for one draw: counts[i] rows from pool i's pruned pool (with
    ``repeat``, a count above the pool's size repeats its rows: :func:`~tasks.plan.space.draw_rows`)."""
    parts = [offsets[o.pool] + draw_rows(o, int(c), rng, repeat=repeat) for o, c in zip(options, counts) if c > 0]
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
    repeat: bool = False,
) -> list[Trial]:
    """Trials of one candidate at every size × repetition. ``counts_at`` overrides the counts for a
    size (used for a baseline capped by availability); a trial's ``n`` is the rows it trains on (a
    repeated row counts each time); ``repeat`` lets a pool be drawn beyond its size."""
    out = []
    for n in sizes:
        counts = counts_at[n] if counts_at and n in counts_at else mixture_counts(p, int(n))
        for r in range(reps):
            s = trial_seed(seed, key, stage, int(n), r)
            idx = candidate_rows(options, counts, offsets, np.random.default_rng(s), repeat)
            out.append(Trial(key, stage, int(counts.sum()), r, s, idx))
    return out


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
