"""SemDeDup over one group of whole clusters (Abbas et al. 2023), the unit of the parallel pass.

The scoring pass writes the rows of each group of clusters (groups of about equal pairwise work,
:func:`tasks.shards.score.balanced_groups`) to files of
their own; one task reads one group and runs the in-memory kernel
:func:`tasks.prune.semdedup.semdedup` on it with the global clustering restricted to the group, so
the keep/remove decision of every row is the one the in-memory path makes on the whole matrix.

Bounding the pairwise pass (``sub_rows``): SemDeDup costs O(m_j^2 d) for a cluster of m_j rows,
which grows with n at a fixed k. With ``sub_rows`` set, a cluster larger than that is split by
recursive spherical 2-means (the in-memory kernel with k = 2, seeded by the cluster id) until
every piece has at most ``sub_rows`` rows, and the pairwise pass runs per piece, as SemDeDup does at
web scale with many fine clusters: near-copies (cosine > 1 - eps) fall into the same piece except
at its borders, so a few duplicates that straddle a border can be kept. ``sub_rows=None`` is the
exact per-cluster pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks.prune.kmeans import KMeansResult, spherical_kmeans
from tasks.prune.semdedup import DEFAULT_BLOCK, DEFAULT_MAX_PAIRS, semdedup

__all__ = ["DedupGroup", "dedup_clusters", "gather_group"]


@dataclass(frozen=True)
class DedupGroup:
    """Result for one group of clusters.

    removed : {eps: (r,) int64 sorted global row numbers removed}.
    removed_cluster : {eps: (r,) int32 their k-means cluster}.
    n_rows : rows in the group; n_clusters : clusters with members; n_subclusters : pairwise groups run;
    not_converged : sub-clusterings that stopped at ``sub_iters``.
    """

    removed: dict[float, np.ndarray]
    removed_cluster: dict[float, np.ndarray]
    n_rows: int
    n_clusters: int
    n_subclusters: int
    not_converged: int = 0
    eps: tuple[float, ...] = field(default=())


def dedup_clusters(
    X: np.ndarray,
    row_index: np.ndarray,
    cluster: np.ndarray,
    cos: np.ndarray,
    *,
    eps: Sequence[float],
    keep: str = "farthest",
    block: int | None = DEFAULT_BLOCK,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    sub_rows: int | None = None,
    sub_iters: int = 5,
    seed: int = 0,
    overwrite: bool = False,
) -> DedupGroup:
    """SemDeDup of the rows of whole clusters.

    Parameters
    ----------
    X : (m, d) float32 rows (any order); row_index : (m,) their global row numbers.
    cluster : (m,) k-means cluster of each row; cos : (m,) cosine to its centroid (the order of the
        greedy walk, ``keep`` decides which end comes first).
    eps : thresholds (duplicate if cosine similarity > 1 - eps).
    block, max_pairs : the kernel's memory bounds.
    sub_rows : split clusters larger than this into sub-clusters (None: exact per-cluster pass).
    sub_iters, seed : iterations of each 2-means split and the seed (mixed with the cluster id).
    overwrite : ``X`` may be reordered in place (when it is already in (cluster, row) order, e.g. from
        :func:`gather_group`); otherwise the rows are copied first.
    """
    eps_t = tuple(float(e) for e in eps)
    m = int(np.asarray(row_index).size)
    if m == 0:
        empty = {e: np.empty(0, dtype=np.int64) for e in eps_t}
        return DedupGroup(empty, {e: np.empty(0, dtype=np.int32) for e in eps_t}, 0, 0, 0, 0, eps_t)
    if sub_rows is not None and sub_rows < 2:
        raise ValueError(f"sub_rows={sub_rows} must be >= 2 (or None)")
    row_index = np.asarray(row_index, dtype=np.int64)
    cluster = np.asarray(cluster, dtype=np.int64)
    order = np.lexsort((row_index, cluster))  # the in-memory kernel breaks ties by row number
    if np.array_equal(order, np.arange(m)):  # already in order (gather_group): no second copy of the rows
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not overwrite and sub_rows is not None:
            X = X.copy()  # the splits reorder it
        row_index, cos = row_index.copy(), np.asarray(cos, dtype=np.float32)
    else:
        X = np.ascontiguousarray(np.asarray(X, dtype=np.float32)[order])
        row_index, cluster, cos = row_index[order], cluster[order], np.asarray(cos, dtype=np.float32)[order]

    ids, starts, sizes = np.unique(cluster, return_index=True, return_counts=True)
    local = np.empty(m, dtype=np.int64)
    local_cos = cos.copy()
    n_groups = 0
    not_converged = 0
    for c, a, size in zip(ids, starts, sizes):
        b = a + size
        if sub_rows is None or size <= sub_rows:
            local[a:b] = n_groups
            n_groups += 1
            continue
        perm, leaves, nc = _bisect(X[a:b], sub_rows, sub_iters, (int(seed) * 1_000_003 + int(c)) % 2**31)
        row_index[a:b] = row_index[a:b][perm]  # X[a:b] was reordered in place; the cluster id is constant there
        not_converged += nc
        for lo, hi, leaf_cos in leaves:
            local[a + lo:a + hi] = n_groups
            local_cos[a + lo:a + hi] = leaf_cos
            n_groups += 1
    sizes_local = np.bincount(local, minlength=n_groups).astype(np.int64)
    km = KMeansResult(centroids=np.zeros((n_groups, 1), dtype=np.float32), assign=local,
                      cos_to_centroid=local_cos, sizes=sizes_local, objective=float("nan"), n_iter=0,
                      converged=True, seed=int(seed))
    res = semdedup(X, eps=eps_t, k=n_groups, keep=keep, block=block, max_pairs=max_pairs, kmeans=km)
    removed, removed_cluster = {}, {}
    for e in eps_t:
        gone = ~res.keep[e]
        o = np.argsort(row_index[gone], kind="stable")
        removed[e] = row_index[gone][o]
        removed_cluster[e] = cluster[gone][o].astype(np.int32)
    return DedupGroup(removed, removed_cluster, m, int(ids.size), n_groups, not_converged, eps_t)


def gather_group(meta: Sequence[dict[str, np.ndarray]], read_vectors: Callable[[int], np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X, row_index, cluster, cos)`` of a group's part files, rows sorted by (cluster, row number) as
    :func:`dedup_clusters` walks them (so it makes no copy of its own).

    ``meta[i]`` holds part i's ``row_index``, ``cluster`` and ``cos`` columns; ``read_vectors(i)`` returns its
    (m_i, d) vectors. The order comes from the small columns first; then each part's vectors are read and
    copied straight to their sorted place, one part at a time: the group's vectors are held once, plus
    one part.
    """
    row_index = np.concatenate([p["row_index"] for p in meta]).astype(np.int64, copy=False)
    cluster = np.concatenate([p["cluster"] for p in meta]).astype(np.int64, copy=False)
    cos = np.concatenate([p["cos"] for p in meta]).astype(np.float32, copy=False)
    order = np.lexsort((row_index, cluster))
    where = np.empty_like(order)
    where[order] = np.arange(order.size)  # sorted position of each row, in reading order
    X: np.ndarray | None = None
    a = 0
    for i, p in enumerate(meta):
        V = read_vectors(i)
        if V.shape[0] != p["row_index"].size:
            raise ValueError(f"part {i} has {V.shape[0]} vectors but {p['row_index'].size} rows")
        if X is None:
            X = np.empty((order.size, V.shape[1]), dtype=np.float32)
        X[where[a:a + V.shape[0]]] = V
        a += V.shape[0]
        del V
    if X is None:
        X = np.empty((0, 0), dtype=np.float32)
    return X, row_index[order], cluster[order], cos[order]


