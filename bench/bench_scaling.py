"""Benchmark: batched multi-start Chinchilla fit vs a Python loop of scipy L-BFGS-B calls.

Data: 240 synthetic Chinchilla-like points (Epoch's replication data is not available offline):
N log-uniform in [7e7, 1.6e10], D/N log-uniform in [5, 200], L = E + A/N^alpha + B/D^beta with
Epoch's estimates (E=1.817, A=482.0, B=2085.4, alpha=0.348, beta=0.366) and 2% log-normal noise.
Grid: Epoch's 4,500 starts. Objective: summed Huber (delta=1e-3) on log residuals, both sides.

Reported: wall and CPU seconds of (a) winnow's default fit (batched, raced), (b) the batched fit
with every start run to the end, (c) a loop of scipy L-BFGS-B calls (default tolerances, a plain
scalar numpy objective with analytic gradient) over the same starts, the ratios, and whether all
three reach the same loss. Writes bench/out/bench_scaling.json.

    .venv/bin/python bench/bench_scaling.py [--scipy-starts 4500] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from tasks.scaling.fit import fit_form
from tasks.scaling.forms import get_form

TRUTH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366}


def data(seed: int, n: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    form = get_form("chinchilla")
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n))
    D = N * np.exp(rng.uniform(np.log(5.0), np.log(200.0), n))
    return N, D, form.predict(form.from_natural(TRUTH), N, D) * np.exp(rng.normal(0.0, 0.02, n))


def scipy_loop(N: np.ndarray, D: np.ndarray, y: np.ndarray, starts: np.ndarray, delta: float = 1e-3) -> tuple[float, np.ndarray]:
    """The reference: one scipy L-BFGS-B call per start, scalar objective, analytic gradient."""
    ln, ld, ly = np.log(N), np.log(D), np.log(y)
    form = get_form("chinchilla")
    bounds = list(zip(form.lower, form.upper))

    def obj(t: np.ndarray) -> tuple[float, np.ndarray]:
        e, a, b, al, be = t
        terms = np.stack([np.full_like(ln, e), a - al * ln, b - be * ld])
        m = terms.max(0)
        ex = np.exp(terms - m)
        s = ex.sum(0)
        r = m + np.log(s) - ly
        w = ex / s
        psi = np.clip(r, -delta, delta)
        f = float(np.sum(psi * (r - 0.5 * psi)))
        g = np.array([psi @ w[0], psi @ w[1], psi @ w[2], -(psi * w[1]) @ ln, -(psi * w[2]) @ ld])
        return f, g

    best_f, best_x = np.inf, None
    # One BLAS thread: scipy 1.17's L-BFGS-B core otherwise wakes OpenBLAS threads on every call,
    # which cost ~2 ms per iteration on a busy 2-core machine (20x the objective itself).
    with threadpool_limits(1):
        for s in starts:
            res = minimize(obj, s, jac=True, method="L-BFGS-B", bounds=bounds)
            if res.fun < best_f:
                best_f, best_x = float(res.fun), res.x
    return best_f, best_x


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scipy-starts", type=int, default=4500, help="run scipy on an even subsample and scale its time")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bench_scaling.json")
    args = ap.parse_args()
    form = get_form("chinchilla")
    N, D, y = data(args.seed)
    grid = form.grid(N, D, y)
    fit_form(form, N[:20], y[:20], D[:20], starts=grid[:10])  # warm-up (imports, allocator)

    fast, w_fast, c_fast = timed(lambda: fit_form(form, N, y, D))
    full, w_full, c_full = timed(lambda: fit_form(form, N, y, D, race=None, stall_horizon=np.inf))
    step = max(1, grid.shape[0] // args.scipy_starts)
    sub = grid[::step]
    (ref_f, ref_x), w_sp, c_sp = timed(lambda: scipy_loop(N, D, y, sub))
    scale = grid.shape[0] / sub.shape[0]
    result = {
        "data": "240 synthetic Chinchilla-like points (Epoch's data not available offline)",
        "n_points": int(N.size),
        "n_starts": int(grid.shape[0]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]},
        "batched_default": {"wall_s": w_fast, "cpu_s": c_fast, "loss": fast.loss, "params": fast.params, "status": fast.status_counts},
        "batched_exhaustive": {"wall_s": w_full, "cpu_s": c_full, "loss": full.loss, "params": full.params},
        "scipy_loop": {
            "starts_run": int(sub.shape[0]), "wall_s_measured": w_sp, "cpu_s_measured": c_sp,
            "wall_s_4500": w_sp * scale, "cpu_s_4500": c_sp * scale, "loss": ref_f,
            "params": dict(zip(form.names, form.to_natural(ref_x).tolist())),
        },
        "speedup_cpu_default": c_sp * scale / c_fast,
        "speedup_cpu_exhaustive": c_sp * scale / c_full,
        "speedup_wall_default": w_sp * scale / w_fast,
        "same_optimum": bool(abs(fast.loss / ref_f - 1) < 1e-6 and abs(full.loss / ref_f - 1) < 1e-6),
        "loss_rel_diff_default_vs_scipy": fast.loss / ref_f - 1,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"4,500 starts x {N.size} points (load avg {result['machine']['load_avg_1m']:.1f} on {os.cpu_count()} CPUs)")
    print(f"  batched (default, raced): wall {w_fast:6.2f} s  cpu {c_fast:6.2f} s  loss {fast.loss:.10g}")
    print(f"  batched (every start)   : wall {w_full:6.2f} s  cpu {c_full:6.2f} s  loss {full.loss:.10g}")
    print(f"  scipy loop ({sub.shape[0]} starts{'' if scale == 1 else f', x{scale:.0f}'}): wall {w_sp * scale:6.2f} s  cpu {c_sp * scale:6.2f} s  loss {ref_f:.10g}")
    print(f"  speed-up (cpu): {result['speedup_cpu_default']:.1f}x default, {result['speedup_cpu_exhaustive']:.1f}x exhaustive; same optimum: {result['same_optimum']}")
    print(f"  params: {', '.join(f'{k}={v:.4g}' for k, v in fast.params.items())}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
