"""The ``prune`` section: which metrics score the data, how selections are made, how they are judged.

Example::

    prune:
      metrics: [ssp, semdedup, dbp, exact_dedup, random]
      policies: [auto]
      fractions: [0.9, 0.7, 0.5, 0.3, 0.1]     # or counts: [500] alone (then only the counts run)
      semdedup_rel_eps: [0.05]                 # eps = 0.05 x the encoder's median nearest-neighbour distance
      semdedup_remove: [0.05]                  # or: the eps that removes 5 % of the pool
      evaluate: {fractions: [1, 0.5, 0.1, 0.05], seeds: [0, 1, 2]}

Scores are computed on each pruned source's ``train`` rows; selections (one per metric x policy x
budget, and one per de-duplication threshold) go to DuckDB and can be exported with ``winnow
export``. With ``evaluate`` set and labels present, a linear probe trained on each kept subset is
tested on the ``test`` rows (at ``evaluate.fractions`` plus every selected fraction), and any series
losing to random there is flagged. An ``auto`` selection whose series loses beyond one seed std to
another measured policy of its metric or to random resolves to the best-measured one — measured on a
validation split of the pool (``evaluate.validation`` of each class held out), never on the test rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs._model import StrictModel, listed_once

MetricName = Literal[
    "ssp", "semdedup", "dbp", "moderate", "random", "el2n", "grand", "forgetting", "aum", "supervised_prototypes",
    "exact_dedup",
]
DEFAULT_FRACTIONS = (0.9, 0.7, 0.5, 0.3, 0.1)
PolicyName = Literal["hard", "easy", "auto", "ccs", "random"]


def _each(v: list, name: str, ok: Callable[[float], bool], problem: str) -> list:
    """``v`` when every item passes ``ok``; else a ValueError ``name[i]: problem`` (``{x}`` = the item)."""
    for i, x in enumerate(v):
        if not ok(x):
            raise ValueError(f"{name}[{i}]: " + problem.format(x=x))
    return v


def _check_fractions(v: list[float], name: str) -> list[float]:
    _each(v, name, lambda f: 0.0 < f <= 1.0, "fraction={x} must be in (0, 1]")
    if len(set(v)) != len(v):
        raise ValueError(f"{name} has duplicates: {v}")
    return v


class PruneEvalConfig(StrictModel):
    """Pruning curve: probe accuracy vs kept fraction, per metric x policy, against random."""

    fractions: list[float] = Field(default_factory=lambda: [1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    policies: list[PolicyName] | None = Field(default=None, description="default: the prune section's policies")

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else listed_once(v)

    probe_max_iter: int = Field(default=200, ge=1)
    probe_weight_decay: float = Field(default=1e-4, ge=0.0)
    validation: float = Field(default=0.2, ge=0.0, le=0.5, description=(
        "share of each class of the pool held out to decide auto's switch (a second curve: selections on "
        "the rest, probes validated on it), so the test rows only report; 0: auto keeps its rule"))

    @field_validator("fractions")
    @classmethod
    def _fr(cls, v: list[float]) -> list[float]:
        return _check_fractions(v, "fractions")


class PruneConfig(StrictModel):
    """Metrics, selection policy and budgets of the prune stage (see docs/pruning.md)."""

    sources: list[str] | None = Field(default=None, description="sources to prune; default: every source")
    metrics: list[MetricName] = Field(default_factory=lambda: ["ssp", "semdedup", "dbp", "random"], min_length=1)
    policies: list[PolicyName] = Field(default_factory=lambda: ["auto"], min_length=1)
    fractions: list[float] = Field(default_factory=lambda: list(DEFAULT_FRACTIONS),
                                   description="keep fractions; default 0.9..0.1, or none when only counts are given")
    counts: list[int] = Field(default_factory=list, description="budgets as example counts (besides fractions)")
    seed: int = 0
    k: int | None = Field(default=None, ge=1, description="k-means clusters; default: from the data, "
                          "round(sqrt(n_pool)) clipped to [classes, 10 x classes] (classes: 10 when unlabelled)")
    kmeans_iters: int = Field(default=20, ge=1)
    chunk: int = Field(default=65_536, ge=1, description="rows per matmul block when scoring")
    balance: Literal["auto", "none", "proportional", "equal"] = Field(
        default="auto", description="auto: each cluster / class keeps its share of the pool (proportional)")
    min_cluster_share: float = Field(default=0.0, ge=0.0, le=1.0, description=(
        "balance none only: each group keeps at least floor(share x budget / groups) of its rows"))
    auto_alpha: float = Field(default=3.0, gt=0.0, description="auto: keep-hard when kept/(groups*dim) >= this")
    ccs_beta: float = Field(default=0.1, ge=0.0, lt=1.0)
    ccs_strata: int = Field(default=50, ge=1)
    semdedup_eps: list[float] = Field(default_factory=list, description="raw cosine-distance thresholds")
    semdedup_rel_eps: list[float] = Field(
        default_factory=lambda: [0.05, 0.1], description="thresholds as multiples of the encoder's median "
        "nearest-neighbour cosine distance (the same value means the same on any encoder)")
    semdedup_remove: list[float] = Field(default_factory=list, description="removal targets: the eps that removes "
                                         "about this share of the pool")
    semdedup_warn: float = Field(default=0.2, gt=0.0, le=1.0, description="warn when a threshold removes more than this share")
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
        return listed_once(_each(v, "counts", lambda c: c >= 1, "count={x} must be >= 1"))

    @field_validator("semdedup_eps")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        return listed_once(_each(v, "semdedup_eps", lambda e: 0.0 < e < 2.0, "eps={x} must be in (0, 2)"))

    @field_validator("semdedup_rel_eps")
    @classmethod
    def _rel_eps(cls, v: list[float]) -> list[float]:
        return listed_once(_each(v, "semdedup_rel_eps", lambda e: 0.0 < e <= 10.0,
                                 "{x} must be in (0, 10] (a multiple of the median nearest-neighbour distance)"))

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        return listed_once(v)

    @field_validator("semdedup_remove")
    @classmethod
    def _remove(cls, v: list[float]) -> list[float]:
        return listed_once(_each(v, "semdedup_remove", lambda r: 0.0 < r < 1.0, "{x} must be a share of the pool in (0, 1)"))

    @model_validator(mode="before")
    @classmethod
    def _counts_only(cls, data):
        # `counts: [500]` alone means only that budget, not counts plus the default fractions
        if isinstance(data, dict) and data.get("counts") and "fractions" not in data:
            data = {**data, "fractions": []}
        return data

    @model_validator(mode="after")
    def _budgets(self) -> "PruneConfig":
        dedup_only = "exact_dedup" in self.metrics or ("semdedup" in self.metrics and (
            self.semdedup_eps or self.semdedup_rel_eps or self.semdedup_remove))
        if not self.fractions and not self.counts and not dedup_only:
            raise ValueError("give at least one budget in fractions or counts")
        if self.proxy_read_epoch > self.proxy_epochs:
            raise ValueError(f"proxy_read_epoch={self.proxy_read_epoch} must be <= proxy_epochs={self.proxy_epochs}")
        if self.min_cluster_share > 0 and self.balance != "none":
            raise ValueError(f"min_cluster_share={self.min_cluster_share:g} applies only with balance: none (balance "
                             f"{self.balance} already gives every group its share); set balance: none or remove it")
        return self