def _bisect(X: np.ndarray, sub_rows: int, iters: int, seed: int
            ) -> tuple[np.ndarray, list[tuple[int, int, np.ndarray]], int]:
    """Split rows by recursive spherical 2-means until every leaf has at most ``sub_rows`` rows.

    ``X`` is reordered **in place**: every split is a stable partition of its node's rows, so each node
    is one contiguous slice and no split copies its rows (memory: ``X`` plus the smaller side of one
    split, instead of a copy of every node). Each node's rows keep their original relative order, so
    every 2-means sees the rows it would see as ``X[rows]`` and the leaves are the same.

    Returns ``perm`` (row i of the reordered ``X`` was row ``perm[i]``), the leaves as (start, stop,
    cosine to the leaf's centroid) sorted by their first original row, and how many splits did not
    converge. Cost per row: O(log2(m / sub_rows) * d * iters), against O(m / sub_rows * d * iters) for
    one flat k-means with m / sub_rows centroids. A split that cannot separate the rows (all on one
    side: identical rows) stops there.
    """
    perm = np.arange(X.shape[0])
    leaves: list[tuple[int, int, np.ndarray]] = []
    not_converged = 0
    todo = [(0, X.shape[0])]
    while todo:
        a, b = todo.pop()
        with warnings.catch_warnings():  # counted below instead (catch_warnings is not thread-safe: best effort)
            warnings.simplefilter("ignore", RuntimeWarning)
            km = spherical_kmeans(X[a:b], 2, iters=iters, seed=seed, init="random")
        not_converged += not km.converged
        if km.sizes.min() == 0:
            leaves.append((a, b, km.cos_to_centroid))
            continue
        side = km.assign == 1
        n0 = _partition(X, perm, a, b, side)
        cos = np.concatenate([km.cos_to_centroid[~side], km.cos_to_centroid[side]])
        for lo, hi in ((a, a + n0), (a + n0, b)):
            if hi - lo > sub_rows:
                todo.append((lo, hi))
            else:
                leaves.append((lo, hi, cos[lo - a:hi - a]))
    leaves.sort(key=lambda leaf: int(perm[leaf[0]]))
    return perm, leaves, not_converged


_MOVE_ROWS = 16_384


def _partition(X: np.ndarray, perm: np.ndarray, a: int, b: int, side: np.ndarray) -> int:
    """Stable in-place partition of rows ``a:b`` of ``X`` (and of ``perm``): the rows with ``side`` False
    first. Holds a copy of the smaller side only; the larger side moves in row blocks towards its end
    (each block's destinations lie at or before, resp. after, every source not yet moved). Returns how
    many rows are on side False."""
    i0, i1 = np.flatnonzero(~side), np.flatnonzero(side)
    n0, n1 = i0.size, i1.size
    perm[a:b] = np.concatenate([perm[a:b][i0], perm[a:b][i1]])
    if n1 <= n0:  # set side 1 aside, move side 0 forward
        kept = X[a + i1]
        for s in range(0, n0, _MOVE_ROWS):
            src = a + i0[s:s + _MOVE_ROWS]
            X[a + s:a + s + src.size] = X[src]
        X[a + n0:b] = kept
    else:  # set side 0 aside, move side 1 back
        kept = X[a + i0]
        for e in range(n1, 0, -_MOVE_ROWS):
            s = max(0, e - _MOVE_ROWS)
            X[b - n1 + s:b - n1 + e] = X[a + i1[s:e]]
        X[a:a + n0] = kept
    return n0
