"""Moderate coreset — Xia et al. 2023, "Moderate coreset: a universal method of data selection for
real-world data-efficient deep learning".

Per group *g* (a class in the paper; here a spherical k-means cluster, so no label is read), take
the distance of every member to the group centre and keep the band around the group's median
distance, dropping both the nearest (too easy) and the farthest (too hard/noisy) members. As a
score (higher = farther from the moderate band):

.. math::

    d_i = 1 - e_i^\\top c_{g(i)}, \\qquad s_i = \\lvert d_i - \\operatorname{median}_{j \\in g(i)} d_j \\rvert .

Moderate's own selection is therefore **keep-easy** on this score (the smallest s_i), balanced
per group; keep-hard keeps the two tails instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.prune.kmeans import DEFAULT_CHUNK, KMeansResult, spherical_kmeans

__all__ = ["ModerateResult", "moderate_scores", "group_medians"]


@dataclass(frozen=True)
class ModerateResult:
    """scores : (n,) float32 |d_i - median d of its group|; distance : (n,) float32 d_i;
    cluster : (n,) int64; kmeans : the clustering."""

    scores: np.ndarray
    distance: np.ndarray
    cluster: np.ndarray
    kmeans: KMeansResult


def group_medians(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` within each group id in [0, n_groups) (nan for empty groups); one sort."""
    order = np.lexsort((values, groups))
    sizes = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sv = values[order]
    med = np.full(n_groups, np.nan)
    ok = sizes > 0
    lo = starts[ok] + (sizes[ok] - 1) // 2
    hi = starts[ok] + sizes[ok] // 2
    med[ok] = 0.5 * (sv[lo].astype(np.float64) + sv[hi].astype(np.float64))
    return med


def moderate_scores(
    E: np.ndarray,
    *,
    k: int,
    iters: int = 20,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    kmeans: KMeansResult | None = None,
) -> ModerateResult:
    """Label-free Moderate-coreset score: distance from the group's median distance-to-centre.

    Parameters
    ----------
    E : (n, d) float embeddings; k : clusters standing in for classes.
    iters, seed, chunk, kmeans : as in :func:`~tasks.prune.ssp.ssp_scores`.
    """
    km = kmeans if kmeans is not None else spherical_kmeans(E, k, iters=iters, seed=seed, chunk=chunk)
    d = (1.0 - km.cos_to_centroid).astype(np.float32)
    med = group_medians(d, km.assign, km.k)
    s = np.abs(d - med[km.assign]).astype(np.float32)
    return ModerateResult(scores=s, distance=d, cluster=km.assign, kmeans=km)
