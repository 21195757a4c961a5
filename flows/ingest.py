"""Ingest flow: stage (read + validate) every source first, then register them all in one transaction.

Nothing touches the database until every source has been read and validated, so a bad file leaves
the database exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.futures import wait

from configs.base import RunConfig, SourceConfig
from flows.caching import heavy_task
from storage.db import Store
from storage.sources import SourceRecord, list_sources, register_sources
from tasks.ingest import StagedSource, stage_source
from tasks.progress import progress_bar


@heavy_task(name="stage-source", scratch=["staging_dir"])
def stage_source_task(spec: SourceConfig, staging_dir: str, progress: bool = True) -> StagedSource:
    """Read + validate one source into a staged Parquet file; cached on (spec, source file stat, code).

    Returns the small :class:`StagedSource` (a path and metadata), as heavy tasks should.
    """
    return stage_source(spec, Path(staging_dir), progress=progress)


def _still_usable(staged: list[StagedSource], store: Store) -> list[bool]:
    """A cached result is usable if its staged file is still there or its content is already registered."""
    if all(s.path.exists() for s in staged):
        return [True] * len(staged)
    known = {(r["name"], r["content_hash"]) for r in list_sources(store)} if store.exists else set()
    return [s.path.exists() or (s.name, s.content_hash) in known for s in staged]


def stage_all(config: RunConfig, store: Store, progress: bool = True) -> list[StagedSource]:
    """Stage every source (concurrently, on the flow's task runner); on any error remove what was staged.

    Staging is cached (:mod:`flows.caching`): after a crash, sources staged before it are not read
    again. A cached result whose staged file has gone (registered since, or cleaned up) is fine when
    that content is registered; otherwise the source is staged afresh.
    """
    staging = str(store.staging_dir())
    specs = list(config.sources)
    single = len(specs) == 1  # one rich live display at a time: row bar for one source, source bar for many
    futures = [stage_source_task.submit(spec, staging, progress and single) for spec in specs]
    staged: list[StagedSource] = []
    try:
        with progress_bar(progress and not single) as bar:  # off a terminal: periodic "done/total, rate" lines
            job = bar.add_task("ingest: sources", total=len(specs))
            for fut in futures:
                staged.append(fut.result())
                bar.advance(job)
        for i, ok in enumerate(_still_usable(staged, store)):
            if not ok:
                staged[i] = stage_source_task.with_options(refresh_cache=True)(specs[i], staging, progress)
    except BaseException:
        wait(futures)
        for fut in futures:
            if fut.state.is_completed():
                fut.result().path.unlink(missing_ok=True)
        raise
    return staged


@flow(name="stage-sources")
def stage_sources_flow(config: RunConfig, db: str, progress: bool = True) -> list[StagedSource]:
    """Subflow of the pipeline that stages the sources on the configured task runner (threads or Dask)."""
    return stage_all(config, Store(db), progress)


@flow(name="ingest")
def ingest_flow(config: RunConfig, db: str, run_id: str | None = None, progress: bool = True) -> list[SourceRecord]:
    """Ingest the config's sources: unchanged ones are no-ops, changed ones become new versions."""
    store = Store(db)
    staged = stage_all(config, store, progress)
    return register_sources(store, staged, run_id)
