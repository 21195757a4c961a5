"""Operations: Prefect server deployments with schedules, triggering runs from the CLI, run reports.

Commands added to ``winnow`` (see docs/operations.md):

* ``winnow deploy [CONFIG]``  — register the config as a deployment of the ``pipeline`` flow on the
  Prefect server (``PREFECT_API_URL``), with the cron/interval schedules of its ``deploy:`` section;
* ``winnow serve [CONFIG ...]`` — register and *execute* them: a long-running process that picks up
  scheduled and triggered runs (Ctrl-C stops it and pauses its schedules);
* ``winnow trigger NAME [--param k=v ...] [--wait]`` — start a run of a deployment, optionally wait,
  print its final state, Prefect flow-run id and winnow run id;
* ``winnow report RUN_ID [--out DIR]`` — a self-contained HTML report of a run.

A deployment carries the validated config (as JSON, source paths absolute) and the absolute DuckDB
path as flow parameters, so whichever process executes it writes the same file. Deployments use a
module-path entrypoint (``flows.pipeline.pipeline_flow``): any process with winnow installed can run
them — ``winnow serve`` or, with ``deploy.work_pool`` set, a ``prefect worker`` of a process pool.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import typer

from tasks.errors import WinnowError

FLOW_NAME = "pipeline"
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --------------------------------------------------------------------------------------- server
def api_url() -> str | None:
    """The configured Prefect API (env var or profile), or None in local ephemeral mode."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def require_server() -> str:
    """The API URL of a reachable Prefect server, or a WinnowError saying how to get one."""
    url = api_url()
    if not url:
        raise WinnowError(
            "no Prefect server configured: start one with `prefect server start --host 127.0.0.1` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (see docs/operations.md)"
        )
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as err:
        raise WinnowError(f"Prefect server at {url} is not reachable ({err}); is `prefect server start` running?") from None
    return url


def _schedules(cfg) -> list:
    from prefect.schedules import Cron, Interval

    if cfg.deploy is None:
        return []
    return [
        Cron(s.cron, timezone=s.timezone) if s.cron else Interval(timedelta(seconds=s.interval_seconds), timezone=s.timezone)
        for s in cfg.deploy.schedules
    ]


def deployment_name(cfg) -> str:
    """``deploy.name`` when the config has a deploy section, else the config's ``name``."""
    return cfg.deploy.name if cfg.deploy is not None else cfg.name


def build_deployment(config_path: Path, db: Optional[str]):
    """A RunnerDeployment of ``pipeline_flow`` for one config (parameters: config JSON + absolute db)."""
    from prefect.types.entrypoint import EntrypointType

    from configs.base import load_config
    from flows.cli import open_store
    from flows.pipeline import enabled_stages, pipeline_flow

    cfg = load_config(config_path)
    enabled_stages(cfg)
    store = open_store(db, cfg.db)
    return pipeline_flow.to_deployment(
        name=deployment_name(cfg),
        parameters={"config": cfg.model_dump(mode="json"), "db": str(store.path), "only": None, "progress": False},
        schedules=_schedules(cfg),
        tags=["winnow"],
        description=f"winnow config {Path(config_path).resolve()} -> {store.path}",
        entrypoint_type=EntrypointType.MODULE_PATH,
    ), cfg


