"""Training jobs: the one model behind mixture pilots, planner trials and every training at N.

A :class:`Trial` is one training: rows ``idx`` of the concatenated pools (:class:`Pools`), a
``key`` naming what it measures (a grid mixture, a planner candidate, a finalist) and a ``stage``
(pilot, design, confirm, rank, final, validate ...). A :data:`Train` callable turns trials into
:class:`TrialResult` accuracies on the target's held-out split. The stage functions
(:mod:`tasks.mixture.stage`, :mod:`tasks.plan.stage`) take ``train=`` as a parameter: flows inject
one that runs chunks as Prefect tasks, tests and benchmarks :func:`local_train` (in process).

Trials of equal size are trained together as one stacked problem
(:func:`tasks.mixture.pilots.train_probes_stacked`, in :func:`run_trials`); :func:`chunk_trials` groups them.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.mixture._threads import torch_threads
from tasks.mixture.pilots import PilotSpec, Pools, pilot_indices, train_probes_stacked


@dataclass(frozen=True)
class Trial:
    """One training: ``key`` names the candidate, idx : (n,) rows of the concatenated pools."""

    key: str
    stage: str
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


Train = Callable[[Sequence[Trial]], list[TrialResult]]


def trial_seed(seed: int, key: str, stage: str, n: int, rep: int) -> int:
    """Deterministic per-trial seed, independent of execution order and chunking."""
    h = zlib.crc32(f"{key}|{stage}".encode())
    return int(np.random.SeedSequence([seed, h, n, rep]).generate_state(1)[0])


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
    """Train one chunk (all trials with the same number of rows) as one stacked problem; each result's
    ``seconds`` is its share of the chunk's wall time."""
    if not trials:
        return []
    rows = {int(t.idx.size) for t in trials}
    if len(rows) != 1:
        raise ValueError(f"a trial chunk must hold one training-set size, got {sorted(rows)}")
    idx = np.stack([t.idx for t in trials])
    t0 = time.perf_counter()
    with torch_threads(threads):
        accs = train_probes_stacked(pools.X[idx], pools.y[idx], X_eval, y_eval, n_classes=n_classes,
                                    weight_decay=weight_decay, max_iter=max_iter)
    share = (time.perf_counter() - t0) / len(trials)
    return [TrialResult(t.key, t.stage, t.n, t.rep, t.seed, float(a), share) for t, a in zip(trials, np.asarray(accs))]


def local_train(pools: Pools, X_eval: np.ndarray, y_eval: np.ndarray, *, n_classes: int, weight_decay: float = 1e-3,
                max_iter: int = 100, rows_per_task: int = 20_000, threads: int | None = 1) -> Train:
    """A :data:`Train` that runs every chunk in this process, one after the other."""

    def train(trials: Sequence[Trial]) -> list[TrialResult]:
        out: list[TrialResult] = []
        for chunk in chunk_trials(trials, rows_per_task):
            out += run_trials(chunk, pools, X_eval, y_eval, n_classes=n_classes, weight_decay=weight_decay,
                              max_iter=max_iter, threads=threads)
        return out

    return train


def accuracies(results: Sequence[TrialResult], key: str, stage: str, n: int | None = None) -> np.ndarray:
    """Accuracies of ``key`` in ``stage`` (at size ``n`` when given), in rep order."""
    rows = sorted((r for r in results if r.key == key and r.stage == stage and (n is None or r.n == n)), key=lambda r: r.rep)
    return np.array([r.accuracy for r in rows], dtype=np.float64)


def pilot_trials(specs: Sequence[PilotSpec], pools: Pools, stage: str = "pilot") -> list[Trial]:
    """The training jobs (key = ``str(mixture_id)``) of pilot specs."""
    return [Trial(str(s.mixture_id), stage, s.n, s.rep, s.seed, pilot_indices(s, pools)) for s in specs]
