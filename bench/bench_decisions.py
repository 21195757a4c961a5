"""Decision benchmark: does winnow's choice beat its own evidence on settings it was not tuned on?

Six settings built from built-in data, none of them a shipped config:

* ``vertex_digits`` — MNIST 95% classes 0–4, MNIST 95% classes 5–9, sklearn digits; target sklearn
  digits test: one pool alone (digits) is best.
* ``disjoint_mnist`` — MNIST classes 0–3 only / 4–6 only / 7–9 only; target MNIST test.
* ``bbc_minilm`` — BBC topics (business+tech / sports+entertainment / politics) as MiniLM vectors;
  target a BBC test split with every topic.
* ``noisy_prune`` — MNIST with 40% of labels replaced at random, MNIST 95% 0–4, sklearn digits;
  target MNIST test; the planner may prune by AUM (keep easy): pruning the noisy pool should win.
* ``four_pools`` — MNIST 0–4, MNIST 5–9, sklearn digits, inverted MNIST; target MNIST test.
* ``inverted_shift`` — inverted MNIST (all classes), MNIST 95% 0–4, MNIST 95% 5–9; target MNIST test.

Per setting and repetition (seeds 0, 1, 2: other pool draws, pilots, draws): the mixture stage and the
planner run as in ``winnow mixture`` / ``winnow plan`` (the stage functions with an in-process
``train``), then an **oracle** trains every grid mixture (step 0.25), uniform and winnow's choice at N
with 4 fresh draws each. Regrets are against the oracle's best: winnow's choice, the best-pilot pick
(the best grid mixture by pilots at the largest pilot size), uniform, the best single pool. The plan's
validation measurement is set next to every baseline's, and interval coverage counts every measured
alternative (mixture stage and planner), the chosen ones included.

    .venv/bin/python -m bench --only decisions [--quick]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import Context, Row, Section

N = 800
GRID = 0.25
ORACLE_REPS = 4


@dataclass(frozen=True)
class Setting:
    name: str
    what: str
    pools: list[dict]
    target: dict
    policies: tuple[str, ...] = ("ssp:hard", "random:equal")
    n: int = N
    pilot_sizes: tuple[int, ...] = (50, 100, 200)
    plan_pilots: tuple[int, ...] = (100, 200, 400)


def _p(classes: list[str], share: float = 0.95) -> dict[str, float]:
    return {c: share / len(classes) for c in classes}


LO, HI = [str(i) for i in range(5)], [str(i) for i in range(5, 10)]
SETTINGS: list[Setting] = [
    Setting("vertex_digits", "one pool alone is best",
            [dict(name="mnist_0to4", source="mnist", n=1200, class_proportions=_p(LO)),
             dict(name="mnist_5to9", source="mnist", n=1200, class_proportions=_p(HI)),
             dict(name="digits", source="digits")],
            dict(source="digits", split="test", n_ot=150, n_eval=290)),
    Setting("disjoint_mnist", "pools with disjoint classes",
            [dict(name="c0to3", source="mnist", n=1200, class_proportions=_p(["0", "1", "2", "3"], 1.0)),
             dict(name="c4to6", source="mnist", n=1200, class_proportions=_p(["4", "5", "6"], 1.0)),
             dict(name="c7to9", source="mnist", n=1200, class_proportions=_p(["7", "8", "9"], 1.0))],
            dict(source="mnist", split="test", n_ot=300, n_eval=1000)),
    Setting("bbc_minilm", "text: BBC topics, MiniLM vectors",
            [dict(name="biz_tech", source="bbc", n=500, class_proportions={"business": 0.5, "tech": 0.5}),
             dict(name="sport_ent", source="bbc", n=500, class_proportions={"sports": 0.5, "entertainment": 0.5}),
             dict(name="politics", source="bbc", n=250, class_proportions={"politics": 1.0})],
            dict(source="bbc", split="test", n_ot=200, n_eval=350), n=250, pilot_sizes=(40, 80, 160), plan_pilots=(50, 100, 200)),
    Setting("noisy_prune", "40% label noise in one pool; pruning it should win",
            [dict(name="noisy_all", source="mnist_noisy", n=2000),
             dict(name="clean_0to4", source="mnist", n=1200, class_proportions=_p(LO)),
             dict(name="digits", source="digits")],
            dict(source="mnist", split="test", n_ot=300, n_eval=1000), policies=("aum:easy", "random:equal")),
    Setting("four_pools", "four pools",
            [dict(name="mnist_0to4", source="mnist", n=1000, class_proportions=_p(LO)),
             dict(name="mnist_5to9", source="mnist", n=1000, class_proportions=_p(HI)),
             dict(name="digits", source="digits"),
             dict(name="inverted", source="mnist_inverted", n=1000)],
            dict(source="mnist", split="test", n_ot=300, n_eval=1000)),
    Setting("inverted_shift", "an all-class pool from another domain vs two half-class pools",
            [dict(name="inverted", source="mnist_inverted", n=1200),
             dict(name="mnist_0to4", source="mnist", n=1200, class_proportions=_p(LO)),
             dict(name="mnist_5to9", source="mnist", n=1200, class_proportions=_p(HI))],
            dict(source="mnist", split="test", n_ot=300, n_eval=1000)),
]


# --------------------------------------------------------------------------------------------- data
def _image_sources() -> dict[str, Any]:
    from bench.bench_ot_sweep import _sources
    from dataclasses import replace

    from tasks.data import example_ids_for

    s = _sources()
    m = s["mnist"]
    rng = np.random.default_rng(12345)
    y = m.y.copy()
    flip = rng.random(len(y)) < 0.4
    y[flip] = rng.integers(0, 10, int(flip.sum()))
    s["mnist_noisy"] = replace(m, source_id=3, name="mnist_noisy", y=y, example_ids=example_ids_for(3, m.row_index))
    s["mnist_inverted"] = replace(m, source_id=4, name="mnist_inverted", X=1.0 - m.X, example_ids=example_ids_for(4, m.row_index))
    return s


def bbc_source(cache: Path, max_seq_length: int = 64) -> Any:
    """BBC News (2,225 documents, 5 topics) as MiniLM vectors, cached in ``cache`` (.npz)."""
    from configs.base import SourceConfig
    from tasks.data import SourceData, example_ids_for
    from tasks.ingest import _read_bbc_news  # the ingest reader itself: the same documents as `kind: bbc_news`

    batches = list(_read_bbc_news(SourceConfig(name="bbc", kind="bbc_news"), {}))
    texts = [t for b in batches for t in b.texts]
    labels = [str(v) for b in batches for v in b.labels]
    names = sorted(set(labels))
    y = np.array([names.index(t) for t in labels], dtype=np.int64)
    ri = np.arange(len(texts))
    split = np.where(np.random.default_rng(0).random(len(ri)) < 0.3, "test", "train")
    src = SourceData(5, "bbc", 1, "bbc_news", "bench-bbc", example_ids_for(5, ri), ri, None, texts, y, names, split)
    if cache.exists():
        X = np.load(cache)["X"]
    else:
        from configs.encoder import EncoderConfig
        from tasks.embed import encode_source

        X = encode_source(src, EncoderConfig(kind="minilm", max_seq_length=max_seq_length), progress=False).vectors
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, X=X)
    from dataclasses import replace

    return replace(src, X=np.asarray(X, dtype=np.float32), texts=None)


# ------------------------------------------------------------------------------------------ one run
def _configs(s: Setting, seed: int) -> Any:
    from configs.base import RunConfig

    pools = [dict(pc, seed=100 * seed + i + 1) for i, pc in enumerate(s.pools)]
    image = s.pools[0]["source"] != "bbc"
    mixture = dict(pools=pools, target=dict(s.target, seed=seed), features=dict(image_size=12 if image else None, dim=32),
                   ot=dict(reveal=300), grid_step=GRID, pilot_sizes=list(s.pilot_sizes), reps=2, seed=seed,
                   predictor=dict(random_splits=4), extrapolation=dict(target_n=s.n, n_validate=4, reps=3),
                   select=dict(steps=8), plots=False)
    plan = dict(target_n=s.n, policies=list(s.policies), fractions=[0.5], grid_step=0.5, reveal=200, metric_k=10,
                pilot_sizes=list(s.plan_pilots), design=10, reps=1, finalists=2, top_pilots=2, confirm_reps=2, final_reps=2,
                final_confirm_reps=3, bootstrap=100, validation=dict(enabled=True, reps=3), seed=seed)
    kinds = {"mnist": "mnist", "mnist_noisy": "mnist", "mnist_inverted": "mnist", "digits": "sklearn_digits", "bbc": "bbc_news"}
    names = sorted({p["source"] for p in s.pools} | {s.target["source"]})
    return RunConfig.model_validate(dict(name=f"bench-{s.name}", sources=[dict(name=n, kind=kinds[n]) for n in names],
                                         mixture=mixture, plan=plan))


def run_setting(s: Setting, sources: dict[str, Any], seed: int) -> dict[str, Any]:
    """The mixture stage, the planner and the oracle for one setting and seed."""
    from tasks.mixture.jobs import local_train, trial_seed
    from tasks.mixture.outcome import SweepRecord
    from tasks.mixture.jobs import pilot_trials
    from tasks.mixture.pilots import PilotSpec, Pools, pilot_results
    from tasks.mixture.pools import prepare_mixture_data, reveal
    from tasks.mixture.simplex import mixture_counts, simplex_grid
    from tasks.mixture.stage import run_mixture
    from tasks.mixture.weighted import build_union_problem, weighted_sweep
    from tasks.plan.space import pool_options
    from tasks.plan.stage import run_plan

    rc = _configs(s, seed)
    cfg = rc.mixture
    t0 = time.perf_counter()
    data = prepare_mixture_data({n: sources[n] for n in {p.source for p in cfg.pools} | {cfg.target.source}}, cfg)
    pools = Pools.from_blocks(list(zip(data.pools_X, data.pools_y)))
    train = local_train(pools, data.target_eval_X, data.target_eval_y, n_classes=data.n_classes)
    K = len(cfg.pools)
    grid = simplex_grid(K, GRID)
    prob = build_union_problem(reveal(data, cfg.ot.reveal, cfg.ot.seed), (data.target_ot_X, data.target_ot_y))
    sw = weighted_sweep(prob, grid, reg=cfg.ot.reg, tol=cfg.ot.tol, max_iter=cfg.ot.max_iter)
    study = run_mixture(data, cfg, [SweepRecord("weighted", sw)], prob, pools=pools, train=train)
    t_mix = time.perf_counter() - t0
    sel = study.outcome.selection

    t0 = time.perf_counter()
    pc = rc.plan
    options = [pool_options(data.pools_X[i], data.pools_y[i], pool=i, policies=pc.policy_keys(), fractions=list(pc.fractions),
                            metric_k=pc.metric_k, seed=pc.seed) for i in range(K)]
    plan, _ = run_plan(data, rc, options, pools=pools, train=train)
    t_plan = time.perf_counter() - t0

    # oracle: every grid mixture that fits, uniform and the choice, 4 fresh draws at N each
    t0 = time.perf_counter()
    cand = {f"g{g}": grid[g] for g in range(len(grid)) if np.all(mixture_counts(grid[g], s.n) <= data.pool_sizes)}
    cand["uniform"] = np.full(K, 1.0 / K)
    on_grid = [k for k in cand if np.abs(cand[k] - np.asarray(sel.result.p)).max() < 1e-6]
    if not on_grid:  # a choice on the grid is read from the grid's draws, like the best-pilot pick
        cand["choice"] = np.asarray(sel.result.p)
    specs = {k: [PilotSpec(j, tuple(map(float, p)), s.n, r, trial_seed(10_000 + seed, k, "oracle", s.n, r)) for r in range(ORACLE_REPS)]
             for j, (k, p) in enumerate(cand.items())}
    flat = [x for v in specs.values() for x in v]
    res = pilot_results(flat, train(pilot_trials(flat, pools, "oracle")))
    oracle = {k: float(np.mean([r.accuracy for r in res if r.mixture_id == j])) for j, k in enumerate(cand)}
    oracle_sd = float(np.mean([np.std([r.accuracy for r in res if r.mixture_id == j], ddof=1) for j in range(len(cand))]))
    if on_grid:
        oracle["choice"] = oracle[on_grid[0]]
    t_oracle = time.perf_counter() - t0
    grid_keys = [k for k in cand if k.startswith("g")]
    best = max(oracle[k] for k in grid_keys + ["uniform", "choice"])
    vertices = [k for k in grid_keys if np.isclose(cand[k].max(), 1.0)]
    bp = next(k for k in grid_keys if np.allclose(cand[k], sel.best_pilot_grid_p))
    baselines = {a.name: a.measured for a in plan.alternatives if a.role == "baseline"}
    ch = plan.chosen
    return {
        "setting": s.name, "seed": seed, "choice_p": [round(x, 3) for x in sel.result.p], "choice_name": next(f.name for f in sel.finalists if f.chosen),
        "regret_winnow": best - oracle["choice"], "regret_best_pilot": best - oracle[bp], "regret_uniform": best - oracle["uniform"],
        "regret_best_single": best - max(oracle[k] for k in vertices) if vertices else float("nan"), "oracle_best": best,
        "oracle_rep_sd": oracle_sd,
        "mixture_interval": [sel.result.lo, sel.result.hi], "mixture_choice_oracle_inside": bool(sel.result.lo <= oracle["choice"] <= sel.result.hi),
        "mixture_coverage": [sel.coverage_inside, sel.coverage_total],
        "plan": {"name": ch.name, "p": [round(x, 3) for x in ch.p], "options": ch.options, "measured": ch.measured,
                 "lo": ch.lo, "hi": ch.hi, "inside": ch.contained},
        "plan_baselines": baselines,
        "plan_ge_all_baselines": bool(all(ch.measured >= v - 1e-12 for v in baselines.values() if np.isfinite(v))),
        "plan_ge_all_within_sd": bool(all(ch.measured >= v - oracle_sd for v in baselines.values() if np.isfinite(v))),
        "plan_coverage": _plan_coverage(plan),
        "predictions_in_0_1": bool(_in01(study, plan)),
        "seconds": {"mixture": round(t_mix, 1), "plan": round(t_plan, 1), "oracle": round(t_oracle, 1)},
    }


def _plan_coverage(plan) -> list[int]:
    from tasks.plan.stage import plan_coverage

    c = plan_coverage(plan)
    return [c.inside, c.total]


def _in01(study, plan) -> bool:
    vals = [v for arr in study.ext.values() for v in np.ravel(arr)] + list(np.ravel(study.grid_obj))
    vals += [x for f in study.outcome.selection.finalists for x in (f.predicted, f.lo, f.hi)]
    vals += [x for a in plan.alternatives for x in (a.predicted, a.lo, a.hi, a.screen)] + list(np.ravel(plan.candidate_screen))
    v = np.asarray(vals, dtype=np.float64)
    return bool(np.all((v >= 0) & (v <= 1)))


# ---------------------------------------------------------------------------------------- the bench
def run(ctx: Context, log: Callable[[str], None] = print) -> Section:
    settings = SETTINGS if not ctx.quick else [SETTINGS[0], SETTINGS[3]]
    seeds = [0, 1, 2] if not ctx.quick else [0]
    sources = _image_sources()
    if any(s.name == "bbc_minilm" for s in settings):
        sources["bbc"] = bbc_source(ctx.out_dir / "bbc_minilm_seq64.npz")
    runs = []
    for s in settings:
        for seed in seeds:
            t0 = time.perf_counter()
            r = run_setting(s, sources, seed)
            runs.append(r)
            log(f"{s.name} seed {seed}: regret winnow {100 * r['regret_winnow']:.2f} / best-pilot "
                f"{100 * r['regret_best_pilot']:.2f} / uniform {100 * r['regret_uniform']:.2f} / best single "
                f"{100 * r['regret_best_single']:.2f}; plan {r['plan']['name']} {100 * r['plan']['measured']:.1f} vs baselines "
                + ", ".join(f"{k} {100 * v:.1f}" for k, v in r["plan_baselines"].items())
                + f" ({time.perf_counter() - t0:.0f} s)")
    return summarize(runs, settings)


def summarize(runs: list[dict], settings: list[Setting]) -> Section:
    sec = Section("decisions")
    table = []
    for s in settings:
        rs = [r for r in runs if r["setting"] == s.name]
        if not rs:
            continue

        def ms(key: str) -> tuple[float, float]:
            v = 100 * np.array([r[key] for r in rs])
            return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0

        w, bp, u, sg = ms("regret_winnow"), ms("regret_best_pilot"), ms("regret_uniform"), ms("regret_best_single")
        rep_sd = 100 * float(np.mean([r["oracle_rep_sd"] for r in rs]))
        plan_wins = sum(r["plan_ge_all_baselines"] for r in rs)
        plan_wins_sd = sum(r["plan_ge_all_within_sd"] for r in rs)
        for r in rs:  # a baseline that became the plan is still that baseline, measured as the plan
            if not r["plan"]["name"].startswith(("finalist", "best-pilot")):
                r["plan_baselines"].setdefault(r["plan"]["name"], r["plan"]["measured"])
        plan_mean = float(np.mean([r["plan"]["measured"] for r in rs]))
        names = sorted({k for r in rs for k in r["plan_baselines"]})
        base_means = {k: float(np.mean([r["plan_baselines"][k] for r in rs if k in r["plan_baselines"]])) for k in names}
        plan_mean_ge = all(plan_mean >= v - 1e-12 for v in base_means.values())
        mc = np.sum([r["mixture_coverage"] for r in rs], axis=0)
        pcv = np.sum([r["plan_coverage"] for r in rs], axis=0)
        row = dict(setting=s.name, what=s.what, regret_winnow=w, regret_best_pilot=bp, regret_uniform=u, regret_best_single=sg,
                   rep_sd=rep_sd, plan_mean=100 * plan_mean, best_baseline_mean=100 * max(base_means.values()),
                   plan_mean_ge_baselines=plan_mean_ge, plan_ge_baselines=f"{plan_wins}/{len(rs)}", plan_ge_baselines_within_sd=f"{plan_wins_sd}/{len(rs)}",
                   mixture_coverage=mc.tolist(), plan_coverage=pcv.tolist(),
                   chosen_inside=sum(r["mixture_choice_oracle_inside"] for r in rs) + sum(bool(r["plan"]["inside"]) for r in rs),
                   chosen_total=2 * len(rs), in_0_1=all(r["predictions_in_0_1"] for r in rs),
                   plan=[f"{r['plan']['name']} {r['plan']['p']} {r['plan']['options']}" for r in rs])
        table.append(row)
        sec.rows.append(Row("decisions", f"{s.name}: mixture regret (points, mean ± sd over {len(rs)} seeds)", w[0], bp[0],
                            None, "<= best-pilot + 1 rep sd", w[0] <= bp[0] + max(rep_sd, w[1]), unit="pts",
                            ratio_label="winnow vs best-pilot",
                            note=f"winnow {w[0]:.2f}±{w[1]:.2f}, best-pilot {bp[0]:.2f}±{bp[1]:.2f}, uniform {u[0]:.2f}±{u[1]:.2f}, "
                                 f"best single {sg[0]:.2f}±{sg[1]:.2f}; plan >= every baseline {plan_wins}/{len(rs)}"))
    sec.details = {"table": table, "runs": runs}
    return sec


def markdown(sec: Section) -> str:
    """The RESULTS.md table of a decisions section."""
    lines = ["| setting | winnow regret | best-pilot regret | uniform regret | best-single regret | rep SD | plan / best baseline (mean) | plan ≥ all baselines per seed (≥ within 1 SD) | coverage mixture / plan | chosen inside |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sec.details["table"]:
        f = lambda m: f"{m[0]:.2f} ± {m[1]:.2f}"  # noqa: E731
        lines.append(f"| {r['setting']} | {f(r['regret_winnow'])} | {f(r['regret_best_pilot'])} | {f(r['regret_uniform'])} | "
                     f"{f(r['regret_best_single'])} | {r['rep_sd']:.2f} | {r['plan_mean']:.1f} / {r['best_baseline_mean']:.1f} | "
                     f"{r['plan_ge_baselines']} ({r['plan_ge_baselines_within_sd']}) | "
                     f"{r['mixture_coverage'][0]}/{r['mixture_coverage'][1]} / {r['plan_coverage'][0]}/{r['plan_coverage'][1]} | "
                     f"{r['chosen_inside']}/{r['chosen_total']} |")
    return "\n".join(lines)
