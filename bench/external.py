"""Adapters for the benchmarks other stages own (bench/bench_ot_sweep.py, bench/bench_scaling.py).

A stage's benchmark module may expose ``run(ctx: bench.common.Context) -> bench.common.Section``;
then it is called directly. Otherwise the suite measures the table's rows itself through the stage's
public API (:func:`ot_sweep_fallback`), so ``python -m bench`` always prints every row.
"""

from __future__ import annotations

import importlib
import inspect
import time
import warnings
from types import ModuleType

import numpy as np

from bench.common import BenchError, Context, Row, Section, require_device_arg, time_call, timings


def load_module(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"bench.{module}")
    except ModuleNotFoundError as err:
        if err.name != f"bench.{module}":
            raise
        return None


def has_section_run(mod: ModuleType | None) -> bool:
    if mod is None or not hasattr(mod, "run"):
        return False
    params = list(inspect.signature(mod.run).parameters)
    return len(params) >= 1 and params[0] == "ctx"


# ------------------------------------------------------------------------------------ OT sweep
OT_SIZES = {
    "full": dict(per_source=(1900, 2000, 2100), m=2000, d=64, classes=10, resample_n=1500, curve=[1000, 2000, 5000, 10000]),
    "quick": dict(per_source=(500, 600, 700), m=600, d=64, classes=10, resample_n=500, curve=[600, 1200]),
}


