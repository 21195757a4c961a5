"""The `winnow` command line: run configs, the demo, and read-only views of the DuckDB store.

Every user error ends as one line on stderr and exit code 2; stage modules add their own commands
through ``register(app)``.
"""

from __future__ import annotations

import flows._env  # noqa: F401  (Prefect settings before prefect is imported)

import importlib
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from tasks.errors import WinnowError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="winnow: decide which data a model should be trained on.")
console = Console()
err_console = Console(stderr=True)

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $WINNOW_DB or ./.winnow/winnow.duckdb)")
JsonOption = typer.Option(False, "--json", help="print JSON instead of a table")


# --------------------------------------------------------------------------------------- helpers
def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):
        return v.item()
    return v


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, default=str) + "\n")


def print_rows(rows: list[dict], title: str | None = None, as_json: bool = False) -> None:
    """Rows as a rich table (or JSON with --json)."""
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"[dim]{title or 'result'}: no rows[/dim]")
        return
    table = Table(title=title, show_lines=False)
    for col in rows[0]:
        table.add_column(str(col), overflow="fold")
    for r in rows:
        table.add_row(*["" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r.values()])
    console.print(table)


def open_store(db: Optional[str], config_db: Path | None = None):
    from storage.db import Store, resolve_db_path

    return Store(resolve_db_path(db, config_db))


def print_summary(summary: dict[str, Any]) -> None:
    """Readable end-of-run summary: sources, each stage's lines, where the DB is, a query to try."""
    console.rule(f"[bold]run {summary['run_id']}[/bold]")
    print_rows(summary.get("sources", []), title="sources")
    for stage, result in summary.get("stages", {}).items():
        console.rule(f"{stage} ({result.get('seconds', 0):.1f} s)", style="dim")
        for line in result.get("lines", []):
            console.print(line)
    db = summary["db"]
    console.rule(style="dim")
    console.print(f"finished in {summary.get('seconds', 0):.1f} s; results are in [bold]{db}[/bold]")
    console.print(f"try:  [cyan]duckdb {db} -c \"select name, version, n_rows, n_train, n_test from sources\"[/cyan]")
    console.print(f"      [cyan]winnow show {summary['run_id']} --db {db}[/cyan]")


def execute_config(config_path: Path, db: Optional[str], only: list[str] | None, as_json: bool, progress: bool = True) -> dict:
    """Load a config, run the pipeline (restricted to ``only``), print the summary."""
    from configs.base import load_config

    cfg = load_config(config_path)
    return execute(cfg, db, only, as_json, progress)


def execute(cfg, db: Optional[str], only: list[str] | None, as_json: bool, progress: bool = True) -> dict:
    from flows.pipeline import enabled_stages, pipeline_flow

    store = open_store(db, cfg.db)
    enabled_stages(cfg, only)  # validate --only before Prefect starts
    summary = pipeline_flow(config=cfg, db=str(store.path), only=only, progress=progress and not as_json)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)
    return summary


# -------------------------------------------------------------------------------------- commands
@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    db: Optional[str] = DbOption,
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only these stages (repeatable): prune, mixture, extrapolate"),
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


@app.command()
def runs(db: Optional[str] = DbOption, limit: int = typer.Option(50, min=1), as_json: bool = JsonOption) -> None:
    """List runs recorded in the DuckDB file, newest first (with PREFECT_API_URL set: the server's state too)."""
    from flows.ops import add_server_states
    from storage.runs import list_runs

    print_rows(add_server_states(list_runs(open_store(db), limit)), title="runs", as_json=as_json)


@app.command()
def show(run_id: str = typer.Argument(...), db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Show one run: status, config, sources and how many rows it owns in each table."""
    from storage.runs import show_run

    run_ = show_run(open_store(db), run_id)
    if as_json:
        print_json(run_)
        return
    for k in ("run_id", "flow", "name", "status", "started_at", "finished_at", "code_version", "prefect_flow_run_id", "error"):
        if run_.get(k) is not None:
            console.print(f"[bold]{k}[/bold]: {run_[k]}")
    print_rows(run_["sources"], title="sources")
    print_rows([{"table": t, "rows": n} for t, n in run_["tables"].items()], title="rows by table")
    if run_.get("summary"):
        console.print("[bold]summary[/bold]:", json.loads(run_["summary"]) if isinstance(run_["summary"], str) else run_["summary"])


@app.command()
def sources(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """List ingested sources and their versions."""
    from storage.sources import list_sources

    print_rows(list_sources(open_store(db)), title="sources", as_json=as_json)


@app.command()
def query(
    sql: str = typer.Argument(..., help="SELECT statement(s); anything that writes is refused"),
    db: Optional[str] = DbOption,
    limit: Optional[int] = typer.Option(1000, min=1, help="at most this many rows"),
    as_json: bool = JsonOption,
) -> None:
    """Run read-only SQL against the DuckDB file (no writes, no file access, no ATTACH/COPY/INSTALL)."""
    from storage.query import run_query

    table = run_query(open_store(db), sql, limit)
    print_rows(table.to_pylist(), as_json=as_json)


STAGE_MODULES = ("flows.embed", "flows.prune", "flows.mixture", "flows.plan", "flows.fit", "flows.ops")
for _name in STAGE_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # a stage still being written in this checkout
        if _e.name != _name:
            raise
        continue
    if hasattr(_mod, "register"):
        _mod.register(app)


def main() -> None:
    """Console entry point: WinnowError -> one line on stderr, exit 2."""
    try:
        app(standalone_mode=False)
    except WinnowError as err:
        err_console.print(f"[bold red]error:[/bold red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
