"""Server mode against a real Prefect server on 127.0.0.1: deploy, serve, trigger from the CLI, schedules.

One server (SQLite, analytics off, PREFECT_HOME in a temp dir, a random free port) and one
`winnow serve` process are started for the module, each in its own process group, and stopped at the
end (SIGTERM, then SIGKILL after a timeout). The scheduler loops are shortened so a 20 s interval
schedule fires within the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

# The tests on a real server take ~170 s on 2 busy cores (server start-up 30-40 s, two flow runs in
# subprocesses): over the default suite's budget, hence also slow. Run them with `pytest -m server`.
on_a_real_server = [pytest.mark.server, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it if still there after ``grace_s``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # also whatever the group left behind (flow-run children)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 150) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """A Prefect server plus `winnow serve` of two configs (one triggered by hand, one on a schedule)."""
    tmp = tmp_path_factory.mktemp("server")
    rng = np.random.default_rng(1)
    rows = ["a,b,y"] + [f"{rng.normal():.5f},{rng.normal():.5f},{i % 2}" for i in range(100)]
    (tmp / "t.csv").write_text("\n".join(rows) + "\n")
    sources = textwrap.dedent("""
        sources:
          - {name: tab, kind: csv, path: t.csv, label: y}
          - {name: digits, kind: sklearn_digits, max_rows: 300}
    """)
    manual = write_yaml(tmp / "manual.yaml", "name: manual\n" + sources + "deploy: {name: by-hand}\n")
    sched = write_yaml(tmp / "sched.yaml", "name: sched\n" + sources
                       + "deploy:\n  name: every-20s\n  schedules:\n    - {interval_seconds: 20}\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO",
    )
    procs: list[subprocess.Popen] = []
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("server", "serve")}
    try:
        procs.append(subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                      env=env, stdout=logs["server"], stderr=subprocess.STDOUT, start_new_session=True))
        _wait_healthy(url, procs[0], tmp / "server.log")
        env["PREFECT_API_URL"] = url
        procs.append(subprocess.Popen(
            [str(BIN / "winnow"), "serve", str(manual), str(sched), "--db", str(tmp / "served.duckdb"), "--limit", "2"],
            env=env, cwd=tmp, stdout=logs["serve"], stderr=subprocess.STDOUT, start_new_session=True))
        yield {"url": url, "tmp": tmp, "manual": manual, "db": tmp / "served.duckdb", "serve": procs[1]}
    finally:
        for p in reversed(procs):  # serve (and its flow runs) before the server
            _stop(p)
        for f in logs.values():
            f.close()


@pytest.fixture
def on_server(server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server["url"]}):
        yield server


def _serve_log(server: dict) -> str:
    return (server["tmp"] / "serve.log").read_text()[-4000:]


@on_a_real_server[0]
@on_a_real_server[1]
def test_deploy_then_trigger_from_the_cli_runs_on_the_server_and_writes_duckdb(winnow, on_server):
    server = on_server
    db = server["db"]  # the database `winnow serve` was started with (serve re-registers its deployments)
    code, out, err = winnow("deploy", server["manual"], "--db", db)
    assert code == 0, err
    assert "pipeline/by-hand" in out and "no schedule" in out

    code, out, err = winnow("trigger", "by-hand", "--wait", "--timeout", "240", "--json",
                            "--param", "config.sources.1.max_rows=200")
    assert code == 0, (out, err, _serve_log(server))
    result = json.loads(out)
    assert result["state"] == "Completed" and result["deployment"] == "pipeline/by-hand"
    assert result["db"] == str(db) and result["run_id"].startswith("pipeline-")

    code, out, err = winnow("runs", "--db", db, "--json")
    mine = [r for r in json.loads(out) if r["run_id"] == result["run_id"]]
    assert [(r["status"], r["prefect_flow_run_id"], r["prefect_state"]) for r in mine] == [
        ("completed", result["flow_run_id"], "Completed")]
    code, out, _ = winnow("query", "select s.name, count(*) as n from run_sources r join examples e using (source_id) "
                          f"join sources s using (source_id) where r.run_id = '{result['run_id']}' group by all order by 1",
                          "--db", db, "--json")
    assert json.loads(out) == [{"name": "digits", "n": 200}, {"name": "tab", "n": 100}]  # --param took effect


@on_a_real_server[0]
@on_a_real_server[1]
def test_interval_schedule_fires_and_its_run_lands_in_duckdb(on_server):
    from prefect import get_client

    from storage.db import Store
    from storage.runs import list_runs

    server = on_server
    store = Store(server["db"])
    deadline = time.monotonic() + 180
    done: list[dict] = []
    while not done:
        assert server["serve"].poll() is None, _serve_log(server)
        assert time.monotonic() < deadline, f"no scheduled run completed in time\n{_serve_log(server)}"
        time.sleep(2)
        if store.exists:
            done = [r for r in list_runs(store) if r["status"] == "completed" and r["name"] == "sched"]
    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(done[0]["prefect_flow_run_id"])
        dep = client.read_deployment(fr.deployment_id)
    assert dep.name == "every-20s"
    assert (fr.idempotency_key or "").startswith("scheduled ")  # created by the scheduler, not by hand
    assert fr.state.is_completed()


def test_server_commands_without_a_reachable_server_fail_with_one_line(winnow, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code, _, err = winnow("trigger", "nightly")
    assert code == 2 and "no Prefect server configured" in err and "PREFECT_API_URL" in err
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{_free_port()}/api"}):
        code, _, err = winnow("deploy", "--db", tmp_path / "w.duckdb")
    assert code == 2 and "is not reachable" in err and "Traceback" not in err
    assert not (tmp_path / "w.duckdb").exists()


def test_trigger_params_override_nested_config_keys():
    from flows.ops import merge_params
    from tasks.errors import WinnowError

    base = {"config": {"name": "n", "sources": [{"name": "a", "max_rows": None}]}, "db": "/x.duckdb", "only": None}
    out = merge_params(base, ["config.sources.0.max_rows=500", "only=[\"prune\"]", "config.name=nightly run",
                              "config.prune.fractions=[0.5, 0.1]"])
    assert out["config"]["sources"][0]["max_rows"] == 500 and out["only"] == ["prune"]
    assert out["config"]["name"] == "nightly run" and out["config"]["prune"] == {"fractions": [0.5, 0.1]}
    assert base["config"]["sources"][0]["max_rows"] is None  # the deployment's own parameters are untouched
    for bad, message in (("novalue", "expected KEY=VALUE"), ("config.sources.3.name=x", "not an index"),
                         ("config.name.x=1", "not a mapping or list")):
        with pytest.raises(WinnowError, match=message):
            merge_params(base, [bad])
