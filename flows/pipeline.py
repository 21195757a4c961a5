"""The end-to-end flow: ingest, then every stage the config switches on (embed/prune, mixture, ...).

Order of events, so that a refused run leaves the database and its folder as they were:
1. every source is read and validated into a staging file (no database write);
2. the run's source versions are pinned (already registered content: that version; new content: the
   staged file) and every stage's preflight checks them: still no write;
3. the attempt's lease starts, the attempt and run rows are written (status 'running') and the
   sources registered, pinned in ``run_sources`` (:func:`storage.sources.register_run_sources`);
4. each stage computes on exactly the pinned versions, then writes its results in one transaction
   keyed by run_id;
5. the attempt and the run are marked 'completed' with a summary.
A failure after step 3 is recorded: the attempt (and the run) 'failed' with the error, kept in
``winnow runs``, and side files whose rows were never committed are deleted (a writer that lost the
lock mid-run included: the recording write waits longer, and if even that fails the verdict stays in
the attempt's lease file until the next writer records it). The one exception is a user-input error
(:class:`WinnowError`) that only a stage could detect, in a run never seen before: its rows are removed
again, as if it had never started (the preflights leave few such errors). A process that dies stops
renewing the attempt's lease and the attempt reads 'crashed'. Steps 3-5 and the failure record are
:func:`storage.runs.recorded_run`, which every command that computes and stores shares.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from configs.base import RunConfig
from flows.caching import results_in
from flows.ingest import stage_sources_flow
from flows.report import publish_summary
from flows.runner import task_runner_scope
from flows.stages import Stage, enabled_stages
from storage.db import Store
from storage.runs import lease_seconds, make_run_id, recorded_run, run_exists
from storage.sources import SourceRecord, pinned, register_run_sources, registered_id, resolve_version, source_records
from tasks.ingest import StagedSource

def run_label(stages: list[Stage], only: list[str] | None) -> str:
    return "pipeline" if only is None else ("ingest" if not stages else "+".join(s.name for s in stages))


def run_config(config: RunConfig | str | Path, db: str | None, only: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Validate a config (a path or a loaded one) and ``--only``, then run :func:`pipeline_flow` on it.

    Everything that can be checked before Prefect starts is checked here: a bad config, an unknown
    stage or an unusable database path fails without a flow run."""
    from configs.base import load_config
    from storage.db import resolve_db_path

    cfg = config if isinstance(config, RunConfig) else load_config(Path(config))
    store = Store(resolve_db_path(db, cfg.db))
    enabled_stages(cfg, only)
    store.check_usable()  # not a DuckDB file, someone else's, a newer schema: refused before Prefect starts
    return pipeline_flow(config=cfg, db=str(store.path), only=only, progress=progress)


def _flow_run_id() -> str | None:
    try:
        return str(get_run_context().flow_run.id)
    except Exception:  # noqa: BLE001 - outside a flow run there is simply no id
        return None


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config: RunConfig, db: str, only: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ingestion and the stages of ``config`` (or only those in ``only``) into the DuckDB file ``db``."""
    with task_runner_scope(config.task_runner) as runner:  # one runner (one Dask cluster) for every subflow
        return _run_pipeline(config, db, only, progress, runner)


def _requested_version(config: RunConfig, name: str) -> Any:
    """A source's ``version:`` (``'latest'`` or a number) when the config has that key, else None."""
    return getattr(config.source(name), "version", None)


def _pins_before_writing(store: Store, config: RunConfig, staged: list[StagedSource]) -> dict[str, Any]:
    """The versions the run will read, for the preflights: registered content by id, new content as staged."""
    pins: dict[str, Any] = {}
    for s in staged:
        wanted = _requested_version(config, s.name)
        if wanted is not None and store.exists:
            pins[s.name] = resolve_version(store, s.name, wanted)
        else:
            pins[s.name] = registered_id(store, s.name, s.content_hash) or s
    return pins


