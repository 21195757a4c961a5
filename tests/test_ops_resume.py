"""Real resume: a pipeline SIGKILLed after most of its pilot trainings reruns only the unfinished ones.

The killed run is a real `winnow run` subprocess (own process group) whose training function also
writes one line per finished pilot chunk; it is killed once 80 % of the pilot chunks are done. The
rerun (same database, a fresh process as after a crash) counts the pilot chunks it trains itself: the
finished ones come from the cache next to the database (``<db>.artifacts/cache``), and the tables
equal an uninterrupted run's. (The cache key holds a hash of the tasks/ sources: editing them between
the kill and the rerun rightly retrains everything.)
Timing lives in bench/bench_resume.py (rerun time / cold time), not here.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import PILOT_COUNTING_DRIVER, VOLATILE, db_contents, write_yaml

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]

CONFIG = """
name: resume-pilots
task_runner: {kind: sequential}
sources:
  - {name: digits, kind: sklearn_digits, test_fraction: 0.3, seed: 0}
mixture:
  pools:
    - {name: low, source: digits, n: 200, class_proportions: {"0": 0.24, "1": 0.24, "2": 0.24, "3": 0.24}, seed: 1}
    - {name: high, source: digits, n: 200, class_proportions: {"6": 0.24, "7": 0.24, "8": 0.24, "9": 0.24}, seed: 2}
    - {name: mid, source: digits, n: 200, seed: 3}
  target: {source: digits, split: test, n_ot: 120, n_eval: 300}
  features: {image_size: 8, dim: 16}
  ot: {solver: sinkhorn, reg: 0.1, reveal: 100}
  grid_step: 0.25
  pilot_sizes: [40, 80]
  reps: 1
  probe: {rows_per_task: 80}
  predictor: {random_splits: 2}
  extrapolation: {method: power_law, target_n: 160, n_validate: 4, reps: 1}
  select: {steps: 6}
"""


IGNORE = set(VOLATILE) | {"setup_seconds", "total_seconds"}


def _pilot_chunks(log: Path) -> int:
    return log.read_text().count("pilot") if log.exists() else 0


def test_a_run_killed_after_80_percent_of_its_pilots_reruns_only_the_rest(tmp_path, monkeypatch):
    import flows.mixture
    from flows.pipeline import run_config
    from prefect.settings import PREFECT_API_URL
    from storage.db import Store
    from storage.runs import list_runs

    cfg = write_yaml(tmp_path / "mix.yaml", CONFIG)
    executed: list[str] = []
    real = flows.mixture.run_trials

    def counted(trials, *args, **kwargs):
        if trials and trials[0].stage == "pilot":
            executed.append("pilot")
        return real(trials, *args, **kwargs)

    monkeypatch.setattr(flows.mixture, "run_trials", counted)
    clean_db = tmp_path / "clean" / "w.duckdb"
    run_config(cfg, str(clean_db), None, progress=False)
    total = len(executed)
    assert total >= 20, total  # enough chunks for "80 %" to mean something

    db = tmp_path / "killed" / "w.duckdb"
    log = tmp_path / "chunks.log"
    driver = tmp_path / "driver.py"
    driver.write_text(PILOT_COUNTING_DRIVER)
    env = dict(os.environ, WINNOW_CHUNKS_LOG=str(log), PREFECT_API_URL=PREFECT_API_URL.value())
    proc = subprocess.Popen([sys.executable, str(driver), str(cfg), "--db", str(db)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    # sequential runner: when chunk k+1 reports, chunk k's result is persisted
    kill_after = math.ceil(0.8 * total) + 1
    try:
        deadline = time.monotonic() + 400
        while _pilot_chunks(log) < kill_after:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached 80 % of its pilots"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    finished = _pilot_chunks(log) - 1
    assert finished >= 0.8 * total

    # the rerun: the same command in a fresh process (as after a crash), counting the pilot chunks it trains
    rerun_log = tmp_path / "rerun.log"
    env["WINNOW_CHUNKS_LOG"] = str(rerun_log)
    rerun = subprocess.run([sys.executable, str(driver), str(cfg), "--db", str(db)], env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trained = _pilot_chunks(rerun_log)
    assert trained <= total - finished, (trained, total, finished)
    assert trained <= 0.2 * total + 1

    got, want = db_contents(db, IGNORE), db_contents(clean_db, IGNORE)
    assert {t: r for t, r in got.items() if t != "run_attempts"} == {t: r for t, r in want.items() if t != "run_attempts"}
    assert [r["status"] for r in list_runs(Store(db))][0] == "completed"
    assert any((db.parent / "w.artifacts" / "cache").iterdir())  # results live next to the database