def ot_problem_data(per_source: tuple[int, ...], m: int, d: int, classes: int, seed: int = 0):
    """Three labelled sources with Projektor-style skewed class proportions and a shifted target."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, d)) * 1.5
    props = [np.r_[np.full(4, 0.2425), np.full(6, 0.03 / 6)],            # S1: classes 0-3
             np.r_[np.full(4, 0.04 / 7), np.full(3, 0.32), np.full(3, 0.04 / 7)],  # S2: classes 4-6
             np.r_[np.full(7, 0.01 / 7), np.full(3, 0.33)]]                      # S3: classes 7-9
    props = [p / p.sum() for p in props]

    def draw(n: int, p: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(classes, size=n, p=p)
        X = means[y] + rng.standard_normal((n, d)) + shift
        return X.astype(np.float64), y.astype(np.int64)

    sources = [draw(n, props[i % 3], 0.1 * i) for i, n in enumerate(per_source)]
    target = draw(m, np.full(classes, 1.0 / classes), 0.05)
    return sources, target


def read_bandwidth_gbs(nbytes: int = 512 * 2**20) -> float:
    """Streaming read bandwidth (GB/s) of this machine: best of 5 sums over a float32 buffer."""
    import torch

    buf = torch.ones(nbytes // 4, dtype=torch.float32)
    best = min(time_call(lambda: float(buf.sum()), repeats=5)[0].runs)
    return nbytes / best / 1e9


def real_ot_data(mod: ModuleType, per_source: int, m: int):
    """The mixture stage's benchmark data (bench_ot_sweep: MNIST pools skewed to classes 0-3 / 4-6 and
    sklearn digits, target MNIST test, PCA-64), revealing ``per_source`` rows per pool and ``m`` target rows."""
    from configs.mixture import MixtureConfig
    from tasks.mixture.pools import prepare_mixture_data, reveal

    cfg = MixtureConfig.model_validate(dict(
        pools=[dict(name="s1", source="mnist", n=4000, class_proportions={"0": .2425, "1": .2425, "2": .2425, "3": .2425}, seed=1),
               dict(name="s2", source="mnist", n=4000, class_proportions={"4": .32, "5": .32, "6": .32}, seed=2),
               dict(name="s3", source="digits")],
        target=dict(source="mnist", split="test", n_ot=m, n_eval=1000)))
    data = prepare_mixture_data(mod._sources(), cfg)
    return reveal(data, per_source, 0), (data.target_ot_X, data.target_ot_y)


def ot_sweep_fallback(ctx: Context, mod: ModuleType | None = None) -> Section:
    from configs.mixture import OTConfig
    from tasks.mixture.resample import resample_sweep
    from tasks.mixture.simplex import simplex_grid
    from tasks.mixture.weighted import build_union_problem, weighted_sweep

    dev_kw = require_device_arg(weighted_sweep, ctx.device)
    s = ctx.sizes("ot_sweep", OT_SIZES)
    if mod is not None and hasattr(mod, "_sources"):
        sources, target = real_ot_data(mod, max(s["per_source"]), s["m"])
        data_desc = "MNIST pools (0-3, 4-6) + sklearn digits vs MNIST test, PCA-64 (bench_ot_sweep's data)"
    else:
        sources, target = ot_problem_data(s["per_source"], s["m"], s["d"], s["classes"])
        data_desc = "synthetic Gaussian classes, skewed sources"
    grid = simplex_grid(3, 0.1)
    cfg = OTConfig()
    kw = dict(solver=cfg.solver, reg=cfg.reg, tol=cfg.tol, **dev_kw)
    if "threads" in inspect.signature(weighted_sweep).parameters:
        kw["threads"] = None  # every core, like the references (BLAS / POT)
    sec = Section("ot_sweep", details={"sizes": s, "grid": int(len(grid)), "data": data_desc, "settings": kw,
                                       "measured_by": "bench/external.py through tasks.mixture's public API"})

    def build():
        return build_union_problem(sources, target, label_method="gaussian")

    cpu: dict[str, list[float]] = {"ours": [], "exact": [], "resample": []}

    def ours():
        t0, c0 = time.perf_counter(), time.process_time()
        pr = build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sw = weighted_sweep(pr, grid, **kw)
        cpu["ours"].append(time.process_time() - c0)
        return sw, time.perf_counter() - t0

    def exact():
        t0, c0 = time.perf_counter(), time.process_time()
        pr = build()
        sw = weighted_sweep(pr, grid, solver="exact")
        cpu["exact"].append(time.process_time() - c0)
        return sw, time.perf_counter() - t0

    scale = build().scale

    def resample():
        t0, c0 = time.perf_counter(), time.process_time()
        sw = resample_sweep(sources, target, grid, s["resample_n"], scale=scale)
        cpu["resample"].append(time.process_time() - c0)
        return sw, time.perf_counter() - t0

    # one interleaved round of all three (the references are slow), then more repeats of ours
    (sw_o, t_o1), (sw_a, t_a), (sw_b, t_b) = ours(), exact(), resample()
    runs_o = [t_o1] + [ours()[1] for _ in range(max(ctx.repeats - 1, 0))]
    t_o = timings(runs_o).median
    cpu_o, cpu_a, cpu_b = float(np.median(cpu["ours"])), cpu["exact"][0], cpu["resample"][0]
    rel = np.abs(sw_o.values - sw_a.values) / np.abs(sw_a.values)

    n_u, m = int(sum(len(X) for X, _ in sources)), int(len(target[0]))
    # batched: every mixture shares the batch's iterations (one kernel pass serves them all)
    iters = int(sw_o.n_iter.max()) if sw_o.mode.startswith("batched") else int(sw_o.n_iter.sum())
    bw = read_bandwidth_gbs()
    kernel_bytes = n_u * m * 4
    floor = iters * 2 * kernel_bytes / (bw * 1e9)
    solve_s = float(sw_o.seconds.sum())
    label = f"{len(grid)} mixtures, {n_u} revealed vs {m}, {target[0].shape[1]}-d"
    sec.rows.append(Row("ot_sweep", f"weighted Sinkhorn sweep vs exact emd per mixture ({label})", t_o, t_a, t_a / t_o,
                        ">= 7x faster", t_a / t_o >= 7, ratio_label="ref/ours",
                        note=f"{data_desc}; times include building the cost matrix once; ours {sw_o.mode}, "
                             f"settings {kw} (configs.mixture.OTConfig defaults); CPU-time ratio "
                             f"{cpu_a / cpu_o:.1f}x ({cpu_o:.1f} s vs {cpu_a:.1f} s)"))
    sec.rows.append(Row("ot_sweep", f"weighted Sinkhorn sweep vs resample N={s['resample_n']} per mixture", t_o, t_b, t_b / t_o,
                        ">= 3x faster", t_b / t_o >= 3, ratio_label="ref/ours",
                        note=f"CPU-time ratio {cpu_b / cpu_o:.1f}x ({cpu_o:.1f} s vs {cpu_b:.1f} s)"))
    sec.rows.append(Row("ot_sweep", "OT values vs exact emd (max relative error over the grid)", float(rel.max()), 0.01,
                        float(rel.max()) / 0.01, "<= 1%", bool(rel.max() <= 0.01), unit="",
                        ratio_label="err/1%", note=f"median relative error {np.median(rel):.2%}"))
    sec.rows.append(Row("ot_sweep", "Sinkhorn solve time vs memory-bandwidth floor (2 reads of K per iteration)", solve_s,
                        floor, solve_s / floor, "info", None,
                        note=f"{iters} iterations ({sw_o.mode}) for {len(grid)} mixtures; K = {kernel_bytes / 2**20:.0f} MiB float32; "
                             f"read bandwidth {bw:.1f} GB/s (torch sum over 512 MiB)"))
    sec.details.update({"ours_runs": runs_o, "exact_s": t_a, "resample_s": t_b, "max_rel_err": float(rel.max()),
                        "sinkhorn_iters": iters, "bandwidth_gbs": bw, "floor_s": floor, "solve_s": solve_s,
                        "setup_s": sw_o.setup_seconds, "cpu_s": cpu})

    # scaling curve: weighted Sinkhorn sweep time vs total revealed n (target size fixed)
    xs, ys = [], []
    for n in s["curve"]:
        per = tuple(int(round(n * f)) for f in (0.3, 1 / 3, 1 - 0.3 - 1 / 3))
        src, tgt = ot_problem_data(per, m, target[0].shape[1], s["classes"], seed=1)

        def one():
            pr = build_union_problem(src, tgt, label_method="gaussian")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                weighted_sweep(pr, grid, **kw)

        t, _ = time_call(one, repeats=1)
        xs.append(n)
        ys.append(t.median)
    xs.append(n_u)  # the headline point (real data), for reference
    ys.append(t_o)
    sec.curves["ot_sweep_seconds_vs_n"] = {"n": xs, "seconds": ys}
    sec.details["curve_note"] = (f"66 mixtures, target m={m}, n = total revealed (synthetic Gaussian classes; "
                                 "the last point is the headline run), weighted sweep incl. cost matrix build")
    return sec


def run_ot_sweep(ctx: Context) -> Section:
    mod = load_module("bench_ot_sweep")
    if has_section_run(mod):
        return mod.run(ctx)  # type: ignore[union-attr]
    return ot_sweep_fallback(ctx, mod)


# ------------------------------------------------------------------------------------ scaling fit
def run_scaling(ctx: Context) -> Section:
    mod = load_module("bench_scaling")
    if has_section_run(mod):
        return mod.run(ctx)  # type: ignore[union-attr]
    if mod is None:
        raise BenchError("bench/bench_scaling.py (the scaling stage's benchmark) is missing")
    if not (hasattr(mod, "data") and hasattr(mod, "scipy_loop")):
        raise BenchError("bench/bench_scaling.py has neither run(ctx) nor data()/scipy_loop()")
    return scaling_from_module(ctx, mod)


def scaling_from_module(ctx: Context, mod: ModuleType) -> Section:
    """Chinchilla fit, 4,500 starts x 240 points: ``tasks.scaling.fit.fit_form`` (batched, default
    racing) against bench_scaling's ``scipy_loop`` (one scipy L-BFGS-B call per start) on its data."""
    from tasks.scaling.fit import fit_form
    from tasks.scaling.forms import get_form

    form = get_form("chinchilla")
    N, D, y = mod.data(0)
    grid = form.grid(N, D, y)
    fit_form(form, N[:20], y[:20], D[:20], starts=grid[:10])  # warm-up (imports, allocator)
    step = 10 if ctx.quick else 1  # quick: scipy on every 10th start, time scaled x10
    sub = grid[::step]
    t_fast, fast = time_call(lambda: fit_form(form, N, y, D), repeats=max(ctx.repeats, 3))
    t_sp, (ref_f, ref_x) = time_call(lambda: mod.scipy_loop(N, D, y, sub), repeats=1)
    scipy_s = t_sp.median * grid.shape[0] / sub.shape[0]
    rel = fast.loss / ref_f - 1
    sec = Section("scaling_fit", details={"n_points": int(N.size), "n_starts": int(grid.shape[0]),
                                          "scipy_starts_run": int(sub.shape[0]), "batched": t_fast.__dict__,
                                          "scipy_s_measured": t_sp.median, "scipy_s_4500": scipy_s,
                                          "loss_batched": fast.loss, "loss_scipy": ref_f, "params": fast.params,
                                          "data": getattr(mod, "__doc__", "").splitlines()[2:4]})
    label = f"Chinchilla fit, {grid.shape[0]} starts x {N.size} points"
    sec.rows.append(Row("scaling_fit", f"{label}: batched fit wall time", t_fast.median, 1.0, t_fast.median / 1.0, "<= 1 s",
                        t_fast.median <= 1.0, ratio_label="s/1s",
                        note=f"median of {t_fast.repeats}; CPU time {t_fast.cpu_median:.2f} s (the wall-clock figure "
                             f"includes waiting for the shared CPUs)"))
    sec.rows.append(Row("scaling_fit", f"{label}: vs loop of scipy L-BFGS-B calls", t_fast.median, scipy_s,
                        scipy_s / t_fast.median, ">= 20x faster", scipy_s / t_fast.median >= 20, ratio_label="ref/ours",
                        note=(f"scipy on {sub.shape[0]} starts, time scaled x{step}; " if step > 1 else "")
                        + f"CPU-time ratio {t_sp.cpu_median * grid.shape[0] / sub.shape[0] / t_fast.cpu_median:.1f}x; same optimum: loss {fast.loss:.8g} vs {ref_f:.8g} (rel {rel:+.1e})"))
    sec.rows.append(Row("scaling_fit", "same optimum as the scipy loop (relative loss difference)", abs(rel), 1e-6,
                        abs(rel) / 1e-6, "<= 1e-6", abs(rel) <= 1e-6, unit="", ratio_label="diff/1e-6"))
    return sec
