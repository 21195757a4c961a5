"""The joint planner as plain functions: candidates → OT → design pilots → screen → finalists and
baselines (own pilots, scaling law) → safe choice by trainings at N → the plan and its example ids.

:func:`run_plan` takes the prepared arrays, every pool's pruning options and a ``train`` callable
(:data:`tasks.mixture.jobs.Train`); it returns the :class:`PlanOutcome` storage writes and the lines
the CLI prints. Flows inject a ``train`` that runs chunks as Prefect tasks.

Choice (docs/planner.md, "How the plan is chosen"): the screen proposes finalists (its top
candidates), the best piloted design candidates join them, and so do the baselines (best unpruned
mixture, uniform with random pruning, each pool alone). Every one is trained ``final_reps`` times at
its own N; the best mean becomes the plan, whatever its role. The plan is then trained
``final_confirm_reps`` more times with fresh seeds and its reported accuracy and interval come from
those draws only (:mod:`tasks.mixture.decide`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from configs.base import RunConfig
from tasks.mixture.decide import Coverage, choose_by_draws, coverage, interval_sd, measurement_interval, pooled_logit_sd, snap
from tasks.mixture.jobs import Train, accuracies
from tasks.mixture.pilots import Pools
from tasks.mixture.pools import MixtureData
from tasks.mixture.simplex import simplex_grid
from tasks.mixture.weighted import build_union_problem
from tasks.plan.describe import describe_mixture
from tasks.plan.outcome import Alternative, PlanOutcome, PlanSource
from tasks.plan.planner import (
    EffectiveSizes, Entry, baseline_specs, candidate_ot, choose_design, confirm_entries, effective_sizes, materialize, pilot_counts,
    reveal_rows, unique_by_key,
)
from tasks.plan.predict import confirm_all, fit_screen
from tasks.plan.space import CandidateSet, Constraints, PoolOption, enumerate_candidates, revealed_masks
from tasks.plan.trials import make_trials, median_by


def constraints(config: RunConfig) -> Constraints:
    pc, mc = config.plan, config.mixture
    sb = None
    if pc.source_budget:
        sb = np.array([pc.source_budget.get(p.name, np.inf) for p in mc.pools], dtype=np.float64)
    return Constraints(target_n=pc.target_n, costs=np.array([p.cost for p in mc.pools], dtype=np.float64),
                       budget=pc.budget, source_budget=sb, max_epochs=pc.max_epochs)


def _opts(options: list[list[PoolOption]], e: Entry) -> list[PoolOption]:
    return [options[i][int(o)] for i, o in enumerate(e.options)]


@dataclass
class _Screened:
    cands: CandidateSet
    ot: np.ndarray
    screen: np.ndarray
    design: np.ndarray
    model: object
    design_acc: np.ndarray
    masks: list
    problem: object
    reg: float
    trials: list


def screen_candidates(data: MixtureData, config: RunConfig, options, pools: Pools, train: Train, secs: dict, lines: list[str]) -> _Screened:
    """Enumerate feasible candidates, their OT to the target, design pilots and the screening predictor."""
    pc, mc = config.plan, config.mixture
    cons = constraints(config)
    cands = enumerate_candidates(options, simplex_grid(len(options), pc.grid_step), cons, max_candidates=pc.max_candidates)
    lines.append(f"search space: {len(options[0])} options per pool x {len(simplex_grid(len(options), pc.grid_step))} mixtures = "
                 f"{cands.n_enumerated:,} candidates; {len(cands):,} feasible and distinct at N={pc.target_n:,} (rejected: "
                 + ", ".join(f"{k} {v:,}" for k, v in cands.rejected.items()) + ")")
    t0 = time.perf_counter()
    rev = reveal_rows(data.pool_sizes, pc.reveal, mc.ot.seed)
    problem = build_union_problem([(data.pools_X[i][r], data.pools_y[i][r]) for i, r in enumerate(rev)],
                                  (data.target_ot_X, data.target_ot_y), lambda_x=mc.ot.lambda_x, lambda_y=mc.ot.lambda_y,
                                  label_method=mc.ot.label_method, seed=mc.ot.seed)
    masks = revealed_masks(options, rev)
    reg = pc.reg or mc.ot.reg
    ot = candidate_ot(problem.C, masks, cands.options, cands.p, reg=reg, tol=mc.ot.tol, device=mc.ot.device)
    secs["ot"] = time.perf_counter() - t0
    lines.append(f"OT: {len(cands):,} pruned mixtures vs the target in {secs['ot']:.1f} s (one {problem.C.shape[0]}x"
                 f"{problem.C.shape[1]} cost matrix, batched Sinkhorn, reg={reg}, {ot.n_iter} iterations at most, "
                 f"{100 * ot.converged:.0f}% converged, {ot.raised} solved again at a larger ε)")
    design = choose_design(cands, pc.design, pc.seed)
    sizes = list(pc.pilot_sizes)
    keys = [f"c{c}" for c in design]
    repeat = cons.max_epochs > 1
    trials = [t for c, key in zip(design, keys)
              for t in make_trials(key, "design", [options[i][cands.options[c, i]] for i in range(len(options))], cands.p[c],
                                   sizes, pc.reps, pools.offsets, pc.seed, repeat=repeat)]
    t0 = time.perf_counter()
    results = train(trials)
    secs["design_pilots"] = time.perf_counter() - t0
    acc = median_by(results, keys, sizes, "design")
    model = fit_screen(cands.p[design], ot.values[design], acc, sizes, seed=pc.seed)
    screen = model.predict_at(cands.p, ot.values, pc.target_n)
    if repeat:  # candidates that repeat a pool are forecast at their effective size, pilots included
        eff = effective_sizes(options, cands.options, cands.p, cands.counts, sizes)
        if eff.repeated:
            screen = model.predict_at(cands.p, ot.values, eff.target, eff.pilots)
            lines.append(f"repeated data: {int(eff.at_n.repeated.sum()):,} of {len(cands):,} candidates see a pruned pool more "
                         f"than once at N (up to {float(eff.at_n.epochs.max()):.2f}x); their forecasts use the effective size "
                         f"N' = sum of D' per pool (Muennighoff et al. 2023, Eq. 5, with the probe's R*={eff.at_n.r_star:g}: "
                         "a repeated example adds nothing)")
    lines.append(f"pilots: {len(trials)} trainings ({len(design)} candidates x {len(sizes)} sizes x {pc.reps} reps) in "
                 f"{secs['design_pilots']:.1f} s; predictor {model.form!r}, held-out MAE {100 * model.holdout_mae():.2f} points "
                 f"(quadratic_p {100 * model.holdout_mae('quadratic_p'):.2f}, nearest_grid {100 * model.holdout_mae('nearest_grid'):.2f})")
    return _Screened(cands, ot.values, screen, design, model, acc, masks, problem, reg, results)


def finalist_entries(config: RunConfig, options, sc: _Screened, names: list[str], lines: list[str]) -> list[Entry]:
    """Screen top candidates, best piloted design candidates, and the baselines."""
    pc = config.plan
    top = [int(c) for c in np.argsort(-sc.screen, kind="stable")[: pc.finalists]]
    mean_big = sc.design_acc[-1]
    piloted = [int(sc.design[j]) for j in np.argsort(-np.nan_to_num(mean_big, nan=-1.0), kind="stable")[: pc.top_pilots]]
    fin, fin_names = list(top), [f"finalist-{j + 1}" for j in range(len(top))]
    for j, c in enumerate(piloted):
        if c not in fin:
            fin.append(c)
            fin_names.append(f"best-pilot-{j + 1}")
    base = baseline_specs(options, sc.cands, sc.screen, constraints(config), names)
    missing = sorted({"uniform_random_pruning", *(f"alone:{nm}" for nm in names)} - {b.name for b in base})
    if missing:
        lines.append(f"baselines left out (cannot take a single example under the constraints): {', '.join(missing)}")
    return confirm_entries(sc.cands, fin, base, fin_names)


def run_plan(data: MixtureData, config: RunConfig, options: list[list[PoolOption]], *, pools: Pools, train: Train) -> tuple[PlanOutcome, list[str]]:
    """The planner after pruning (see the module docstring); returns the outcome and the lines to print."""
    pc, mc = config.plan, config.mixture
    t_start = time.perf_counter()
    secs: dict[str, float] = {}
    lines: list[str] = []
    names = data.names
    sc = screen_candidates(data, config, options, pools, train, secs, lines)
    entries = finalist_entries(config, options, sc, names, lines)
    e_ot = candidate_ot(sc.problem.C, sc.masks, np.stack([e.options for e in entries]), np.stack([e.p for e in entries]),
                        reg=sc.reg, tol=mc.ot.tol, device=mc.ot.device).values
    sizes = list(pc.pilot_sizes)
    repeat = constraints(config).max_epochs > 1
    e_P = np.stack([e.p for e in entries])
    eff = effective_sizes(options, np.stack([e.options for e in entries]), e_P, np.stack([e.counts for e in entries]), sizes,
                          [pilot_counts(e, sizes, pc.target_n) for e in entries])
    repeated = repeat and eff.repeated
    e_screen = sc.model.predict_at(e_P, e_ot, eff.target, eff.pilots) if repeated else sc.model.predict_at(e_P, e_ot, pc.target_n)
    unique = unique_by_key(entries)
    row = {e.key: j for j, e in reversed(list(enumerate(entries)))}  # first entry of each key
    own_trials = [t for e in unique for t in make_trials(e.key, "confirm", _opts(options, e), e.p, sizes, pc.confirm_reps,
                                                          pools.offsets, pc.seed, counts_at=pilot_counts(e, sizes, pc.target_n),
                                                          repeat=repeat)]
    t0 = time.perf_counter()
    own = train(own_trials)
    secs["confirm_pilots"] = time.perf_counter() - t0
    pil = {e.key: (np.array([_pilot_size(eff, row[e.key], r.n, repeated) for r in own if r.key == e.key]),
                   np.array([r.accuracy for r in own if r.key == e.key])) for e in unique}
    n_at = {e.key: float(eff.target[row[e.key]]) if repeated else e.n for e in unique}
    conf = confirm_all(pil, n_at, form=pc.scaling_form, bootstrap=pc.bootstrap, level=pc.level,
                       interval=pc.interval, seed=pc.seed)
    res = conf.residuals
    lines.append(f"own pilots: {len(own)} trainings for {len(unique)} alternatives; held-out extrapolation error of the "
                 + (f"scaling law: median |log err ratio| {np.median(np.abs(res)):.3f} over {res.size} alternatives" if res.size else
                    "scaling law: not measured (it needs 3 pilot sizes per alternative; the intervals carry no held-out error)"))

    def at_n(stage: str, es: list[Entry], reps: int) -> list:
        return [t for e in es for t in make_trials(e.key, stage, _opts(options, e), e.p, [e.n], reps, pools.offsets, pc.seed,
                                                   counts_at={e.n: e.counts}, repeat=repeat)]

    t0 = time.perf_counter()
    rank_runs = train(at_n("rank", unique, pc.final_reps))
    rank = {e.key: accuracies(rank_runs, e.key, "rank") for e in unique}
    chosen_key = choose_by_draws(rank, [e.key for e in unique])
    pick = next(e for e in unique if e.key == chosen_key)
    sd, df = pooled_logit_sd(list(rank.values()))
    final_runs = train(at_n("final", [pick], pc.final_confirm_reps))
    secs["final"] = time.perf_counter() - t0
    reps = pc.validation.reps if pc.validation.enabled else 1
    val_trials = at_n("validate", unique if pc.validation.enabled else [pick], reps)
    members = materialize(next(t.idx for t in val_trials if t.key == pick.key and t.rep == 0), pools.sizes, data.pools_ids,
                          names, pick.counts)
    val = []
    if pc.validation.enabled:
        t0 = time.perf_counter()
        val = train(val_trials)
        secs["validation"] = time.perf_counter() - t0
    final = accuracies(final_runs, pick.key, "final")
    s_p, df_p = interval_sd([rank[pick.key], final], list(rank.values()))
    est = measurement_interval(final, s_p, df_p, level=pc.level, n_future=reps)
    plan_j = next(j for j, e in enumerate(entries) if e.key == pick.key)
    alternatives = [_alternative(e, j == plan_j, options, conf, float(e_ot[j]), float(e_screen[j]), val, est,
                                 float(np.mean(rank[e.key])), eff.at_n.describe(j, names))
                    for j, e in enumerate(entries)]
    lines.append(f"safe choice: {len(unique)} alternatives x {pc.final_reps} trainings at N (pooled SD {sd:.3f} in logit, "
                 f"{df} df); the best mean is the plan, confirmed by {pc.final_confirm_reps} fresh trainings")
    popts = _opts(options, pick)
    plan_rows = [PlanSource(pool=names[i], source=mc.pools[i].source, policy=popts[i].policy, fraction=popts[i].fraction,
                            n_pool=int(data.pool_sizes[i]), n_available=popts[i].size, n_taken=int(pick.counts[i]),
                            p=float(pick.p[i]), cost=float(mc.pools[i].cost)) for i in range(len(names))]
    secs["total"] = time.perf_counter() - t_start
    cons = constraints(config)
    outcome = PlanOutcome(
        target_n=pc.target_n, pools=names, sources=[p.source for p in mc.pools], costs=cons.costs.tolist(), budget=pc.budget,
        options=options, candidates=sc.cands, candidate_ot=sc.ot, candidate_screen=sc.screen, design=sc.design, screen=sc.model,
        trials=sc.trials + own + rank_runs + final_runs + val, alternatives=alternatives, plan=plan_rows, members=members,
        seconds=secs,
        settings={"reg": sc.reg, "reveal": pc.reveal, "grid_step": pc.grid_step, "pilot_sizes": sizes,
                  "scaling_form": pc.scaling_form, "bootstrap": pc.bootstrap, "level": pc.level, "interval": pc.interval,
                  "final_reps": pc.final_reps, "final_confirm_reps": pc.final_confirm_reps, "sd_logit": sd, "df": df,
                  "holdout_residuals": [round(float(r), 4) for r in res],
                  "max_epochs": constraints(config).max_epochs,
                  "epochs_at_n": {e.key: [round(float(v), 3) for v in eff.at_n.epochs[j]] for j, e in enumerate(entries)
                                  if eff.at_n.repeated[j]}},
    )
    cov = plan_coverage(outcome)
    outcome.settings["coverage"] = [cov.inside, cov.total]
    lines += plan_lines(outcome, pc.level) + ["  " + cov.line(pc.level)]
    return outcome, lines


def _pilot_size(eff: EffectiveSizes, j: int, n: int, repeated: bool) -> float:
    """The size a pilot of n rows is fitted at: its effective size where it repeats a pool."""
    if not repeated:
        return float(n)
    s = np.flatnonzero(eff.nominal_pilots[j] == n)
    return float(eff.pilots[j, s[0]]) if s.size else float(n)


def _alternative(e: Entry, is_plan: bool, options, conf, ot: float, screen: float, val: list, est: tuple[float, float, float],
                 rank_mean: float, repeats: str = "") -> Alternative:
    """The plan's accuracy and interval come from its fresh draws at N; every other alternative's from the
    scaling law on its own pilots (calibrated interval, in log error: inside [0, 1])."""
    cv = conf.curves[e.key]
    m = [r.accuracy for r in val if r.key == e.key]
    pred, lo, hi = est if is_plan else (cv.predicted, *snap(*conf.intervals[e.key]))
    note = "; ".join(x for x in (e.note, repeats, f"rank mean {100 * rank_mean:.1f}") if x)
    return Alternative(key=e.key, role="plan" if is_plan else e.role, name=e.name, options=[o.label for o in _opts(options, e)],
                       p=[float(x) for x in e.p], counts=[int(x) for x in e.counts], ot=ot, screen=screen,
                       predicted=float(pred), lo=float(lo), hi=float(hi), boot_lo=cv.lo, boot_hi=cv.hi,
                       measured=float(np.mean(m)) if m else float("nan"), measured_std=float(np.std(m)) if m else float("nan"),
                       n_measured=len(m), note=note)


def plan_lines(o: PlanOutcome, level: float) -> list[str]:
    chosen = o.chosen
    out = [f"plan for N={o.target_n:,}: {chosen.name} = {describe_mixture(chosen.options, chosen.p, o.pools)}",
           f"  accuracy at N: {100 * chosen.predicted:.1f} [{100 * chosen.lo:.1f}, {100 * chosen.hi:.1f}] "
           f"({int(100 * level)}% interval from fresh trainings not used to choose it; screening said {100 * chosen.screen:.1f})",
           "  alternatives: predicted at N with interval / measured at N"]
    for a in o.alternatives:
        meas = f"{100 * a.measured:.1f}" if np.isfinite(a.measured) else "-"
        inside = {True: " (inside)", False: " (outside)", None: ""}[a.contained]
        out.append(f"    {a.role:9s} {a.name:24s} {100 * a.predicted:5.1f} [{100 * a.lo:.1f}, {100 * a.hi:.1f}] / {meas}{inside}"
                   f"  {describe_mixture(a.options, a.p, o.pools)}" + (f"; {a.note}" if a.note else ""))
    return out


def plan_coverage(o: PlanOutcome) -> Coverage:
    """Measured alternatives inside their interval, one per distinct alternative (a baseline equal to a
    finalist shares its trainings), the plan included."""
    seen: dict[str, Alternative] = {}
    for a in o.alternatives:
        if a.role == "plan" or a.key not in seen:
            seen[a.key] = a
    return coverage([(a.lo, a.hi, a.measured) for a in seen.values()])

