"""The end-to-end flow: ingest, then every stage the config switches on (embed/prune, mixture, ...).

Order of events, so that bad input never leaves a half-written run:
1. every source is read and validated (no database write yet);
2. the run row is written (status 'running') and the sources registered;
3. each stage computes, then writes its results in one transaction keyed by run_id;
4. the run is marked 'completed' with a summary.
A user-input error (:class:`WinnowError`) in any stage removes the run's rows again, as if it had never
started; any other failure marks the run 'failed' with the error, and a rerun replaces it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from configs.base import RunConfig
from flows.ingest import stage_sources_flow
from flows.report import publish_summary
from flows.runner import task_runner_scope
from flows.stages import Stage, enabled_stages
from storage.db import Store
from storage.runs import delete_run, finish_run, make_run_id, run_exists, start_run
from storage.sources import register_sources
from tasks.errors import WinnowError

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


def _run_pipeline(config: RunConfig, db: str, only: list[str] | None, progress: bool, runner: Any) -> dict[str, Any]:
    stages = enabled_stages(config, only)
    label = run_label(stages, only)
    run_id = make_run_id(label, config.identity_json())
    store = Store(db)
    t0 = time.perf_counter()
    staged = stage_sources_flow.with_options(task_runner=runner)(config=config, db=db, progress=progress)
    existed = store.exists and run_exists(store, run_id)
    start_run(store, run_id, label, config.name, config.canonical_json(), _flow_run_id())
    summary: dict[str, Any] = {"run_id": run_id, "db": str(store.path), "stages": {}}
    records = []
    try:
        records = register_sources(store, staged, run_id)
        summary["sources"] = [
            {"name": r.name, "version": r.version, "rows": r.n_rows, "train": r.n_train, "test": r.n_test,
             "new": r.created} for r in records
        ]
        for stage in stages:  # input checks of every stage before the first stage writes anything
            preflight = stage.load_preflight()
            if preflight is not None:
                preflight(config, db)
        for stage in stages:
            ts = time.perf_counter()
            result = stage.load_flow().with_options(task_runner=runner)(config=config, db=db, run_id=run_id, progress=progress)
            result = dict(result or {})
            result["seconds"] = round(time.perf_counter() - ts, 2)
            summary["stages"][stage.name] = result
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        finish_run(store, run_id, "completed", summary)
        publish_summary(summary)
        return summary
    except WinnowError:
        if existed:
            finish_run(store, run_id, "failed", summary, error="bad input (see the message)")
        else:  # as if it never ran: its rows and the source versions it alone brought in
            delete_run(store, run_id, drop_sources=[r.source_id for r in records if r.created])
        raise
    except BaseException as err:
        finish_run(store, run_id, "failed", summary, error=f"{type(err).__name__}: {err}")
        raise
