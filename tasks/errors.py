"""User-facing errors.

A :class:`WinnowError` means the *input* is wrong (a config key, a file, a row, an option); its message
names what and where, and the CLI prints it as one line with a non-zero exit code. Anything else that
escapes is a bug and is shown with its traceback.
"""

from __future__ import annotations


class WinnowError(ValueError):
    """Bad user input or an unusable environment; the message says what, where and how to fix it."""


class SchemaTooNewError(WinnowError):
    """The DuckDB file was written by a newer winnow than this one."""


class StoreLockedError(WinnowError):
    """Another process held the DuckDB write lock for longer than the configured wait."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`WinnowError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WinnowError(message)
