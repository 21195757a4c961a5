"""SemDeDup — semantic de-duplication (Abbas et al. 2023, "SemDeDup: data-efficient learning at
web-scale through semantic deduplication").

Cluster the normalised embeddings (spherical k-means); inside each cluster order the members by
distance to the centroid (``keep="farthest"``: farthest first, the paper's default, or
``"nearest"``) and walk the order:

* :func:`semdedup` (the de-duplication itself): item *i* is a duplicate when its cosine
  similarity to an item **kept** before it exceeds :math:`1 - \\varepsilon` (greedy; one result
  per requested ε, with the number removed).
* :func:`semdedup_scores` (a score for ranking/pruning curves): :math:`s_i = 1 - \\max_{j
  \\prec i} e_i^\\top e_j` over **all** earlier items of its cluster (2 for the first item).
  Thresholding :math:`s_i < \\varepsilon` reproduces the rule of the released SemDeDup code;
  higher = more unique = "harder", so keep-hard drops the most redundant items first.

Cost and memory: O(Σ_j m_j² d) time, and per block only a (block, m_j) similarity matrix, where
m_j is the size of cluster j. Without blocking (``block=None``) one cluster needs an m_j × m_j
matrix; whenever a requested setting would hold more than ``max_pairs`` similarities at once the
functions refuse with a message naming the options that bound it (``k``, ``block``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from tasks.errors import WinnowError
from tasks.prune.kmeans import DEFAULT_CHUNK, KMeansResult, check_embeddings, normalise_rows, spherical_kmeans

__all__ = ["SemDeDupResult", "SemDeDupScores", "Threshold", "nn_distance_scale", "resolve_thresholds", "semdedup",
           "semdedup_scores"]

DEFAULT_BLOCK = 2048
DEFAULT_MAX_PAIRS = 2**27  # 128M float32 similarities = 512 MiB


@dataclass(frozen=True)
class SemDeDupResult:
    """keep : {eps: (n,) bool mask of kept rows}; n_removed : {eps: count}; cluster : (n,) int64;
    kmeans : the clustering used."""

    eps: tuple[float, ...]
    keep: dict[float, np.ndarray]
    n_removed: dict[float, int]
    cluster: np.ndarray
    kmeans: KMeansResult


@dataclass(frozen=True)
class SemDeDupScores:
    """scores : (n,) float32, 1 - max cosine similarity to an earlier member of the cluster
    (higher = more unique); cluster : (n,) int64; kmeans : the clustering used."""

    scores: np.ndarray
    cluster: np.ndarray
    kmeans: KMeansResult


def _check_memory(sizes: np.ndarray, block: int | None, max_pairs: int) -> None:
    m = int(sizes.max())
    rows = m if block is None else min(block, m)
    need = rows * m
    if need > max_pairs:
        j = int(sizes.argmax())
        hint = (
            "set block (semdedup_block) to a few thousand rows"
            if block is None
            else "raise k (more, smaller clusters) or lower block (semdedup_block)"
        )
        raise WinnowError(
            f"SemDeDup would hold a {rows} x {m} similarity block for cluster {j} ({need:,} values) "
            f"> max_pairs={max_pairs:,} (semdedup_max_pairs); {hint}"
        )


def _cluster_orders(km: KMeansResult, keep: str) -> list[np.ndarray]:
    """Member indices of each cluster, ordered so the item to keep comes first."""
    # farthest first = ascending cosine to the centroid
    key = km.cos_to_centroid if keep == "farthest" else -km.cos_to_centroid
    order = np.lexsort((np.arange(len(key)), key, km.assign))
    bounds = np.concatenate([[0], np.cumsum(km.sizes)])
    return [order[bounds[j] : bounds[j + 1]] for j in range(km.k)]


def _prepare(E, kmeans, keep, block, max_pairs, chunk=DEFAULT_CHUNK, k=None, iters=20, seed=0):
    """Checked embeddings, the clustering (``kmeans``, else spherical k-means with k, iters, seed) and
    each cluster's walk order."""
    E = check_embeddings(E, chunk=chunk)
    if keep not in ("farthest", "nearest"):
        raise ValueError(f"keep={keep!r} must be 'farthest' or 'nearest'")
    if block is not None and block < 1:
        raise ValueError(f"block={block} must be >= 1 (or None for whole clusters)")
    km = kmeans if kmeans is not None else spherical_kmeans(E, k, iters=iters, seed=seed, chunk=chunk)
    if km.assign.shape[0] != E.shape[0]:
        raise ValueError(f"kmeans has {km.assign.shape[0]} rows but embeddings have {E.shape[0]}")
    _check_memory(km.sizes, block, max_pairs)
    return E, km, _cluster_orders(km, keep)


