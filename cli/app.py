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
# Piped output (a file, grep, a notebook) has no terminal width; rich would then cut tables at 80
# columns. 200 keeps wide tables whole while a rule line stays readable; COLUMNS still wins.
_PIPE_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
# emoji=False: data text such as ':x:' (a /etc/passwd line, a label) is printed as written, not as an emoji
console = Console(width=_PIPE_WIDTH, emoji=False)
err_console = Console(stderr=True, emoji=False)

DbOption = typer.Option(None, "--db", help="DuckDB file (default: $WINNOW_DB or ./.winnow/winnow.duckdb)")
JsonOption = typer.Option(False, "--json", help="print JSON instead of a table")

EXIT_OK, EXIT_RUN_FAILED, EXIT_USER_ERROR = 0, 1, 2


class RunFailed(Exception):
    """A run that started and then failed or crashed (exit code 1); the message is its one line."""


# --------------------------------------------------------------------------------------- printing
def jsonable(v: Any) -> Any:
    """``v`` with dates, decimals, paths, numpy values and non-finite floats made JSON-ready."""
    return _jsonable(v)


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


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]}
_CONTROL.update({c: f"\\u{c:04x}" for c in [*range(0x202a, 0x202f), *range(0x2066, 0x206a)]})  # bidi overrides


def visible(text: str) -> str:
    """``text`` with terminal control characters (ESC, BEL, backspace, C1 codes...) written as ``\\xNN``: a
    stored string (a run name, a text column) must not restyle, retitle or clear the user's terminal."""
    return text.translate(_CONTROL)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return visible(" ".join(str(v).split()) if isinstance(v, str) else str(v))


def _fit_widths(natural: list[int], floors: list[int], budget: int) -> list[int] | None:
    """Column widths that fit ``budget``: the widest columns are cut first, none below its floor
    (None when even the floors do not fit)."""
    if sum(natural) <= budget:
        return natural
    if sum(floors) > budget:
        return None
    lo, hi = 0, max(natural)
    while lo < hi:  # the largest cap with sum(min(natural, max(floor, cap))) <= budget
        cap = (lo + hi + 1) // 2
        if sum(min(n, max(f, cap)) for n, f in zip(natural, floors)) <= budget:
            lo = cap
        else:
            hi = cap - 1
    return [min(n, max(f, lo)) for n, f in zip(natural, floors)]


def print_rows(rows: list[dict], title: str | None = None, as_json: bool = False, whole: tuple[str, ...] = ()) -> None:
    """Rows as a table that fits the terminal (80 columns when not a terminal, or ``COLUMNS``), or JSON.

    Long cells are cut with an ellipsis (never wrapped into 3-character columns); when the columns
    cannot fit even so, each row is printed as ``column: value`` lines. Columns named in ``whole``
    (ids) are never cut. ``--json`` has every value whole.
    """
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"[dim]{escape(title or 'result')}: no rows[/dim]")
        return
    from rich import box

    cols = [str(c) for c in rows[0]]
    cells = [[_cell(v) for v in r.values()] for r in rows]
    natural = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    floors = [n if c in whole or n <= 12 else min(n, max(len(c), 8)) for n, c in zip(natural, cols)]
    widths = _fit_widths(natural, floors, console.width - 2 * len(cols))
    if widths is None:
        for i, row in enumerate(cells):
            console.rule(escape(f"{title or 'row'} {i + 1}/{len(cells)}"), style="dim")
            pad = max(len(c) for c in cols)
            for c, v in zip(cols, row):
                console.print(f"{escape(f'{c:>{pad}}')}: {escape(v)}", highlight=False, soft_wrap=True)
        return
    table = Table(title=None if title is None else escape(title), box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
    for c, w in zip(cols, widths):
        table.add_column(escape(c), no_wrap=True, overflow="ellipsis", min_width=w, max_width=w)
    for row in cells:
        table.add_row(*[escape(v) for v in row])
    console.print(table)


def open_store(db: Optional[str], config_db: Path | None = None):
    from storage.db import Store, resolve_db_path

    return Store(resolve_db_path(db, config_db))


def print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(visible(line), highlight=False, markup=False)


def error_line(message: str) -> None:
    """The one line a failure prints on stderr (no markup interpretation of the message)."""
    text = " ".join(str(message).split()) or "unknown error"
    err_console.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False, soft_wrap=True)


_warned: set[str] = set()


def warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line=None) -> None:
    """``warnings.showwarning`` for the CLI: a warning a computation raises (k-means or a probe that did
    not converge, Sinkhorn short of its tolerance) is one "warning:" line on stderr, each text once per
    command — not Python's two lines naming a source file. ``WINNOW_DEBUG=1`` keeps Python's format."""
    text = " ".join(str(message).split())
    if text in _warned:
        return
    _warned.add(text)
    err_console.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)


def escape(text: str) -> str:
    """Data text for a rich markup string: markup escaped, control characters made visible."""
    from rich.markup import escape as _escape

    return _escape(visible(text))


def debug() -> bool:
    return os.environ.get("WINNOW_DEBUG", "") not in ("", "0", "false")


PLOT_FORMATS = (".png", ".pdf", ".svg")


def plot_path(path: Path | None, *, force: bool = False) -> str | None:
    """A ``--plot`` path checked before any work: a file of a format matplotlib writes here (no suffix:
    ``.png`` is added, and the returned path says so), not a folder, in a folder that is not a file.

    An existing file (or link) there is kept unless ``force``: README's promise for every write. With
    ``force`` it is replaced in one move (a link as a link: the file it points to is not touched)."""
    from tasks.errors import WinnowError
    from tasks.files import special_file_kind

    if path is None:
        return None
    if path.is_dir():
        raise WinnowError(f"--plot {path} is a folder: name a file in it, e.g. {path / 'plot.png'}")
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() not in PLOT_FORMATS:
        raise WinnowError(f"--plot {path}: cannot write {path.suffix!r} plots; use one of {', '.join(PLOT_FORMATS)}")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise WinnowError(f"--plot {path}: {parent} is a file, not a folder")
    if path.is_symlink() or path.exists():
        if path.is_dir():
            raise WinnowError(f"--plot {path} is a folder: name a file in it, e.g. {path / 'plot.png'}")
        kind = None if path.is_symlink() else special_file_kind(path)
        if kind is not None:
            raise WinnowError(f"--plot {path} is {kind}, not a regular file; choose another plot path")
        if not force:
            raise WinnowError(f"--plot {path} already exists; pass --force to overwrite it")
    return str(path)

