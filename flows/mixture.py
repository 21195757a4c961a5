"""Mixture flow: OT sweep → pilot runs → predictor (chosen by held-out error) → extrapolation →
mixture selection (confirmed by real trainings) → one write to DuckDB, plus plots.

``winnow mixture CONFIG`` ingests the config's sources and runs this stage. Pilot trainings are
chunks of pilots per Prefect task (independent, so they run in parallel on the task runner).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from configs.base import RunConfig
from configs.mixture import MixtureConfig
from storage.db import Store
from tasks.errors import WinnowError
from tasks.mixture.extrapolate import extrapolate_errors
from tasks.mixture.outcome import ExtrapolationRow, MixtureOutcome, PoolInfo, SelectionRecord, SweepRecord
from tasks.mixture.pilots import (
    PilotResult, PilotSpec, Pools, aggregate_pilots, check_pool_capacity, chunk_pilots, pilot_seed, plan_pilots,
    run_pilot_chunk,
)
from tasks.mixture.pools import MixtureData, prepare_mixture_data, reveal
from tasks.mixture.predictor import choose_form, fit_predictor, projektor_split, random_splits, validate_forms
from tasks.mixture.resample import resample_sweep
from tasks.mixture.select import Objective, default_starts, select_mixture
from tasks.mixture.simplex import mixture_counts, simplex_grid
from tasks.mixture.weighted import UnionProblem, WeightedOT, build_union_problem, weighted_sweep


# ----------------------------------------------------------------------------------------- tasks
@task(name="mixture-prepare", cache_policy=NO_CACHE)
def prepare_task(sources: dict, cfg: MixtureConfig) -> MixtureData:
    return prepare_mixture_data(sources, cfg)


@task(name="mixture-ot-sweep", cache_policy=NO_CACHE)
def ot_sweep_task(data: MixtureData, cfg: MixtureConfig, grid: np.ndarray, progress: bool = False) -> tuple[list[SweepRecord], UnionProblem]:
    """The OT sweep the predictor uses, plus the ``ot.compare`` sweeps (exact emd, resample mode) for timing."""
    o = cfg.ot
    revealed = reveal(data, o.reveal, o.seed)
    target = (data.target_ot_X, data.target_ot_y)
    t0 = time.perf_counter()
    problem = build_union_problem(revealed, target, lambda_x=o.lambda_x, lambda_y=o.lambda_y, label_method=o.label_method,
                                  debiased=o.solver == "sinkhorn_debiased", seed=o.seed)
    build_s = time.perf_counter() - t0
    records = []
    sw = weighted_sweep(problem, grid, solver=o.solver, reg=o.reg, tol=o.tol, device=o.device, threads=None, progress=progress)
    sw = _with_setup(sw, build_s)
    res = None
    if o.mode == "resample" or "resample" in o.compare:
        res = resample_sweep(revealed, target, grid, o.resample_n, scale=problem.scale, lambda_x=o.lambda_x,
                             lambda_y=o.lambda_y, label_method=o.label_method, seed=o.seed, progress=progress)
    if o.mode == "resample":
        records.append(SweepRecord("resample", res, o.resample_n))
        records.append(SweepRecord(f"weighted-{o.solver}", sw))
    else:
        records.append(SweepRecord("weighted", sw))
        if res is not None:
            records.append(SweepRecord("resample", res, o.resample_n))
    if "exact" in o.compare and o.solver != "exact":
        ex = weighted_sweep(problem, grid, solver="exact", progress=progress)
        records.append(SweepRecord("weighted-exact", _with_setup(ex, build_s)))
    return records, problem


def _with_setup(sw, extra: float):
    from dataclasses import replace

    return replace(sw, setup_seconds=sw.setup_seconds + extra)


@task(name="mixture-pilot-chunk", cache_policy=NO_CACHE)
def pilot_chunk_task(specs: list[PilotSpec], pools: Pools, X_eval: np.ndarray, y_eval: np.ndarray, n_classes: int,
                     weight_decay: float, max_iter: int) -> list[PilotResult]:
    return run_pilot_chunk(specs, pools, X_eval, y_eval, n_classes=n_classes, weight_decay=weight_decay, max_iter=max_iter)


def _train(specs: list[PilotSpec], pools: Pools, data: MixtureData, cfg: MixtureConfig) -> list[PilotResult]:
    futures = [
        pilot_chunk_task.submit(chunk, pools, data.target_eval_X, data.target_eval_y, data.n_classes,
                                cfg.probe.weight_decay, cfg.probe.max_iter)
        for chunk in chunk_pilots(specs, cfg.probe.rows_per_task)
    ]
    out: list[PilotResult] = []
    for f in futures:
        out.extend(f.result())
    return out


# ------------------------------------------------------------------------------------- the stage
def _pool_info(data: MixtureData, cfg: MixtureConfig) -> list[PoolInfo]:
    out = []
    for pc, y in zip(cfg.pools, data.pools_y):
        counts = np.bincount(y, minlength=data.n_classes)
        out.append(PoolInfo(pc.name, pc.source, int(len(y)), {data.label_names[i]: int(c) for i, c in enumerate(counts) if c}))
    return out


def _validation_splits(grid: np.ndarray, cfg: MixtureConfig) -> dict[str, list[np.ndarray]]:
    splits = {"projektor": [projektor_split(grid)]}
    if cfg.predictor.random_splits:
        n_test = max(1, round(cfg.predictor.random_test_fraction * len(grid)))
        splits["random"] = random_splits(len(grid), n_test, cfg.predictor.random_splits, cfg.predictor.seed)
    return splits


def _feasible(grid: np.ndarray, n: int, pool_sizes: np.ndarray) -> np.ndarray:
    return np.array([np.all(mixture_counts(p, n) <= pool_sizes) for p in grid])


@flow(name="mixture", log_prints=True)
def mixture_flow(config: RunConfig, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Run the mixture stage of ``config`` into the DuckDB file ``db`` under ``run_id`` (one write at the end)."""
    from storage.mixture import save_mixture
    from storage.sources import load_source

    cfg = config.mixture
    if cfg is None:
        raise WinnowError("the config has no 'mixture' section")
    store = Store(db)
    t_start = time.perf_counter()
    names = sorted({p.source for p in cfg.pools} | {cfg.target.source})
    for n in names:
        config.source(n)
    sources = {n: load_source(store, n) for n in names}
    data = prepare_task(sources, cfg)
    k = len(cfg.pools)
    grid = simplex_grid(k, cfg.grid_step)
    sizes = list(cfg.pilot_sizes)
    check_pool_capacity(data.pool_sizes, grid, sizes, data.names)
    n_target = cfg.extrapolation.target_n or 10 * max(sizes)
    lines: list[str] = []

    # 1. OT over the grid ------------------------------------------------------------------------
    sweeps, problem = ot_sweep_task(data, cfg, grid, progress)
    main = sweeps[0].sweep
    ot_vals = main.values
    for rec in sweeps:
        s = rec.sweep
        lines.append(f"OT sweep {rec.label} ({s.mode}): {len(s.values)} mixtures in {s.total_seconds:.1f} s "
                     f"({s.seconds.mean() * 1e3:.0f} ms per mixture + {s.setup_seconds:.1f} s setup)")

    # 2. pilots ----------------------------------------------------------------------------------
    pools = Pools.from_blocks(list(zip(data.pools_X, data.pools_y)))
    t0 = time.perf_counter()
    pilots = _train(plan_pilots(grid, sizes, cfg.reps, cfg.seed), pools, data, cfg)
    table = aggregate_pilots(pilots, grid)
    lines.append(f"pilots: {len(pilots)} trainings ({len(grid)} mixtures x {len(sizes)} sizes x {cfg.reps} reps) "
                 f"in {time.perf_counter() - t0:.1f} s")
    for i, n in enumerate(table.sizes):
        r = np.corrcoef(ot_vals, table.median[i])[0, 1]
        lines.append(f"  N={n}: accuracy {table.median[i].min():.3f}..{table.median[i].max():.3f}, corr(OT, acc) = {r:+.2f}")

    # 3. predictor: validate every form, choose by held-out error, fit on all mixtures -------------
    splits = _validation_splits(grid, cfg)
    forms = list(cfg.predictor.forms) + list(cfg.predictor.baselines)
    validation = []
    for i, n in enumerate(table.sizes):
        validation += validate_forms(grid, ot_vals, table.median[i], splits, forms=forms, n=int(n), ridge=cfg.predictor.ridge)
    chosen = choose_form(validation, cfg.predictor.forms)
    fits = [fit_predictor(f, grid, ot_vals, table.median[i], n=int(n), ridge=cfg.predictor.ridge)
            for i, n in enumerate(table.sizes) for f in forms]
    for split in splits:
        parts = []
        for f in forms:
            rows = [v for v in validation if v.form == f and v.split == split]
            if rows:
                parts.append(f"{f} {100 * np.mean([v.mae for v in rows]):.1f}")
        lines.append(f"held-out MAE ({split} split, points, mean over N): " + ", ".join(parts))
    lines.append(f"predictor: chosen form {chosen!r} (lowest held-out MAE)")
    chosen_fits = [f for f in fits if f.form == chosen]

    # 4. extrapolation to n_target --------------------------------------------------------------
    err_pilot = 1.0 - table.median
    pred_acc = np.stack([f.predict(grid, ot_vals) for f in chosen_fits])
    ext = {
        ("power_law", "pilots"): 1 - extrapolate_errors(table.sizes, err_pilot, n_target, "power_law"),
        ("log_n_map", "pilots"): 1 - extrapolate_errors(table.sizes, err_pilot, n_target, "log_n_map"),
        ("naive_largest_pilot", "pilots"): table.median[-1],
        ("power_law", "predictor"): 1 - extrapolate_errors(table.sizes, 1 - pred_acc, n_target, "power_law"),
        ("log_n_map", "predictor"): 1 - extrapolate_errors(table.sizes, 1 - pred_acc, n_target, "log_n_map"),
    }
    measured = np.full(len(grid), np.nan)
    target_runs: list[PilotResult] = []
    feasible = _feasible(grid, n_target, data.pool_sizes)
    if cfg.extrapolation.train_at_target:
        if not feasible.any():
            raise WinnowError(f"no grid mixture fits the pools at target_n={n_target}: lower extrapolation.target_n")
        cand = np.flatnonzero(feasible)
        rng = np.random.default_rng(cfg.seed)
        pick = set(rng.choice(cand, size=min(cfg.extrapolation.n_validate, cand.size), replace=False).tolist())
        best_pilot = int(np.argmax(np.where(feasible, table.median[-1], -np.inf)))
        pick.add(best_pilot)
        specs = [PilotSpec(g, tuple(map(float, grid[g])), n_target, r, pilot_seed(cfg.seed, g, n_target, r))
                 for g in sorted(pick) for r in range(cfg.extrapolation.reps)]
        t0 = time.perf_counter()
        target_runs = _train(specs, pools, data, cfg)
        for g in pick:
            measured[g] = float(np.median([r.accuracy for r in target_runs if r.mixture_id == g]))
        lines.append(f"real trainings at N={n_target}: {len(pick)} mixtures x {cfg.extrapolation.reps} reps in "
                     f"{time.perf_counter() - t0:.1f} s")
        ok = np.isfinite(measured)
        for (method, basis), v in ext.items():
            lines.append(f"  extrapolation {method} from {basis}: MAE {100 * np.abs(v[ok] - measured[ok]).mean():.1f} points")
    extrapolations = [
        ExtrapolationRow(g, tuple(map(float, grid[g])), n_target, m, b, float(v[g]), float(measured[g]))
        for (m, b), v in ext.items() for g in range(len(grid))
    ]

    # 5. selection ------------------------------------------------------------------------------
    t_sel = time.perf_counter()
    objective = Objective(chosen_fits, n_target, cfg.extrapolation.method)
    engine = WeightedOT(problem, solver=cfg.ot.solver, reg=cfg.ot.reg, tol=cfg.ot.tol, device=cfg.ot.device,
                        batched=cfg.ot.solver == "sinkhorn")  # the same solver (and value) as the sweep

    def ot_fn(p: np.ndarray) -> tuple[float, np.ndarray]:
        r = engine(p)
        return r.value, r.grad

    weighted_main = next(r.sweep for r in sweeps if r.label in ("weighted", f"weighted-{cfg.ot.solver}"))
    grid_obj = np.array([objective.value_grad(grid[g], weighted_main.values[g], weighted_main.grads[g])[0] for g in range(len(grid))])
    available = data.pool_sizes.astype(float) if cfg.select.use_availability else None
    costs = [pc.cost for pc in cfg.pools]
    budget = cfg.select.budget
    rmse = float(np.mean([v.rmse for v in validation if v.form == chosen and v.n == table.sizes[-1]]))
    if cfg.ot.mode == "resample":
        # no gradient in resample mode: pick the best predicted feasible grid point
        okg = _feasible(grid, n_target, data.pool_sizes) if available is not None else np.ones(len(grid), bool)
        g = int(np.argmax(np.where(okg, grid_obj, -np.inf)))
        from tasks.mixture.select import SelectionResult

        sel = SelectionResult(p=grid[g], predicted=float(grid_obj[g]), lo=grid_obj[g] - 1.96 * rmse, hi=grid_obj[g] + 1.96 * rmse,
                              n_target=n_target, path=grid[g][None], path_values=grid_obj[g:g + 1], starts=grid[g][None],
                              start_values=grid_obj[g:g + 1])
    else:
        sel = select_mixture(objective, ot_fn, starts=default_starts(k, grid[feasible] if feasible.any() else grid,
                                                                      grid_obj[feasible] if feasible.any() else grid_obj),
                             available=available, cost=costs if budget is not None else None, budget=budget,
                             steps=cfg.select.steps, step_size=cfg.select.step_size, decay=cfg.select.decay, rmse=rmse)
    lines.append(f"selection: p = {np.round(sel.p, 3).tolist()} predicted accuracy at N={n_target}: {100 * sel.predicted:.1f} "
                 f"(~[{100 * sel.lo:.1f}, {100 * sel.hi:.1f}]) in {time.perf_counter() - t_sel:.1f} s")
    record = SelectionRecord(result=sel, form=chosen, extrapolation=cfg.extrapolation.method)
    if cfg.select.confirm and cfg.extrapolation.train_at_target:
        specs = [PilotSpec(-1, tuple(map(float, sel.p)), n_target, r, pilot_seed(cfg.seed, 10_000, n_target, r))
                 for r in range(cfg.extrapolation.reps)]
        chosen_runs = _train(specs, pools, data, cfg)
        target_runs += chosen_runs
        m_sel = float(np.median([r.accuracy for r in chosen_runs]))
        gb = int(np.nanargmax(measured))
        bp = int(np.argmax(np.where(feasible, table.median[-1], -np.inf)))
        record = SelectionRecord(result=sel, form=chosen, extrapolation=cfg.extrapolation.method, measured=m_sel,
                                 best_grid_p=tuple(map(float, grid[gb])), best_grid_measured=float(measured[gb]),
                                 best_pilot_grid_p=tuple(map(float, grid[bp])), best_pilot_grid_measured=float(measured[bp]))
        lines.append(f"  measured {100 * m_sel:.1f}; best trained grid point {np.round(grid[gb], 2).tolist()} "
                     f"{100 * measured[gb]:.1f} -> regret {100 * record.regret:.2f} points "
                     f"(best-pilot pick: regret {100 * record.pilot_pick_regret:.2f})")

    outcome = MixtureOutcome(pools=_pool_info(data, cfg), grid=grid, sweeps=sweeps, pilots=pilots, target_runs=target_runs,
                             fits=fits, chosen_form=chosen, validation=validation, extrapolations=extrapolations,
                             selection=record)

    # 6. plots ----------------------------------------------------------------------------------
    if cfg.plots:
        outcome.plots = _plots(store, run_id, data, grid, table, ot_vals, grid_obj, sel, validation, ext, measured,
                               chosen, splits, fits)
        lines += [f"plot: {p}" for p in outcome.plots.values()]

    counts = save_mixture(store, run_id, outcome)
    lines.append("rows: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return {"lines": lines, "chosen_form": chosen, "selection": np.round(sel.p, 4).tolist(),
            "predicted": sel.predicted, "regret": None if not np.isfinite(record.regret) else record.regret,
            "seconds_total": round(time.perf_counter() - t_start, 2)}


