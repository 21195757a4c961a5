"""One-line text for a planned mixture (summaries, `winnow plans`): no heavy imports."""

from __future__ import annotations

from collections.abc import Sequence


def describe_mixture(labels: Sequence[str], p: Sequence[float], names: Sequence[str]) -> str:
    """``'a 40%, b 60% (random:hard:equal@0.5)'`` for per-pool option labels and a mixture ``p``."""
    parts = [f"{nm} {100 * w:.0f}%" + ("" if lab == "none" else f" ({lab})") for nm, lab, w in zip(names, labels, p) if w > 0]
    return ", ".join(parts)
