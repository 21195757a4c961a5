"""Resume after a crash: SIGKILL a running `winnow run` mid-way, start it again, get the same tables.

The run is a real subprocess (own process group, killed with SIGKILL) against the session's Prefect
API; a small driver patches the staging function to record each call and to block at a chosen point,
so the kill lands at a known place. Sources staged before the kill come from the task cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import db_contents, write_yaml

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

# Run rows differ in time and Prefect id; the summary holds timings, the db path and per-invocation
# "new source" flags. Everything else must be equal.
VOLATILE = {"prefect_flow_run_id", "summary", "code_version"}  # the rerun is a new process: a commit in between is fine

DRIVER = textwrap.dedent('''
    import os, sys, time
    import flows._env
    import flows.ingest as ingest
    import storage.runs as runs
    from tasks.ingest import stage_source

    calls, block = os.environ["WINNOW_TEST_CALLS"], os.environ.get("WINNOW_TEST_BLOCK", "")

    def recorded(spec, staging_dir, *, progress=False):
        with open(calls, "a") as fh:
            fh.write(spec.name + "\\n")
        if block == "stage:" + spec.name:
            time.sleep(600)
        return stage_source(spec, staging_dir, progress=progress)

    finish = runs.finish_run  # the pipeline's run record (storage.runs.recorded_run)

    def blocking_finish(store, run_id, status, *args, **kwargs):
        if block == "finish" and status == "completed":
            with open(calls, "a") as fh:
                fh.write("finish\\n")
            time.sleep(600)
        return finish(store, run_id, status, *args, **kwargs)

    ingest.stage_source = recorded
    runs.finish_run = blocking_finish
    from cli.main import main
    sys.argv = ["winnow", "run", *sys.argv[1:]]
    main()
''')


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(3)
    for name in ("a", "c"):
        rows = ["x1,x2,y"] + [f"{rng.normal():.5f},{rng.normal():.5f},{i % 3}" for i in range(200)]
        (tmp / f"{name}.csv").write_text("\n".join(rows) + "\n")
    # sequential runner: sources are staged one after another, so when 'b' blocks, 'a' is cached
    return write_yaml(tmp / "run.yaml", textwrap.dedent("""
        name: resume
        task_runner: {kind: sequential}
        sources:
          - {name: a, kind: csv, path: a.csv, label: y}
          - {name: b, kind: sklearn_digits, max_rows: 400}
          - {name: c, kind: csv, path: c.csv, label: y}
    """))


@pytest.fixture(scope="module")
def clean(config, tmp_path_factory) -> tuple[str, dict]:
    """An uninterrupted run (in-process): its run id and table contents."""
    from flows.pipeline import run_config

    db = tmp_path_factory.mktemp("clean") / "winnow.duckdb"
    summary = run_config(config, str(db), None, progress=False)
    return summary["run_id"], db_contents(db, VOLATILE)


def _run_and_kill(config: Path, db: Path, calls: Path, block: str, marker: str) -> None:
    """Start `winnow run` in a subprocess (own process group), SIGKILL the group at the marker."""
    from prefect.settings import PREFECT_API_URL

    driver = calls.with_suffix(".py")
    driver.write_text(DRIVER)
    env = dict(os.environ, WINNOW_TEST_CALLS=str(calls), WINNOW_TEST_BLOCK=block,
               WINNOW_HEARTBEAT_S="1", WINNOW_LEASE_S="3",  # the killed attempt reads crashed 3 s after the kill
               PREFECT_API_URL=PREFECT_API_URL.value())  # the session's test server: no ephemeral start-up
    proc = subprocess.Popen([sys.executable, str(driver), str(config), "--db", str(db)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (calls.exists() and marker in calls.read_text().split()):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the run and anything it started
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("block, marker, restaged, history", [
    # killed while staging the 2nd source, before any database write: the killed process's staged files are
    # swept by the next run (storage/db.py), so 'a' is staged again after its cached result is found stale
    ("stage:b", "b", ["b", "c", "a"], ["completed"]),
    ("finish", "finish", [], ["completed", "crashed"]),  # killed after sources were registered, the attempt 'running'
])
def test_killed_run_resumes_and_ends_with_the_same_tables(tmp_path, config, clean, block, marker, restaged, history):
    from prefect.settings import PREFECT_API_URL

    db = tmp_path / "resumed" / "winnow.duckdb"
    calls = tmp_path / "killed.calls"
    _run_and_kill(config, db, calls, block, marker)
    assert "a" in calls.read_text().split()

    # the rerun: the same command in a fresh process, as after a crash (the cache key holds the compute
    # code's hash as the process loaded it), recording which sources it stages
    time.sleep(3.5)  # past the killed attempt's lease
    rerun_calls = tmp_path / "rerun.calls"
    env = dict(os.environ, WINNOW_TEST_CALLS=str(rerun_calls), WINNOW_TEST_BLOCK="", PREFECT_API_URL=PREFECT_API_URL.value())
    rerun = subprocess.run([sys.executable, str(calls.with_suffix(".py")), str(config), "--db", str(db), "--json"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = json.loads(rerun.stdout)
    clean_run_id, clean_tables = clean
    assert resumed["run_id"] == clean_run_id
    # work finished before the kill came from the cache; only the rest was read again
    assert (rerun_calls.read_text().split() if rerun_calls.exists() else []) == restaged

    got = db_contents(db, VOLATILE)
    # the results equal a clean run's; the history also keeps the killed attempt, recorded as crashed
    assert {t: r for t, r in got.items() if t != "run_attempts"} == {t: r for t, r in clean_tables.items() if t != "run_attempts"}
    assert len(got["runs"]) == 1 and "completed" in got["runs"][0]
    from storage.db import Store
    from storage.runs import list_runs

    assert [r["status"] for r in list_runs(Store(db))] == history
    assert len(got["sources"]) == 3 and len(got["examples"]) == 200 + 400 + 200
    # no orphan source files: exactly the registered ones under artifacts/sources
    registered = sorted(Path(r[-1]).name for r in got["sources"])
    on_disk = sorted(p.name for p in (db.parent / "winnow.artifacts" / "sources").iterdir())
    assert on_disk == registered


def test_a_source_file_edited_in_place_is_read_again_not_served_from_the_cache(tmp_path):
    from flows.pipeline import run_config

    data = tmp_path / "t.csv"
    data.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)))
    cfg = write_yaml(tmp_path / "run.yaml", "sources:\n  - {name: t, kind: csv, path: t.csv, label: y}\n")
    db = str(tmp_path / "w.duckdb")
    first = run_config(cfg, db, [], progress=False)
    data.write_text("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))  # same path, same config
    second = run_config(cfg, db, [], progress=False)
    assert [(s["version"], s["rows"]) for s in first["sources"]] == [(1, 30)]
    assert [(s["version"], s["rows"], s["new"]) for s in second["sources"]] == [(2, 40, True)]


def test_is_transient_retries_io_hiccups_only():
    import errno

    from flows.caching import is_transient
    from tasks.errors import StoreLockedError, WinnowError

    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError())
    assert is_transient(OSError(errno.EIO, "i/o error")) and is_transient(OSError(errno.ESTALE, "stale file handle"))
    for terminal in (FileNotFoundError(2, "x"), PermissionError(13, "x"), OSError(errno.ENOSPC, "full"),
                     WinnowError("bad input"), StoreLockedError("locked"), ValueError("bug"), KeyError("bug")):
        assert not is_transient(terminal), terminal


def test_heavy_task_retries_a_transient_error_but_not_a_terminal_one(tmp_path):
    import errno

    from prefect import flow

    from flows.caching import heavy_task

    attempts: dict[str, int] = {}

    @heavy_task(retries=2)
    def flaky(kind: str, token: str) -> str:
        attempts[kind] = attempts.get(kind, 0) + 1
        if kind == "transient" and attempts[kind] == 1:
            raise OSError(errno.EIO, "i/o error")
        if kind == "terminal":
            raise FileNotFoundError(2, "no such file", "x.csv")
        return kind

    @flow
    def run(kind: str, token: str) -> str:
        return flaky(kind, token)

    token = str(tmp_path)  # unique per test run: no cache hit from an earlier session
    assert run("transient", token) == "transient" and attempts["transient"] == 2
    with pytest.raises(FileNotFoundError):
        run("terminal", token)
    assert attempts["terminal"] == 1
    # the successful result is cached across flow runs (no run id in the key)
    assert run("transient", token) == "transient" and attempts["transient"] == 2
