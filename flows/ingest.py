"""Ingest flow: stage (read + validate) every source first, then register them all in one transaction.

Nothing touches the database until every source has been read and validated, so a bad file leaves
the database exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from configs.base import RunConfig, SourceConfig
from storage.db import Store
from storage.sources import SourceRecord, register_sources
from tasks.ingest import StagedSource, stage_source


@task(name="stage-source", retries=0)
def stage_source_task(spec: SourceConfig, staging_dir: str, progress: bool = True) -> StagedSource:
    return stage_source(spec, Path(staging_dir), progress=progress)


def stage_all(config: RunConfig, store: Store, progress: bool = True) -> list[StagedSource]:
    """Stage every source; on any error remove what was staged and re-raise."""
    staged: list[StagedSource] = []
    staging = str(store.staging_dir())
    try:
        for spec in config.sources:
            staged.append(stage_source_task(spec, staging, progress))
    except BaseException:
        for s in staged:
            s.path.unlink(missing_ok=True)
        raise
    return staged


@flow(name="ingest")
def ingest_flow(config: RunConfig, db: str, run_id: str | None = None, progress: bool = True) -> list[SourceRecord]:
    """Ingest the config's sources: unchanged ones are no-ops, changed ones become new versions."""
    store = Store(db)
    staged = stage_all(config, store, progress)
    return register_sources(store, staged, run_id)
