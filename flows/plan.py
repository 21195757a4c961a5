"""Plan flow: choose per-pool pruning and the mixture for a target size N, with an interval.

Steps (docs/planner.md): prune every pool every configured way (one Prefect task per pool) → the
planner of :func:`tasks.plan.stage.run_plan` (candidates, OT, design pilots, screen, finalists and
baselines with their own pilots, the safe choice by trainings at N, fresh confirmation, validation)
with the trainings run as Prefect tasks (``train=``) → one write.

``winnow plan CONFIG`` ingests the config's sources and runs this stage (the config needs the
``mixture:`` section for pools and target, and ``plan:``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prefect import flow

from configs.base import RunConfig
from flows.caching import heavy_task
from flows.mixture import check_inputs, mixture_sources, prefect_train, prepare_task
from storage.db import Store
from tasks.errors import WinnowError
from tasks.mixture.pilots import Pools
from tasks.plan.space import PoolOption, enumerate_candidates, policy_name, pool_options


# ----------------------------------------------------------------------------------------- tasks
# The pools are prepared by the mixture stage's cached task (a run with both stages prepares them once);
# each pool's pruning options are cached by content, so a rerun after a crash starts at the trainings.
@heavy_task(name="plan-prune-pool")
def options_task(X: np.ndarray, y: np.ndarray, pool: int, policies: list, fractions: list, metric_k: int, seed: int) -> list[PoolOption]:
    return pool_options(X, y, pool=pool, policies=policies, fractions=fractions, metric_k=metric_k, seed=seed)


# ------------------------------------------------------------------------------------ preflight
def preflight(config: RunConfig, db: str) -> None:
    """Input checks that need no training: run before any stage writes."""
    if config.plan is None:
        return
    if config.mixture is None:
        raise WinnowError("the plan stage needs a 'mixture' section (its pools and target)")
    names = [p.name for p in config.mixture.pools]
    for pool in (config.plan.source_budget or {}):
        if pool not in names:
            raise WinnowError(f"plan.source_budget names pool {pool!r}, which is not a mixture pool (pools: {', '.join(names)})")
    rows = check_inputs(config, db)  # OT device, sources, their feature space, pools and target drawn
    check_feasible(config, rows.pool_sizes)


def check_feasible(config: RunConfig, pool_sizes: np.ndarray) -> None:
    """Refuse a plan that no candidate can satisfy, from the pool sizes alone (before any pruning).

    The same :func:`~tasks.plan.space.enumerate_candidates` the stage runs, on stand-in options with
    the sizes pruning would keep (a policy keeps at most round(f·n) rows, "none" the whole pool): a
    larger pool never makes a candidate infeasible, so nothing feasible here means nothing feasible later."""
    from tasks.mixture.simplex import simplex_grid
    from tasks.plan.stage import constraints

    pc = config.plan
    options = []
    for i, n in enumerate(int(x) for x in pool_sizes):
        opts = [PoolOption(i, "none", 1.0, np.arange(n, dtype=np.int64))]
        for key in pc.policy_keys():
            opts += [PoolOption(i, policy_name(key), float(f), np.arange(max(1, int(round(f * n))), dtype=np.int64))
                     for f in pc.fractions]
        options.append(opts)
    enumerate_candidates(options, simplex_grid(len(options), pc.grid_step), constraints(config), max_candidates=pc.max_candidates)


# ------------------------------------------------------------------------------------- the stage
@flow(name="plan", log_prints=True)
def plan_flow(config: RunConfig, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Run the joint planner of ``config`` into ``db`` under ``run_id`` (one write at the end)."""
    from storage.plan import save_plan
    from tasks.plan.stage import run_plan

    pc, mc = config.plan, config.mixture
    if pc is None or mc is None:
        raise WinnowError("the plan stage needs the config's 'plan' and 'mixture' sections")
    store = Store(db)
    t_start = time.perf_counter()
    data = prepare_task(mixture_sources(store, config, progress), config.mixture)
    t0 = time.perf_counter()
    futures = [options_task.submit(data.pools_X[i], data.pools_y[i], i, pc.policy_keys(), list(pc.fractions), pc.metric_k,
                                   pc.seed) for i in range(len(mc.pools))]
    options = [f.result() for f in futures]
    prune_s = time.perf_counter() - t0
    pools = Pools.from_blocks(list(zip(data.pools_X, data.pools_y)))
    outcome, lines = run_plan(data, config, options, pools=pools, train=prefect_train(pools, data, mc.probe))
    outcome.seconds = {"prune": prune_s, **outcome.seconds, "total": time.perf_counter() - t_start}
    counts = save_plan(store, run_id, outcome)
    lines.append(f"  {outcome.members['example_id'].size:,} example ids stored: winnow export {run_id} --to plan.parquet")
    lines.append("rows: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    chosen = outcome.chosen
    return {"lines": lines, "plan": [r.__dict__ for r in outcome.plan], "predicted": chosen.predicted, "lo": chosen.lo,
            "hi": chosen.hi, "chosen": chosen.name,
            "measured": None if not np.isfinite(chosen.measured) else chosen.measured,
            "alternatives": {a.name: {"predicted": a.predicted, "lo": a.lo, "hi": a.hi, "role": a.role,
                                      "measured": None if not np.isfinite(a.measured) else a.measured}
                             for a in outcome.alternatives},
            "seconds": {k: round(v, 2) for k, v in outcome.seconds.items()}}
