"""What the prune stage computed, as handed from the flow to storage (plain data, no SQL).

One :class:`PruneOutcome` per run: per source, the scores of every metric, the ranked selections
(metric x policy x budget), the de-duplication selections (one per threshold: the kept rows, so the
removed ones are the rest of the pool), the pruning curve and the notes of the guard that compares
every evaluated series with random. :mod:`storage.prune` turns it into rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.prune.evaluate import GuardNote, PruningCurve
from tasks.prune.registry import MetricScores
from tasks.prune.select import Selection

__all__ = ["DedupSelection", "PruneOutcome", "RankedSelection", "SourceOutcome", "SourcePruneResult"]


@dataclass(frozen=True)
class RankedSelection:
    """A selection from a metric's ranking: ``spec`` is the budget ("f=0.3" or "n=500")."""

    metric: str
    policy: str
    spec: str
    selection: Selection


@dataclass(frozen=True)
class DedupSelection:
    """One de-duplication of the pool: ``keep`` (n,) bool mask of kept rows.

    method : "semdedup" | "exact_dedup"; spec : how the threshold was asked ("rel=0.25",
    "eps=0.01", "remove=0.05", "exact"); eps : the raw cosine-distance threshold (None for exact).
    """

    method: str
    spec: str
    eps: float | None
    keep: np.ndarray
    reason: str

    @property
    def n(self) -> int:
        return int(self.keep.size)

    @property
    def n_removed(self) -> int:
        return int(self.n - self.keep.sum())


@dataclass(frozen=True)
class SourcePruneResult:
    """The prune stage's results on one pool (arrays are over the pool's rows, in pool order)."""

    n_pool: int
    k: int
    scores: dict[str, MetricScores]
    selections: list[RankedSelection]
    dedup: list[DedupSelection] = field(default_factory=list)
    curve: PruningCurve | None = None
    guard: list[GuardNote] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dim: int = 0
    effective_dim: int = 0

    def lines(self, name: str) -> list[str]:
        """The summary of this source for the user: dedup counts, warnings, auto branches, guard."""
        out = []
        for d in self.dedup:
            out.append(f"{name}: {d.method} {d.spec} removes {d.n_removed} of {d.n} ({d.n_removed / d.n:.1%}) — {d.reason}")
        out += [f"{name}: WARNING {w}" for w in self.warnings]
        out.append(f"{name}: {len(self.selections) + len(self.dedup)} selections over {len(self.scores)} metrics, "
                   f"pool {self.n_pool} rows, k={self.k}, embedding dim {self.dim} (effective {self.effective_dim})")
        out += [f"{name}: {r}" for r in sorted({s.selection.reason for s in self.selections if s.policy == "auto"})]
        switched = {(s.metric, s.spec) for s in self.selections
                    if s.policy == "auto" and "switched from" in s.selection.reason}
        for g in self.guard:
            if g.policy == "auto" and (g.metric, f"f={g.fraction:g}") in switched:
                out.append(f"{name}: {g.line()} — the auto selection there switched (its reason says to what)")
            else:
                out.append(f"{name}: WARNING {g.line()}")
        return out


@dataclass(frozen=True)
class SourceOutcome:
    """One pruned source: its id and name, the pool's example ids and row indices, the results."""

    source_id: int
    name: str
    example_ids: np.ndarray
    row_index: np.ndarray
    result: SourcePruneResult


@dataclass(frozen=True)
class PruneOutcome:
    """Everything one prune run stores; ``seed`` is the scores' seed."""

    seed: int
    sources: tuple[SourceOutcome, ...]
