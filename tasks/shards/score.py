"""The scoring pass of the sharded path: final assignment, SSP scores, rows regrouped by cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.prune.kmeans import DEFAULT_CHUNK, assign_to_centroids

__all__ = ["ShardScores", "cluster_parts", "score_shard"]


@dataclass(frozen=True)
class ShardScores:
    """assign : (m,) int32 nearest centroid; cos : (m,) float32 cosine to it; scores : (m,) float32
    SSP score 1 - cos (Sorscher et al. 2022, higher = harder)."""

    assign: np.ndarray
    cos: np.ndarray
    scores: np.ndarray


def score_shard(X: np.ndarray, centroids: np.ndarray, *, chunk: int = DEFAULT_CHUNK) -> ShardScores:
    """Final assignment of one shard against the final centroids and its SSP scores (the in-memory
    kernel's :func:`~tasks.prune.kmeans.assign_to_centroids`, per shard)."""
    assign, cos = assign_to_centroids(X, centroids, chunk=chunk)
    return ShardScores(assign=assign.astype(np.int32), cos=cos, scores=(1.0 - cos).astype(np.float32))


def cluster_parts(assign: np.ndarray, n_parts: int) -> list[np.ndarray]:
    """Row positions of each cluster group ``cluster % n_parts``, ordered by (cluster, row).

    The SemDeDup tasks each take one group of whole clusters, so the scoring pass writes the rows of
    every group to a file of their own (a Parquet partitioned by cluster id).
    """
    if n_parts < 1:
        raise ValueError(f"n_parts={n_parts} must be >= 1")
    assign = np.asarray(assign, dtype=np.int64)
    order = np.lexsort((np.arange(assign.size), assign))
    part = assign[order] % n_parts
    by_part = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[by_part], np.arange(n_parts + 1))
    return [order[by_part[bounds[p]:bounds[p + 1]]] for p in range(n_parts)]
