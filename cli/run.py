"""Commands that run a config through the pipeline: run, ingest, demo, and the single-stage shortcuts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cli.app import DbOption, JsonOption, RunFailed, app, console, escape, print_json, print_lines, print_rows


def print_summary(summary: dict[str, Any]) -> None:
    """Readable end-of-run summary: sources, each stage's lines, where the DB is, a query to try."""
    console.rule(f"[bold]run {summary['run_id']}[/bold]")
    print_rows(summary.get("sources", []), title="sources")
    for stage, result in summary.get("stages", {}).items():
        console.rule(f"{stage} ({result.get('seconds', 0):.1f} s)", style="dim")
        print_lines(result.get("lines", []))
    db = escape(str(summary["db"]))
    console.rule(style="dim")
    console.print(f"finished in {summary.get('seconds', 0):.1f} s; results are in [bold]{db}[/bold]")
    console.print(f"try:  [cyan]duckdb -readonly {db} -c \"select name, version, n_rows, n_train, n_test from sources\"[/cyan]")
    console.print(f"      [cyan]winnow show {summary['run_id']} --db {db}[/cyan]")


def execute_config(config: Path, db: Optional[str], only: list[str] | None, as_json: bool) -> dict[str, Any]:
    """Load a config, run the pipeline (restricted to ``only``), print the summary; a failed run exits 1."""
    from flows.pipeline import run_config
    from tasks.errors import WinnowError

    try:
        summary = run_config(config, db, only, progress=not as_json)
    except WinnowError:
        raise
    except Exception as err:  # the run started and failed: its row says failed, with the error
        raise RunFailed(f"the run failed: {type(err).__name__}: {err} (its row in `winnow runs` keeps the error)") from err
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
