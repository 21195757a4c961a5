"""The sharded pruning config: SSP + SemDeDup + one selection over a source too large for one process.

Example (``winnow`` wiring: see docs/operations.md, "Which stages run where")::

    name: big
    source: {kind: synthetic_embeddings, n: 10000000, d: 384, clusters: 1000, duplicate_rate: 0.05}
    shard_rows: 262144          # rows per shard (a multiple of 16384)
    k: 100
    semdedup_eps: [0.01]
    semdedup_sub_rows: 2000     # bound the pairwise pass (None: exact per-cluster pass)
    fraction: 0.3
    policy: auto
    task_runner: {kind: dask, address: "tcp://10.0.0.5:8786"}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from configs._model import StrictModel
from configs.base import TaskRunnerConfig
from tasks.shards.plan import DEFAULT_SHARD_ROWS


class SyntheticSourceConfig(StrictModel):
    """A ``synthetic_embeddings`` source (:mod:`tasks.synthetic`): generated shard by shard."""

    kind: Literal["synthetic_embeddings"] = "synthetic_embeddings"
    n: int = Field(gt=0)
    d: int = Field(default=384, gt=0)
    clusters: int = Field(default=100, gt=0)
    duplicate_rate: float = Field(default=0.05, ge=0.0, lt=1.0)
    spread: float = Field(default=1.0, gt=0.0)
    seed: int = 0


class ParquetEmbeddingsConfig(StrictModel):
    """An embeddings Parquet with ``row_index`` and ``vector FLOAT[d]`` (the embed stage's files)."""

    kind: Literal["embeddings_parquet"] = "embeddings_parquet"
    path: str


class ShardedConfig(StrictModel):
    """Everything the sharded flow needs; every field but ``task_runner`` and ``worker_memory_limit``
    determines the results (and the run id)."""

    name: str = "sharded"
    source: SyntheticSourceConfig | ParquetEmbeddingsConfig = Field(discriminator="kind")
    shard_rows: int = Field(default=DEFAULT_SHARD_ROWS, gt=0)
    k: int = Field(default=100, gt=0)
    kmeans_iters: int = Field(default=20, gt=0)
    kmeans_tol: float = Field(default=1e-3, ge=0.0)
    init: Literal["k-means++", "random"] = "k-means++"
    init_sample: int = Field(default=20_000, gt=0)
    seed: int = 0
    semdedup_eps: list[float] = Field(default_factory=lambda: [0.01], min_length=1)
    semdedup_keep: Literal["farthest", "nearest"] = "farthest"
    semdedup_block: int | None = Field(default=2048, gt=0)
    semdedup_max_pairs: int = Field(default=2**27, gt=0)
    semdedup_sub_rows: int | None = Field(default=None, ge=2)
    semdedup_sub_iters: int = Field(default=5, gt=0)
    semdedup_groups: int | None = Field(default=None, gt=0, description="cluster groups (tasks); default: two per shard")
    fraction: float = Field(default=0.3, gt=0.0, le=1.0)
    policy: Literal["hard", "easy", "auto"] = "auto"
    balance: Literal["none", "proportional", "equal"] = "none"
    auto_alpha: float = Field(default=3.0, gt=0.0)
    member_batch_rows: int = Field(default=1_000_000, gt=0)
    task_runner: TaskRunnerConfig = Field(default_factory=TaskRunnerConfig)
    worker_memory_limit: str | None = Field(default="2GiB", description="per Dask worker of a LocalCluster")

    @model_validator(mode="after")
    def _check(self) -> "ShardedConfig":
        for e in self.semdedup_eps:
            if not (0.0 < e < 2.0):
                raise ValueError(f"semdedup_eps: {e} must be in (0, 2)")
        return self

    def results_hash(self) -> str:
        """Hash of what determines the results (not where or how tasks run)."""
        return self.model_copy(update={"task_runner": TaskRunnerConfig(), "worker_memory_limit": None}).hash()