def _ensure_process_pool(name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def _describe_schedules(cfg) -> str:
    if cfg.deploy is None or not cfg.deploy.schedules:
        return "no schedule (trigger it)"
    return ", ".join(f"cron '{s.cron}' {s.timezone}" if s.cron else f"every {s.interval_seconds:g} s" for s in cfg.deploy.schedules)


# ------------------------------------------------------------------------------------- trigger
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_path(params: dict, dotted: str, value: Any) -> None:
    """``config.sources.0.max_rows=100`` sets a nested key (list items by index; missing mappings are made)."""
    parts = dotted.split(".")
    node: Any = params
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "(parameters)"
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                index = int(part)
                node[index]  # noqa: B018 - bounds check
            except (ValueError, IndexError):
                raise WinnowError(f"--param {dotted}: {part!r} is not an index of {where} ({len(node)} items)") from None
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise WinnowError(f"--param {dotted}: {where} is {node!r}, not a mapping or list")


def merge_params(base: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Deployment parameters with ``k=v`` overrides (v parsed as JSON when it parses, else a string)."""
    params = json.loads(json.dumps(base))
    for a in assignments:
        key, sep, raw = a.partition("=")
        if not sep or not key:
            raise WinnowError(f"--param {a!r}: expected KEY=VALUE (KEY may be dotted: config.sources.0.max_rows=100)")
        _set_path(params, key.strip(), _parse_value(raw))
    return params


def full_name(name: str) -> str:
    return name if "/" in name else f"{FLOW_NAME}/{name}"


def server_states(flow_run_ids: list[str]) -> dict[str, str]:
    """Prefect state name of each flow run id known to the server (unknown ids are left out)."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = []
    for i in flow_run_ids:
        try:
            ids.append(UUID(str(i)))
        except ValueError:
            continue
    if not ids:
        return {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
    return {str(r.id): (r.state.name if r.state else "unknown") for r in runs}


def add_server_states(rows: list[dict]) -> list[dict]:
    """With PREFECT_API_URL set: add ``prefect_state`` (the server's view) next to each DuckDB run row."""
    if not api_url() or not rows:
        return rows
    try:
        states = server_states([r["prefect_flow_run_id"] for r in rows if r.get("prefect_flow_run_id")])
    except Exception as err:  # noqa: BLE001 - the listing from DuckDB stays useful without the server
        from flows.cli import err_console

        err_console.print(f"[yellow]warning:[/yellow] Prefect server not reachable, states not shown ({type(err).__name__})")
        return rows
    out = []
    for r in rows:
        r = dict(r)
        pid = r.get("prefect_flow_run_id")
        r["prefect_state"] = states.get(str(pid), "not on this server") if pid else None
        out.append(r)
    return out


def _winnow_run_for(db: str, flow_run_id: str) -> str | None:
    from storage.db import Store
    from storage.runs import list_runs

    store = Store(db)
    if not store.exists:
        return None
    for r in list_runs(store, limit=10_000):
        if str(r.get("prefect_flow_run_id")) == flow_run_id:
            return r["run_id"]
    return None


def trigger_run(name: str, assignments: list[str], wait: bool, timeout_s: float, progress: bool = True) -> dict[str, Any]:
    """Create a flow run of deployment ``name``; with ``wait`` poll it to a final state (spinner)."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from rich.console import Console

    name = full_name(name)
    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise WinnowError(f"no deployment {name!r} on {api_url()} (register it with `winnow deploy CONFIG`)") from None
    params = merge_params(dep.parameters or {}, assignments)
    fr = run_deployment(name, parameters=params, timeout=0, as_subflow=False)
    out: dict[str, Any] = {"deployment": name, "flow_run_id": str(fr.id), "flow_run_name": fr.name,
                           "state": fr.state.name if fr.state else "Scheduled", "db": params.get("db")}
    if wait:
        deadline = time.monotonic() + timeout_s
        spinner = Console(stderr=True).status(f"waiting for {fr.name}", spinner="dots") if progress else nullcontext()
        with get_client(sync_client=True) as client, spinner as status:
            while True:
                fr = client.read_flow_run(fr.id)
                state = fr.state.name if fr.state else "Scheduled"
                if status is not None:
                    status.update(f"flow run {fr.name}: {state}")
                if fr.state is not None and fr.state.type.value in TERMINAL_STATES:
                    break
                if time.monotonic() > deadline:
                    raise WinnowError(f"flow run {fr.id} still {state} after {timeout_s:g} s "
                                      "(is `winnow serve` or a worker running? raise --timeout)")
                time.sleep(1.0)
        out["state"] = fr.state.name
        out["final"] = True
        if params.get("db"):
            out["run_id"] = _winnow_run_for(params["db"], str(fr.id))
    return out


# ------------------------------------------------------------------------------------------ CLI
def register(app: typer.Typer) -> None:
    from flows.cli import DbOption, JsonOption, console, print_json

    @app.command()
    def deploy(
        configs: Optional[list[Path]] = typer.Argument(None, help="YAML run configs (default: the shipped demo)"),
        db: Optional[str] = DbOption,
        pool: Optional[str] = typer.Option(None, "--pool", help="process work pool (default: the config's deploy.work_pool; none = run by `winnow serve`)"),
    ) -> None:
        """Register configs as deployments on the Prefect server, with the schedules of their deploy: section."""
        require_server()
        from configs.base import builtin_config

        for path in configs or [builtin_config("demo")]:
            deployment, cfg = build_deployment(path, db)
            pool_name = pool or (cfg.deploy.work_pool if cfg.deploy else None)
            if pool_name:
                _ensure_process_pool(pool_name)
            dep_id = deployment.apply(work_pool_name=pool_name)
            runs_by = f"a worker: prefect worker start --pool {pool_name}" if pool_name else f"winnow serve {path}"
            console.print(f"deployed [bold]{FLOW_NAME}/{deployment.name}[/bold] ({dep_id}): {_describe_schedules(cfg)}; "
                          f"db {deployment.parameters['db']}; executed by {runs_by}")

    @app.command()
    def serve(
        configs: Optional[list[Path]] = typer.Argument(None, help="YAML run configs (default: the shipped demo)"),
        db: Optional[str] = DbOption,
        limit: Optional[int] = typer.Option(1, min=1, help="at most this many runs at once (DuckDB has one writer)"),
    ) -> None:
        """Register configs as deployments and execute their scheduled and triggered runs until stopped."""
        require_server()
        from prefect import serve as prefect_serve

        from configs.base import builtin_config

        deployments = []
        for path in configs or [builtin_config("demo")]:
            deployment, cfg = build_deployment(path, db)
            deployments.append(deployment)
            console.print(f"serving [bold]{FLOW_NAME}/{deployment.name}[/bold]: {_describe_schedules(cfg)}; "
                          f"db {deployment.parameters['db']}")
        console.print(f"UI: {api_url().rstrip('/').removesuffix('/api')}  (Ctrl-C stops serving and pauses the schedules)")
        prefect_serve(*deployments, limit=limit, print_starting_message=False)

    @app.command()
    def trigger(
        name: str = typer.Argument(..., help="deployment: NAME or pipeline/NAME (see `prefect deployment ls`)"),
        param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="override a parameter: KEY=VALUE, KEY may be dotted (config.sources.0.max_rows=100)"),
        wait: bool = typer.Option(False, "--wait", help="wait for the run to finish and report its final state"),
        timeout: float = typer.Option(3600.0, "--timeout", min=1, help="seconds to wait with --wait"),
        as_json: bool = JsonOption,
    ) -> None:
        """Start a run of a deployment on the Prefect server; print its state and run ids."""
        require_server()
        out = trigger_run(name, param or [], wait, timeout, progress=not as_json)
        if as_json:
            print_json(out)
        else:
            tail = f"  winnow run [bold]{out['run_id']}[/bold] in {out['db']}" if out.get("run_id") else ""
            console.print(f"{out['state']}  flow run {out['flow_run_id']} ({out['flow_run_name']}){tail}")
        if out.get("final") and out["state"] != "Completed":
            raise typer.Exit(1)

    @app.command()
    def report(
        run_id: str = typer.Argument(..., help="winnow run id (see `winnow runs`)"),
        db: Optional[str] = DbOption,
        out: Path = typer.Option(Path("reports"), "--out", help="folder for the HTML file"),
        as_json: bool = JsonOption,
    ) -> None:
        """Write a self-contained HTML report of a run (plots embedded) and print its path."""
        from flows.cli import open_store
        from flows.report import write_report

        result = write_report(open_store(db), run_id, out, progress=not as_json)
        if as_json:
            print_json({"run_id": run_id, "path": str(result.path), "sections": result.sections})
        else:
            console.print(f"report: [bold]{result.path}[/bold] ({', '.join(result.sections)})")


