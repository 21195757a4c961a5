"""Prefect environment defaults; imported before prefect by every entry point.

Analytics off (no network here), a generous ephemeral-server start-up timeout (fresh SQLite migrations
are slow on 2 cores), and winnow's logging config (flows/prefect_logging.yml): Prefect's own, except
that the console shows warnings and errors only and never a failed run's records — the CLI prints that as
one line, and the server's logs (the API handler) still receive every record. ``WINNOW_DEBUG=1`` shows
everything. Users' own settings win: only unset variables are filled, and a ``$PREFECT_HOME/logging.yml``
or ``PREFECT_LOGGING_SETTINGS_PATH`` replaces ours.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOGGING_CONFIG = Path(__file__).resolve().parent / "prefect_logging.yml"


def _debug() -> bool:
    return os.environ.get("WINNOW_DEBUG", "") not in ("", "0", "false")


os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # MiniLM's "Loading weights" bar on every text run
if "PREFECT_LOGGING_SETTINGS_PATH" not in os.environ:
    _home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    if not (_home / "logging.yml").exists():
        os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(LOGGING_CONFIG)
if _debug():
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO")


# --------------------------------------------------------- the temporary server dies with its process
_SERVER_MODULE = "prefect.server.api.server"


class _SubprocessWithWatchdog:
    """Stands in for the ``subprocess`` module inside prefect.server.api.server: its ``Popen`` runs the
    temporary server's ``python -m uvicorn ...`` under :mod:`flows._server_watchdog`; all else is subprocess."""

    def __getattr__(self, name: str):
        import subprocess

        return getattr(subprocess, name)

    @staticmethod
    def Popen(args, **kwargs):  # noqa: N802 - the name Prefect calls
        import subprocess

        args = list(args)
        if args[1:3] == ["-m", "uvicorn"]:
            args = [args[0], "-m", "flows._server_watchdog", str(os.getpid()), "--", *args[3:]]
            # its own session: a Ctrl-C in the terminal goes to the whole foreground process group, and a
            # server that died with it left winnow retrying a dead API for minutes; this process handles the
            # interrupt and the watchdog stops the server when this process is gone
            kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(args, **kwargs)


class _GuardTemporaryServer:
    """Import hook: when Prefect first imports its server module (only to start a temporary server), route
    that module's subprocess calls through :class:`_SubprocessWithWatchdog`. Importing Prefect here
    instead would cost every command its start-up time."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib protocol
        if name != _SERVER_MODULE:
            return None
        import importlib.abc
        import importlib.machinery

        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        inner = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):  # noqa: ANN001
                return inner.create_module(spec)

            def exec_module(self, module):  # noqa: ANN001
                inner.exec_module(module)
                module.subprocess = _SubprocessWithWatchdog()

        spec.loader = Loader()
        return spec


if _SERVER_MODULE not in sys.modules and not any(isinstance(f, _GuardTemporaryServer) for f in sys.meta_path):
    sys.meta_path.insert(0, _GuardTemporaryServer())


# ------------------------------------------------------------------ console filter for user errors
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


# Prefect's console records of a failed or crashed run (and of its shutdown once a run failed)
FAILURE_MESSAGES = ("Finished in state Failed", "Finished in state Crashed", "Crash detected", "Encountered exception",
                    "failed with exception", "Still processing items")


class HideUserErrors(logging.Filter):
    """Console filter: drop records about a failure, which the CLI reports as one line.

    A record is about a user error when it carries one as its exception, or when its message names a
    WinnowError class (Prefect logs a failed task or flow state as ``... WinnowError: message``). Any
    other record with an exception, or one of Prefect's failed/crashed-run messages
    (:data:`FAILURE_MESSAGES`), is about a failure the CLI prints as ``error: internal error: ...``
    (its traceback with ``WINNOW_DEBUG=1``); the server's logs keep every record. ``winnow serve`` sets
    ``WINNOW_CONSOLE_FAILURES=1``: a service's console shows its runs' failures, user errors still as
    one line.
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
        if os.environ.get("WINNOW_CONSOLE_FAILURES", "") not in ("", "0", "false"):
            return True  # a service: no CLI prints its runs' failures, so the console does (user errors: one line)
        if any(f"{name}:" in message or f"{name}(" in message for name in _user_error_names()):
            return False
        return not record.exc_info and not any(m in message for m in FAILURE_MESSAGES)
