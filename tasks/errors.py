"""User-facing errors.

A :class:`WinnowError` means the *input* is wrong (a config key, a file, a row, an option); its message
names what and where, and the CLI prints it as one line with exit code 2. It is deliberately not a
``ValueError``: a kernel's broken precondition (``ValueError``/``RuntimeError``) is a bug, reported as
a failed run with its evidence kept, never as bad input.
"""

from __future__ import annotations


class WinnowError(Exception):
    """Bad user input or an unusable environment; the message says what, where and how to fix it."""


class SchemaTooNewError(WinnowError):
    """The DuckDB file was written by a newer winnow than this one."""


class StoreLockedError(WinnowError):
    """Another process held the DuckDB write lock for longer than the configured wait."""

