"""``winnow prune-sharded CONFIG``: SSP + SemDeDup + one selection over a source processed shard by shard.

Registered by importing this module in :mod:`cli.main` (``from cli import ..., sharded``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, console, open_store, print_json, print_lines
from cli.run import run_or_fail


@app.command(name="prune-sharded")
def prune_sharded_cmd(config: Path = typer.Argument(..., help="YAML sharded config (see configs/sharded.py)"),
                      db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Score (SSP), de-duplicate (SemDeDup) and select from a large source, one task per shard.

    The run is recorded in `winnow runs` (flow prune-sharded); `winnow export RUN_ID` writes its kept rows."""
    from configs.base import load_model
    from configs.sharded import ShardedConfig
    from flows.sharded import run_sharded

    cfg = load_model(config, ShardedConfig)
    store = open_store(db)
    store.check_usable()  # not a DuckDB file, someone else's, a newer schema: refused before Prefect starts
    summary = run_or_fail(lambda: run_sharded(cfg, store.path))
    if as_json:
        print_json(summary)
        return
    console.print(f"[bold]{summary['run_id']}[/bold]", highlight=False)
    print_lines(summary["lines"])
