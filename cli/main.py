"""Console entry point: registers every command module explicitly and maps errors to exit codes.

0 success · 1 a run failed or crashed · 2 a user error (bad input, usage, refused request) ·
130 interrupted · 141 the reader of stdout went away (``winnow query ... | head``: 128 + SIGPIPE, what the
shell reports for standard tools; nothing is printed). Each failure prints exactly one line on stderr;
``WINNOW_DEBUG=1`` adds the traceback of unexpected errors.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings

from typer import exceptions as typer_exceptions
from typer._click import exceptions as click_exceptions

# each module adds its commands; the import order is the order of `winnow --help`
from cli import run, prune, sharded, embed, mixture, plan, fit, ops, views  # noqa: F401,I001
from cli.app import EXIT_RUN_FAILED, EXIT_USER_ERROR, RunFailed, app, debug, error_line, warning_line
from tasks.errors import WinnowError


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while err is not None and len(out) < 10:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def server_problem(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) when ``err`` comes from talking to the Prefect server, else None.

    Could not connect (nothing was started): exit 2, with how to fix it. The connection dropped while
    a run was going on, or the server answered with an error status: exit 1 (the run's fate is
    unknown), 2 for a 409 conflict or 422 (the request itself was refused)."""
    import os

    url = os.environ.get("PREFECT_API_URL") or "the temporary Prefect server"
    for e in _chain(err):
        name, text = type(e).__name__, str(e)
        if name in ("ConnectError", "ConnectTimeout") or (isinstance(e, RuntimeError) and "Failed to reach API" in text):
            return EXIT_USER_ERROR, (f"cannot reach the Prefect server at {url}: start it (`prefect server start "
                                     "--host 127.0.0.1`) or unset PREFECT_API_URL to run with a temporary one")
        if name in ("RemoteProtocolError", "ReadError", "ReadTimeout", "WriteError", "PoolTimeout"):
            return EXIT_RUN_FAILED, (f"lost the connection to the Prefect server at {url} ({name}); the run's state "
                                     "is unknown: check `winnow runs` (and the server) before retrying")
        status = getattr(getattr(e, "response", None), "status_code", None)
        if name in ("HTTPStatusError", "ObjectAlreadyExists", "ObjectNotFound", "PrefectHTTPStatusError") and status:
            detail = " ".join((_server_detail(e) or text).split())[:400]
            code = EXIT_USER_ERROR if status in (404, 409, 422) else EXIT_RUN_FAILED
            return code, f"the Prefect server at {url} refused the request ({status}): {detail}"
    return None


def _server_detail(err: BaseException) -> str | None:
    """The server's own reason (the JSON ``detail`` of its response), e.g. which parameter failed and why;
    the exception's text leads with the URL and cut the reason off at 200 characters."""
    try:
        detail = err.response.json().get("detail")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no JSON body: the exception's text says what there is
        return None
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                           for d in detail)
    return str(detail) if detail else None


_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C: remembered, then raised as usual. A Ctrl-C that lands inside a DuckDB call in this thread
    comes back as DuckDB's ``RuntimeError("Query interrupted")``, not as a KeyboardInterrupt."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the code that tells the truth."""
    global _interrupted
    _interrupted = False
    previous = signal.signal(signal.SIGINT, _on_sigint) if threading.current_thread() is threading.main_thread() else None
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _exit_if_interrupted() -> None:
    """An error that a Ctrl-C caused (e.g. DuckDB's "Query interrupted") is an interruption: exit 130."""
    if _interrupted:
        error_line("interrupted")
        sys.exit(130)


EXIT_STDOUT_CLOSED = 128 + 13  # SIGPIPE


def _stdout_closed() -> None:
    """End quietly when stdout's reader has gone: point stdout at /dev/null so that Python's flush at exit
    cannot fail again (docs.python.org/3/library/signal.html, "Note on SIGPIPE"), then exit 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (a test's capture): nothing to flush
        pass
    sys.exit(EXIT_STDOUT_CLOSED)


def _main(argv: list[str] | None) -> None:
    if not debug():
        warnings.showwarning = warning_line
    try:
        rv = app(args=argv, standalone_mode=False)
    except SystemExit as err:
        # click (EPIPE) and rich (on_broken_pipe) both turn a closed stdout into exit 1 inside their handler
        if isinstance(err.__context__, BrokenPipeError):
            _stdout_closed()
        raise
    except BrokenPipeError:
        _stdout_closed()
    except WinnowError as err:
        _exit_if_interrupted()
        error_line(str(err))
        sys.exit(EXIT_USER_ERROR)
    except RunFailed as err:
        server = server_problem(err)
        if server is not None:
            error_line(server[1])
            sys.exit(server[0])
        error_line(str(err))
        sys.exit(EXIT_RUN_FAILED)
    except click_exceptions.NoArgsIsHelpError as err:
        err.show()
        sys.exit(0)
    except click_exceptions.UsageError as err:
        where = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
        error_line(err.format_message() + where)
        sys.exit(EXIT_USER_ERROR)
    except click_exceptions.ClickException as err:
        error_line(err.format_message())
        sys.exit(err.exit_code)
    except typer_exceptions.Abort:
        error_line("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except Exception as err:  # a bug: one line (the traceback with WINNOW_DEBUG=1), exit 1
        _exit_if_interrupted()
        if debug():
            raise
        server = server_problem(err)
        if server is not None:
            error_line(server[1])
            sys.exit(server[0])
        error_line(f"internal error: {type(err).__name__}: {err} (rerun with WINNOW_DEBUG=1 for the traceback)")
        sys.exit(EXIT_RUN_FAILED)
    if rv == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into Exit(130) and returns it silently
        error_line("interrupted")
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
