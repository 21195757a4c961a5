"""Optional rich progress bar around an iterable (``progress=False`` returns the iterable unchanged)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def maybe_progress(items: Iterable[T], progress: bool, description: str) -> Iterator[T] | Iterable[T]:
    """Wrap ``items`` in ``rich.progress.track`` when ``progress`` is true."""
    if not progress:
        return items
    from rich.progress import track

    return track(items, description=description)
