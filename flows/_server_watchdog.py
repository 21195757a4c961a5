"""Run Prefect's temporary API server (uvicorn) so that it never outlives the winnow process that started it.

Prefect starts the ephemeral server as ``python -m uvicorn ...`` and stops it from an ``atexit`` hook,
which never runs when winnow is killed (SIGKILL, OOM): the server was left running. flows/_env.py
rewrites that command to ``python -m flows._server_watchdog PARENT_PID -- <uvicorn args>``; this module
starts a daemon thread that ends the process as soon as its parent is gone (it is re-parented, so
``os.getppid()`` changes), then hands the arguments to uvicorn unchanged.
"""

from __future__ import annotations

import os
import sys
import threading
import time

POLL_S = 0.25


def _watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(0)  # the winnow process is gone: nothing will ever stop us otherwise
        time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "--" or not argv[0].isdigit():
        sys.exit("usage: python -m flows._server_watchdog PARENT_PID -- UVICORN_ARGS...")
    parent = int(argv[0])
    if os.getppid() != parent:  # the parent died before we got here
        sys.exit(0)
    threading.Thread(target=_watch, args=(parent,), name="winnow-parent-watchdog", daemon=True).start()
    from uvicorn.main import main as uvicorn_main

    sys.argv = ["uvicorn", *argv[2:]]
    uvicorn_main()


if __name__ == "__main__":
    main(sys.argv[1:])
