"""Read-only views of the DuckDB store: runs, show, sources, embeddings, query.

None of these imports Prefect, torch or POT: they open the file read-only and print.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, console, err_console, escape, open_store, print_json, print_lines, print_rows


@app.command()
def runs(db: Optional[str] = DbOption, limit: int = typer.Option(50, min=1), as_json: bool = JsonOption) -> None:
    """List every attempt of every run, newest first: failed and crashed ones next to completed ones
    (with a Prefect server configured: the server's state too)."""
    from flows.ops import add_server_states
    from storage.runs import list_runs

    rows, warning = add_server_states(list_runs(open_store(db), limit))
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if as_json:
        print_json(rows)
        return
    print_rows([{
        "run_id": r["run_id"], "#": r["attempt"], "status": r["status"],
        "started": r["started_at"].strftime("%m-%d %H:%M") if r.get("started_at") else "",
        "s": r["seconds"], "sources": r["sources"],
        **({"server": r["prefect_state"]} if "prefect_state" in r else {}), "error": r["error"],
    } for r in rows], title="runs", whole=("run_id", "status"))


@app.command()
def show(run_id: str = typer.Argument(...), db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Show one run: status, attempts, sources, rows it owns in each table, its summary and its config."""
    from storage.runs import show_run

    run_ = show_run(open_store(db), run_id)
    if as_json:
        print_json(run_)
        return
    for k in ("run_id", "flow", "name", "status", "started_at", "finished_at", "code_version", "prefect_flow_run_id", "error"):
        if run_.get(k) is not None:
            console.print(f"[bold]{k}[/bold]: {escape(str(run_[k]))}", highlight=False)
    if run_["sources"]:  # prune-sharded and experiment perceptron read no registered source
        print_rows(run_["sources"], title="sources (the versions this run reads)")
    print_rows([{"#": a["attempt"], "status": a["status"], "started": a["started_at"], "flow run": a["prefect_flow_run_id"],
                 "error": a["error"]} for a in run_.get("attempts", [])], title="attempts", whole=("status",))
    print_rows([{"table": t, "rows": n} for t, n in run_["tables"].items()], title="rows by table")
    summary = _loaded(run_.get("summary"))
    if summary:
        console.print("[bold]summary[/bold]:", highlight=False)
        print_lines(_summary_lines(summary))
    config = _loaded(run_.get("config"))
    if config is not None:
        console.print("[bold]config[/bold]:", highlight=False)
        print_lines(json.dumps(config, indent=2, sort_keys=True, default=str).splitlines())


def _loaded(value: object) -> object:
    """A JSON column as Python (a value that is not JSON stays as it is)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _summary_lines(summary: object) -> list[str]:
    """A run's summary as lines: its own ``lines``, each stage's lines (pipeline runs), else one line per key."""
    if not isinstance(summary, dict):
        return [str(summary)]
    if isinstance(summary.get("lines"), list):
        return [f"  {line}" for line in summary["lines"]]
    if isinstance(summary.get("stages"), dict):
        out = [f"  {stage}: {line}" for stage, result in summary["stages"].items() if isinstance(result, dict)
               for line in result.get("lines", [])]
        if out:
            return out
    return [f"  {k}: {json.dumps(v, default=str)}" for k, v in summary.items()]


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
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, max=86_400.0,
                                  help="seconds the query (and its output) may take before it is stopped"),
    as_json: bool = JsonOption,
) -> None:
    """Run read-only SQL against the DuckDB file (no writes, no file access, no ATTACH/COPY/INSTALL).

    Rows are printed as they arrive, in batches; Ctrl-C stops the query at once. A result cut at --limit
    says so on stderr."""
    from storage.query import stream_query

    more = False

    def capped():  # one row past --limit is fetched to tell whether the limit cut the result
        nonlocal more
        shown = 0
        for batch in stream_query(open_store(db), sql, None if limit is None else limit + 1, timeout):
            if limit is not None and shown + len(batch) > limit:
                batch, more = batch[:limit - shown], True
            shown += len(batch)
            if batch:
                yield batch

    batches = capped()
    try:
        _print_query(batches, as_json)
    finally:
        if more:
            err_console.print(f"note: --limit {limit} reached: more rows match (raise --limit, or narrow the query)",
                              markup=False, highlight=False)


def _print_query(batches, as_json: bool) -> None:
    import sys

    from cli.app import jsonable

    if as_json:  # one JSON array, written row by row
        import itertools

        first = True
        head = next(batches, None)  # a query that fails, fails before "[" is written
        batches = iter(()) if head is None else itertools.chain([head], batches)
        sys.stdout.write("[")
        for batch in batches:
            for row in batch:
                sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps(jsonable(row), default=str))
                first = False
        sys.stdout.write("\n]\n" if not first else "]\n")
        return
    printed = False
    for batch in batches:
        print_rows([{k: _clip(v) for k, v in row.items()} for row in batch])
        printed = True
    if not printed:
        print_rows([])


def _clip(value: object, width: int = 500) -> object:
    """A table cell is cut at ``width`` characters (use --json for whole values)."""
    if isinstance(value, (str, bytes)) and len(value) > width:
        return f"{value[:width]!s}… ({len(value) - width:,} more)"
    return value
