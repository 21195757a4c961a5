"""Exact duplicates by content hash — the ``exact_dedup`` metric.

Two rows are exact duplicates when their content (the feature bytes of a row, or the text) is
identical, whatever their labels; the first occurrence (in row order) is kept, every later copy is
removed. No embedding and no threshold is involved, so this is the safe first step before any
semantic de-duplication (SemDeDup) and it is exact on any encoder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ExactDuplicates", "content_keys", "exact_duplicates"]


@dataclass(frozen=True)
class ExactDuplicates:
    """keep : (n,) bool, first occurrences; first : (n,) int64 row of the first copy of each row's
    content (itself for a first occurrence); n_removed : later copies."""

    keep: np.ndarray
    first: np.ndarray

    @property
    def n_removed(self) -> int:
        return int((~self.keep).sum())

    @property
    def scores(self) -> np.ndarray:
        """1 for a first occurrence, 0 for a copy (higher = harder = more unique)."""
        return self.keep.astype(np.float32)


def content_keys(X: np.ndarray | None = None, texts: Sequence[str] | None = None) -> np.ndarray:
    """(n,) 16-byte digests of each row's content: the row's bytes (features) or its UTF-8 text."""
    if (X is None) == (texts is None):
        raise ValueError("give exactly one of X (features) or texts")
    if X is not None:
        X = np.ascontiguousarray(X)
        rows = (X[i].tobytes() for i in range(X.shape[0]))
    else:
        rows = (t.encode("utf-8") for t in texts)
    return np.array([hashlib.blake2b(r, digest_size=16).digest() for r in rows], dtype="S16")


def exact_duplicates(keys: np.ndarray) -> ExactDuplicates:
    """Keep the first row of every distinct key.

    >>> exact_duplicates(np.array([b"a", b"b", b"a", b"a"])).keep.tolist()
    [True, True, False, False]
    """
    keys = np.asarray(keys)
    _, first_idx, inverse = np.unique(keys, return_index=True, return_inverse=True)
    first = first_idx[inverse.ravel()].astype(np.int64)
    keep = first == np.arange(keys.shape[0])
    return ExactDuplicates(keep=keep, first=first)
