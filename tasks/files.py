"""File-type checks shared by the readers (tasks/ingest.py) and the store (storage/db.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def special_file_kind(path: Path) -> str | None:
    """'a FIFO', 'a socket', 'a device' for special files (which would block or never end), else None.

    Uses ``stat`` (follows symlinks) and never opens the file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None
