"""Shards: contiguous row ranges of a source, the unit of work of the sharded path."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.prune.kmeans import DEFAULT_CHUNK

__all__ = ["DEFAULT_SHARD_ROWS", "Shard", "plan_shards"]

#: rows per shard: 16 k-means chunks; 262,144 x 384 float32 = 384 MiB per shard in memory (a task
#: holds one shard plus ~1 cluster group's copy: well inside a 2 GiB worker)
DEFAULT_SHARD_ROWS = 16 * DEFAULT_CHUNK


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of a source, shard number ``index``."""

    index: int
    start: int
    stop: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


def plan_shards(n_rows: int, shard_rows: int = DEFAULT_SHARD_ROWS) -> list[Shard]:
    """Split ``n_rows`` into shards of ``shard_rows`` (the last one shorter).

    A multiple of the k-means chunk (16,384) keeps the per-chunk arithmetic of the sharded path
    aligned with the in-memory kernel's, so both give the same assignments.
    """
    if n_rows < 1:
        raise ValueError(f"nothing to shard: n_rows={n_rows}")
    if shard_rows < 1:
        raise ValueError(f"shard_rows={shard_rows} must be >= 1")
    return [Shard(i, s, min(n_rows, s + shard_rows)) for i, s in enumerate(range(0, n_rows, shard_rows))]
