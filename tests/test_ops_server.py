"""Exit codes and crash detection against a real Prefect server, through the installed `winnow` command.

* a triggered run that fails: `winnow trigger NAME --wait` exits 1 with one line naming the state;
* `winnow serve` and its flow-run process SIGKILLed together mid-run: the attempt is recorded
  crashed in DuckDB, the flow run Crashed on the server, and `trigger --wait` returns 1, all within
  the lease (here shortened to 20 s by WINNOW_LEASE_S; the default is 60 s, so under 2 minutes).

One Prefect server for the module; each test starts its own `winnow serve` (its own process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

from helpers import write_yaml
from test_server import BIN, _free_port, _stop, _wait_healthy

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ops-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", PREFECT_RUNNER_POLL_FREQUENCY="1",
               PREFECT_LOGGING_LEVEL="INFO")
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api"
        _wait_healthy(url, proc, tmp / "server.log")
        env["PREFECT_API_URL"] = url
        yield {"tmp": tmp, "env": env, "url": url}
    finally:
        _stop(proc)
        log.close()


def _serve(server: dict, config: Path, db: Path, name: str, **extra_env: str) -> subprocess.Popen:
    log = open(server["tmp"] / f"serve-{name}.log", "w")
    return subprocess.Popen([str(BIN / "winnow"), "serve", str(config), "--db", str(db)], env=dict(server["env"], **extra_env),
                            cwd=server["tmp"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _serve_log(server: dict, name: str) -> str:
    return (server["tmp"] / f"serve-{name}.log").read_text()[-3000:]


def _wait_for_deployment(server: dict, name: str, proc: subprocess.Popen, log: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, _serve_log(server, log)
        r = httpx.get(f"{server['url']}/deployments/name/pipeline/{name}", timeout=5)
        if r.status_code == 200:
            return
        assert time.monotonic() < deadline, _serve_log(server, log)
        time.sleep(1)


def _csv(tmp: Path) -> None:
    rng = np.random.default_rng(2)
    rows = ["a,b,y"] + [f"{rng.normal():.5f},{rng.normal():.5f},{i % 2}" for i in range(60)]
    (tmp / "t.csv").write_text("\n".join(rows) + "\n")


def test_a_triggered_run_that_fails_exits_1_with_one_line(server):
    tmp = server["tmp"]
    _csv(tmp)
    cfg = write_yaml(tmp / "fails.yaml", "name: fails\nsources:\n  - {name: tab, kind: csv, path: t.csv, label: y}\n"
                     "deploy: {name: fails}\n")
    db = tmp / "fails.duckdb"
    serve = _serve(server, cfg, db, "fails")
    try:
        _wait_for_deployment(server, "fails", serve, "fails")
        ok = subprocess.run([str(BIN / "winnow"), "trigger", "fails", "--wait", "--timeout", "240"], env=server["env"],
                            capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, (ok.stdout, ok.stderr, _serve_log(server, "fails"))
        bad = subprocess.run([str(BIN / "winnow"), "trigger", "fails", "--wait", "--timeout", "240",
                              "--param", f"config.sources.0.path={tmp / 'gone.csv'}"], env=server["env"],
                             capture_output=True, text=True, timeout=300)
    finally:
        _stop(serve)
    assert bad.returncode == 1, (bad.stdout, bad.stderr, _serve_log(server, "fails"))
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "ended Failed" in lines[0] and "Traceback" not in bad.stderr
    assert "Failed" in bad.stdout
    # the refused run wrote nothing: one attempt (the good one) in the history
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT status FROM run_attempts").fetchall() == [("completed",)]
    finally:
        con.close()


def test_sigkilled_serve_and_flow_run_are_recorded_crashed_and_trigger_wait_returns_1(server):
    tmp = server["tmp"]
    cfg = write_yaml(tmp / "slow.yaml", textwrap.dedent("""
        name: slow
        sources:
          - {name: digits, kind: sklearn_digits}
        encoder: {kind: ssl_cnn, dim: 16, epochs: 400}
        deploy: {name: slow}
    """))
    db = tmp / "slow.duckdb"
    lease = dict(WINNOW_HEARTBEAT_S="2", WINNOW_LEASE_S="20")
    serve = _serve(server, cfg, db, "slow", **lease)
    waiter = None
    try:
        _wait_for_deployment(server, "slow", serve, "slow")
        waiter = subprocess.Popen([str(BIN / "winnow"), "trigger", "slow", "--wait", "--timeout", "600", "--json"],
                                  env=dict(server["env"], **lease), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        deadline = time.monotonic() + 240
        while True:  # the run is past its first write: its attempt row is 'running'
            assert serve.poll() is None and waiter.poll() is None, _serve_log(server, "slow")
            assert time.monotonic() < deadline, f"the run never started writing\n{_serve_log(server, 'slow')}"
            if (tmp / "slow.artifacts" / "leases").exists() and any((tmp / "slow.artifacts" / "leases").iterdir()):
                break
            time.sleep(0.5)
        time.sleep(3)
        os.killpg(serve.pid, signal.SIGKILL)  # `winnow serve` and the flow-run process it started, together
        serve.wait(timeout=30)
        killed_at = time.monotonic()
        out, err = waiter.communicate(timeout=150)
        waited = time.monotonic() - killed_at
    finally:
        _stop(serve)
        if waiter is not None and waiter.poll() is None:
            _stop(waiter)
    assert waiter.returncode == 1, (out, err)
    assert waited < 120, waited
    result = json.loads(out)
    assert result["state"] == "Crashed" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "Crashed" in err

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server["url"]}):
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(result["flow_run_id"]).state.name == "Crashed"
    con = duckdb.connect(str(db), read_only=True)
    try:
        status = con.execute("SELECT a.status, a.error, r.status FROM run_attempts a JOIN runs r USING (run_id)").fetchall()
    finally:
        con.close()
    assert [(s[0], s[2]) for s in status] == [("crashed", "crashed")] and "heartbeat" in status[0][1]


def test_without_anyone_waiting_the_server_marks_a_killed_run_crashed_from_missing_heartbeats(server):
    """The server-side half: `winnow serve` installed the zombie automation and its flow runs send
    heartbeats (every 30 s), so a run whose serve and flow process were SIGKILLed turns Crashed on the
    server with nobody polling it (90 s after its last heartbeat)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.ops import ZOMBIE_AUTOMATION

    tmp = server["tmp"]
    cfg = write_yaml(tmp / "alone.yaml", textwrap.dedent("""
        name: alone
        sources:
          - {name: digits, kind: sklearn_digits}
        encoder: {kind: ssl_cnn, dim: 16, epochs: 400}
        deploy: {name: alone}
    """))
    db = tmp / "alone.duckdb"
    serve = _serve(server, cfg, db, "alone")
    try:
        _wait_for_deployment(server, "alone", serve, "alone")
        started = subprocess.run([str(BIN / "winnow"), "trigger", "alone", "--json"], env=server["env"],
                                 capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        flow_run_id = json.loads(started.stdout)["flow_run_id"]
        leases = tmp / "alone.artifacts" / "leases"
        deadline = time.monotonic() + 240
        while not (leases.exists() and any(leases.iterdir())):
            assert serve.poll() is None and time.monotonic() < deadline, _serve_log(server, "alone")
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(timeout=30)
    finally:
        _stop(serve)
    killed_at = time.monotonic()
    with temporary_settings({PREFECT_API_URL: server["url"]}):
        with get_client(sync_client=True) as client:
            assert [a.name for a in client.read_automations_by_name(ZOMBIE_AUTOMATION)] == [ZOMBIE_AUTOMATION]
            while True:
                state = client.read_flow_run(flow_run_id).state
                if state.is_crashed():
                    break
                assert time.monotonic() - killed_at < 180, f"still {state.name} 180 s after the kill"
                time.sleep(2)
    assert "heartbeat" in (state.message or "")
