"""Torch intra-op threads for small kernels.

Pilot probes and Sinkhorn sweeps are many small tensor operations; with several Prefect tasks (or
other processes) on 2 cores, torch's own thread pool oversubscribes the CPU and runs 10–20× slower
(measured: 1.4 s vs 0.07 s per pilot). Parallelism comes from the task runner instead, so these
kernels run single-threaded inside :func:`torch_threads`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave as is), restoring it afterwards."""
    if n is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
