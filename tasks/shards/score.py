"""The scoring pass of the sharded path: final assignment, SSP scores, rows regrouped by cluster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.prune.kmeans import DEFAULT_CHUNK, assign_to_centroids

__all__ = ["ShardScores", "balanced_groups", "cluster_parts", "score_shard"]


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


def balanced_groups(sizes: np.ndarray, n_parts: int, sub_rows: int | None = None) -> np.ndarray:
    """(k,) group of each cluster, so that the SemDeDup tasks get about equal work.

    A cluster's pairwise pass costs ~ s·min(s, sub_rows) for s rows (s² without ``sub_rows``: the
    recursive split bounds each piece). Longest-processing-time first: clusters by falling cost (ties
    by cluster id) each go to the group with the least work so far (ties by group id), so the largest
    group is within 4/3 of the best split (Graham 1969) instead of whatever ``cluster % n_parts`` gives.
    Deterministic in its inputs.
    """
    if n_parts < 1:
        raise ValueError(f"n_parts={n_parts} must be >= 1")
    s = np.asarray(sizes, dtype=np.float64)
    cost = s * (s if sub_rows is None else np.minimum(s, sub_rows))
    group = np.zeros(s.size, dtype=np.int64)
    load = np.zeros(n_parts)
    for c in np.lexsort((np.arange(s.size), -cost)):
        g = int(np.argmin(load))
        group[c] = g
        load[g] += cost[c]
    return group


def cluster_parts(assign: np.ndarray, n_parts: int, group_of: np.ndarray | None = None) -> list[np.ndarray]:
    """Row positions of each cluster group, ordered by (cluster, row); ``group_of`` (k,) maps a cluster
    to its group (:func:`balanced_groups`; default ``cluster % n_parts``).

    The SemDeDup tasks each take one group of whole clusters, so the scoring pass writes the rows of
    every group to a file of their own (a Parquet partitioned by cluster id).
    """
    if n_parts < 1:
        raise ValueError(f"n_parts={n_parts} must be >= 1")
    assign = np.asarray(assign, dtype=np.int64)
    order = np.lexsort((np.arange(assign.size), assign))
    part = assign[order] % n_parts if group_of is None else np.asarray(group_of, dtype=np.int64)[assign[order]]
    by_part = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[by_part], np.arange(n_parts + 1))
    return [order[by_part[bounds[p]:bounds[p + 1]]] for p in range(n_parts)]
