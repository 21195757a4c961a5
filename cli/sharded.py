"""``winnow prune-sharded CONFIG``: SSP + SemDeDup + one selection over a source processed shard by shard.

Registered by importing this module in :mod:`cli.main` (``from cli import ..., sharded``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, console, open_store, print_json


@app.command(name="prune-sharded")
def prune_sharded_cmd(config: Path = typer.Argument(..., help="YAML sharded config (see configs/sharded.py)"),
                      db: Optional[str] = DbOption, as_json: bool = JsonOption) -> None:
    """Score (SSP), de-duplicate (SemDeDup) and select from a large source, one task per shard."""
    from configs.base import load_model
    from configs.sharded import ShardedConfig
    from flows.sharded import run_sharded

    cfg = load_model(config, ShardedConfig)
    summary = run_sharded(cfg, open_store(db).path)
    if as_json:
        print_json(summary)
        return
    console.print(f"{summary['run_id']}: {summary['n_rows']:,} rows in {summary['n_shards']} shards, "
                  f"{summary['n_iter']} k-means passes; kept {summary['n_kept']:,} ({summary['resolved_policy']}); "
                  f"SemDeDup removed " + ", ".join(f"{n:,} at eps={e:g}" for e, n in summary["removed"].items()),
                  highlight=False)
    console.print(f"views: {', '.join(summary['views'])}; tables sharded_members, sharded_dedup_removed", highlight=False)
