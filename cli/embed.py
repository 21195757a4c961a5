"""``winnow embed CONFIG``: ingest the config's sources and embed them with its encoder.

The same run as ``winnow run CONFIG --only embed`` (one row in ``winnow runs``, flow ``embed``), except
that a config whose encoder embeds none of its sources is refused (exit 2, nothing written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, print_json


@app.command(name="embed")
def embed_cmd(
    config: Path = typer.Argument(..., help="YAML run config with an 'encoder' section"),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Ingest the config's sources (no-op when unchanged) and embed them with its encoder (cached by content)."""
    from cli.run import print_summary, run_or_fail
    from flows.embed import embedding_required
    from flows.pipeline import run_config

    def embed() -> dict:
        with embedding_required():
            return run_config(config, db, ["embed"], progress=not as_json)

    summary = run_or_fail(embed)
    if as_json:
        stage = summary["stages"]["embed"]
        print_json({"run_id": summary["run_id"], "db": summary["db"], "sources": summary.get("sources", []),
                    "embeddings": stage["embeddings"], "lines": stage["lines"], "seconds": summary.get("seconds")})
    else:
        print_summary(summary)