def _plots(store, run_id, data, grid, table, ot_vals, grid_obj, sel, validation, ext, measured, chosen, splits, fits) -> dict[str, str]:
    from tasks.mixture.plot import plot_predicted_vs_measured, plot_surface

    out_dir = store.artifacts_dir / "mixture"
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    n_big = int(table.sizes[-1])
    if grid.shape[1] == 3:
        plots["surface"] = plot_surface(grid, 100 * table.median[-1], out_dir / f"{run_id}-surface.png", names=data.names,
                                        title=f"pilot accuracy (median), N={n_big}", label="accuracy (points)")
        plots["ot_surface"] = plot_surface(grid, ot_vals, out_dir / f"{run_id}-ot.png", names=data.names,
                                           title="label-aware OT to the target", label="OT")
        plots["selection"] = plot_surface(grid, 100 * grid_obj, out_dir / f"{run_id}-selection.png", names=data.names,
                                          title=f"predicted accuracy at N={sel.n_target} ({chosen})",
                                          label="predicted (points)", sel_path=sel.path, chosen=sel.p[None])
    # held-out predictions on Projektor's split at the largest pilot size, per form
    m = splits["projektor"][0]
    series = {}
    for form in (chosen, "projektor", "nearest_grid"):
        f = fit_predictor(form, grid[m], ot_vals[m], table.median[-1][m], n=n_big)
        series[f"{form} (held-out p2>=0.5)"] = (table.median[-1][~m], f.predict(grid[~m], ot_vals[~m]))
    ok = np.isfinite(measured)
    if ok.any():
        for key in (("power_law", "pilots"), ("log_n_map", "pilots")):
            series[f"{key[0]} @N={sel.n_target}"] = (measured[ok], ext[key][ok])
    plots["predicted_vs_measured"] = plot_predicted_vs_measured(series, out_dir / f"{run_id}-pred-vs-measured.png",
                                                                title="predicted vs measured")
    return plots
