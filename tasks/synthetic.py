"""``synthetic_embeddings``: a large, seeded, offline embedding source generated shard by shard.

Rows are unit-norm-ish vectors around ``clusters`` random centres on the sphere, with a share
``duplicate_rate`` of planted near-copies of an earlier row, so every scale benchmark (and a user
without data) has realistic structure: clusters for k-means, planted duplicates for SemDeDup.

Generation never materialises the whole (n, d) matrix. Rows come in fixed blocks of
:data:`BLOCK_ROWS`; block ``b`` is drawn from its own generator seeded with ``(seed, 1, b)``, so the
rows ``[start, stop)`` are the same whichever shard boundaries ask for them, and any worker can
produce any shard independently (memory O(block * d)).

Row ``i`` of block ``b`` (global row ``b * BLOCK_ROWS + i``)::

    label_i  ~ Uniform{0..clusters-1}
    e_i      = centre[label_i] + spread / sqrt(d) * N(0, I_d)
    e_i      = e_j + 1e-3 / sqrt(d) * N(0, I_d)    with probability duplicate_rate, j uniform among the
                                                   earlier original (non-copy) rows of the same block

with ``centre`` (clusters, d) unit vectors drawn from ``(seed, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BLOCK_ROWS", "SyntheticBlock", "SyntheticSpec", "synthetic_centres", "synthetic_embeddings"]

BLOCK_ROWS = 65_536
DUPLICATE_NOISE = 1e-3


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: ``n`` rows of dimension ``d`` around ``clusters`` centres.

    spread : noise norm relative to the (unit) centre; 1.0 puts a row at ~45 degrees from its centre.
    duplicate_rate : share of rows that are near-copies (cosine ~ 1 - 5e-7) of an earlier row.
    """

    n: int
    d: int = 384
    clusters: int = 100
    duplicate_rate: float = 0.05
    spread: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.d < 1 or self.clusters < 1:
            raise ValueError(f"synthetic_embeddings needs n, d, clusters >= 1; got n={self.n}, d={self.d}, "
                             f"clusters={self.clusters}")
        if not (0.0 <= self.duplicate_rate < 1.0):
            raise ValueError(f"duplicate_rate={self.duplicate_rate} must be in [0, 1)")
        if not (self.spread > 0):
            raise ValueError(f"spread={self.spread} must be > 0")


@dataclass(frozen=True)
class SyntheticBlock:
    """Rows ``[start, start + len(vectors))``: vectors (m, d) float32, label (m,) int32 planted
    cluster, duplicate_of (m,) int64 global row copied (-1 = not a planted duplicate)."""

    start: int
    vectors: np.ndarray
    label: np.ndarray
    duplicate_of: np.ndarray


def synthetic_centres(spec: SyntheticSpec) -> np.ndarray:
    """(clusters, d) float32 unit centres of ``spec``."""
    rng = np.random.default_rng([int(spec.seed), 0])
    C = rng.standard_normal((spec.clusters, spec.d), dtype=np.float32)
    return C / np.linalg.norm(C, axis=1, keepdims=True)


def _block(spec: SyntheticSpec, b: int, centres: np.ndarray) -> SyntheticBlock:
    start = b * BLOCK_ROWS
    m = min(BLOCK_ROWS, spec.n - start)
    rng = np.random.default_rng([int(spec.seed), 1, int(b)])
    label = rng.integers(0, spec.clusters, size=m).astype(np.int32)
    X = rng.standard_normal((m, spec.d), dtype=np.float32)
    X *= np.float32(spec.spread / np.sqrt(spec.d))
    X += centres[label]
    dup = rng.random(m) < spec.duplicate_rate
    dup[0] = False
    u = rng.random(m)
    rows = np.flatnonzero(dup)
    # the copied row is an earlier row of the block that is itself an original (never a copy)
    originals = np.flatnonzero(~dup)
    before = np.searchsorted(originals, rows)  # originals earlier than each copy (>= 1: row 0 is one)
    src = np.zeros(m, dtype=np.int64)
    src[rows] = originals[np.floor(u[rows] * before).astype(np.int64)]
    noise = rng.standard_normal((rows.size, spec.d), dtype=np.float32) * np.float32(DUPLICATE_NOISE / np.sqrt(spec.d))
    X[rows] = X[src[rows]] + noise
    label[rows] = label[src[rows]]
    duplicate_of = np.full(m, -1, dtype=np.int64)
    duplicate_of[rows] = src[rows] + start
    return SyntheticBlock(start, X, label, duplicate_of)


def synthetic_embeddings(spec: SyntheticSpec, start: int = 0, stop: int | None = None) -> SyntheticBlock:
    """Rows ``[start, stop)`` of the synthetic source (default: all), identical for any split.

    Memory: the requested rows plus one block.

    Examples
    --------
    >>> spec = SyntheticSpec(n=1000, d=8, clusters=3, seed=1)
    >>> whole = synthetic_embeddings(spec).vectors
    >>> part = synthetic_embeddings(spec, 300, 700).vectors
    >>> bool((whole[300:700] == part).all())
    True
    """
    stop = spec.n if stop is None else stop
    if not (0 <= start <= stop <= spec.n):
        raise ValueError(f"rows [{start}, {stop}) outside [0, n={spec.n})")
    centres = synthetic_centres(spec)
    m = stop - start
    vectors = np.empty((m, spec.d), dtype=np.float32)
    label = np.empty(m, dtype=np.int32)
    duplicate_of = np.empty(m, dtype=np.int64)
    for b in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS) if m else start // BLOCK_ROWS):
        blk = _block(spec, b, centres)
        lo, hi = max(start, blk.start), min(stop, blk.start + blk.vectors.shape[0])
        vectors[lo - start:hi - start] = blk.vectors[lo - blk.start:hi - blk.start]
        label[lo - start:hi - start] = blk.label[lo - blk.start:hi - blk.start]
        duplicate_of[lo - start:hi - start] = blk.duplicate_of[lo - blk.start:hi - blk.start]
    return SyntheticBlock(start, vectors, label, duplicate_of)
