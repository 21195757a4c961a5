"""Resume after a crash: wall time of a rerun of a mixture pipeline killed after >= 80 % of its pilot
chunks, as a fraction of a cold run of the same config (issue 15: target <= 40 %), and whether the
rerun's tables equal the cold run's.

Every run is a `winnow run` subprocess (process start, Prefect's temporary server, ingest, stages),
so the ratio is what a user sees. The killed run uses a small driver that writes a line per finished
pilot chunk and is SIGKILLed (whole process group) once 80 % of the cold run's pilot chunks are done.

    python -m bench.bench_resume [--pilot-sizes 1000,2000,4000] [--reps 3]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import PILOT_COUNTING_DRIVER, VOLATILE, db_contents  # noqa: E402 - the tests' helpers

CONFIG = """
name: bench-resume
task_runner: {{kind: sequential}}
sources:
  - {{name: mnist, kind: mnist}}
mixture:
  pools:
    - {{name: low, source: mnist, n: {pool}, class_proportions: {{"0": 0.24, "1": 0.24, "2": 0.24, "3": 0.24}}, seed: 1}}
    - {{name: high, source: mnist, n: {pool}, class_proportions: {{"6": 0.24, "7": 0.24, "8": 0.24, "9": 0.24}}, seed: 2}}
    - {{name: mid, source: mnist, n: {pool}, seed: 3}}
  target: {{source: mnist, split: test, n_ot: 500, n_eval: 2000}}
  features: {{image_size: 16, dim: 64}}
  ot: {{solver: sinkhorn, reg: 0.1, reveal: 500}}
  grid_step: 0.2
  pilot_sizes: [{pilots}]
  reps: {reps}
  probe: {{rows_per_task: {rows_per_task}}}
  extrapolation: {{method: power_law, target_n: {target}, n_validate: 1, reps: 1}}
  select: {{steps: 6}}
"""



def _run(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def _count(log: Path) -> int:
    return log.read_text().count("pilot") if log.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pilot-sizes", default="500,1000,2000")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rows-per-task", type=int, default=4000)
    ap.add_argument("--target", type=int, default=None, help="extrapolation target_n (default 2x the largest pilot)")
    args = ap.parse_args()
    pilots = [int(x) for x in args.pilot_sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="winnow-bench-resume-"))
    cfg = tmp / "mix.yaml"
    cfg.write_text(CONFIG.format(pool=max(pilots), pilots=", ".join(map(str, pilots)), reps=args.reps,
                                 rows_per_task=args.rows_per_task, target=args.target or 2 * max(pilots)))
    driver = tmp / "driver.py"
    driver.write_text(PILOT_COUNTING_DRIVER)
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "WINNOW_DB")}

    # cold: fresh PREFECT_HOME and database, counting pilot chunks
    cold_log = tmp / "cold.log"
    env = dict(base, PREFECT_HOME=str(tmp / "home-cold"), WINNOW_CHUNKS_LOG=str(cold_log))
    cold_s = _run([sys.executable, str(driver), str(cfg), "--db", str(tmp / "cold" / "w.duckdb"), "--json"], env)
    total = _count(cold_log)

    # killed after >= 80 % of the pilot chunks, then rerun with the plain command
    kill_log = tmp / "killed.log"
    env = dict(base, PREFECT_HOME=str(tmp / "home-resume"), WINNOW_CHUNKS_LOG=str(kill_log))
    db = tmp / "resumed" / "w.duckdb"
    proc = subprocess.Popen([sys.executable, str(driver), str(cfg), "--db", str(db), "--json"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    kill_after = math.ceil(0.8 * total) + 1
    while _count(kill_log) < kill_after and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _count(kill_log) - 1
    rerun_log = tmp / "rerun.log"
    env["WINNOW_CHUNKS_LOG"] = str(rerun_log)
    rerun_s = _run([sys.executable, str(driver), str(cfg), "--db", str(db), "--json"], env)


    ignore = set(VOLATILE) | {"setup_seconds", "total_seconds"}
    a = {t: r for t, r in db_contents(tmp / "cold" / "w.duckdb", ignore).items() if t != "run_attempts"}
    b = {t: r for t, r in db_contents(db, ignore).items() if t != "run_attempts"}
    print(f"config: mnist pools {max(pilots)}, pilots {pilots} x {args.reps} reps, grid 0.2, {total} pilot chunks "
          f"(rows_per_task {args.rows_per_task}), target_n {args.target or 2 * max(pilots)}, n_validate 1, sequential runner")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"cold run            {cold_s:7.1f} s")
    print(f"killed after        {done}/{total} pilot chunks ({100 * done / total:.0f} %)")
    print(f"rerun after kill    {rerun_s:7.1f} s   trained {_count(rerun_log)} pilot chunks")
    print(f"rerun / cold        {rerun_s / cold_s:7.2f}   (target <= 0.40)")
    print(f"identical tables    {a == b}")


if __name__ == "__main__":
    main()
