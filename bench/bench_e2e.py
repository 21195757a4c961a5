"""End-to-end demo pipeline: total wall time against the sum of its compute tasks.

The shipped ``demo`` config runs through :func:`flows.pipeline.pipeline_flow` in a fresh child process.
Before ``flows`` is imported, every public function (and public method, ``__init__``/``__call__``)
defined in the ``tasks`` package is wrapped in a timer, and so is every public function of the
``storage`` package. Only the outermost call on each thread is counted, so nested calls are not
counted twice. Then

* compute = time inside ``tasks.*`` (the pure computations: ingest parsing, embedding, scoring, OT, fits);
* storage = time inside ``storage.*`` (DuckDB transactions, Parquet side files) outside compute;
* orchestration = wall − compute − storage (Prefect flow/task runs, logging, result persistence, glue).

The overhead ratio is wall / compute (target <= 1.10, i.e. orchestration + DuckDB <= 10 % of compute).
Prefect's ephemeral server is started by a warm-up flow first (reported separately: a one-off per
process), every repeat writes a fresh database, and ``PREFECT_TASKS_REFRESH_CACHE=true`` makes every
repeat recompute instead of reading the persisted task cache.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pkgutil
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import Context, Row, Section, run_child, timings


class _Clock:
    """Per-package outermost-call timers (thread-local nesting depth)."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.total: dict[str, float] = defaultdict(float)
        self.by_fn: dict[str, float] = defaultdict(float)

    def wrap(self, fn: Any, kind: str, name: str) -> Any:
        clock = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            active = getattr(clock.local, "active", None)
            if active is not None:  # inside another timed call (compute or storage): not counted again
                return fn(*args, **kwargs)
            clock.local.active = kind
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                clock.local.active = None
                with clock.lock:
                    clock.total[kind] += dt
                    clock.by_fn[f"{kind}:{name}"] += dt

        timed.__wrapped_by_bench__ = True  # type: ignore[attr-defined]
        return timed

    def reset(self) -> None:
        self.total.clear()
        self.by_fn.clear()


def _instrument(package: str, kind: str, clock: _Clock) -> int:
    """Wrap public functions and methods defined in every module of ``package``; returns how many."""
    pkg = importlib.import_module(package)
    count = 0
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        try:
            mod = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - an optional module (e.g. text encoder deps) may not import
            continue
        for attr, obj in list(vars(mod).items()):
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj) and not attr.startswith("_"):
                setattr(mod, attr, clock.wrap(obj, kind, f"{mod.__name__}.{attr}"))
                count += 1
            elif inspect.isclass(obj) and not issubclass(obj, BaseException):
                for mname, meth in list(vars(obj).items()):
                    if inspect.isfunction(meth) and (not mname.startswith("_") or mname in ("__init__", "__call__")):
                        try:
                            setattr(obj, mname, clock.wrap(meth, kind, f"{mod.__name__}.{attr}.{mname}"))
                            count += 1
                        except (AttributeError, TypeError):
                            pass
    return count


def child_e2e(repeats: int, config: str = "demo") -> dict[str, Any]:
    """Child-process entry: instrument, warm Prefect up, run the demo ``repeats`` times."""
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="winnow-bench-prefect-"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    clock = _Clock()
    n_compute = _instrument("tasks", "compute", clock)
    n_storage = _instrument("storage", "storage", clock)

    from prefect import flow

    from configs.base import builtin_config, load_config
    from flows.pipeline import pipeline_flow

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    t0 = time.perf_counter()
    warmup()
    server_start = time.perf_counter() - t0
    cfg = load_config(builtin_config(config))
    runs = []
    workdir = Path(tempfile.mkdtemp(prefix="winnow-bench-e2e-"))
    for r in range(repeats):
        clock.reset()
        db = workdir / f"run{r}" / "winnow.duckdb"
        db.parent.mkdir(parents=True)
        t0 = time.perf_counter()
        summary = pipeline_flow(config=cfg, db=str(db), only=None, progress=False)
        wall = time.perf_counter() - t0
        top = sorted(clock.by_fn.items(), key=lambda kv: -kv[1])[:12]
        runs.append({"wall_s": wall, "compute_s": clock.total["compute"], "storage_s": clock.total["storage"],
                     "stages": {k: v.get("seconds") for k, v in summary.get("stages", {}).items()},
                     "top": [[k, round(v, 3)] for k, v in top]})
    return {"server_start_s": server_start, "runs": runs, "instrumented": {"tasks": n_compute, "storage": n_storage}}


def run(ctx: Context) -> Section:
    repeats = 1 if ctx.quick else min(ctx.repeats, 2)
    res = run_child("bench.bench_e2e:child_e2e", {"repeats": repeats}, timeout=3600)
    runs = res["runs"]
    wall = timings([r["wall_s"] for r in runs]).median
    compute = timings([r["compute_s"] for r in runs]).median
    storage = timings([r["storage_s"] for r in runs]).median
    orch = wall - compute - storage
    sec = Section("e2e", details={**res, "repeats": repeats})
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in runs[-1]["stages"].items() if v is not None) or "ingest only"
    ratio = wall / compute if compute > 0 else float("inf")
    sec.rows.append(Row("e2e", "demo pipeline wall vs sum of compute tasks", wall, compute, ratio, "<= 1.10", ratio <= 1.10,
                        note=f"DuckDB/storage {storage:.2f} s ({storage / compute:.0%} of compute), Prefect/orchestration "
                             f"{orch:.2f} s ({orch / compute:.0%}); stages: {stages}; Prefect ephemeral server start "
                             f"{res['server_start_s']:.1f} s (one-off per process, not counted); repeats={repeats}"))
    return sec
