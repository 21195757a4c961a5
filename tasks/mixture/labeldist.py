"""Label-to-label distances for label-aware OT (OTDD, Alvarez-Melis & Fusi 2020, Sec. 3).

Each label y of a dataset is represented by its class-conditional distribution P(φ(x) | y). The
distance between label y (dataset A) and label y' (dataset B) is

* ``gaussian`` (default): the Bures–Wasserstein distance between Gaussian fits N(μ, Σ), N(μ', Σ')
  (OTDD eq. 6)

  .. math:: W_2^2 = \\lVert \\mu - \\mu' \\rVert^2
            + \\operatorname{tr}\\big(\\Sigma + \\Sigma' - 2 (\\Sigma^{1/2} \\Sigma' \\Sigma^{1/2})^{1/2}\\big)

* ``exact``: the exact OT cost (``ot.emd2``, squared Euclidean ground cost, uniform weights)
  between the two class samples, each subsampled to at most ``max_per_class`` points.

Labels never have to be shared between datasets: the distance compares distributions, so a
class of A that B lacks simply gets large distances to all of B's classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot


LabelMethod = Literal["gaussian", "exact"]


@dataclass(frozen=True)
class ClassGaussians:
    """Gaussian fit per class. classes : (k,) label codes; means : (k, d); covs : (k, d, d); counts : (k,)."""

    classes: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    counts: np.ndarray


def sq_euclidean(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (n, m) in float64, clipped at 0."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    D = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(D, 0.0)


def class_gaussians(X: np.ndarray, y: np.ndarray, *, ridge: float = 1e-6) -> ClassGaussians:
    """Mean and covariance (ML estimate, + ridge·I) of each class present in ``y``.

    X : (n, d) features; y : (n,) integer labels. A class with one example gets Σ = ridge·I.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    k, d = classes.size, X.shape[1]
    onehot = np.zeros((X.shape[0], k))
    onehot[np.arange(X.shape[0]), inv] = 1.0
    means = (onehot.T @ X) / counts[:, None]
    covs = np.empty((k, d, d))
    for c in range(k):
        Z = X[inv == c] - means[c]
        covs[c] = Z.T @ Z / counts[c] + ridge * np.eye(d)
    return ClassGaussians(classes=classes, means=means, covs=covs, counts=counts)


def _psd_sqrt(S: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root of a batch (k, d, d)."""
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ np.swapaxes(V, -1, -2)


def bures_wasserstein_sq(ga: ClassGaussians, gb: ClassGaussians) -> np.ndarray:
    """W_2² between every Gaussian of ``ga`` and every Gaussian of ``gb`` → (ka, kb) float64.

    The trace term uses tr((A^½ B A^½)^½) = Σ sqrt(eig(A^½ B A^½)).
    """
    mean_term = sq_euclidean(ga.means, gb.means)
    tr_a = np.trace(ga.covs, axis1=1, axis2=2)
    tr_b = np.trace(gb.covs, axis1=1, axis2=2)
    ra = _psd_sqrt(ga.covs)  # (ka, d, d)
    cross = np.empty((ga.classes.size, gb.classes.size))
    for i in range(ga.classes.size):
        M = ra[i][None] @ gb.covs @ ra[i][None]  # (kb, d, d)
        ev = np.linalg.eigvalsh(0.5 * (M + np.swapaxes(M, -1, -2)))
        cross[i] = np.sqrt(np.clip(ev, 0.0, None)).sum(-1)
    return np.maximum(mean_term + tr_a[:, None] + tr_b[None, :] - 2.0 * cross, 0.0)


def exact_label_distances(
    Xa: np.ndarray, ya: np.ndarray, Xb: np.ndarray, yb: np.ndarray, *, max_per_class: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact inner OT (``ot.emd2``) between class samples; returns (W² (ka, kb), classes_a, classes_b)."""
    rng = np.random.default_rng(seed)
    ca, cb = np.unique(ya), np.unique(yb)

    def pick(X: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
        idx = np.flatnonzero(y == c)
        if idx.size > max_per_class:
            idx = rng.choice(idx, size=max_per_class, replace=False)
        return np.asarray(X[idx], dtype=np.float64)

    sa = [pick(Xa, ya, c) for c in ca]
    sb = [pick(Xb, yb, c) for c in cb]
    W = np.empty((ca.size, cb.size))
    for i, A in enumerate(sa):
        for j, B in enumerate(sb):
            W[i, j] = ot.emd2(np.full(len(A), 1.0 / len(A)), np.full(len(B), 1.0 / len(B)), sq_euclidean(A, B))
    return W, ca, cb


def label_distances(
    Xa: np.ndarray, ya: np.ndarray, Xb: np.ndarray, yb: np.ndarray,  # dataset A, dataset B
    *,
    method: LabelMethod = "gaussian",
    max_per_class: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared label-to-label distances between the classes of A and of B.

    Parameters
    ----------
    Xa : (na, d), ya : (na,) integer labels; Xb : (nb, d), yb : (nb,).
    method : "gaussian" (Bures–Wasserstein) or "exact" (inner ``ot.emd2``).

    Returns
    -------
    (W2, classes_a, classes_b) with W2 : (ka, kb) float64 and the sorted class codes of each side.
    """
    if Xa.shape[1] != Xb.shape[1]:
        raise ValueError(f"feature dimensions differ: {Xa.shape[1]} vs {Xb.shape[1]}")
    if len(ya) == 0 or len(yb) == 0:
        raise ValueError("label distances need at least one labelled example on each side")
    if method == "gaussian":
        ga, gb = class_gaussians(Xa, ya), class_gaussians(Xb, yb)
        return bures_wasserstein_sq(ga, gb), ga.classes, gb.classes
    if method == "exact":
        return exact_label_distances(Xa, ya, Xb, yb, max_per_class=max_per_class, seed=seed)
    raise ValueError(f"label distance method={method!r} must be 'gaussian' or 'exact'")
