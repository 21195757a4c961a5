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

from tasks.prune.kmeans import KMeansResult

__all__ = ["SSPResult", "ssp_scores"]


@dataclass(frozen=True)
class SSPResult:
    """scores : (n,) float32 cosine distance to the nearest prototype (higher = harder);
    cluster : (n,) int64 prototype index; kmeans : the clustering."""

    scores: np.ndarray
    cluster: np.ndarray
    kmeans: KMeansResult


def ssp_scores(kmeans: KMeansResult) -> SSPResult:
    """SSP difficulty scores of a spherical k-means clustering of the embeddings.

    Parameters
    ----------
    kmeans : :func:`~tasks.prune.kmeans.spherical_kmeans` of the embeddings; its k prototypes (the
        paper: the number of classes works; 10x either way barely matters).

    Examples
    --------
    >>> from tasks.prune.kmeans import spherical_kmeans
    >>> rng = np.random.default_rng(0)
    >>> E = np.vstack([rng.normal([5, 0], 0.3, (50, 2)), rng.normal([0, 5], 0.3, (50, 2)), [[5, 5]]])
    >>> int(ssp_scores(spherical_kmeans(E.astype(np.float32), 2)).scores.argmax())  # the planted outlier
    100
    """
    scores = (1.0 - kmeans.cos_to_centroid).astype(np.float32)
    return SSPResult(scores=scores, cluster=kmeans.assign, kmeans=kmeans)