def _discard(staged: list[StagedSource], store: Store, had_artifacts: bool) -> None:
    """Remove staged files of a refused run (and the artifacts folder if staging created it)."""
    for s in staged:
        s.path.unlink(missing_ok=True)
    if not had_artifacts:
        for d in (store.artifacts_dir / "staging", store.artifacts_dir):
            try:
                d.rmdir()
            except OSError:
                break


def _source_lines(records: list[SourceRecord], read: dict[str, SourceRecord]) -> list[dict[str, Any]]:
    """One summary line per source: the version the run reads (its id and row counts) and ``new`` when this
    run registered the file's content; with a config's ``version:`` that reads another version,
    ``file_version`` is the version the file's content is."""
    lines = []
    for r in records:
        v = read.get(r.name, r)
        lines.append({"name": r.name, "version": v.version, "rows": v.n_rows, "train": v.n_train, "test": v.n_test,
                      "new": r.created, "source_id": v.source_id,
                      **({"file_version": r.version} if v.source_id != r.source_id else {})})
    return lines


def _read_records(store: Store, records: list[SourceRecord], pins: dict[str, int]) -> dict[str, SourceRecord]:
    """The version each source name of the run reads: its registered record, or the pinned one it asked for."""
    read = {r.name: r for r in records}
    other = {name: sid for name, sid in pins.items() if name not in read or read[name].source_id != sid}
    by_id = source_records(store, list(other.values()))
    read.update({name: by_id[sid] for name, sid in other.items() if sid in by_id})
    return read


def _run_pipeline(config: RunConfig, db: str, only: list[str] | None, progress: bool, runner: Any) -> dict[str, Any]:
    stages = enabled_stages(config, only)
    label = run_label(stages, only)
    run_id = make_run_id(label, config.identity_json())
    store = Store(db)
    lease_seconds()  # a bad WINNOW_LEASE_S / WINNOW_HEARTBEAT_S is refused before anything is written
    t0 = time.perf_counter()
    had_artifacts = store.artifacts_dir.exists()
    try:
        staged = stage_sources_flow.with_options(task_runner=runner)(config=config, db=db, progress=progress)
    except BaseException:  # staging removed its files; the artifacts folder it created goes too
        _discard([], store, had_artifacts)
        raise
    try:  # ---- checks: nothing is written before every stage's preflight passed on the pinned versions
        with pinned(store, _pins_before_writing(store, config, staged)):
            for stage in stages:
                preflight = stage.load_preflight()
                if preflight is not None:
                    preflight(config, db)
        existed = store.exists and run_exists(store, run_id)
    except BaseException:
        _discard(staged, store, had_artifacts)
        raise
    # ---- writes
    summary: dict[str, Any] = {"run_id": run_id, "db": str(store.path), "stages": {}}
    started = False
    try:
        with recorded_run(store, run_id, label, config.name, config.canonical_json(), _flow_run_id(), summary) as rec:
            started = True
            requested = {s.name: v for s in config.sources if (v := _requested_version(config, s.name)) is not None}
            records, pins = register_run_sources(store, staged, run_id, rec.attempt_id, requested=requested)
            rec.drop_sources = [] if existed else [r.source_id for r in records if r.created]
            summary["sources"] = _source_lines(records, _read_records(store, records, pins))
            with pinned(store, pins), results_in(store.artifacts_dir / "cache"):  # resume: finished heavy tasks are kept here
                for stage in stages:
                    ts = time.perf_counter()
                    result = stage.load_flow().with_options(task_runner=runner)(config=config, db=db, run_id=run_id, progress=progress)
                    result = dict(result or {})
                    result["seconds"] = round(time.perf_counter() - ts, 2)
                    summary["stages"][stage.name] = result
            summary["seconds"] = round(time.perf_counter() - t0, 2)
    except BaseException:
        if not started:  # the run row was never written: the staged files are this attempt's only trace
            _discard(staged, store, True)
        raise
    publish_summary(summary)
    return summary
