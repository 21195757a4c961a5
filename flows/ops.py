"""Operations: Prefect server deployments with schedules, triggering runs, server states of runs.

Used by these commands (cli/ops.py; see docs/operations.md):

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
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from tasks.errors import WinnowError

FLOW_NAME = "pipeline"
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --------------------------------------------------------------------------------------- server
def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active profile, read without importing Prefect.

    Read-only commands use this to decide whether a server is worth asking at all (importing Prefect
    costs seconds of CPU)."""
    import os
    import tomllib

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    return (data.get("profiles", {}).get(active, {}) or {}).get("PREFECT_API_URL") or None


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
    out = []
    for i, s in enumerate(cfg.deploy.schedules):
        try:
            out.append(Cron(s.cron, timezone=s.timezone) if s.cron
                       else Interval(timedelta(seconds=s.interval_seconds), timezone=s.timezone))
        except ValueError as err:  # Prefect's own check of the cron string
            raise WinnowError(f"key 'deploy.schedules.{i}.cron': {str(err).splitlines()[0]}") from None
    return out


def deployment_name(cfg) -> str:
    """``deploy.name`` when the config has a deploy section, else the config's ``name``."""
    return cfg.deploy.name if cfg.deploy is not None else cfg.name


def build_deployment(config_path: Path, db: Optional[str]):
    """A RunnerDeployment of ``pipeline_flow`` for one config (parameters: config JSON + absolute db)."""
    from prefect.types.entrypoint import EntrypointType

    from configs.base import load_config
    from flows.pipeline import pipeline_flow
    from flows.stages import enabled_stages
    from storage.db import Store, resolve_db_path

    cfg = load_config(config_path)
    enabled_stages(cfg)
    store = Store(resolve_db_path(db, cfg.db))
    return pipeline_flow.to_deployment(
        name=deployment_name(cfg),
        parameters={"config": cfg.model_dump(mode="json"), "db": str(store.path), "only": None, "progress": True},
        schedules=_schedules(cfg),
        tags=["winnow"],
        description=f"winnow config {Path(config_path).resolve()} -> {store.path}",
        entrypoint_type=EntrypointType.MODULE_PATH,
    ), cfg


