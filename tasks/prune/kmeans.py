"""Spherical k-means on L2-normalised embeddings (torch, chunked over rows).

The clustering behind SSP, SemDeDup, DBP and the label-free Moderate coreset (pruning.md).
With unit rows :math:`e_i` and unit centroids :math:`c_j`, spherical k-means maximises

.. math::

    \\sum_i e_i^\\top c_{a(i)}, \\qquad a(i) = \\arg\\max_j e_i^\\top c_j, \\qquad
    c_j = \\frac{\\sum_{a(i)=j} e_i}{\\lVert \\sum_{a(i)=j} e_i \\rVert_2}

(Dhillon & Modha 2001). Each iteration is one pass over the rows in chunks of ``chunk`` rows: a
(chunk, k) similarity matmul, an argmax and an ``index_add_`` of the chunk into the (k, d) sums, so
memory beyond the input is O(chunk * k + k * d + n) — 1M x 384 with k = 1000 fits comfortably.
Rows are normalised chunk by chunk; the caller's array is never copied whole.

Initialisation is seeded: ``"k-means++"`` (Arthur & Vassilvitskii 2007, with cosine distance
:math:`1 - e^\\top c`, run on a seeded subsample of at most ``init_sample`` rows) or ``"random"``
(k distinct rows). An empty cluster is re-seeded with the row currently farthest from its centroid.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from tasks.errors import WinnowError

__all__ = [
    "KMeansResult",
    "spherical_kmeans",
    "check_embeddings",
    "normalise_rows",
    "assign_to_centroids",
    "small_problem_threads",
]

DEFAULT_CHUNK = 65_536

# Below this many input floats a probe runs on one torch thread: for small problems the
# intra-op thread synchronisation costs more than it saves (7x slower on a busy 2-core machine).
SMALL_PROBLEM = 4_000_000


@contextmanager
def small_problem_threads(size: int) -> Iterator[None]:
    """Run the block on one torch thread when the problem has at most SMALL_PROBLEM floats."""
    if size > SMALL_PROBLEM:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class KMeansResult:
    """Result of :func:`spherical_kmeans`.

    Attributes
    ----------
    centroids : (k, d) float32 unit-norm centroids.
    assign : (n,) int64 index of the nearest centroid of each row.
    cos_to_centroid : (n,) float32 cosine similarity of each row to its centroid.
    sizes : (k,) int64 members per cluster.
    objective : float, mean cosine similarity to the assigned centroid.
    n_iter : int, iterations run.
    converged : bool, True when the assignment stopped changing before ``iters``.
    seed : int
    """

    centroids: np.ndarray
    assign: np.ndarray
    cos_to_centroid: np.ndarray
    sizes: np.ndarray
    objective: float
    n_iter: int
    converged: bool
    seed: int

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def check_embeddings(E: np.ndarray, name: str = "embeddings", *, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """Validate an (n, d) float embedding matrix: 2-D, non-empty, finite, no all-zero rows.

    Returns the array as float32 (no copy when it already is). Checks run chunk by chunk.
    """
    E = np.asarray(E)
    if E.ndim != 2:
        raise WinnowError(f"{name} must be a 2-D (n, d) array; got shape {E.shape}")
    if E.shape[0] == 0 or E.shape[1] == 0:
        raise WinnowError(f"{name} is empty (shape {E.shape}); need at least one row and one column")
    if not np.issubdtype(E.dtype, np.number) or np.issubdtype(E.dtype, np.complexfloating):
        raise WinnowError(f"{name} must be a real numeric array; got dtype {E.dtype}")
    if E.dtype != np.float32:
        E = E.astype(np.float32)
    for s in range(0, E.shape[0], chunk):
        block = E[s : s + chunk]
        finite = np.isfinite(block)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise WinnowError(
                f"{name} has a non-finite value {block[r, c]} at row {s + r}, column {c}; "
                "clean or re-embed the source before pruning"
            )
        norms = np.linalg.norm(block, axis=1)
        if (norms == 0).any():
            r = int(np.flatnonzero(norms == 0)[0])
            raise WinnowError(f"{name} row {s + r} is all zeros; cosine-based pruning needs non-zero embeddings")
    return E


def normalise_rows(X: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (rows are assumed non-zero)."""
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)


