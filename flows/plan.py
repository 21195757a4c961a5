"""Plan flow: choose per-pool pruning and the mixture for a target size N, with an interval.

Steps (docs/planner.md): prune every pool every configured way → enumerate feasible (pruning,
mixture) candidates → OT of each pruned mixture to the target (one union measure, reweighted) →
pilots on a design of candidates → screening predictor (OT + Projektor forms, chosen by held-out
error) → finalists and baselines confirmed by their own pilots and a bootstrapped scaling law →
the plan, its example ids, and (validation mode) trainings at N next to the predictions → one write.

``winnow plan CONFIG`` ingests the config's sources and runs this stage (the config needs the
``mixture:`` section for pools and target, and ``plan:``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from configs.base import RunConfig
from storage.db import Store
from tasks.errors import WinnowError
from tasks.mixture.pilots import Pools
from tasks.mixture.pools import MixtureData, prepare_mixture_data
from tasks.mixture.simplex import simplex_grid
from tasks.mixture.weighted import build_union_problem
from tasks.plan.outcome import Alternative, PlanOutcome, PlanSource
from tasks.plan.planner import (
    Entry, baseline_specs, candidate_ot, choose_design, confirm_entries, materialize, pick_plan, pilot_counts, reveal_rows,
    unique_by_key,
)
from tasks.plan.predict import confirm_all, fit_screen
from tasks.plan.space import Constraints, PoolOption, enumerate_candidates, pool_options, revealed_masks
from tasks.plan.trials import Trial, TrialResult, chunk_trials, make_trials, median_by, run_trials


# ----------------------------------------------------------------------------------------- tasks
@task(name="plan-prepare", cache_policy=NO_CACHE)
def prepare_task(sources: dict, config: RunConfig) -> MixtureData:
    return prepare_mixture_data(sources, config.mixture)


@task(name="plan-prune-pool", cache_policy=NO_CACHE)
def options_task(X: np.ndarray, y: np.ndarray, pool: int, policies: list, fractions: list, metric_k: int, seed: int) -> list[PoolOption]:
    return pool_options(X, y, pool=pool, policies=policies, fractions=fractions, metric_k=metric_k, seed=seed)


@task(name="plan-ot", cache_policy=NO_CACHE)
def ot_task(C, masks, option_idx, p, reg, tol, device, progress):
    return candidate_ot(C, masks, option_idx, p, reg=reg, tol=tol, device=device, progress=progress)


@task(name="plan-trials", cache_policy=NO_CACHE)
def trials_task(trials: list[Trial], pools: Pools, X_eval: np.ndarray, y_eval: np.ndarray, n_classes: int,
                weight_decay: float, max_iter: int) -> list[TrialResult]:
    return run_trials(trials, pools, X_eval, y_eval, n_classes=n_classes, weight_decay=weight_decay, max_iter=max_iter)


def _train(trials: list[Trial], pools: Pools, data: MixtureData, config: RunConfig) -> list[TrialResult]:
    probe = config.mixture.probe
    futures = [trials_task.submit(chunk, pools, data.target_eval_X, data.target_eval_y, data.n_classes,
                                  probe.weight_decay, probe.max_iter)
               for chunk in chunk_trials(trials, probe.rows_per_task)]
    out: list[TrialResult] = []
    for f in futures:
        out.extend(f.result())
    return out


# ------------------------------------------------------------------------------------ preflight
def preflight(config: RunConfig, db: str) -> None:
    """Input checks that need no data: run before any stage writes."""
    del db
    if config.plan is None:
        return
    if config.mixture is None:
        raise WinnowError("the plan stage needs a 'mixture' section (its pools and target)")
    from tasks.device import resolve_device

    resolve_device(config.mixture.ot.device)
    names = [p.name for p in config.mixture.pools]
    for pool in (config.plan.source_budget or {}):
        if pool not in names:
            raise WinnowError(f"plan.source_budget names pool {pool!r}, which is not a mixture pool (pools: {', '.join(names)})")
    for n in {p.source for p in config.mixture.pools} | {config.mixture.target.source}:
        config.source(n)


def _constraints(config: RunConfig) -> Constraints:
    pc, mc = config.plan, config.mixture
    sb = None
    if pc.source_budget:
        sb = np.array([pc.source_budget.get(p.name, np.inf) for p in mc.pools], dtype=np.float64)
    return Constraints(target_n=pc.target_n, costs=np.array([p.cost for p in mc.pools], dtype=np.float64),
                       budget=pc.budget, source_budget=sb)


def _describe(labels: list[str], p, names: list[str]) -> str:
    """'pool 40%, pool 60% (random:hard:equal@0.5)' for option labels and a mixture."""
    parts = [f"{nm} {100 * w:.0f}%" + ("" if lab == "none" else f" ({lab})") for nm, lab, w in zip(names, labels, p) if w > 0]
    return ", ".join(parts)


# ------------------------------------------------------------------------------------- the stage
@flow(name="plan", log_prints=True)
def plan_flow(config: RunConfig, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Run the joint planner of ``config`` into ``db`` under ``run_id`` (one write at the end)."""
    from storage.plan import save_plan
    from storage.sources import load_source

    preflight(config, db)
    pc, mc = config.plan, config.mixture
    if pc is None:
        raise WinnowError("the config has no 'plan' section")
    store = Store(db)
    t_start = time.perf_counter()
    secs: dict[str, float] = {}
    lines: list[str] = []
    names = sorted({p.source for p in mc.pools} | {mc.target.source})
    data = prepare_task({n: load_source(store, n) for n in names}, config)
    K, N = len(mc.pools), pc.target_n
    cons = _constraints(config)
    pool_names = data.names

    # 1. prune every pool every configured way ---------------------------------------------------
    t0 = time.perf_counter()
    futures = [options_task.submit(data.pools_X[i], data.pools_y[i], i, pc.policy_keys(), list(pc.fractions), pc.metric_k, pc.seed)
               for i in range(K)]
    options = [f.result() for f in futures]
    secs["prune"] = time.perf_counter() - t0

    # 2. feasible candidates ------------------------------------------------------------------------
    grid = simplex_grid(K, pc.grid_step)
    cands = enumerate_candidates(options, grid, cons, max_candidates=pc.max_candidates)
    lines.append(f"search space: {len(options[0])} options per pool x {len(grid)} mixtures = {cands.n_enumerated:,} candidates; "
                 f"{len(cands):,} feasible and distinct at N={N:,} (rejected: "
                 + ", ".join(f"{k} {v:,}" for k, v in cands.rejected.items()) + ")")

    # 3. OT of every pruned mixture on one union measure ----------------------------------------------
    t0 = time.perf_counter()
    rev = reveal_rows(data.pool_sizes, pc.reveal, mc.ot.seed)
    problem = build_union_problem([(data.pools_X[i][r], data.pools_y[i][r]) for i, r in enumerate(rev)],
                                  (data.target_ot_X, data.target_ot_y), lambda_x=mc.ot.lambda_x, lambda_y=mc.ot.lambda_y,
                                  label_method=mc.ot.label_method, seed=mc.ot.seed)
    masks = revealed_masks(options, rev)
    device = mc.ot.device
    reg = pc.reg or mc.ot.reg
    ot = ot_task(problem.C, masks, cands.options, cands.p, reg, mc.ot.tol, device, progress)
    secs["ot"] = time.perf_counter() - t0
    lines.append(f"OT: {len(cands):,} pruned mixtures vs the target in {secs['ot']:.1f} s "
                 f"(one {problem.C.shape[0]}x{problem.C.shape[1]} cost matrix, batched Sinkhorn, reg={reg}, "
                 f"{ot.n_iter} iterations, {100 * ot.converged:.0f}% converged)")

    # 4. design pilots and the screening predictor -------------------------------------------------------
    pools = Pools.from_blocks(list(zip(data.pools_X, data.pools_y)))
    offsets = pools.offsets
    design = choose_design(cands, pc.design, pc.seed)
    sizes = list(pc.pilot_sizes)
    keys = [f"c{c}" for c in design]
    trials = []
    for c, key in zip(design, keys):
        opts = [options[i][cands.options[c, i]] for i in range(K)]
        trials += make_trials(key, "design", opts, cands.p[c], sizes, pc.reps, offsets, pc.seed)
    t0 = time.perf_counter()
    results = _train(trials, pools, data, config)
    secs["design_pilots"] = time.perf_counter() - t0
    acc = median_by(results, keys, sizes, "design")
    model = fit_screen(cands.p[design], ot.values[design], acc, sizes, seed=pc.seed)
    screen = model.predict_at(cands.p, ot.values, N)
    lines.append(f"pilots: {len(trials)} trainings ({len(design)} candidates x {len(sizes)} sizes x {pc.reps} reps) in "
                 f"{secs['design_pilots']:.1f} s; predictor {model.form!r}, held-out MAE {100 * model.holdout_mae():.2f} points "
                 f"(quadratic_p {100 * model.holdout_mae('quadratic_p'):.2f}, nearest_grid {100 * model.holdout_mae('nearest_grid'):.2f})")

    # 5. finalists and baselines: own pilots + scaling law with intervals --------------------------------
    finalists = [int(c) for c in np.argsort(-screen, kind="stable")[: pc.finalists]]
    base = baseline_specs(options, cands, screen, cons, pool_names)
    missing = sorted({"uniform_random_pruning", *(f"alone:{nm}" for nm in pool_names)} - {b.name for b in base})
    if missing:
        lines.append(f"baselines left out (cannot take a single example under the constraints): {', '.join(missing)}")
    entries = confirm_entries(cands, finalists, base)
    e_ot = candidate_ot(problem.C, masks, np.stack([e.options for e in entries]), np.stack([e.p for e in entries]),
                        reg=reg, tol=mc.ot.tol, device=device).values
    e_screen = model.predict_at(np.stack([e.p for e in entries]), e_ot, N)
    unique = unique_by_key(entries)
    trials = [t for e in unique for t in make_trials(e.key, "confirm", _opts(options, e), e.p, sizes, pc.confirm_reps, offsets,
                                                      pc.seed, counts_at=pilot_counts(e, sizes, N))]
    t0 = time.perf_counter()
    confirm = _train(trials, pools, data, config)
    secs["confirm_pilots"] = time.perf_counter() - t0
    own = {e.key: (np.array([r.n for r in confirm if r.key == e.key]), np.array([r.accuracy for r in confirm if r.key == e.key]))
           for e in unique}
    conf = confirm_all(own, {e.key: e.n for e in unique}, form=pc.scaling_form, bootstrap=pc.bootstrap, level=pc.level,
                       interval=pc.interval, seed=pc.seed)
    res = conf.residuals
    lines.append(f"confirmation: {len(confirm)} pilots for {len(unique)} alternatives; held-out extrapolation error of the "
                 f"scaling law (largest pilot size from the smaller ones): median |log err ratio| "
                 f"{np.median(np.abs(res)) if res.size else float('nan'):.3f} ({pc.interval} intervals)")
    pick = pick_plan(entries, {k: c.predicted for k, c in conf.curves.items()})

    # 6. validation at N (and the plan's own draw of example ids) -------------------------------------------
    reps = pc.validation.reps if pc.validation.enabled else 1
    trials = [t for e in unique if pc.validation.enabled or e.key == pick.key
              for t in make_trials(e.key, "validate", _opts(options, e), e.p, [e.n], reps, offsets, pc.seed,
                                   counts_at={e.n: e.counts})]
    members = materialize(next(t.idx for t in trials if t.key == pick.key and t.rep == 0), pools.sizes, data.pools_ids,
                          pool_names, pick.counts)
    val: list[TrialResult] = []
    if pc.validation.enabled:
        t0 = time.perf_counter()
        val = _train(trials, pools, data, config)
        secs["validation"] = time.perf_counter() - t0

    # 7. the outcome -----------------------------------------------------------------------------------
    alternatives = [_alternative(e, e is pick, options, conf, float(e_ot[j]), float(e_screen[j]), val)
                    for j, e in enumerate(entries)]
    chosen = next(a for a in alternatives if a.role == "plan")
    popts = _opts(options, pick)
    plan_rows = [PlanSource(pool=pool_names[i], source=mc.pools[i].source, policy=popts[i].policy, fraction=popts[i].fraction,
                            n_pool=int(data.pool_sizes[i]), n_available=popts[i].size, n_taken=int(pick.counts[i]),
                            p=float(pick.p[i]), cost=float(cons.costs[i])) for i in range(K)]
    secs["total"] = time.perf_counter() - t_start
    outcome = PlanOutcome(
        target_n=N, pools=pool_names, sources=[p.source for p in mc.pools], costs=cons.costs.tolist(), budget=pc.budget,
        options=options, candidates=cands, candidate_ot=ot.values, candidate_screen=screen, design=design, screen=model,
        trials=results + confirm + val, alternatives=alternatives, plan=plan_rows, members=members, seconds=secs,
        settings={"reg": reg, "reveal": pc.reveal, "grid_step": pc.grid_step, "pilot_sizes": sizes,
                  "scaling_form": pc.scaling_form, "bootstrap": pc.bootstrap, "level": pc.level, "interval": pc.interval,
                  "holdout_residuals": [round(float(r), 4) for r in res]},
    )
    counts = save_plan(store, run_id, outcome)

    lines.append(f"plan for N={N:,}: {_describe([o.label for o in popts], pick.p, pool_names)}")
    lines.append(f"  predicted accuracy at N: {100 * chosen.predicted:.1f} [{100 * chosen.lo:.1f}, {100 * chosen.hi:.1f}] "
                 f"({int(100 * pc.level)}% {pc.interval} interval; bootstrap only [{100 * chosen.boot_lo:.1f}, {100 * chosen.boot_hi:.1f}]; "
                 f"screening said {100 * chosen.screen:.1f})")
    lines.append("  alternatives: predicted at N with interval / measured at N")
    for a in alternatives:
        meas = f"{100 * a.measured:.1f}" if np.isfinite(a.measured) else "-"
        inside = {True: " (inside)", False: " (outside)", None: ""}[a.contained]
        lines.append(f"    {a.role:9s} {a.name:24s} {100 * a.predicted:5.1f} [{100 * a.lo:.1f}, {100 * a.hi:.1f}] / {meas}{inside}"
                     f"  {_describe(a.options, a.p, pool_names)}" + (f"; {a.note}" if a.note else ""))
    lines.append(f"  {members['example_id'].size:,} example ids stored: winnow export {run_id} --to plan.parquet")
    lines.append("rows: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return {"lines": lines, "plan": [r.__dict__ for r in plan_rows], "predicted": chosen.predicted, "lo": chosen.lo,
            "hi": chosen.hi, "measured": None if not np.isfinite(chosen.measured) else chosen.measured,
            "alternatives": {a.name: {"predicted": a.predicted, "lo": a.lo, "hi": a.hi,
                                      "measured": None if not np.isfinite(a.measured) else a.measured} for a in alternatives},
            "seconds": {k: round(v, 2) for k, v in secs.items()}}


def _opts(options: list[list[PoolOption]], e: Entry) -> list[PoolOption]:
    return [options[i][int(o)] for i, o in enumerate(e.options)]


def _alternative(e: Entry, is_plan: bool, options, conf, ot: float, screen: float, val: list[TrialResult]) -> Alternative:
    cv = conf.curves[e.key]
    m = [r.accuracy for r in val if r.key == e.key]
    return Alternative(key=e.key, role="plan" if is_plan else e.role, name=e.name, options=[o.label for o in _opts(options, e)],
                       p=[float(x) for x in e.p], counts=[int(x) for x in e.counts], ot=ot, screen=screen,
                       predicted=cv.predicted, lo=conf.intervals[e.key][0], hi=conf.intervals[e.key][1], boot_lo=cv.lo,
                       boot_hi=cv.hi, measured=float(np.median(m)) if m else float("nan"),
                       measured_std=float(np.std(m)) if m else float("nan"), n_measured=len(m), note=e.note)