def _cluster_rows(E: np.ndarray, orders: list[np.ndarray], block: int | None) -> Iterator[tuple[np.ndarray, torch.Tensor, int]]:
    """Per non-empty cluster: its members in walk order, their unit rows and the block length."""
    for members in orders:
        if members.size:
            X = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[members])))
            yield members, X, members.size if block is None else block


def semdedup_scores(
    E: np.ndarray,
    kmeans: KMeansResult,
    *,
    keep: Literal["farthest", "nearest"] = "farthest",
    block: int | None = DEFAULT_BLOCK,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> SemDeDupScores:
    """Uniqueness score per row: 1 - max cosine similarity to an earlier member of its cluster.

    Parameters
    ----------
    E : (n, d) float embeddings.
    kmeans : :func:`~tasks.prune.kmeans.spherical_kmeans` of ``E``.
    keep : which end of each cluster's distance-to-centroid order counts as "earlier".
    block : rows per similarity block (memory O(block * max cluster)); None = whole clusters.
    max_pairs : refuse settings that would hold more similarities than this at once.
    """
    E, km, orders = _prepare(E, kmeans, keep, block, max_pairs)
    n = E.shape[0]
    scores = np.empty(n, dtype=np.float32)
    for members, X, step in _cluster_rows(E, orders, block):
        m = members.size
        best = np.empty(m, dtype=np.float32)
        for a in range(0, m, step):
            b = min(m, a + step)
            S = X[a:b] @ X[:b].T  # rows a..b against all items up to b
            # only strictly earlier items count: column j < row i
            rows = torch.arange(a, b)[:, None]
            cols = torch.arange(b)[None, :]
            S = S.masked_fill(cols >= rows, -2.0)
            best[a:b] = S.max(dim=1).values.numpy()
        scores[members] = 1.0 - np.maximum(best, -1.0)
    return SemDeDupScores(scores=scores, cluster=km.assign, kmeans=km)


def _greedy_block(S_bb: torch.Tensor, alive: torch.Tensor, thr: float) -> torch.Tensor:
    """Greedy keep-mask inside one block, vectorised as a fixed-point iteration.

    ``S_bb`` (B, B) similarities within the block, ``alive`` (B,) rows not already duplicates of
    an item kept in an earlier block. The greedy rule kept_i = alive_i and not any_{j<i}(kept_j
    and S_ij > thr) has a unique solution; iterating it from kept = alive reaches it in at most
    (longest duplicate chain) steps, usually 2-3.
    """
    B = S_bb.shape[0]
    dup_pairs = (S_bb > thr) & torch.ones(B, B, dtype=torch.bool).tril(diagonal=-1)
    kept = alive.clone()
    for _ in range(B + 1):
        new = alive & ~(dup_pairs & kept[None, :]).any(dim=1)
        if torch.equal(new, kept):
            break
        kept = new
    return kept


def semdedup(
    E: np.ndarray,
    *,
    eps: float | Sequence[float],
    k: int,
    keep: Literal["farthest", "nearest"] = "farthest",
    block: int | None = DEFAULT_BLOCK,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    iters: int = 20,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    kmeans: KMeansResult | None = None,
) -> SemDeDupResult:
    """De-duplicate: drop every item whose cosine similarity to an item kept before it in its
    cluster exceeds ``1 - eps``; one keep-mask per ``eps``.

    Parameters
    ----------
    E : (n, d) float embeddings.
    eps : one threshold or several, each in (0, 2).
    k, iters, seed, chunk : the spherical k-means of ``E`` (:func:`~tasks.prune.kmeans.spherical_kmeans`),
        unless ``kmeans`` gives a clustering of ``E`` to reuse.
    keep, block, max_pairs : see :func:`semdedup_scores`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(20, 8)).astype(np.float32)
    >>> E = np.vstack([base, base[:5] + 1e-4])  # five planted near-copies
    >>> semdedup(E, eps=0.01, k=2).n_removed[0.01]
    5
    """
    eps_t = (float(eps),) if np.isscalar(eps) else tuple(float(e) for e in eps)
    if not eps_t:
        raise ValueError("eps is empty; pass at least one threshold, e.g. semdedup_eps: [0.01]")
    for e in eps_t:
        if not (0.0 < e < 2.0) or not np.isfinite(e):
            raise ValueError(f"eps={e} must be in (0, 2) (duplicate if cosine similarity > 1 - eps)")
    E, km, orders = _prepare(E, kmeans, keep, block, max_pairs, chunk, k=k, iters=iters, seed=seed)
    n = E.shape[0]
    keep_masks = {e: np.zeros(n, dtype=bool) for e in eps_t}
    for members, X, step in _cluster_rows(E, orders, block):
        m = members.size
        kept = {e: torch.zeros(m, dtype=torch.bool) for e in eps_t}
        for a in range(0, m, step):
            b = min(m, a + step)
            S = X[a:b] @ X[:b].T
            for e in eps_t:
                thr = 1.0 - e
                prev = kept[e][:a]
                if a > 0 and bool(prev.any()):
                    alive = ~((S[:, :a] > thr) & prev[None, :]).any(dim=1)
                else:
                    alive = torch.ones(b - a, dtype=torch.bool)
                kept[e][a:b] = _greedy_block(S[:, a:b], alive, thr)
        for e in eps_t:
            keep_masks[e][members] = kept[e].numpy()
    n_removed = {e: int(n - keep_masks[e].sum()) for e in eps_t}
    return SemDeDupResult(eps=eps_t, keep=keep_masks, n_removed=n_removed, cluster=km.assign, kmeans=km)


# ------------------------------------------------------------------------------ thresholds that transfer
#: the smallest raw threshold used (float32 cosine of identical rows can read 1 - 6e-8)
MIN_EPS = 1e-6


@dataclass(frozen=True)
class Threshold:
    """One de-duplication threshold: how it was asked (``spec``: "eps=0.01", "rel=0.25",
    "remove=0.05"), the raw cosine-distance ``eps`` it resolved to, and ``how`` in words."""

    spec: str
    eps: float
    how: str


def nn_distance_scale(
    E: np.ndarray, kmeans: KMeansResult, *, sample: int = 2000, seed: int = 0, block: int = 256
) -> float:
    """Median cosine distance from a row to its nearest other member of its k-means cluster.

    The scale of "close" on this encoder: raw pixels, PCA and a contrastive encoder put typical
    neighbours at distances that differ by 20x, so a raw ε means different things on each. The
    median is taken over a seeded sample of ``sample`` rows (each compared with its whole cluster,
    ``block`` sample rows at a time); rows alone in their cluster are skipped.
    """
    n = E.shape[0]
    rng = np.random.default_rng([int(seed), 0x5EDD])
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    members_of = [np.flatnonzero(kmeans.assign == j) for j in range(kmeans.k)]
    dist: list[np.ndarray] = []
    for j, members in enumerate(members_of):
        if members.size < 2:
            continue
        mine = rows[kmeans.assign[rows] == j]
        if mine.size == 0:
            continue
        X = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[members])))
        pos = np.searchsorted(members, mine)  # where each sampled row sits inside its cluster
        for a in range(0, mine.size, block):
            p = torch.from_numpy(pos[a:a + block])
            S = X[p] @ X.T
            S[torch.arange(p.numel()), p] = -2.0  # not itself
            dist.append((1.0 - S.max(dim=1).values.clamp(-1.0, 1.0)).numpy())
    if not dist:
        raise WinnowError("no cluster has two members: cannot measure nearest-neighbour distances; lower k")
    return float(np.median(np.concatenate(dist)))


