"""Spherical k-means on L2-normalised embeddings (torch, chunked over rows).

The clustering behind SSP, SemDeDup, DBP and the label-free Moderate coreset (pruning.md).
With unit rows :math:`e_i` and unit centroids :math:`c_j`, spherical k-means maximises

.. math::

    \\sum_i e_i^\\top c_{a(i)}, \\qquad a(i) = \\arg\\max_j e_i^\\top c_j, \\qquad
    c_j = \\frac{\\sum_{a(i)=j} e_i}{\\lVert \\sum_{a(i)=j} e_i \\rVert_2}

(Dhillon & Modha 2001). Each iteration is one pass over the rows in chunks of ``chunk`` rows: a
(chunk, k) similarity matmul, an argmax and a sparse (k, chunk) one-hot product that adds the chunk
into the (k, d) sums, so memory beyond the input is O(chunk * k + k * d + n) — 1M x 384 with
k = 1000 fits comfortably. Rows are never normalised in memory: the argmax does not depend on a row's
norm, so the raw rows are scored and 1/||e_i|| (computed once) scales the winning cosine and the
row's weight in the centroid sum. The caller's array is never copied whole.

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

DEFAULT_CHUNK = 16_384  # rows per pass; the (chunk, k) float32 block stays small (64 MB at k = 1000)

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
        raise ValueError(f"{name} must be a 2-D (n, d) array; got shape {E.shape}")
    if E.shape[0] == 0 or E.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {E.shape}); need at least one row and one column")
    if not np.issubdtype(E.dtype, np.number) or np.issubdtype(E.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array; got dtype {E.dtype}")
    if E.dtype != np.float32:
        E = E.astype(np.float32)
    for s in range(0, E.shape[0], chunk):
        block = E[s : s + chunk]
        finite = np.isfinite(block)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise ValueError(
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
    E: np.ndarray, centroids: np.ndarray, *, chunk: int = DEFAULT_CHUNK, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest unit centroid of every row: ``(assign (n,) int64, cos (n,) float32)``, chunked."""
    dev = torch.device(device)
    k = centroids.shape[0]
    CT = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(dev).T.contiguous()
    n = E.shape[0]
    buf = np.empty((min(chunk, n), k), dtype=np.float32) if dev.type == "cpu" else None
    assign = np.empty(n, dtype=np.int64)
    cos = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        X = np.ascontiguousarray(E[s : s + chunk], dtype=np.float32)
        inv = 1.0 / np.maximum(np.linalg.norm(X, axis=1), 1e-12)
        assign[s : s + chunk], cos[s : s + chunk] = _nearest(X, CT, inv, buf, dev)
    return assign, cos


def _nearest(X: np.ndarray, CT: torch.Tensor, inv: np.ndarray, buf: np.ndarray | None, dev: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of raw rows X (m, d) given unit centroids CT (d, k) and 1/||x|| (m,).

    argmax_j x.c_j does not depend on ||x||, so the rows are never normalised in memory: the raw
    product is scored and only the winner is divided by ||x||. On the CPU the (m, k) product goes
    through numpy's BLAS into a reused buffer and numpy's argmax: on the AMD EPYC machines we
    benchmark on, both cost far less CPU time than torch's MKL sgemm and ``max(dim=1)``
    (bench/RESULTS.md). Returns (assign (m,) int64, cos (m,) float32).
    """
    if buf is None:  # accelerator: stay in torch
        Xt = torch.from_numpy(X).to(dev)
        best, arg = (Xt @ CT).max(dim=1)
        return arg.cpu().numpy(), (best.cpu().numpy() * inv).astype(np.float32)
    sim = buf[: X.shape[0]]
    np.matmul(X, CT.numpy(), out=sim)
    arg = sim.argmax(axis=1)
    best = np.take_along_axis(sim, arg[:, None], axis=1)[:, 0]
    return arg, best * inv


def _weighted_sums(X: np.ndarray, arg: np.ndarray, inv: np.ndarray, k: int, dev: torch.device) -> torch.Tensor:
    """(k, d) sums of the unit rows x/||x|| per cluster, as a sparse (k, m) one-hot matrix with
    weights 1/||x|| times X (CSR, rows sorted by cluster): no normalised copy of X is made."""
    order = np.argsort(arg, kind="stable")
    crow = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(arg, minlength=k), out=crow[1:])
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state" (torch 2.x)
        warnings.simplefilter("ignore", UserWarning)
        onehot = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(order), torch.from_numpy(inv[order]),
                                         (k, X.shape[0]), device=dev, check_invariants=False)
        return onehot @ torch.from_numpy(X).to(dev)


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
    device: str | torch.device = "cpu",
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
    progress : show progress over iterations (:mod:`tasks.progress`).
    device : torch device for the passes (``"cuda"`` streams the chunks to the GPU); results come
        back as numpy either way. Asking for a device torch cannot see raises.

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
        raise ValueError(f"k={k!r} must be an integer")
    if k < 1 or k > n:
        raise ValueError(f"k={k} clusters must be in [1, n_samples={n}]; lower k (prune.k) or add data")
    if iters < 1:
        raise ValueError(f"iters={iters} must be >= 1")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    if init not in ("k-means++", "random"):
        raise ValueError(f"init={init!r} must be 'k-means++' or 'random'")
    k = int(k)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA device; use device='cpu'")
    gen = torch.Generator().manual_seed(int(seed))

    m = min(n, max(init_sample, 3 * k))
    sample = np.sort(torch.randperm(n, generator=gen)[:m].numpy())
    S = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[sample])))
    if init == "k-means++":
        C = _kmeans_pp(S, k, gen)
    else:
        C = S[torch.randperm(m, generator=gen)[:k]].clone()
    del S

    dev = torch.device(device)
    C = C.to(dev)
    buf = np.empty((min(chunk, n), k), dtype=np.float32) if dev.type == "cpu" else None
    inv_norm = np.empty(n, dtype=np.float32)  # 1/||e_i||, filled by the first pass
    assign = np.full(n, -1, dtype=np.int64)
    cos = np.empty(n, dtype=np.float32)
    converged = False
    it = 0
    from tasks.progress import progress_bar

    with progress_bar(progress) as bar:
        task = bar.add_task("spherical k-means", total=iters)
        for it in range(1, iters + 1):
            sums = torch.zeros(k, d, dtype=torch.float32, device=dev)
            CT = C.T.contiguous()
            changed = 0
            for s in range(0, n, chunk):
                X = np.ascontiguousarray(E[s : s + chunk])
                m = X.shape[0]
                if it == 1:
                    inv_norm[s : s + m] = 1.0 / np.maximum(np.linalg.norm(X, axis=1), 1e-12)
                arg_np, best = _nearest(X, CT, inv_norm[s : s + m], buf, dev)
                changed += int((assign[s : s + m] != arg_np).sum())
                assign[s : s + m] = arg_np
                cos[s : s + m] = best
                sums += _weighted_sums(X, arg_np, inv_norm[s : s + m], k, dev)
            counts = np.bincount(assign, minlength=k)
            empty = np.flatnonzero(counts == 0)
            if empty.size:
                # Re-seed empty clusters with the rows farthest from their centroids.
                far = np.argsort(cos, kind="stable")[: empty.size]
                for j, i in zip(empty, far):
                    sums[j] = normalise_rows(torch.from_numpy(E[i : i + 1].copy()))[0].to(dev)
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
    C = C.cpu()
    assign, cos = assign_to_centroids(E, C.numpy(), chunk=chunk, device=dev)
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
