"""Server operations: ``winnow deploy``, ``serve``, ``trigger`` and ``report`` (see docs/operations.md)."""

from __future__ import annotations

from contextlib import nullcontext
import os
from pathlib import Path
from typing import Optional

import typer

from cli.app import DbOption, JsonOption, RunFailed, app, console, err_console, escape, open_store, print_json


@app.command()
def deploy(
    configs: Optional[list[Path]] = typer.Argument(None, help="YAML run configs (default: the shipped demo)"),
    db: Optional[str] = DbOption,
    pool: Optional[str] = typer.Option(None, "--pool", help="process work pool (default: the config's deploy.work_pool; none = run by `winnow serve`)"),
) -> None:
    """Register configs as deployments on the Prefect server, with the schedules of their deploy: section."""
    from configs.base import builtin_config
    from flows.ops import FLOW_NAME, HEARTBEAT_ENV, build_deployment, describe_schedules, ensure_process_pool, require_server

    require_server()
    _crash_detection()
    for path in configs or [builtin_config("demo")]:
        deployment, cfg = build_deployment(path, db)
        pool_name = pool or (cfg.deploy.work_pool if cfg.deploy else None)
        if pool_name:
            ensure_process_pool(pool_name)
            deployment.job_variables = {"env": dict(HEARTBEAT_ENV)}  # the worker's flow processes send heartbeats
        dep_id = deployment.apply(work_pool_name=pool_name)
        runs_by = f"a worker: prefect worker start --pool {pool_name}" if pool_name else f"winnow serve {path}"
        console.print(f"deployed [bold]{FLOW_NAME}/{escape(deployment.name)}[/bold] ({dep_id}): {escape(describe_schedules(cfg))}; "
                      f"db {escape(str(deployment.parameters['db']))}; executed by {escape(runs_by)}")


@app.command()
def serve(
    configs: Optional[list[Path]] = typer.Argument(None, help="YAML run configs (default: the shipped demo)"),
    db: Optional[str] = DbOption,
    limit: Optional[int] = typer.Option(1, min=1, help="at most this many runs at once (DuckDB has one writer)"),
) -> None:
    """Register configs as deployments and execute their scheduled and triggered runs until stopped."""
    from configs.base import builtin_config
    from flows.ops import FLOW_NAME, api_url, build_deployment, describe_schedules, require_server, serve_deployments

    require_server()
    _crash_detection()
    deployments = []
    for path in configs or [builtin_config("demo")]:
        deployment, cfg = build_deployment(path, db)
        deployments.append(deployment)
        _record_stale_attempts(deployment.parameters["db"])
        console.print(f"serving [bold]{FLOW_NAME}/{escape(deployment.name)}[/bold]: {escape(describe_schedules(cfg))}; "
                      f"db {escape(str(deployment.parameters['db']))}")
    console.print(f"UI: {api_url().rstrip('/').removesuffix('/api')}  (Ctrl-C stops serving and pauses the schedules)")
    os.environ["WINNOW_CONSOLE_FAILURES"] = "1"  # a service's console shows its runs' failures (flows/_env.py)
    # and its runs' progress: the flow-run processes serve starts log at INFO to this console (a user's own
    # PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL wins)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO")
    serve_deployments(deployments, limit=limit)


def _crash_detection() -> None:
    """Install the server's zombie-run automation; a server that refuses it only loses that half (warned)."""
    from flows.ops import ensure_zombie_automation

    try:
        ensure_zombie_automation()
    except Exception as err:  # noqa: BLE001 - serving and deploying work without it
        err_console.print(f"[yellow]warning:[/yellow] could not install the crashed-run automation on the server "
                          f"({type(err).__name__}: {escape(str(err))}); `trigger --wait` still detects crashes by the run's lease",
                          highlight=False, soft_wrap=True)


def _record_stale_attempts(db: str) -> None:
    """Attempts left 'running' by a serve process that died are recorded as crashed when serving starts again."""
    from storage.db import Store
    from storage.runs import mark_crashed
    from tasks.errors import WinnowError

    try:
        for attempt in mark_crashed(Store(db)):
            err_console.print(f"recorded attempt {attempt} in {db} as crashed (its lease had expired)", highlight=False, markup=False)
    except WinnowError:
        pass  # busy or unreadable now: the next run's writer records it


@app.command()
def trigger(
    name: str = typer.Argument(..., help="deployment: NAME or pipeline/NAME (see `prefect deployment ls`)"),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="override a parameter: KEY=VALUE, KEY may be dotted (config.sources.0.max_rows=100)"),
    wait: bool = typer.Option(False, "--wait", help="wait for the run to finish and report its final state"),
    timeout: float = typer.Option(3600.0, "--timeout", min=1, help="seconds to wait with --wait"),
    as_json: bool = JsonOption,
) -> None:
    """Start a run of a deployment on the Prefect server; print its state and run ids (exit 1 unless it completed)."""
    from flows.ops import require_server, trigger_run

    require_server()
    spinner = err_console.status(f"waiting for {name}", spinner="dots") if wait and not as_json else nullcontext()
    with spinner as status:
        out = trigger_run(name, param or [], wait, timeout, on_state=None if status is None else status.update)
    if as_json:
        print_json(out)
    else:
        tail = f"  winnow run [bold]{out['run_id']}[/bold] in {escape(str(out['db']))}" if out.get("run_id") else ""
        console.print(f"{out['state']}  flow run {out['flow_run_id']} ({escape(str(out['flow_run_name']))}){tail}")
    if out.get("final") and out["state"] != "Completed":
        raise RunFailed(f"flow run {out['flow_run_id']} ended {out['state']}: {out.get('message') or 'no message'}")


@app.command()
def report(
    run_id: str = typer.Argument(..., help="winnow run id (see `winnow runs`)"),
    db: Optional[str] = DbOption,
    out: Path = typer.Option(Path("reports"), "--out", help="folder for the HTML file"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing report of this run"),
    as_json: bool = JsonOption,
) -> None:
    """Write a self-contained HTML report of a run (plots embedded) and print its path."""
    from flows.report import write_report

    result = write_report(open_store(db), run_id, out, progress=not as_json, force=force)
    if as_json:
        print_json({"run_id": run_id, "path": str(result.path), "sections": result.sections})
    else:
        console.print(f"report: [bold]{escape(str(result.path))}[/bold] ({', '.join(result.sections)})")
