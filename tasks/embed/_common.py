"""Shared helpers of the encoders: output validation and L2 normalisation."""

from __future__ import annotations

import numpy as np


def check_embeddings(E: np.ndarray, what: str, n: int | None = None) -> np.ndarray:
    """Return ``E`` as a C-contiguous (n, d) float32 array; ValueError on a bad shape,
    RuntimeError on NaN/inf (features are finite after ingestion: the encoder went out of range).

    Parameters
    ----------
    E : (n, d) array of embedding vectors.
    what : name used in the error message (e.g. ``"ssl_cnn embeddings of source 'mnist'"``).
    n : expected number of rows, if known.
    """
    E = np.asarray(E)
    if E.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (n, dim) array; got shape {E.shape}")
    if n is not None and E.shape[0] != n:
        raise ValueError(f"{what} has {E.shape[0]} rows; expected {n}")
    if E.shape[1] == 0:
        raise ValueError(f"{what} has 0 columns")
    if not np.issubdtype(E.dtype, np.number) or np.issubdtype(E.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real numbers; got dtype {E.dtype}")
    E = np.ascontiguousarray(E, dtype=np.float32)
    finite = np.isfinite(E)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise RuntimeError(
            f"{what} contain NaN or inf in {rows.size} row(s) (first row {int(rows[0])}); "
            "fix the input features or the encoder settings (e.g. a lower lr)"
        )
    return E


def l2_normalize(E: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero). (n, d) float32 -> (n, d) float32."""
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    return (E / np.maximum(norms, eps)).astype(np.float32, copy=False)
