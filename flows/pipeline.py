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

import sys
import time
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from configs.base import RunConfig
from flows.ingest import stage_sources_flow
from flows.report import publish_summary
from flows.runner import task_runner_scope
from storage.db import Store
from storage.runs import delete_run, finish_run, make_run_id, run_exists, start_run
from storage.sources import register_sources
from tasks.errors import WinnowError

# stage name -> the config section that switches it on, in pipeline order
STAGES = {"embed": "encoder", "prune": "prune", "mixture": "mixture", "extrapolate": "extrapolate", "plan": "plan"}


def enabled_stages(config: RunConfig, only: list[str] | None = None) -> list[str]:
    """Stages the config switches on, restricted to ``only`` when given (in pipeline order)."""
    on = [s for s, section in STAGES.items() if getattr(config, section) is not None]
    if only is None:
        return on
    for s in only:
        if s not in STAGES:
            raise WinnowError(f"unknown stage {s!r} (stages: {', '.join(STAGES)})")
        if getattr(config, STAGES[s]) is None:
            raise WinnowError(f"the config has no '{STAGES[s]}' section, so the {s} stage cannot run")
    return [s for s in STAGES if s in only]


def run_label(stages: list[str], only: list[str] | None) -> str:
    return "pipeline" if only is None else ("ingest" if not stages else "+".join(stages))


def _stage_flow(name: str):
    if name == "embed":
        from flows.embed import embed_flow

        return embed_flow
    if name == "prune":
        from flows.prune import prune_flow

        return prune_flow
    if name == "mixture":
        from flows.mixture import mixture_flow

        return mixture_flow
    if name == "plan":
        from flows.plan import plan_flow

        return plan_flow
    from flows.fit import extrapolate_flow

    return extrapolate_flow


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
            preflight = getattr(sys.modules[_stage_flow(stage).fn.__module__], "preflight", None)
            if preflight is not None:
                preflight(config, db)
        for stage in stages:
            ts = time.perf_counter()
            result = _stage_flow(stage).with_options(task_runner=runner)(config=config, db=db, run_id=run_id, progress=progress)
            result = dict(result or {})
            result["seconds"] = round(time.perf_counter() - ts, 2)
            summary["stages"][stage] = result
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
