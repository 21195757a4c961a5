"""``column`` and ``raw`` encoders: the source's own feature matrix, validated, used as-is.

``column`` is for sources whose features *are* an embedding supplied by the user (e.g. a Parquet
list column ingested as the feature matrix); ``raw`` is the raw features (pixels, tabular columns)
as a baseline. Both only validate: 2-D, at least one column, finite.
"""

from __future__ import annotations

import numpy as np

from tasks.embed._common import check_embeddings, l2_normalize

__all__ = ["column_embeddings"]


def column_embeddings(X: np.ndarray | None, *, what: str = "embedding column", normalize: bool = False) -> np.ndarray:
    """Return the (n, d) float32 feature matrix ``X`` after validation (optionally L2-normalised).

    Raises ValueError when ``X`` is missing or not 2-D (``check_fits`` refuses such a source first),
    RuntimeError when it holds NaN/inf.
    """
    if X is None:
        raise ValueError(f"{what}: the source has no feature matrix (a text source needs kind 'minilm')")
    E = check_embeddings(X, what)
    return l2_normalize(E) if normalize else E
