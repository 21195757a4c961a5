"""The torch device a config asks for: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, checked before any work.

Every stage with a torch code path (pruning's k-means and scoring, the OT solvers) takes its device
from the config and resolves it here, so asking for a GPU on a machine without one fails at once with
one clear message instead of deep inside a solver.
"""

from __future__ import annotations

import re

import torch

from tasks.errors import WinnowError

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; asking for a CUDA device torch cannot see is a WinnowError."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise WinnowError(f"device={device!r} must be 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise WinnowError(f"device={device!r} was asked for but torch sees no CUDA device "
                              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use device: cpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise WinnowError(f"device={device!r}: torch sees only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)
