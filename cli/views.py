"""Read-only views of the DuckDB store: runs, show, sources, embeddings, query.

None of these imports Prefect, torch or POT: they open the file read-only and print.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, console, err_console, open_store, print_json, print_rows


@app.command()
def runs(db: Optional[str] = DbOption, limit: int = typer.Option(50, min=1), as_json: bool = JsonOption) -> None:
    """List runs recorded in the DuckDB file, newest first (with a Prefect server configured: its state too)."""
    from flows.ops import add_server_states
    from storage.runs import list_runs

    rows, warning = add_server_states(list_runs(open_store(db), limit))
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    print_rows(rows, title="runs", as_json=as_json)


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
            console.print(f"[bold]{k}[/bold]: {run_[k]}", highlight=False)
    print_rows(run_["sources"], title="sources")
    print_rows([{"table": t, "rows": n} for t, n in run_["tables"].items()], title="rows by table")
    if run_.get("summary"):
        console.print("[bold]summary[/bold]:", json.loads(run_["summary"]) if isinstance(run_["summary"], str) else run_["summary"])


@app.command()
def sources(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """List ingested sources and their versions."""
    from storage.sources import list_sources

    print_rows(list_sources(open_store(db)), title="sources", as_json=as_json)


@app.command(name="embeddings")
def embeddings_cmd(db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """List cached embeddings (source, encoder kind and hash, shape, files)."""
    from storage.embeddings import list_embeddings

    print_rows(list_embeddings(open_store(db)), title="embeddings", as_json=as_json)


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
