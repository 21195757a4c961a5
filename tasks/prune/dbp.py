"""Density-based pruning (DBP) — Abbas et al. 2024, "Effective pruning of web-scale datasets based
on complexity of concept clusters".

Per spherical k-means cluster *j* (unit centroid :math:`c_j`, members :math:`M_j`):

.. math::

    d^{intra}_j = \\frac{1}{|M_j|}\\sum_{i\\in M_j} (1 - e_i^\\top c_j), \\qquad
    d^{inter}_j = \\frac{1}{K'}\\sum_{l \\in \\mathrm{NN}_{K'}(j)} (1 - c_j^\\top c_l),

    p_j = \\operatorname{softmax}_j\\big(d^{inter}_j\\, d^{intra}_j / \\tau\\big), \\qquad
    N_j \\approx p_j \\cdot \\text{budget}\\ \\text{capped at } |M_j|

with :math:`K' = \\min(20, k-1)` nearest centroids and :math:`\\tau = 0.5`. The capped excess is
redistributed over the other clusters in proportion to :math:`p_j`; integer quotas use largest
remainders so they sum exactly to the budget (:func:`tasks.prune.select.allocate_quotas`). Within
each cluster the hardest members (largest cosine distance to the centroid) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tasks.errors import WinnowError
from tasks.prune.kmeans import KMeansResult

__all__ = ["DBPResult", "dbp_weights"]


@dataclass(frozen=True)
class DBPResult:
    """scores : (n,) float32 cosine distance to the centroid (higher = harder, ranked within a
    cluster); cluster : (n,) int64; weights : (k,) float64 p_j (sums to 1); d_intra, d_inter :
    (k,) float64; kmeans : the clustering."""

    scores: np.ndarray
    cluster: np.ndarray
    weights: np.ndarray
    d_intra: np.ndarray
    d_inter: np.ndarray
    kmeans: KMeansResult


def dbp_weights(kmeans: KMeansResult, *, tau: float = 0.5, n_neighbors: int = 20) -> DBPResult:
    """Cluster complexity weights p_j and within-cluster difficulty scores.

    Parameters
    ----------
    kmeans : :func:`~tasks.prune.kmeans.spherical_kmeans` of the embeddings, k >= 2 clusters (so
        that d_inter is defined).
    tau : softmax temperature (> 0).
    n_neighbors : K, nearest centroids averaged in d_inter (capped at k - 1).
    """
    if not (tau > 0) or not np.isfinite(tau):
        raise ValueError(f"tau={tau} must be > 0 (dbp_tau)")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors={n_neighbors} must be >= 1 (dbp_neighbors)")
    km = kmeans
    K = km.k
    if K < 2:
        raise WinnowError(f"DBP needs k >= 2 clusters to measure inter-cluster distance; got k={K} (prune.k, or a source "
                          "with more rows: k defaults to about the square root of the pool)")
    dist = (1.0 - km.cos_to_centroid).astype(np.float64)
    sizes = km.sizes.astype(np.float64)
    d_intra = np.bincount(km.assign, weights=dist, minlength=K) / np.maximum(sizes, 1.0)
    C = torch.from_numpy(km.centroids)
    cd = (1.0 - C @ C.T).double()
    cd.fill_diagonal_(float("inf"))
    kk = min(n_neighbors, K - 1)
    d_inter = cd.topk(kk, dim=1, largest=False).values.mean(dim=1).numpy()
    z = d_inter * d_intra / tau
    z = np.where(sizes > 0, z, -np.inf)
    w = np.exp(z - z.max())
    w /= w.sum()
    return DBPResult(
        scores=dist.astype(np.float32),
        cluster=km.assign,
        weights=w,
        d_intra=d_intra,
        d_inter=d_inter,
        kmeans=km,
    )
