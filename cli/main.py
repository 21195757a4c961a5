"""Console entry point: registers every command module explicitly and maps errors to exit codes.

0 success · 1 a run failed or crashed · 2 a user error (bad input, usage, refused request) ·
130 interrupted. Each failure prints exactly one line on stderr; ``WINNOW_DEBUG=1`` adds the traceback
of unexpected errors.
"""

from __future__ import annotations

import sys

from typer import exceptions as typer_exceptions
from typer._click import exceptions as click_exceptions

# each module adds its commands; the import order is the order of `winnow --help`
from cli import run, prune, embed, mixture, plan, fit, ops, views  # noqa: F401,I001
from cli.app import EXIT_RUN_FAILED, EXIT_USER_ERROR, RunFailed, app, debug, error_line
from tasks.errors import WinnowError


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the code that tells the truth."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except WinnowError as err:
        error_line(str(err))
        sys.exit(EXIT_USER_ERROR)
    except RunFailed as err:
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
        if debug():
            raise
        error_line(f"internal error: {type(err).__name__}: {err} (rerun with WINNOW_DEBUG=1 for the traceback)")
        sys.exit(EXIT_RUN_FAILED)
    if rv == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into Exit(130) and returns it silently
        error_line("interrupted")
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