def resolve_thresholds(
    *,
    eps: Sequence[float] = (),
    rel_eps: Sequence[float] = (),
    remove: Sequence[float] = (),
    nn_scale: float | None = None,
    scores: np.ndarray | None = None,
) -> list[Threshold]:
    """Raw thresholds for every way of asking.

    * ``eps`` — raw cosine distance, as in the paper;
    * ``rel_eps`` — ``r x nn_scale`` (:func:`nn_distance_scale`): the same ``r`` removes the same
      kind of near-copies on any encoder;
    * ``remove`` — a share of the pool: the ``remove``-quantile of the uniqueness ``scores``
      (:func:`semdedup_scores`). Those scores compare with *every* earlier member, the greedy rule
      only with *kept* ones, so the greedy de-duplication removes at most about that share.
    """
    out = [Threshold(f"eps={e:g}", float(e), "raw cosine distance") for e in eps]
    if rel_eps:
        if nn_scale is None:
            raise ValueError("rel_eps needs nn_scale")
        for r in rel_eps:
            e = max(MIN_EPS, float(r) * nn_scale)
            out.append(Threshold(f"rel={r:g}", e, f"{r:g} x median nearest-neighbour distance {nn_scale:.4g}"))
    if remove:
        if scores is None:
            raise ValueError("remove needs the uniqueness scores")
        for share in remove:
            e = max(MIN_EPS, float(np.quantile(scores, share)))
            out.append(Threshold(f"remove={share:g}", e, f"quantile {share:g} of the uniqueness scores"))
    for t in out:
        if not (0.0 < t.eps < 2.0):
            raise WinnowError(f"SemDeDup threshold {t.spec} resolved to eps={t.eps:g}, outside (0, 2)")
    return out
