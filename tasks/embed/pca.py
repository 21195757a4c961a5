"""PCA baseline encoder: project centred raw features onto their top principal directions.

Randomized SVD (Halko, Martinsson & Tropp 2011, Algorithms 4.4 + 5.1): with a Gaussian test
matrix :math:`\\Omega \\in \\mathbb{R}^{d \\times (k+p)}`, :math:`Y = (A A^\\top)^q A \\Omega`
(power iterations, re-orthonormalised by QR each time), :math:`Q = \\operatorname{qr}(Y)`,
:math:`B = Q^\\top A = \\tilde U \\Sigma V^\\top`, the top-k right singular vectors of the centred
data :math:`A = X - \\bar x` are the first k rows of :math:`V^\\top`. Only products of A with thin
matrices are needed, so A is processed in row chunks (streaming-friendly, O(chunk·d) extra memory).
Up to d = 2048 features (and whenever ``dim`` is close to ``d``) the exact d x d covariance is
accumulated in one chunked pass and diagonalised instead, which is both faster and exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.embed._common import check_embeddings

__all__ = ["PCAModel", "fit_pca"]

_CHUNK = 16_384
# Up to this many features the d x d covariance is formed and diagonalised exactly.
_EXACT_MAX_D = 2048


@dataclass(frozen=True)
class PCAModel:
    """A fitted PCA.

    Attributes
    ----------
    mean : (d,) float32 — feature mean of the fitting rows.
    components : (dim, d) float32 — orthonormal principal directions, by decreasing variance.
    explained_variance : (dim,) float32 — variance of the data along each direction.
    total_variance : float — total variance of the fitting data (sum over features).
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    total_variance: float

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.explained_variance / max(self.total_variance, 1e-30)

    def transform(self, X: np.ndarray, chunk: int = _CHUNK) -> np.ndarray:
        """Project (n, d) rows: ``(X - mean) @ components.T`` -> (n, dim) float32, chunked."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.components.shape[1]:
            raise ValueError(
                f"PCA expects (n, {self.components.shape[1]}) features; got shape {X.shape}"
            )
        out = np.empty((X.shape[0], self.dim), dtype=np.float32)
        Ct = self.components.T
        for s in range(0, X.shape[0], chunk):
            out[s : s + chunk] = (np.asarray(X[s : s + chunk], dtype=np.float32) - self.mean) @ Ct
        return check_embeddings(out, "PCA embeddings", X.shape[0])


def _centred(X: np.ndarray, mean32: np.ndarray, s: int, chunk: int) -> np.ndarray:
    return np.asarray(X[s : s + chunk], dtype=np.float32) - mean32


def _matmul_chunks(X: np.ndarray, mean32: np.ndarray, M: np.ndarray, chunk: int) -> np.ndarray:
    """(X - mean) @ M for (n, d) X and (d, k) M, row-chunked, float32 BLAS."""
    M = M.astype(np.float32)
    out = np.empty((X.shape[0], M.shape[1]), dtype=np.float32)
    for s in range(0, X.shape[0], chunk):
        out[s : s + chunk] = _centred(X, mean32, s, chunk) @ M
    return out


def _rmatmul_chunks(X: np.ndarray, mean32: np.ndarray, Y: np.ndarray, chunk: int) -> np.ndarray:
    """(X - mean).T @ Y for (n, d) X and (n, k) Y, row-chunked (float32 products, float64 sum)."""
    Y = Y.astype(np.float32)
    out = np.zeros((X.shape[1], Y.shape[1]), dtype=np.float64)
    for s in range(0, X.shape[0], chunk):
        out += _centred(X, mean32, s, chunk).T @ Y[s : s + chunk]
    return out


def fit_pca(X: np.ndarray, dim: int, seed: int = 0, *, oversample: int = 10, n_iter: int = 4,
            max_rows: int | None = None, chunk: int = _CHUNK) -> PCAModel:
    """Fit a ``dim``-component PCA of the rows of ``X``.

    Parameters
    ----------
    X : (n, d) float array (may be a memory map; read in row chunks).
    dim : number of components, 1 <= dim <= min(n, d).
    seed : seeds the randomized SVD test matrix (and the row subsample).
    oversample, n_iter : randomized-SVD oversampling p and power iterations q.
    max_rows : fit on a seeded random subsample of at most this many rows.

    Returns
    -------
    PCAModel — use ``.transform(X)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3)) * [5.0, 1.0, 0.1]
    >>> m = fit_pca(X, 2)
    >>> bool(abs(m.components[0, 0]) > 0.99), m.transform(X).shape
    (True, (500, 2))
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"PCA needs a 2-D (n, d) feature matrix; got shape {X.shape}")
    n, d = X.shape
    if dim < 1 or dim > min(n, d):
        raise ValueError(f"PCA dim={dim} must be in [1, min(n, d)] = [1, {min(n, d)}] for X of shape {X.shape}")
    rng = np.random.default_rng(seed)
    if max_rows is not None and max_rows < n:
        X = X[np.sort(rng.choice(n, size=max_rows, replace=False))]
        n = X.shape[0]
        if dim > n:
            raise ValueError(f"PCA dim={dim} exceeds max_rows={n}")
    # mean and total variance in one chunked pass (float64 accumulation)
    total = np.zeros(d)
    sq = np.zeros(d)
    for s in range(0, n, chunk):
        block = np.asarray(X[s : s + chunk], dtype=np.float64)
        if not np.isfinite(block).all():
            raise ValueError("PCA input contains NaN or inf; clean the features first")
        total += block.sum(axis=0)
        sq += (block * block).sum(axis=0)
    mean = total / n
    var = np.maximum(sq / n - mean * mean, 0.0)
    total_var = float(var.sum()) * n / max(n - 1, 1)

    mean32 = mean.astype(np.float32)
    k = min(dim + oversample, min(n, d))
    if d <= _EXACT_MAX_D or k >= 0.5 * d:
        # exact: eigendecomposition of the d x d covariance (one pass, float32 BLAS per chunk)
        cov = np.zeros((d, d))
        for s in range(0, n, chunk):
            block = _centred(X, mean32, s, chunk)
            cov += block.T @ block
        cov /= max(n - 1, 1)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:dim]
        comps, ev = evecs[:, order].T, evals[order]
    else:
        Q = rng.standard_normal((d, k))
        Y, _ = np.linalg.qr(_matmul_chunks(X, mean32, Q, chunk))  # (n, k)
        for _ in range(n_iter):
            Z, _ = np.linalg.qr(_rmatmul_chunks(X, mean32, Y, chunk))  # (d, k)
            Y, _ = np.linalg.qr(_matmul_chunks(X, mean32, Z, chunk))  # (n, k)
        Bt = _rmatmul_chunks(X, mean32, Y, chunk)  # (d, k) = B^T
        _, S, Vt = np.linalg.svd(Bt.T, full_matrices=False)
        comps, ev = Vt[:dim], (S[:dim] ** 2) / max(n - 1, 1)
    # deterministic sign: largest-magnitude loading of each component is positive
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    return PCAModel(
        mean=mean.astype(np.float32),
        components=comps.astype(np.float32),
        explained_variance=np.maximum(ev, 0.0).astype(np.float32),
        total_variance=total_var,
    )
