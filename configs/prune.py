"""The ``prune`` section: which metrics score the data, how selections are made, how they are judged.

Example::

    prune:
      metrics: [ssp, semdedup, dbp, random]
      policies: [auto]
      fractions: [0.9, 0.7, 0.5, 0.3, 0.1]
      k: 10
      evaluate: {fractions: [1, 0.5, 0.1, 0.05], seeds: [0, 1, 2]}

Scores are computed on each pruned source's ``train`` rows; selections (one per metric x policy x
budget) go to DuckDB and can be exported with ``winnow export``. With ``evaluate`` set and labels
present, a linear probe trained on each kept subset is tested on the ``test`` rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs._model import StrictModel

MetricName = Literal[
    "ssp", "semdedup", "dbp", "moderate", "random", "el2n", "grand", "forgetting", "aum", "supervised_prototypes"
]
PolicyName = Literal["hard", "easy", "auto", "ccs", "random"]


def _check_fractions(v: list[float], name: str) -> list[float]:
    for i, f in enumerate(v):
        if not (0.0 < f <= 1.0):
            raise ValueError(f"{name}[{i}]: fraction={f} must be in (0, 1]")
    if len(set(v)) != len(v):
        raise ValueError(f"{name} has duplicates: {v}")
    return v


class PruneEvalConfig(StrictModel):
    """Pruning curve: probe accuracy vs kept fraction, per metric x policy, against random."""

    fractions: list[float] = Field(default_factory=lambda: [1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    policies: list[PolicyName] | None = Field(default=None, description="default: the prune section's policies")
    probe_max_iter: int = Field(default=200, ge=1)
    probe_weight_decay: float = Field(default=1e-4, ge=0.0)

    @field_validator("fractions")
    @classmethod
    def _fr(cls, v: list[float]) -> list[float]:
        return _check_fractions(v, "fractions")


class PruneConfig(StrictModel):
    """Metrics, selection policy and budgets of the prune stage (see docs/pruning.md)."""

    sources: list[str] | None = Field(default=None, description="sources to prune; default: every source")
    metrics: list[MetricName] = Field(default_factory=lambda: ["ssp", "semdedup", "dbp", "random"], min_length=1)
    policies: list[PolicyName] = Field(default_factory=lambda: ["auto"], min_length=1)
    fractions: list[float] = Field(default_factory=lambda: [0.9, 0.7, 0.5, 0.3, 0.1])
    counts: list[int] = Field(default_factory=list, description="budgets as example counts (besides fractions)")
    seed: int = 0
    k: int | None = Field(default=None, ge=1, description="k-means clusters; default: number of classes, else 10")
    kmeans_iters: int = Field(default=20, ge=1)
    chunk: int = Field(default=65_536, ge=1, description="rows per matmul block when scoring")
    balance: Literal["none", "proportional", "equal"] = "none"
    min_cluster_share: float = Field(default=0.0, ge=0.0, le=1.0)
    auto_alpha: float = Field(default=3.0, gt=0.0, description="auto: keep-hard when kept/(groups*dim) >= this")
    ccs_beta: float = Field(default=0.1, ge=0.0, lt=1.0)
    ccs_strata: int = Field(default=50, ge=1)
    semdedup_eps: list[float] = Field(default_factory=lambda: [0.001, 0.005, 0.01, 0.05])
    semdedup_keep: Literal["farthest", "nearest"] = "farthest"
    semdedup_block: int | None = Field(default=2048, ge=1, description="rows per similarity block; null = whole clusters")
    semdedup_max_pairs: int = Field(default=2**27, ge=1, description="refuse settings holding more similarities at once")
    dbp_tau: float = Field(default=0.5, gt=0.0)
    dbp_neighbors: int = Field(default=20, ge=1)
    proxy_epochs: int = Field(default=10, ge=1, description="supervised metrics: proxy probe epochs")
    proxy_read_epoch: int = Field(default=3, ge=1, description="EL2N/GraNd read after this many epochs")
    proxy_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    evaluate: PruneEvalConfig | None = None
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="torch device for k-means and scoring: cpu, cuda or cuda:N (must exist at run time)")

    @field_validator("fractions")
    @classmethod
    def _fr(cls, v: list[float]) -> list[float]:
        return _check_fractions(v, "fractions")

    @field_validator("counts")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        for i, c in enumerate(v):
            if c < 1:
                raise ValueError(f"counts[{i}]: count={c} must be >= 1")
        return v

    @field_validator("semdedup_eps")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        for i, e in enumerate(v):
            if not (0.0 < e < 2.0):
                raise ValueError(f"semdedup_eps[{i}]: eps={e} must be in (0, 2)")
        return v

    @model_validator(mode="after")
    def _budgets(self) -> "PruneConfig":
        if not self.fractions and not self.counts:
            raise ValueError("give at least one budget in fractions or counts")
        if self.proxy_read_epoch > self.proxy_epochs:
            raise ValueError(f"proxy_read_epoch={self.proxy_read_epoch} must be <= proxy_epochs={self.proxy_epochs}")
        return self
