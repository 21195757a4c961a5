"""Commands that run a config through the pipeline: run, ingest, demo, and the single-stage shortcuts."""

from __future__ import annotations

import shlex
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import typer

from cli.app import DbOption, JsonOption, RunFailed, app, console, escape, print_json, print_lines, print_rows

T = TypeVar("T")


def print_summary(summary: dict[str, Any]) -> None:
    """Readable end-of-run summary: sources, each stage's lines, where the DB is, a query to try."""
    console.rule(f"[bold]run {summary['run_id']}[/bold]")
    print_rows(summary.get("sources", []), title="sources")
    for stage, result in summary.get("stages", {}).items():
        console.rule(f"{stage} ({result.get('seconds', 0):.1f} s)", style="dim")
        print_lines(result.get("lines", []))
    db = escape(str(summary["db"]))
    arg = escape(shlex.quote(str(summary["db"])))  # a path with a space or a quote pastes back as one argument
    console.rule(style="dim")
    console.print(f"finished in {summary.get('seconds', 0):.1f} s; results are in [bold]{db}[/bold]")
    # soft_wrap: a long path is never broken by an inserted newline, so the commands paste back whole
    console.print(f"try:  [cyan]duckdb -readonly {arg} -c \"select name, version, n_rows, n_train, n_test from sources\"[/cyan]",
                  soft_wrap=True)
    console.print(f"      [cyan]winnow show {shlex.quote(summary['run_id'])} --db {arg}[/cyan]", soft_wrap=True)


def failure_line(err: BaseException) -> str:
    """The one line of a pipeline run that failed: it names `winnow runs` only when a run row records the error."""
    from storage.runs import recorded_run_of

    what = f"{type(err).__name__}: {err}"
    run_id = recorded_run_of(err)
    if run_id is None:
        return f"the run failed before it was recorded (nothing was written): {what}"
    return f"the run failed: {what} (run {run_id} in `winnow runs` keeps the error)"


def run_or_fail(call: Callable[[], T]) -> T:
    """Run a command's work: bad input stays a WinnowError (exit 2, one line); any other failure is a
    :class:`RunFailed` (exit 1) whose line says whether a run row keeps the error."""
    from tasks.errors import WinnowError

    try:
        return call()
    except WinnowError:
        raise
    except Exception as err:
        raise RunFailed(failure_line(err)) from err


def execute_config(config: Path, db: Optional[str], only: list[str] | None, as_json: bool) -> dict[str, Any]:
    """Load a config, run the pipeline (restricted to ``only``), print the summary; a failed run exits 1."""
    from flows.pipeline import run_config

    summary = run_or_fail(lambda: run_config(config, db, only, progress=not as_json))
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
    return summary


def stage_command(name: str, stage: str, section_help: str, doc: str) -> None:
    """Add ``winnow <name> CONFIG``: ingest the config's sources, then run that one stage."""

    def command(config: Path = typer.Argument(..., help=section_help), db: Optional[str] = DbOption,
                as_json: bool = JsonOption) -> None:
        execute_config(config, db, [stage], as_json)

    command.__doc__ = doc
    app.command(name=name)(command)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    db: Optional[str] = DbOption,
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only these stages (repeatable): embed, prune, mixture, extrapolate, plan"),
    as_json: bool = JsonOption,
) -> None:
    """Run a config end to end: ingest its sources, then every stage it switches on."""
    execute_config(config, db, only, as_json)


@app.command()
def ingest(config: Path = typer.Argument(..., help="YAML run config"), db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Ingest the config's sources only (unchanged sources are no-ops; changed ones become new versions)."""
    execute_config(config, db, [], as_json)


@app.command()
def demo(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Run the shipped demo config (built-in MNIST + sklearn digits) through every stage."""
    from configs.base import builtin_config

    execute_config(builtin_config("demo"), db, None, as_json)
