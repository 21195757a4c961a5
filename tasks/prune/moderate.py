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

from tasks.prune.kmeans import KMeansResult

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


def moderate_scores(kmeans: KMeansResult) -> ModerateResult:
    """Label-free Moderate-coreset score: distance from the group's median distance-to-centre.

    Parameters
    ----------
    kmeans : :func:`~tasks.prune.kmeans.spherical_kmeans` of the embeddings; its clusters stand in
        for classes.
    """
    d = (1.0 - kmeans.cos_to_centroid).astype(np.float32)
    med = group_medians(d, kmeans.assign, kmeans.k)
    s = np.abs(d - med[kmeans.assign]).astype(np.float32)
    return ModerateResult(scores=s, distance=d, cluster=kmeans.assign, kmeans=kmeans)
