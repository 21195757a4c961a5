"""Shared benchmark machinery: medians over repeats, peak RSS in a child process, machine description.

Every figure the suite reports is a **ratio against a reference measured in the same run** (the
machines are shared and noisy), and every time is the median over ``repeats`` runs. A benchmark
module exposes ``run(ctx: Context) -> Section``; :mod:`bench.__main__` prints and saves them.

Peak memory is measured in a fresh child process (``python -m bench.common``) so that the parent's
allocations do not count: the child imports the target function, records its RSS after imports
(the interpreter + torch baseline), calls it and reports ``ru_maxrss`` (its own peak).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = Path(__file__).resolve().parent / "out"


class BenchError(RuntimeError):
    """A benchmark cannot run as asked (missing package, no CUDA device, failed child)."""


# ------------------------------------------------------------------------------------------ timing
@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeats`` runs; ``median`` is the figure every ratio uses."""

    median: float
    min: float
    max: float
    runs: list[float]
    cpu_median: float | None = None  # process CPU seconds (all threads), a load-independent view

    @property
    def repeats(self) -> int:
        return len(self.runs)


def timings(runs: list[float], cpu: list[float] | None = None) -> Timing:
    return Timing(median=statistics.median(runs), min=min(runs), max=max(runs), runs=[round(r, 6) for r in runs],
                  cpu_median=statistics.median(cpu) if cpu else None)


def time_call(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0, sync: Callable[[], None] | None = None) -> tuple[Timing, Any]:
    """Run ``fn`` ``warmup`` + ``repeats`` times; returns (timing of the repeats, last result).

    ``sync`` is called before each clock read (``torch.cuda.synchronize`` on a GPU).
    """
    result = None
    for _ in range(warmup):
        result = fn()
    runs, cpu = [], []
    for _ in range(repeats):
        if sync:
            sync()
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        if sync:
            sync()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return timings(runs, cpu), result


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 3, warmup: int = 0,
                     sync: Callable[[], None] | None = None) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Time several functions in round-robin order (a, b, c, a, b, c, ...), so that a change in the
    machine's load hits every contender alike; returns ({name: Timing}, {name: last result})."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    last: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            last[name] = fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync:
                sync()
            t0, c0 = time.perf_counter(), time.process_time()
            last[name] = fn()
            if sync:
                sync()
            runs[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: timings(r, cpu[name]) for name, r in runs.items()}, last


# ------------------------------------------------------------------------------------------ results
@dataclass
class Row:
    """One line of the summary table.

    value / reference are in ``unit``; ratio = value / reference unless given (for "x faster"
    rows the ratio is reference / value: say so in ``ratio_label``). ``ok`` is None when the row has
    no target (informational).
    """

    bench: str
    what: str
    value: float | None
    reference: float | None
    ratio: float | None
    target: str
    ok: bool | None
    unit: str = "s"
    ratio_label: str = "ours/ref"
    note: str = ""


@dataclass
class Section:
    """What one benchmark module returns: table rows, curves (x/y series) and free-form details."""

    name: str
    rows: list[Row] = field(default_factory=list)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows": [asdict(r) for r in self.rows], "curves": self.curves, "details": self.details}


@dataclass(frozen=True)
class Context:
    """Run settings handed to every benchmark. ``quick`` = smoke sizes; ``repeats`` for medians."""

    quick: bool
    device: str
    repeats: int
    out_dir: Path
    overrides: dict[str, str] = field(default_factory=dict)

    def sizes(self, bench: str, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``table[quick|full]`` with ``--set bench.key=value`` overrides applied (value parsed as JSON)."""
        out = dict(table[self.scale])
        for key, raw in self.overrides.items():
            name, _, field_ = key.partition(".")
            if name != bench:
                continue
            if field_ not in out:
                raise BenchError(f"--set {key}: {bench} has no size {field_!r} (has: {', '.join(out)})")
            out[field_] = json.loads(raw)
        return out

    @property
    def scale(self) -> str:
        return "quick" if self.quick else "full"


# ------------------------------------------------------------------------------------------ device
def resolve_device(name: str) -> str:
    """'cpu' or 'cuda'; asking for cuda without a device torch can see is an error, never a fallback."""
    if name not in ("cpu", "cuda"):
        raise BenchError(f"--device {name!r} must be 'cpu' or 'cuda'")
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchError(
                "--device cuda was asked for but torch sees no CUDA device "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                "install a CUDA build of torch on a GPU machine, or run `make bench` for the CPU suite"
            )
    return name


def require_device_arg(fn: Callable[..., Any], device: str) -> dict[str, Any]:
    """``{"device": device}`` when ``fn`` accepts one; on cuda a function without it is an error.

    The benchmark must measure the device it was asked for: silently timing the CPU path would
    print a wrong table.
    """
    if "device" in inspect.signature(fn).parameters:
        return {"device": device}
    if device != "cpu":
        raise BenchError(
            f"{fn.__module__}.{fn.__qualname__} has no `device` argument, so it cannot run on {device}; "
            "the benchmark refuses to time the CPU path instead"
        )
    return {}


def sync_for(device: str) -> Callable[[], None] | None:
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return None


# ------------------------------------------------------------------------------------------ memory
def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_child(target: str, kwargs: dict[str, Any], *, timeout: float = 3600.0) -> dict[str, Any]:
    """Call ``target`` ("module:function", returning a JSON-able dict) in a fresh interpreter.

    The returned dict gains ``peak_rss_bytes`` (the child's ru_maxrss) and ``baseline_rss_bytes``
    (its RSS after importing the target's module, before the call).
    """
    cmd = [sys.executable, "-m", "bench.common", target]
    proc = subprocess.run(cmd, input=json.dumps(kwargs), capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        raise BenchError(f"child {target} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if not lines:
        raise BenchError(f"child {target} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("BENCH_RESULT "):])


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the runner dies, so no orphan keeps the CPUs busy."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main() -> None:
    target = sys.argv[1]
    kwargs = json.loads(sys.stdin.read() or "{}")
    mod_name, fn_name = target.split(":")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    baseline = rss_bytes()
    out = fn(**kwargs)
    out = dict(out)
    out["baseline_rss_bytes"] = baseline
    out["peak_rss_bytes"] = peak_rss_bytes()
    print("BENCH_RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------ machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(mod: str) -> str | None:
    try:
        m = importlib.import_module(mod)
    except ImportError:
        return None
    return str(getattr(m, "__version__", "?"))


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """nproc, CPU model, memory, library versions, thread settings, GPU (when asked for)."""
    import torch

    mem = None
    try:
        import psutil

        mem = psutil.virtual_memory().total
    except ImportError:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    desc: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "versions": {m: _version(m) for m in ("numpy", "torch", "faiss", "sklearn", "scipy", "ot", "duckdb",
                                                 "pyarrow", "prefect", "psutil")},
        "device": device,
    }
    if device == "cuda":
        desc["gpu"] = torch.cuda.get_device_name(0)
    return desc


def fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


if __name__ == "__main__":
    _child_main()
