"""File-type checks shared by the readers (tasks/ingest.py) and the store (storage/db.py), and the one
way tasks write a figure (:func:`save_figure`: a temporary file moved into place, never through a link)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Protocol


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


def current_umask() -> int:
    """The process's umask: from /proc (Linux) where it can be read without changing it; elsewhere
    set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Figure(Protocol):
    def savefig(self, fname: Any, **kwargs: Any) -> None: ...


def save_figure(fig: _Figure, path: str | Path, **savefig_kwargs: Any) -> str:
    """Write a matplotlib figure to ``path`` without ever writing through a link; returns ``str(path)``.

    The figure goes to a fresh temporary file that ``mkstemp`` creates (``O_CREAT | O_EXCL``) in the
    destination's folder (created if missing), in the format its suffix names (``.png`` when it has
    none), gets mode ``0666 & ~umask``, is fsynced, and is moved onto ``path`` with ``os.replace``: a
    symlink planted at ``path`` is replaced as a link, never followed, and a reader never sees half a
    file. An existing file at ``path`` is replaced, so a caller that must keep it (an explicit
    ``--plot`` without ``--force``) checks before the work. The temporary file is removed on failure.
    """
    out = Path(path)
    fmt = out.suffix[1:].lower() or "png"
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, **savefig_kwargs)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return str(out)
