"""Prefect environment defaults; imported before prefect by every entry point.

Analytics off (no network here), a generous ephemeral-server start-up timeout (fresh SQLite migrations
are slow on 2 cores), and winnow's logging config (flows/prefect_logging.yml): Prefect's own, except
that the console shows warnings and errors only and never a winnow user error — the CLI prints that as
one line, and the server's logs (the API handler) still receive every record. ``WINNOW_DEBUG=1`` shows
everything. Users' own settings win: only unset variables are filled, and a ``$PREFECT_HOME/logging.yml``
or ``PREFECT_LOGGING_SETTINGS_PATH`` replaces ours.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOGGING_CONFIG = Path(__file__).resolve().parent / "prefect_logging.yml"


def _debug() -> bool:
    return os.environ.get("WINNOW_DEBUG", "") not in ("", "0", "false")


os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "PREFECT_LOGGING_SETTINGS_PATH" not in os.environ:
    _home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    if not (_home / "logging.yml").exists():
        os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(LOGGING_CONFIG)
if _debug():
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO")


def _user_error_names() -> tuple[str, ...]:
    from tasks.errors import WinnowError

    names, todo = [], [WinnowError]
    while todo:
        cls = todo.pop()
        names.append(cls.__name__)
        todo.extend(cls.__subclasses__())
    return tuple(names)


def is_user_error(exc: BaseException | None) -> bool:
    """True for a WinnowError, also when Prefect re-raised it wrapped (``__cause__``/``__context__``)."""
    from tasks.errors import WinnowError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, WinnowError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class HideUserErrors(logging.Filter):
    """Console filter: drop records about a winnow user error (the CLI prints those as one line).

    A record is about a user error when it carries one as its exception, or when its message names a
    WinnowError class (Prefect logs a failed task or flow state as ``... WinnowError: message``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _debug():
            return True
        if record.exc_info and is_user_error(record.exc_info[1]):
            return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is not ours to judge
            return True
        return not any(f"{name}:" in message or f"{name}(" in message for name in _user_error_names())
