"""Self-supervised prototypes (SSP) — Sorscher et al. 2022, "Beyond neural scaling laws", §6.

Cluster the normalised embeddings with spherical k-means; the score of an example is its cosine
distance to the nearest prototype,

.. math::

    s_i = 1 - e_i^\\top c_{a(i)}, \\qquad a(i) = \\arg\\max_j e_i^\\top c_j,

so prototypical (easy) examples score near 0 and atypical (hard) ones high — the project-wide
convention "higher = harder". No labels are read: the function takes none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.prune.kmeans import DEFAULT_CHUNK, KMeansResult, spherical_kmeans

__all__ = ["SSPResult", "ssp_scores"]


@dataclass(frozen=True)
class SSPResult:
    """scores : (n,) float32 cosine distance to the nearest prototype (higher = harder);
    cluster : (n,) int64 prototype index; kmeans : the clustering."""

    scores: np.ndarray
    cluster: np.ndarray
    kmeans: KMeansResult


def ssp_scores(
    E: np.ndarray,
    *,
    k: int,
    iters: int = 20,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    kmeans: KMeansResult | None = None,
) -> SSPResult:
    """SSP difficulty scores.

    Parameters
    ----------
    E : (n, d) float — embeddings (normalised inside).
    k : number of prototypes (the paper: the number of classes works; 10x either way barely matters).
    iters, seed, chunk : passed to :func:`~tasks.prune.kmeans.spherical_kmeans`.
    kmeans : a clustering of the same ``E`` to reuse instead of running k-means again.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> E = np.vstack([rng.normal([5, 0], 0.3, (50, 2)), rng.normal([0, 5], 0.3, (50, 2)), [[5, 5]]])
    >>> int(ssp_scores(E.astype(np.float32), k=2).scores.argmax())  # the planted outlier
    100
    """
    km = kmeans if kmeans is not None else spherical_kmeans(E, k, iters=iters, seed=seed, chunk=chunk)
    scores = (1.0 - km.cos_to_centroid).astype(np.float32)
    return SSPResult(scores=scores, cluster=km.assign, kmeans=km)