def ensure_process_pool(name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def describe_schedules(cfg) -> str:
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


def add_server_states(rows: list[dict]) -> tuple[list[dict], str | None]:
    """With a Prefect server configured: add ``prefect_state`` (the server's view) next to each DuckDB run
    row. Returns the rows and a warning when the server could not be asked."""
    if not rows or not configured_api_url():
        return rows, None
    try:
        states = server_states([r["prefect_flow_run_id"] for r in rows if r.get("prefect_flow_run_id")])
    except Exception as err:  # noqa: BLE001 - the listing from DuckDB stays useful without the server
        return rows, f"Prefect server not reachable, states not shown ({type(err).__name__})"
    out = []
    for r in rows:
        r = dict(r)
        pid = r.get("prefect_flow_run_id")
        r["prefect_state"] = states.get(str(pid), "not on this server") if pid else None
        out.append(r)
    return out, None


def _attempt_for(db: str, flow_run_id: str, lock_timeout_s: float = 2.0) -> dict | None:
    """The winnow attempt of a flow run (short lock wait by default: a wait loop must not stall on a busy file)."""
    from storage.db import Store
    from storage.runs import attempt_for_flow_run

    return attempt_for_flow_run(Store(db, lock_timeout_s=lock_timeout_s), flow_run_id)


def _record_crash(db: str, flow_run_id: str, attempt: dict) -> str:
    """The run's process stopped renewing its lease: record 'crashed' in DuckDB and on the server."""
    from prefect import get_client
    from prefect.states import Crashed

    from storage.db import Store
    from storage.runs import mark_crashed

    message = f"winnow run {attempt['run_id']} (attempt {attempt['attempt']}): {attempt['error']}"
    try:
        mark_crashed(Store(db))
    except WinnowError:
        pass  # the database is busy: the next writer records it; the server's state is what --wait reports
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
    return message


def trigger_run(name: str, assignments: list[str], wait: bool, timeout_s: float,
                on_state: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Create a flow run of deployment ``name``; with ``wait`` poll it to a final state, calling
    ``on_state`` with a short status line at each poll."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

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
        fr = wait_for_flow_run(fr.id, params.get("db"), timeout_s, on_state)
        out["state"] = fr.state.name
        out["message"] = fr.state.message
        out["final"] = True
        if params.get("db"):
            try:
                attempt = _attempt_for(params["db"], str(fr.id), lock_timeout_s=30.0)
            except WinnowError:  # the file is busy or unreadable: the state is still the answer
                attempt = None
            out["run_id"] = attempt["run_id"] if attempt else None
    return out


def wait_for_flow_run(flow_run_id: Any, db: str | None, timeout_s: float,
                      on_state: Callable[[str], None] | None = None, poll_s: float = 1.0, lease_check_s: float = 5.0) -> Any:
    """Poll a flow run to a final state. While it runs, its winnow attempt's lease is checked too: a run
    whose process died (SIGKILL, a lost machine) is recorded Crashed in DuckDB and on the server as soon as
    its lease expires, instead of staying Running until the timeout."""
    from prefect import get_client

    deadline = time.monotonic() + timeout_s
    next_check = 0.0
    with get_client(sync_client=True) as client:
        while True:
            fr = client.read_flow_run(flow_run_id)
            state = fr.state.name if fr.state else "Scheduled"
            if on_state is not None:
                on_state(f"flow run {fr.name}: {state}")
            if fr.state is not None and fr.state.type.value in TERMINAL_STATES:
                return fr
            if db and fr.state is not None and fr.state.type.value == "RUNNING" and time.monotonic() >= next_check:
                next_check = time.monotonic() + lease_check_s
                try:
                    attempt = _attempt_for(db, str(fr.id))
                except WinnowError:
                    attempt = None  # the file is busy or gone: the server's view decides
                if attempt is not None and attempt["status"] == "crashed":
                    _record_crash(db, str(fr.id), attempt)
                    continue
            if time.monotonic() > deadline:
                raise WinnowError(f"flow run {fr.id} still {state} after {timeout_s:g} s "
                                  "(is `winnow serve` or a worker running? raise --timeout)")
            time.sleep(poll_s)


HEARTBEAT_S = 30  # Prefect flow-run heartbeats of winnow's deployed runs (the zombie automation waits 3 of them)
HEARTBEAT_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
ZOMBIE_AUTOMATION = "winnow: crash winnow flow runs that stopped sending heartbeats"


def ensure_zombie_automation(missing_s: float = 3 * HEARTBEAT_S) -> None:
    """The server-side half of crash detection: an automation (created once, by name) that marks a flow run
    Crashed when its heartbeats stop for ``missing_s`` without a final state — a run whose process and
    executor died together (SIGKILL, a lost machine). Prefect's recipe for zombie flow runs, limited to
    runs tagged ``winnow`` (winnow's deployments, which send a heartbeat every :data:`HEARTBEAT_S`):
    other flow runs on the server keep Prefect's default heartbeat (180 s) and must not be touched."""
    from prefect import get_client
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    with get_client(sync_client=True) as client:
        if any(a.name == ZOMBIE_AUTOMATION for a in client.read_automations_by_name(ZOMBIE_AUTOMATION)):
            return
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="created by `winnow serve` (docs/operations.md, crash detection)",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.id": "prefect.tag.winnow", "prefect.resource.role": "tag"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=missing_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {missing_s:g} s: the process running it died")],
    ).create()


def serve_deployments(deployments: list, limit: int | None = 1) -> None:
    """Execute the deployments' scheduled and triggered runs in this process until stopped.

    Flow-run processes started from here send Prefect heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``,
    default 30 s) that the zombie automation watches; stale winnow attempts are recorded crashed first."""
    import os

    from prefect import serve as prefect_serve

    for key, value in HEARTBEAT_ENV.items():
        os.environ.setdefault(key, value)  # inherited by the flow-run processes serve starts
    prefect_serve(*deployments, limit=limit, print_starting_message=False)
