"""In-memory view of one ingested source, handed from storage to the compute tasks.

Tasks never open DuckDB: a flow loads a :class:`SourceData` with ``storage.sources.load_source`` and
passes it (or arrays taken from it) to tasks, which may run on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def example_ids_for(source_id: int, row_index: np.ndarray) -> np.ndarray:
    """Global example ids: ``(source_id << 32) | row_index`` (int64), stable for a source version."""
    return (np.int64(source_id) << np.int64(32)) | row_index.astype(np.int64)


@dataclass(frozen=True)
class SourceData:
    """Rows of one source version.

    Attributes
    ----------
    example_ids : (n,) int64 global ids, see :func:`example_ids_for`.
    row_index : (n,) int64 row position in the source as ingested.
    X : (n, d) float32 features (image pixels scaled to [0, 1], flattened row-major), or None for text.
    texts : list of n strings for text sources, else None.
    y : (n,) int64 label codes (index into ``label_names``), or None when unlabelled.
    split : (n,) str, "train" or "test".
    image_shape : (h, w) for image sources (X rows reshape to it), else None.
    """

    source_id: int
    name: str
    version: int
    kind: str
    content_hash: str
    example_ids: np.ndarray
    row_index: np.ndarray
    X: np.ndarray | None
    texts: list[str] | None
    y: np.ndarray | None
    label_names: list[str] | None
    split: np.ndarray
    image_shape: tuple[int, int] | None = None

    @property
    def n(self) -> int:
        return int(self.example_ids.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def n_classes(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    def subset(self, index: np.ndarray) -> "SourceData":
        """Rows selected by a boolean mask or an integer index array (order kept as given)."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=np.int64)
        return replace(
            self,
            example_ids=self.example_ids[idx],
            row_index=self.row_index[idx],
            X=None if self.X is None else self.X[idx],
            texts=None if self.texts is None else [self.texts[i] for i in idx],
            y=None if self.y is None else self.y[idx],
            split=self.split[idx],
        )

    def train(self) -> "SourceData":
        return self.subset(self.split == "train")

    def test(self) -> "SourceData":
        return self.subset(self.split == "test")
