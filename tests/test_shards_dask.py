"""The sharded flow on a real ``dask scheduler`` + 2 ``dask worker`` processes (loopback).

The scheduler's task stream must show the shard tasks (embedding shards, k-means passes, scoring,
SemDeDup groups) running on both workers, and the tables must equal a threads-runner run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

pytest.importorskip("prefect_dask")
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distributed.cli." + args[0], *args[1:]], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _tables(db: Path, run_id: str) -> dict:
    from storage.db import Store
    from storage.shards import load_sharded_run

    return {t: [{k: v for k, v in r.items() if k not in ("created_at", "timings")} for r in rs]
            for t, rs in load_sharded_run(Store(db), run_id).items()}


def test_shard_tasks_run_on_two_dask_workers_and_give_the_threads_tables(tmp_path):
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    from configs.sharded import ShardedConfig
    from flows.sharded import run_sharded

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [_start(["dask_scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env,
                    tmp_path / "scheduler.log")]
    try:
        for name in ("w1", "w2"):
            procs.append(_start(["dask_worker", address, "--nthreads", "1", "--nworkers", "1", "--name", name,
                                 "--memory-limit", "2GiB", "--no-dashboard"], env, tmp_path / f"{name}.log"))
        client = Client(address, timeout=120)
        client.wait_for_workers(2, timeout=120)
        client.get_task_stream()  # registers the scheduler's task-stream plugin before the run

        base = dict(source={"kind": "synthetic_embeddings", "n": 60_000, "d": 16, "clusters": 12, "seed": 2},
                    shard_rows=16_384, k=10, semdedup_eps=[0.02], semdedup_groups=4, fraction=0.3,
                    balance="proportional")
        dask_cfg = ShardedConfig(**base, task_runner={"kind": "dask", "address": address})
        t0 = time.time()
        dask_run = run_sharded(dask_cfg, tmp_path / "dask" / "w.duckdb")
        stream = client.get_task_stream(start=t0)
        client.close()

        threads_run = run_sharded(ShardedConfig(**base), tmp_path / "threads" / "w.duckdb")
    finally:
        _stop(procs)

    by_task = Counter()
    workers = {name: set() for name in ("embed-shard", "kmeans-pass", "score-shard", "semdedup-group")}
    for rec in stream:
        for name in workers:
            if name.replace("-", "_") in rec["key"] or name in rec["key"]:
                by_task[name] += 1
                workers[name].add(rec["worker"])
    n_shards = 4
    assert by_task["embed-shard"] == n_shards
    assert by_task["kmeans-pass"] == n_shards * dask_run["n_iter"]
    assert by_task["score-shard"] == n_shards
    assert by_task["semdedup-group"] == 4
    assert len(workers["kmeans-pass"]) == 2  # both workers took k-means passes

    assert dask_run["run_id"] == threads_run["run_id"]
    on_dask = _tables(tmp_path / "dask" / "w.duckdb", dask_run["run_id"])
    on_threads = _tables(tmp_path / "threads" / "w.duckdb", threads_run["run_id"])
    # the mean cosine is a float sum over shards: equal up to BLAS rounding (1 vs 2 BLAS threads)
    obj = [t["sharded_runs"][0].pop("objective") for t in (on_dask, on_threads)]
    assert obj[0] == pytest.approx(obj[1], rel=1e-6)
    for table in on_threads:
        assert on_dask[table] == on_threads[table], table
