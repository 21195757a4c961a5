"""The typer app, shared options, printing, and the one place that maps errors to exit codes.

Exit codes: 0 success, 1 a run failed (or crashed), 2 a user error (bad input, usage, refused).
Every error prints exactly one line on stderr. This module imports only typer and rich: command
modules import their heavy dependencies (Prefect, torch, POT) inside the command functions, so
read-only commands start fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="winnow: decide which data a model should be trained on.")
console = Console()
err_console = Console(stderr=True)

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $WINNOW_DB or ./.winnow/winnow.duckdb)")
JsonOption = typer.Option(False, "--json", help="print JSON instead of a table")

EXIT_OK, EXIT_RUN_FAILED, EXIT_USER_ERROR = 0, 1, 2


class RunFailed(Exception):
    """A run that started and then failed or crashed (exit code 1); the message is its one line."""


# --------------------------------------------------------------------------------------- printing
def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):  # NaN and inf are not JSON
        return None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return _jsonable(v.item())
    if hasattr(v, "tolist"):
        return _jsonable(v.tolist())
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
        table.add_column(str(col), overflow="fold", min_width=min(len(str(col)), 12))
    for r in rows:
        table.add_row(*["" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r.values()])
    console.print(table)


def open_store(db: Optional[str], config_db: Path | None = None):
    from storage.db import Store, resolve_db_path

    return Store(resolve_db_path(db, config_db))


def print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(line, highlight=False)


def error_line(message: str) -> None:
    """The one line a failure prints on stderr (no markup interpretation of the message)."""
    text = " ".join(str(message).split()) or "unknown error"
    err_console.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False, soft_wrap=True)


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def debug() -> bool:
    return os.environ.get("WINNOW_DEBUG", "") not in ("", "0", "false")