def assign_to_centroids(
    E: np.ndarray, centroids: np.ndarray, *, chunk: int = DEFAULT_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest unit centroid of every row: ``(assign (n,) int64, cos (n,) float32)``, chunked."""
    C = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    n = E.shape[0]
    assign = np.empty(n, dtype=np.int64)
    cos = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        X = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[s : s + chunk])))
        sim = X @ C.T
        best, arg = sim.max(dim=1)
        assign[s : s + chunk] = arg.numpy()
        cos[s : s + chunk] = best.numpy()
    return assign, cos


def _kmeans_pp(X: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding on unit rows X (m, d) with cosine distance; returns (k, d)."""
    m = X.shape[0]
    first = int(torch.randint(m, (1,), generator=gen))
    centres = [X[first]]
    dist = (1.0 - X @ X[first]).clamp_min(0.0)
    for _ in range(1, k):
        total = float(dist.sum())
        if total <= 0:  # every remaining row coincides with a centre: pick uniformly
            idx = int(torch.randint(m, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(dist / total, 1, generator=gen))
        centres.append(X[idx])
        dist = torch.minimum(dist, (1.0 - X @ X[idx]).clamp_min(0.0))
    return torch.stack(centres)


def spherical_kmeans(
    E: np.ndarray,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    init: Literal["k-means++", "random"] = "k-means++",
    init_sample: int = 20_000,
    tol: float = 1e-3,
    progress: bool = False,
) -> KMeansResult:
    """Cluster the rows of ``E`` on the unit sphere.

    Parameters
    ----------
    E : (n, d) float array — embeddings (any norm; normalised chunk by chunk).
    k : number of clusters, 1 <= k <= n.
    iters : maximum Lloyd iterations (>= 1).
    seed : seeds the initialisation (and the init subsample).
    chunk : rows per matmul; bounds the (chunk, k) similarity block.
    init : ``"k-means++"`` (default) or ``"random"``.
    init_sample : k-means++ runs on a seeded subsample of max(init_sample, 3k) rows at most.
    tol : stop when fewer than ``tol * n`` rows change cluster (a RuntimeWarning is issued only
        when more than 1% still changed in the last iteration).
    progress : show a rich progress bar over iterations.

    Returns
    -------
    KMeansResult

    Examples
    --------
    >>> E = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> r = spherical_kmeans(E, 2, seed=0)
    >>> bool(r.assign[0] == r.assign[1] and r.assign[2] == r.assign[3] and r.assign[0] != r.assign[2])
    True
    """
    E = check_embeddings(E, chunk=chunk)
    n, d = E.shape
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise WinnowError(f"k={k!r} must be an integer")
    if k < 1 or k > n:
        raise WinnowError(f"k={k} clusters must be in [1, n_samples={n}]; lower k (prune.k) or add data")
    if iters < 1:
        raise WinnowError(f"iters={iters} must be >= 1")
    if chunk < 1:
        raise WinnowError(f"chunk={chunk} must be >= 1")
    if init not in ("k-means++", "random"):
        raise WinnowError(f"init={init!r} must be 'k-means++' or 'random'")
    k = int(k)
    gen = torch.Generator().manual_seed(int(seed))

    m = min(n, max(init_sample, 3 * k))
    sample = np.sort(torch.randperm(n, generator=gen)[:m].numpy())
    S = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[sample])))
    if init == "k-means++":
        C = _kmeans_pp(S, k, gen)
    else:
        C = S[torch.randperm(m, generator=gen)[:k]].clone()
    del S

    assign = np.full(n, -1, dtype=np.int64)
    cos = np.empty(n, dtype=np.float32)
    converged = False
    it = 0
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("spherical k-means", total=iters)
        for it in range(1, iters + 1):
            sums = torch.zeros(k, d, dtype=torch.float32)
            changed = 0
            for s in range(0, n, chunk):
                X = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[s : s + chunk])))
                best, arg = (X @ C.T).max(dim=1)
                arg_np = arg.numpy()
                changed += int((assign[s : s + chunk] != arg_np).sum())
                assign[s : s + chunk] = arg_np
                cos[s : s + chunk] = best.numpy()
                sums.index_add_(0, arg, X)
            counts = np.bincount(assign, minlength=k)
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                # Re-seed empty clusters with the rows farthest from their centroids.
                far = np.argsort(cos, kind="stable")[: empty.size]
                for j, i in zip(empty, far):
                    sums[j] = normalise_rows(torch.from_numpy(E[i : i + 1].copy()))[0]
            C = normalise_rows(sums)
            bar.update(task, advance=1)
            if changed <= tol * n and not empty.size:
                converged = True
                break
    if not converged and changed > 0.01 * n:
        warnings.warn(
            f"spherical k-means did not converge in iters={iters}; raise iters (prune.kmeans_iters)",
            RuntimeWarning,
            stacklevel=2,
        )
    # Final assignment against the final centroids, so assign/cos are consistent with centroids.
    assign, cos = assign_to_centroids(E, C.numpy(), chunk=chunk)
    sizes = np.bincount(assign, minlength=k).astype(np.int64)
    return KMeansResult(
        centroids=C.numpy().astype(np.float32),
        assign=assign,
        cos_to_centroid=cos,
        sizes=sizes,
        objective=float(cos.mean()),
        n_iter=it,
        converged=converged,
        seed=int(seed),
    )
