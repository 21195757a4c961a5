"""Distributed spherical k-means: one Lloyd iteration is a map over shards and a reduce.

The same iteration as :func:`tasks.prune.kmeans.spherical_kmeans` (Dhillon & Modha 2001), split
so that no process holds more than one shard:

* map (:func:`kmeans_pass`, one shard, on a worker): nearest centroid of every row, the (k, d)
  sums of the unit rows per cluster, the (k,) counts, how many rows changed cluster since the
  previous pass, and the shard's ``n_far`` rows farthest from their centroid (to re-seed empty
  clusters);
* reduce (:func:`reduce_passes`, on the driver): add the partial sums and counts, re-seed empty
  clusters with the globally farthest rows, normalise: the next centroids.

The chunk arithmetic reuses the in-memory kernel's private helpers (``_nearest``,
``_weighted_sums``), so with the same initial centroids the sharded centroids equal the in-memory
ones up to float32 summation order (the partial sums are added per shard instead of per chunk).
The initialisation (:func:`init_sample`, :func:`init_centroids`) draws the same seeded subsample
and k-means++ / random seeding as the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from tasks.prune.kmeans import DEFAULT_CHUNK, _kmeans_pp, _nearest, _weighted_sums, normalise_rows

__all__ = ["PassPartial", "Reduced", "init_centroids", "init_sample", "kmeans_pass", "next_centroids", "reduce_passes"]


@dataclass(frozen=True)
class PassPartial:
    """One shard's share of a Lloyd iteration.

    sums : (k, d) float32 sum of the shard's unit rows per cluster.
    counts : (k,) int64 rows per cluster.
    changed : rows whose cluster differs from ``prev_assign`` (all rows on the first pass).
    assign : (m,) int32 cluster of each row of the shard.
    far_cos, far_rows : the ``n_far`` lowest cosines to the assigned centroid and their global row
        numbers (candidates to re-seed empty clusters).
    """

    sums: np.ndarray
    counts: np.ndarray
    changed: int
    assign: np.ndarray
    far_cos: np.ndarray
    far_rows: np.ndarray


@dataclass(frozen=True)
class Reduced:
    """Result of :func:`reduce_passes`: new unit centroids before re-seeding (``sums`` normalised
    later), counts, rows changed, empty clusters and the global rows chosen to re-seed them."""

    sums: np.ndarray
    counts: np.ndarray
    changed: int
    empty: np.ndarray
    reseed_rows: np.ndarray


def init_sample(n: int, k: int, *, seed: int, init_sample: int = 20_000) -> tuple[np.ndarray, torch.Generator]:
    """Sorted global row numbers of the seeded initialisation subsample, and the generator state
    after drawing it (k-means++ continues from it), exactly as :func:`spherical_kmeans` draws them."""
    gen = torch.Generator().manual_seed(int(seed))
    m = min(n, max(init_sample, 3 * k))
    return np.sort(torch.randperm(n, generator=gen)[:m].numpy()), gen


def init_centroids(rows: np.ndarray, k: int, gen: torch.Generator,
                   init: Literal["k-means++", "random"] = "k-means++") -> np.ndarray:
    """(k, d) float32 initial unit centroids from the subsample rows (in :func:`init_sample` order)."""
    S = normalise_rows(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
    if init == "k-means++":
        C = _kmeans_pp(S, k, gen)
    elif init == "random":
        C = S[torch.randperm(S.shape[0], generator=gen)[:k]].clone()
    else:
        raise ValueError(f"init={init!r} must be 'k-means++' or 'random'")
    return C.numpy().astype(np.float32)


def kmeans_pass(
    X: np.ndarray,
    centroids: np.ndarray,
    prev_assign: np.ndarray | None,
    *,
    row_offset: int,
    chunk: int = DEFAULT_CHUNK,
    n_far: int | None = None,
) -> PassPartial:
    """One Lloyd iteration over one shard (the map).

    Parameters
    ----------
    X : (m, d) float32 rows of the shard (any norm).
    centroids : (k, d) float32 unit centroids of this iteration.
    prev_assign : (m,) cluster of each row after the previous pass, or None on the first pass.
    row_offset : global row number of ``X[0]`` (for the far-row candidates).
    chunk : rows per matmul, as in the kernel.
    n_far : far-row candidates to return (default k: enough to re-seed every cluster).
    """
    X = np.asarray(X, dtype=np.float32)
    m, d = X.shape
    k = centroids.shape[0]
    dev = torch.device("cpu")
    CT = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).T.contiguous()
    buf = np.empty((min(chunk, m), k), dtype=np.float32)
    sums = torch.zeros(k, d, dtype=torch.float32)
    assign = np.empty(m, dtype=np.int64)
    cos = np.empty(m, dtype=np.float32)
    for s in range(0, m, chunk):
        Xc = np.ascontiguousarray(X[s:s + chunk])
        inv = 1.0 / np.maximum(np.linalg.norm(Xc, axis=1), 1e-12)
        arg, best = _nearest(Xc, CT, inv, buf, dev)
        assign[s:s + arg.size], cos[s:s + arg.size] = arg, best
        sums += _weighted_sums(Xc, arg, inv, k, dev)
    changed = m if prev_assign is None else int((np.asarray(prev_assign) != assign).sum())
    n_far = min(m, k if n_far is None else n_far)
    far = np.argsort(cos, kind="stable")[:n_far]
    return PassPartial(
        sums=sums.numpy(),
        counts=np.bincount(assign, minlength=k).astype(np.int64),
        changed=changed,
        assign=assign.astype(np.int32),
        far_cos=cos[far],
        far_rows=far.astype(np.int64) + int(row_offset),
    )


def reduce_passes(partials: Sequence[PassPartial]) -> Reduced:
    """Add the shards' partial sums (in shard order) and pick re-seed rows for empty clusters.

    Empty clusters get the rows with the lowest cosine to their centroid over all shards (ties by
    row number), as the in-memory kernel does.
    """
    if not partials:
        raise ValueError("no partial results to reduce")
    sums = np.zeros_like(partials[0].sums)
    counts = np.zeros_like(partials[0].counts)
    changed = 0
    for p in partials:
        sums += p.sums
        counts += p.counts
        changed += p.changed
    empty = np.flatnonzero(counts == 0)
    reseed = np.empty(0, dtype=np.int64)
    if empty.size:
        cos = np.concatenate([p.far_cos for p in partials])
        rows = np.concatenate([p.far_rows for p in partials])
        reseed = rows[np.lexsort((rows, cos))[:empty.size]]
    return Reduced(sums=sums, counts=counts, changed=changed, empty=empty, reseed_rows=reseed)


def next_centroids(red: Reduced, reseed_vectors: np.ndarray | None = None) -> np.ndarray:
    """(k, d) float32 unit centroids from reduced sums; empty clusters take ``reseed_vectors``
    (the rows :attr:`Reduced.reseed_rows`, raw) normalised."""
    sums = torch.from_numpy(red.sums.copy())
    if red.empty.size:
        if reseed_vectors is None or reseed_vectors.shape[0] != red.empty.size:
            raise ValueError(f"{red.empty.size} empty clusters need as many re-seed rows")
        sums[torch.from_numpy(red.empty)] = normalise_rows(torch.from_numpy(np.ascontiguousarray(reseed_vectors,
                                                                                                  dtype=np.float32)))
    return normalise_rows(sums).numpy().astype(np.float32)
