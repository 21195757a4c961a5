"""``winnow embed CONFIG``: ingest the config's sources and embed them with its encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, app, open_store, print_json, print_lines


@app.command(name="embed")
def embed_cmd(
    config: Path = typer.Argument(..., help="YAML run config with an 'encoder' section"),
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Ingest the config's sources (no-op when unchanged) and embed them with its encoder."""
    from configs.base import load_config
    from flows.embed import ingest_and_embed
    from tasks.errors import WinnowError

    cfg = load_config(config)
    if cfg.encoder is None:
        raise WinnowError(f"{config}: the config has no 'encoder' section, so there is nothing to embed")
    result = ingest_and_embed(cfg, str(open_store(db, cfg.db).path), progress=not as_json)
    if as_json:
        print_json(result)
    else:
        print_lines(result["lines"])
