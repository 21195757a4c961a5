"""The mixture stage as plain functions: pilots → predictor → extrapolation → safe selection → validation.

:func:`run_mixture` takes the prepared arrays, the OT sweeps and a ``train`` callable
(:data:`tasks.mixture.jobs.Train`) and returns a :class:`MixtureStudy` (the outcome storage writes,
the lines the CLI prints, and what the plots need). Flows inject a ``train`` that runs chunks of
trainings as Prefect tasks; tests and benchmarks call it with :func:`tasks.mixture.jobs.local_train`.

Selection rule (docs/mixture.md, "Choosing the mixture"): the predictor proposes, measurements
decide — see :mod:`tasks.mixture.decide`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from configs.mixture import MixtureConfig
from tasks.mixture.correct import CorrectedFit, choose_bandwidth, fit_corrected
from tasks.mixture.decide import (
    Coverage, Finalist, choose_by_draws, coverage, extrapolation_halfwidth, interval_sd, log_error_interval,
    measurement_interval, merge_finalists, pooled_logit_sd,
)
from tasks.mixture.extrapolate import PROBE_R_STAR, Repeats, extrapolate_errors, repeated_sizes
from tasks.mixture.jobs import Train, pilot_trials, trial_seed
from tasks.mixture.outcome import ExtrapolationRow, FinalistRecord, MixtureOutcome, PoolInfo, SelectionRecord, SweepRecord
from tasks.mixture.pilots import (
    PilotResult, PilotSpec, PilotTable, Pools, aggregate_pilots, check_pool_capacity, check_target_capacity,
    pilot_results, plan_pilots,
)
from tasks.mixture.pools import MixtureData
from tasks.mixture.predictor import PredictorFit, ValidationRow, choose_form, fit_predictor, projektor_split, random_splits, validate_forms
from tasks.mixture.select import Objective, SelectionResult, default_starts, select_mixture
from tasks.mixture.simplex import mixture_counts
from tasks.mixture.weighted import UnionProblem, WeightedOT


@dataclass
class Surface:
    """The fitted predictor: validation of every form, the chosen form, its pilot-corrected fits."""

    validation: list[ValidationRow]
    fits: list[PredictorFit]
    chosen: str
    corrected: list[CorrectedFit]
    bandwidth_mae: dict[float, float]
    splits: dict[str, list[np.ndarray]]

    @property
    def label(self) -> str:
        return self.corrected[0].form


@dataclass
class MixtureStudy:
    """Everything one mixture run produced: the outcome to store, lines to print, and plot inputs."""

    outcome: MixtureOutcome
    lines: list[str]
    table: PilotTable
    ot_values: np.ndarray
    grid_obj: np.ndarray
    proposal: SelectionResult
    surface: Surface
    ext: dict[tuple[str, str], np.ndarray]
    measured: np.ndarray
    coverage: Coverage
    summary: dict = field(default_factory=dict)


def pool_info(data: MixtureData, cfg: MixtureConfig) -> list[PoolInfo]:
    out = []
    for pc, y in zip(cfg.pools, data.pools_y):
        counts = np.bincount(y, minlength=data.n_classes)
        out.append(PoolInfo(pc.name, pc.source, int(len(y)), {data.label_names[i]: int(c) for i, c in enumerate(counts) if c}))
    return out


def validation_splits(grid: np.ndarray, cfg: MixtureConfig) -> dict[str, list[np.ndarray]]:
    splits = {"projektor": [projektor_split(grid)]}
    if cfg.predictor.random_splits:
        n_test = max(1, round(cfg.predictor.random_test_fraction * len(grid)))
        splits["random"] = random_splits(len(grid), n_test, cfg.predictor.random_splits, cfg.predictor.seed)
    return splits


def feasible(P: np.ndarray, n: int, pool_sizes: np.ndarray) -> np.ndarray:
    return np.array([np.all(mixture_counts(p, n) <= pool_sizes) for p in np.atleast_2d(P)])


def fit_surface(grid: np.ndarray, ot: np.ndarray, table: PilotTable, cfg: MixtureConfig) -> Surface:
    """Validate every form, choose by held-out MAE, fit all on every mixture, then choose the residual
    bandwidth of the chosen form by held-out MAE (random splits, else Projektor's split)."""
    splits = validation_splits(grid, cfg)
    forms = list(cfg.predictor.forms) + list(cfg.predictor.baselines)
    ridge = cfg.predictor.ridge
    validation: list[ValidationRow] = []
    for i, n in enumerate(table.sizes):
        validation += validate_forms(grid, ot, table.median[i], splits, forms=forms, n=int(n), ridge=ridge)
    chosen = choose_form(validation, cfg.predictor.forms)
    fits = [fit_predictor(f, grid, ot, table.median[i], n=int(n), ridge=ridge) for i, n in enumerate(table.sizes) for f in forms]
    masks = splits.get("random") or splits["projektor"]
    bw = choose_bandwidth(chosen, grid, ot, list(table.median), masks, bandwidths=cfg.predictor.bandwidths, ridge=ridge)
    corrected = [fit_corrected(chosen, grid, ot, table.median[i], bw.h, n=int(n), ridge=ridge) for i, n in enumerate(table.sizes)]
    return Surface(validation, fits, chosen, corrected, bw.mae, splits)


def surface_lines(s: Surface) -> list[str]:
    out = []
    forms = list(dict.fromkeys(v.form for v in s.validation))
    for split in s.splits:
        parts = [f"{f} {100 * np.mean([v.mae for v in s.validation if v.form == f and v.split == split]):.1f}"
                 for f in forms if any(v.form == f and v.split == split for v in s.validation)]
        out.append(f"held-out MAE ({split} split, points, mean over N): " + ", ".join(parts))
    out.append(f"predictor: chosen form {s.chosen!r} (lowest held-out MAE)")
    if s.bandwidth_mae:
        parts = ", ".join(f"h={h:g} {100 * m:.2f}" for h, m in s.bandwidth_mae.items())
        out.append(f"pilot residual correction (held-out MAE, points): {parts} -> {s.label}")
    return out


def extrapolations(table: PilotTable, surface: Surface, grid: np.ndarray, ot: np.ndarray, n_target: int,
                   repeats: Repeats | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Every grid mixture's accuracy at ``n_target`` by each extrapolation; a mixture that would repeat a
    pool's examples there (``repeats``) is forecast at its effective size instead."""
    err_pilot = np.clip(1.0 - table.median, 1e-4, 1.0)
    pred = np.clip(np.stack([f.predict(grid, ot) for f in surface.corrected]), 0.0, 1.0)
    at = None if repeats is None else repeats.n_effective
    ext = {
        ("power_law", "pilots"): 1 - extrapolate_errors(table.sizes, err_pilot, n_target, "power_law", at),
        ("log_n_map", "pilots"): 1 - extrapolate_errors(table.sizes, err_pilot, n_target, "log_n_map", at),
        ("naive_largest_pilot", "pilots"): table.median[-1],
        ("power_law", "predictor"): 1 - extrapolate_errors(table.sizes, 1 - pred, n_target, "power_law", at),
        ("log_n_map", "predictor"): 1 - extrapolate_errors(table.sizes, 1 - pred, n_target, "log_n_map", at),
    }
    return {k: np.clip(v, 0.0, 1.0) for k, v in ext.items()}


def repeat_lines(repeats: Repeats, grid: np.ndarray, names: Sequence[str], n_target: int, show: int = 3) -> list[str]:
    """How many grid mixtures would see a pool's examples more than once at ``n_target``, with examples."""
    rep = np.flatnonzero(repeats.repeated)
    if rep.size == 0:
        return []
    lines = [f"extrapolation at N={n_target:,}: {rep.size} of {len(grid)} grid mixtures would repeat a pool's examples; "
             f"they are forecast at their effective size (R*={repeats.r_star:g}: repeats add nothing new to the probe)"]
    lines += [f"  p={np.round(grid[g], 3).tolist()}: {repeats.describe(g, names)}" for g in rep[:show]]
    return lines


def pilot_residuals(table: PilotTable) -> np.ndarray:
    """log(err_pred / err_obs) at the largest pilot size from the power law through the smaller ones,
    per mixture (empty with fewer than 3 pilot sizes): the held-out extrapolation error."""
    if table.sizes.size < 3:
        return np.zeros(0)
    err = np.clip(1.0 - table.median, 1e-4, 1.0)
    pred = extrapolate_errors(table.sizes[:-1], err[:-1], float(table.sizes[-1]), "power_law")
    return np.log(np.clip(pred, 1e-4, None)) - np.log(err[-1])


def propose(cfg: MixtureConfig, surface: Surface, sweeps: list[SweepRecord], problem: UnionProblem, grid: np.ndarray,
            n_target: int, pool_sizes: np.ndarray, ok: np.ndarray) -> tuple[SelectionResult, np.ndarray]:
    """The predictor's proposal (projected gradient ascent of the corrected surface at n_target, or its best
    grid point in resample mode) and the surface's predicted accuracy at n_target on the grid."""
    objective = Objective(surface.corrected, n_target, cfg.extrapolation.method)
    # the OT values the surface was fitted on (run_mixture fits on sweeps[0]: the resample sweep in resample
    # mode, where the weighted one is only a comparison); a surface is only evaluated on its own quantity
    main = sweeps[0].sweep
    with np.errstate(invalid="ignore"):  # resample sweeps carry no gradients: only the values are read here
        grid_obj = np.array([objective.value_grad(grid[g], main.values[g], main.grads[g])[0] for g in range(len(grid))])
    if cfg.ot.mode == "resample":
        g = int(np.argmax(np.where(ok, grid_obj, -np.inf)))
        one = grid[g][None]
        return SelectionResult(p=grid[g], predicted=float(grid_obj[g]), lo=float("nan"), hi=float("nan"), n_target=n_target,
                               path=one, path_values=grid_obj[g:g + 1], starts=one, start_values=grid_obj[g:g + 1]), grid_obj
    # the same solver, and the ε the sweep's values ended at (a stalled sweep is solved at one larger ε), so
    # the ascent reads the quantity the surface was fitted on
    reg = float(main.regs.max()) if main.regs is not None else cfg.ot.reg
    engine = WeightedOT(problem, solver=cfg.ot.solver, reg=reg, tol=cfg.ot.tol, max_iter=cfg.ot.max_iter, device=cfg.ot.device,
                        batched=cfg.ot.solver == "sinkhorn")

    def ot_fn(p: np.ndarray) -> tuple[float, np.ndarray]:
        r = engine(p)
        return r.value, r.grad

    k = grid.shape[1]
    sel = cfg.select
    sel_res = select_mixture(objective, ot_fn, starts=default_starts(k, grid[ok] if ok.any() else grid,
                                                                     grid_obj[ok] if ok.any() else grid_obj),
                             available=pool_sizes.astype(float) if sel.use_availability else None,
                             cost=[pc.cost for pc in cfg.pools] if sel.budget is not None else None, budget=sel.budget,
                             steps=sel.steps, step_size=sel.step_size, decay=sel.decay)
    return sel_res, grid_obj


def finalist_set(cfg: MixtureConfig, grid: np.ndarray, table: PilotTable, grid_obj: np.ndarray, proposal: SelectionResult,
                 ok: np.ndarray, names: list[str]) -> tuple[list[Finalist], dict[str, np.ndarray]]:
    """Finalists keyed by mixture id (grid index, or -1, -2, ... off the grid) and their mixtures:
    predicted optimum, best predicted grid point, top piloted mixtures, every vertex, uniform; only
    those that fit the pools at the final size (``ok`` on the grid)."""
    k = grid.shape[1]
    items: list[tuple[np.ndarray, str]] = [(proposal.p, "predicted-optimum")]
    if ok.any():
        items.append((grid[int(np.argmax(np.where(ok, grid_obj, -np.inf)))], "predicted-best-grid"))
        # the pilots' median at the largest size: the same statistic as the best-pilot baseline and the predictor
        med_big = np.where(ok, table.median[-1], -np.inf)
        for j, g in enumerate(np.argsort(-med_big, kind="stable")[: cfg.select.top_pilots]):
            if np.isfinite(med_big[g]):
                items.append((grid[g], f"best-pilot-{j + 1}"))
    items += [(np.eye(k)[i], f"vertex:{names[i]}") for i in range(k)]
    items.append((np.full(k, 1.0 / k), "uniform"))
    P: dict[str, np.ndarray] = {}
    keyed = []
    off = 0
    for p, why in items:
        p = np.asarray(p, dtype=np.float64)
        p = np.where(p < 1e-6, 0.0, p)  # the ascent's float dust (1e-16) is not a share of a pool
        p = p / p.sum()
        on = np.flatnonzero(np.abs(grid - p).max(1) < 1e-6)
        if on.size:
            key = str(int(on[0]))
        else:
            same = [kk for kk, q in P.items() if np.abs(q - p).max() < 1e-6]
            if same:
                key = same[0]
            else:
                off += 1
                key = str(-off)
        P.setdefault(key, p)
        keyed.append((key, why))
    return merge_finalists(keyed), P


def _specs(keys_p: dict[str, np.ndarray], n: int, reps: int, stage: str, seed: int) -> list[PilotSpec]:
    return [PilotSpec(int(k), tuple(float(x) for x in p), int(n), r, trial_seed(seed, k, stage, int(n), r))
            for k, p in keys_p.items() for r in range(reps)]


def _train_specs(train: Train, specs: list[PilotSpec], pools: Pools, stage: str) -> list[PilotResult]:
    return pilot_results(specs, train(pilot_trials(specs, pools, stage))) if specs else []


def _acc(runs: list[PilotResult], key: str) -> np.ndarray:
    return np.array([r.accuracy for r in sorted(runs, key=lambda r: r.rep) if str(r.mixture_id) == key])


def run_mixture(data: MixtureData, cfg: MixtureConfig, sweeps: list[SweepRecord], problem: UnionProblem, *, pools: Pools,
                train: Train) -> MixtureStudy:
    """The mixture stage after the OT sweep (see the module docstring). ``pools`` are the rows ``train``
    draws from (``Pools.from_blocks`` of the data's pools)."""
    grid = sweeps[0].sweep.grid
    sizes = list(cfg.pilot_sizes)
    n_target = check_capacity(data.pool_sizes, grid, cfg, data.names)  # refused before any pilot is trained
    ot_vals = sweeps[0].sweep.values
    lines = [sweep_line(rec) for rec in sweeps]

    specs = plan_pilots(grid, sizes, cfg.reps, cfg.seed)
    pilots = _train_specs(train, specs, pools, "pilot")
    table = aggregate_pilots(pilots, grid)
    lines.append(f"pilots: {len(pilots)} trainings ({len(grid)} mixtures x {len(sizes)} sizes x {cfg.reps} reps)")
    for i, n in enumerate(table.sizes):
        r = np.corrcoef(ot_vals, table.median[i])[0, 1]
        lines.append(f"  N={n}: accuracy {table.median[i].min():.3f}..{table.median[i].max():.3f}, corr(OT, acc) = {r:+.2f}")
    surface = fit_surface(grid, ot_vals, table, cfg)
    lines += surface_lines(surface)
    repeats = repeated_sizes(grid, n_target, data.pool_sizes, r_star=PROBE_R_STAR)
    ext = extrapolations(table, surface, grid, ot_vals, n_target, repeats)
    lines += repeat_lines(repeats, grid, data.names, n_target)

    final_n = n_target if cfg.extrapolation.train_at_target else int(max(sizes))
    ok = feasible(grid, final_n, data.pool_sizes)
    proposal, grid_obj = propose(cfg, surface, sweeps, problem, grid, n_target, data.pool_sizes, ok)
    finalists, fp = finalist_set(cfg, grid, table, grid_obj, proposal, ok, data.names)
    dropped = [f.name for f in finalists if not feasible(fp[f.key], final_n, data.pool_sizes)[0]]
    finalists = [f for f in finalists if f.name not in dropped]
    if dropped:
        lines.append(f"finalists left out (do not fit the pools at N={final_n}): {', '.join(dropped)}")
    decision = decide(cfg, finalists, fp, final_n, n_target, pools, train)
    lines += decision.lines

    measured, target_runs = np.full(len(grid), np.nan), []
    fin_measured: dict[str, np.ndarray] = {}
    if cfg.extrapolation.train_at_target:
        measured, fin_measured, target_runs = validate(cfg, grid, table, fp, n_target, data.pool_sizes, pools, train)
    study = _assemble(cfg, data, grid, table, ot_vals, surface, ext, proposal, grid_obj, decision, fp, finalists, measured,
                      fin_measured, target_runs, pilots, n_target, lines)
    study.outcome.sweeps = sweeps
    return study


def check_capacity(pool_sizes: np.ndarray, grid: np.ndarray, cfg: MixtureConfig, names: Sequence[str]) -> int:
    """Every pilot, and with ``train_at_target`` the trainings at the target size, fit the pools (the
    mixture preflight and the stage run this same check). Returns the target size N."""
    sizes = list(cfg.pilot_sizes)
    check_pool_capacity(pool_sizes, grid, sizes, names)
    n_target = cfg.extrapolation.target_n or 10 * max(sizes)
    if cfg.extrapolation.train_at_target:
        check_target_capacity(pool_sizes, grid, n_target, names)
    return n_target


def sweep_line(rec: SweepRecord) -> str:
    s = rec.sweep
    line = (f"OT sweep {rec.label} ({s.mode}): {len(s.values)} mixtures in {s.total_seconds:.1f} s "
            f"({s.seconds.mean() * 1e3:.0f} ms per mixture + {s.setup_seconds:.1f} s setup)")
    if s.converged is not None:
        raised = float(s.regs.max()) if s.regs is not None and (s.regs > s.reg).any() else None
        line += (f"; iterations per mixture {int(s.n_iter.min())}..{int(s.n_iter.max())}, "
                 + (f"every mixture solved at ε={raised:g} (reg {s.reg:g} stalled; one ε for all keeps the "
                    "values one quantity), " if raised is not None else "")
                 + f"{s.n_unconverged} not converged")
    return line


@dataclass
class Decision:
    chosen: str
    rank: dict[str, np.ndarray]
    confirm: np.ndarray
    estimate: float
    lo: float
    hi: float
    sd: float
    df: int
    runs: dict[str, list[PilotResult]]
    lines: list[str]


def decide(cfg: MixtureConfig, finalists: list[Finalist], fp: dict[str, np.ndarray], final_n: int, n_target: int,
           pools: Pools, train: Train) -> Decision:
    """Rank every finalist by ``rank_reps`` trainings at ``final_n``; confirm the winner with fresh draws."""
    sel = cfg.select
    keys = {f.key: fp[f.key] for f in finalists}
    rank_runs = _train_specs(train, _specs(keys, final_n, sel.rank_reps, "rank", cfg.seed), pools, "rank")
    rank = {k: _acc(rank_runs, k) for k in keys}
    chosen = choose_by_draws(rank, list(keys))
    sd, df = pooled_logit_sd(list(rank.values()))
    conf_runs = _train_specs(train, _specs({chosen: keys[chosen]}, final_n, sel.confirm_reps, "confirm", cfg.seed), pools,
                             "confirm") if sel.confirm else []
    confirm = _acc(conf_runs, chosen)
    if confirm.size and final_n == n_target:
        s_c, df_c = interval_sd([rank[chosen], confirm], list(rank.values()))
        est, lo, hi = measurement_interval(confirm, s_c, df_c, level=sel.level, n_future=cfg.extrapolation.reps)
    else:  # no independent draws at N: an estimate from the rank draws, with the widest honest interval
        est, lo, hi = float(np.mean(rank[chosen])), 0.0, 1.0
    name = {f.key: f for f in finalists}
    lines = [f"safe selection: {len(finalists)} finalists, {sel.rank_reps} trainings each at N={final_n} "
             f"(pooled SD {sd:.3f} in logit, {df} df)"]
    for k in keys:
        mark = " <- chosen" if k == chosen else ""
        lines.append(f"  {', '.join(name[k].reasons):48s} p={np.round(keys[k], 3).tolist()} "
                     f"rank mean {100 * np.mean(rank[k]):.1f}{mark}")
    if confirm.size:
        lines.append(f"  confirmed by {confirm.size} fresh trainings: {100 * est:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
                     f"({int(round(100 * sel.level))}% interval from draws not used to choose it)")
    return Decision(chosen, rank, confirm, est, lo, hi, sd, df, {"rank": rank_runs, "confirm": conf_runs}, lines)


def validate(cfg: MixtureConfig, grid: np.ndarray, table: PilotTable, fp: dict[str, np.ndarray], n_target: int,
             pool_sizes: np.ndarray, pools: Pools, train: Train) -> tuple[np.ndarray, dict[str, np.ndarray], list[PilotResult]]:
    """Independent trainings at n_target of ``n_validate`` random grid mixtures, the best pilot and every finalist."""
    ok = feasible(grid, n_target, pool_sizes)
    if not ok.any():
        raise ValueError(f"no grid mixture fits the pools at target_n={n_target}")
    cand = np.flatnonzero(ok)
    rng = np.random.default_rng(cfg.seed)
    pick = set(rng.choice(cand, size=min(cfg.extrapolation.n_validate, cand.size), replace=False).tolist())
    pick.add(int(np.argmax(np.where(ok, table.median[-1], -np.inf))))
    keys = {str(g): grid[g] for g in sorted(pick)}
    keys.update({k: p for k, p in fp.items() if feasible(p, n_target, pool_sizes)[0]})
    runs = _train_specs(train, _specs(keys, n_target, cfg.extrapolation.reps, "target", cfg.seed), pools, "target")
    measured = np.full(len(grid), np.nan)
    fin: dict[str, np.ndarray] = {}
    for k in keys:
        a = _acc(runs, k)
        if int(k) >= 0:
            measured[int(k)] = float(np.mean(a))
        fin[k] = a
    return measured, fin, runs


def _assemble(cfg, data, grid, table, ot_vals, surface, ext, proposal, grid_obj, decision, fp, finalists, measured,
              fin_measured, target_runs, pilots, n_target, lines) -> MixtureStudy:
    """Intervals, coverage, regret and the outcome record."""
    level = cfg.select.level
    res = pilot_residuals(table)
    sizes = table.sizes
    w = extrapolation_halfwidth(res, level, n_target, sizes[-1], sizes[-2])
    lo_g, hi_g = log_error_interval(ext[("power_law", "pilots")], w)
    ok = np.isfinite(measured)
    for (method, basis), v in ext.items():
        if ok.any():
            lines.append(f"  extrapolation {method} from {basis}: MAE {100 * np.abs(v[ok] - measured[ok]).mean():.1f} points")
    records, cov_rows = [], []
    fin_keys = {f.key for f in finalists}
    for f in finalists:
        p = fp[f.key]
        if f.key == decision.chosen:
            pred, lo, hi = decision.estimate, decision.lo, decision.hi
        elif decision.rank[f.key].size and cfg.extrapolation.train_at_target:
            s_f, df_f = interval_sd([decision.rank[f.key]], list(decision.rank.values()))
            pred, lo, hi = measurement_interval(decision.rank[f.key], s_f, df_f, level=level, n_future=cfg.extrapolation.reps)
        else:
            pred, lo, hi = float(grid_obj[int(f.key)]) if int(f.key) >= 0 else proposal.predicted, 0.0, 1.0
        m = fin_measured.get(f.key, np.zeros(0))
        meas = float(np.mean(m)) if m.size else float("nan")
        records.append(FinalistRecord(f.name, f.reasons, tuple(map(float, p)), float(np.mean(decision.rank[f.key])),
                                      pred, lo, hi, meas, f.key == decision.chosen))
        cov_rows.append((lo, hi, meas))
    for g in np.flatnonzero(ok):
        if str(g) not in fin_keys:
            cov_rows.append((float(lo_g[g]), float(hi_g[g]), float(measured[g])))
    cov = coverage(cov_rows)
    ch = next(r for r in records if r.chosen)
    best_val = max([measured[g] for g in np.flatnonzero(ok)] + [r.measured for r in records if np.isfinite(r.measured)],
                   default=float("nan"))
    bp = int(np.argmax(np.where(feasible(grid, n_target, data.pool_sizes), table.median[-1], -np.inf)))
    gb = int(np.nanargmax(measured)) if ok.any() else bp
    record = SelectionRecord(
        result=replace(proposal, p=np.asarray(ch.p), predicted=decision.estimate, lo=decision.lo, hi=decision.hi),
        form=surface.label, extrapolation=cfg.extrapolation.method, measured=ch.measured,
        best_grid_p=tuple(map(float, grid[gb])), best_grid_measured=float(best_val),
        best_pilot_grid_p=tuple(map(float, grid[bp])), best_pilot_grid_measured=float(measured[bp]),
        finalists=records, coverage_inside=cov.inside, coverage_total=cov.total, level=level)
    lines.append(f"selection: {ch.name} p = {np.round(ch.p, 3).tolist()}; accuracy at N={n_target}: {100 * ch.predicted:.1f} "
                 f"[{100 * ch.lo:.1f}, {100 * ch.hi:.1f}] (predictor's optimum {np.round(proposal.p, 3).tolist()} "
                 f"predicted {100 * proposal.predicted:.1f})")
    if np.isfinite(ch.measured):
        lines.append(f"  measured {100 * ch.measured:.1f} (independent trainings); best measured {100 * best_val:.1f} -> regret "
                     f"{100 * record.regret:.2f} points (best-pilot pick {np.round(grid[bp], 2).tolist()}: regret "
                     f"{100 * record.pilot_pick_regret:.2f})")
        lines.append("  " + cov.line(level))
    outcome = MixtureOutcome(pools=pool_info(data, cfg), grid=grid, pilots=pilots, target_runs=target_runs,
                             fits=surface.fits, chosen_form=surface.chosen, validation=surface.validation,
                             extrapolations=[ExtrapolationRow(g, tuple(map(float, grid[g])), n_target, m, b, float(v[g]),
                                                              float(measured[g]))
                                             for (m, b), v in ext.items() for g in range(len(grid))],
                             selection=record, final_runs=decision.runs)
    summary = {"chosen": ch.name, "p": [round(x, 4) for x in ch.p], "predicted": ch.predicted, "lo": ch.lo, "hi": ch.hi,
               "measured": None if not np.isfinite(ch.measured) else ch.measured,
               "regret": None if not np.isfinite(record.regret) else record.regret,
               "pilot_pick_regret": None if not np.isfinite(record.pilot_pick_regret) else record.pilot_pick_regret,
               "coverage": [cov.inside, cov.total], "form": surface.label}
    return MixtureStudy(outcome, lines, table, ot_vals, grid_obj, proposal, surface, ext, measured, cov, summary)
