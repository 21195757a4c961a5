"""Benchmark: batched multi-start Chinchilla fit vs a Python loop of scipy L-BFGS-B calls.

Data: 240 synthetic Chinchilla-like points (Epoch's replication data is not available offline):
N log-uniform in [7e7, 1.6e10], D/N log-uniform in [5, 200], L = E + A/N^alpha + B/D^beta with
Epoch's estimates (E=1.817, A=482.0, B=2085.4, alpha=0.348, beta=0.366) and 2% log-normal noise.
Grid: Epoch's 4,500 starts. Objective: summed Huber (delta=1e-3) on log residuals, both sides.

``--curves`` instead runs the generated-curve table (auto vs the naive forecasts vs every single
form on >= 20 curves of mixed kinds; see ``generated_curves``) and writes
bench/out/bench_scaling_curves_seed<S>.json; ``--real`` the same table on six MNIST / digits probe
curves (``real_curves``, bench/out/bench_scaling_real.json).

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
from collections.abc import Sequence
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


# ------------------------------------------------------------------ generated-curve table (issue 19)
# `auto` against the naive forecasts and every single form, on curves of mixed kinds with known
# generating laws. Protocol per curve: hold out its largest scale(s); every predictor sees only the
# rest (auto runs its own rolling-origin check inside that training part); score = RMSLE on the
# held-out points. Per kind: the mean over its curves.
#     .venv/bin/python bench/bench_scaling.py --curves [--out bench/out/bench_scaling_curves.json]

ONE_VAR_FORMS = ("m1", "m2", "pow4", "bnsl")
THREE_VAR_FORMS = ("data_constrained", "data_constrained_ot", "chinchilla", "gadre")


def _noisy(rng: np.random.Generator, y: np.ndarray, sd: float) -> np.ndarray:
    return y * np.exp(rng.normal(0.0, sd, y.shape))


def generated_curves(seed: int = 0) -> list[dict]:
    """>= 20 curves: kind, x (and x2 = [D, U] for repeated-epoch runs), y, held-out count, truth."""
    rng = np.random.default_rng(seed)
    curves: list[dict] = []
    x = np.geomspace(1e2, 1e6, 14)
    for i in range(6):  # power law with a floor, 1% noise
        E, B, c = rng.uniform(0.05, 0.4), rng.uniform(2.0, 20.0), rng.uniform(0.2, 0.7)
        curves.append({"kind": "power law + noise", "name": f"pl-{i}", "x": x, "y": _noisy(rng, E + B * x**-c, 0.01),
                       "holdout": 3, "truth": {"E": E, "B": B, "c": c}})
    for i in range(5):  # saturating: a steep law that reaches its floor inside the data, 0.5% noise
        E, c = rng.uniform(0.1, 0.3), rng.uniform(0.8, 1.5)
        B = E * 0.01 * 1e6**c * rng.uniform(0.5, 2.0)  # the power term is ~1% of the floor at the largest x
        curves.append({"kind": "saturating", "name": f"sat-{i}", "x": x, "y": _noisy(rng, E + B * x**-c, 0.005),
                       "holdout": 3, "truth": {"E": E, "B": B, "c": c}})
    for i in range(5):  # naive wins: a power law that flattens (plateau, 0.3% noise) before the held-out scales
        B, c, k = rng.uniform(1.0, 5.0), rng.uniform(0.2, 0.5), int(rng.integers(7, 10))
        y = B * x**-c
        y[k:] = y[k - 1]
        curves.append({"kind": "plateau (naive wins)", "name": f"flat-{i}", "x": x, "y": _noisy(rng, y, 0.003),
                       "holdout": 3, "truth": {"B": B, "c": c, "flat_from": float(x[k])}})
    dc = get_form("data_constrained")
    for i, (rd, rn) in enumerate([(5.0, 3.0), (15.4, 5.3), (40.0, 10.0), (15.4, 2.0), (8.0, 5.3)]):
        truth = {"E": 1.87, "A": 521.0, "B": 1488.0, "alpha": 0.353, "beta": 0.353, "Rstar_D": rd, "Rstar_N": rn}
        N, U, ep = (a.ravel() for a in np.meshgrid(np.geomspace(2e7, 2e9, 5), [1e8, 1e9, 1e10], [1, 2, 4, 8, 16, 32, 64.0], indexing="ij"))
        x2 = np.column_stack([U * ep, U])
        y = _noisy(rng, dc.predict(dc.from_natural(truth), N, x2), 0.005)
        curves.append({"kind": "repeated epochs", "name": f"rep-{i}", "x": N, "x2": x2, "y": y, "holdout": 1, "truth": truth})
    return curves


# ------------------------------------------------------------------ real curves: MNIST / digits probes
# Test error of the project's linear probe (tasks/probe.py) against training-set size, on random
# subsets and on subsets pruned by SSP (keep-hard / keep-easy: the n hardest / easiest rows by the
# project's SSP scores). MNIST: PCA-64 of the pixels (60k train, 10k test, offline copy in pureml);
# digits: scikit-learn's 8x8 digits (1,347 train / 450 test). Cached in bench/out/scaling_real_curves.json.

REAL_CACHE = Path(__file__).parent / "out" / "scaling_real_curves.json"


def _mnist_pca(dim: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from ssl_vs_pca import load_mnist

    Xtr, ytr, Xte, yte = load_mnist()
    mu = Xtr.mean(0)
    _, _, vt = np.linalg.svd((Xtr[::6] - mu).astype(np.float64), full_matrices=False)  # 10k rows suffice for 64 axes
    V = vt[:dim].T.astype(np.float32)
    return (Xtr - mu) @ V, ytr, (Xte - mu) @ V, yte


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    tr, te = order[:1347], order[1347:]
    X = d.data.astype(np.float32)
    return X[tr], d.target[tr].astype(np.int64), X[te], d.target[te].astype(np.int64)


def real_curves(refresh: bool = False) -> list[dict]:
    """4 MNIST and 2 digits probe curves (test error vs training-set size), computed once and cached."""
    if REAL_CACHE.exists() and not refresh:
        return [_real_kind({**c, "x": np.asarray(c["x"]), "y": np.asarray(c["y"])}) for c in json.loads(REAL_CACHE.read_text())]
    from tasks.probe import train_linear_probe
    from tasks.prune.registry import MetricParams, compute_metric, select_by_metric

    out = []
    for data, loader, sizes in (("mnist", _mnist_pca, np.unique(np.geomspace(100, 60000, 12).astype(int))),
                                ("digits", _digits, np.unique(np.geomspace(30, 1347, 12).astype(int)))):
        Xtr, ytr, Xte, yte = loader()
        ssp = compute_metric("ssp", Xtr, params=MetricParams(k=10), seed=0)
        series = [("random", 0), ("random", 1), ("ssp keep-hard", 0), ("ssp keep-easy", 0)] if data == "mnist" else \
                 [("random", 0), ("ssp keep-hard", 0)]
        for label, seed in series:
            err = []
            for n in sizes:
                if label == "random":
                    idx = np.random.default_rng(seed).permutation(len(ytr))[:n]
                else:
                    idx = select_by_metric(ssp, label.split("keep-")[1], count=int(n), seed=seed).indices
                r = train_linear_probe(Xtr[idx], ytr[idx], Xte, yte, n_classes=10)
                err.append(1.0 - r.accuracy)
            out.append({"kind": "probes", "name": f"{data} {label}" + (f" s{seed}" if label == "random" else ""),
                        "x": sizes.astype(float).tolist(), "y": err, "holdout": 3,
                        "truth": {"data": data, "subset": label, "seed": seed}})
    REAL_CACHE.parent.mkdir(parents=True, exist_ok=True)
    REAL_CACHE.write_text(json.dumps(out, indent=1))
    return [_real_kind({**c, "x": np.asarray(c["x"]), "y": np.asarray(c["y"])}) for c in out]


# ------------------------------------------------------------------ real curves: repeated epochs
# MLPs (64 -> h -> 10, ReLU) trained with minibatch Adam (lr 3e-3, batch 32, constant rate) on pools of U
# unique MNIST rows (PCA-64), for 1-32 passes over the pool; test error after 1, 2, 4, 8, 16 and 32 passes
# (one run per (h, U), its checkpoints). Pools: random rows, or the U hardest by the project's SSP scores
# (a pruned pool). N = parameters, D = examples seen (passes x U), U = unique examples: the setting of
# Muennighoff et al.'s data-constrained law, on data this project makes. Cached in bench/out.

REPEAT_CACHE = Path(__file__).parent / "out" / "scaling_repeated_curves.json"
REPEAT_WIDTHS = (8, 32, 128, 512)
REPEAT_POOLS = (1_000, 3_000, 10_000)
REPEAT_PASSES = (1, 2, 4, 8, 16, 32)


def repeated_suffix(seeds: Sequence[int], widths: Sequence[int]) -> str:
    """File-name suffix of a repeated-curve set ("" for the default seeds and widths)."""
    out = "" if tuple(seeds) == (0, 1) else "_seeds" + "-".join(map(str, seeds))
    return out + ("" if tuple(widths) == REPEAT_WIDTHS else "_widths" + "-".join(map(str, widths)))


def _mlp_test_errors(X: np.ndarray, y: np.ndarray, Xte: np.ndarray, yte: np.ndarray, width: int, seed: int) -> list[float]:
    """Test error of one MLP after each of REPEAT_PASSES passes over (X, y) (one run, checkpoints)."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    Xt, yt, Xv = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(Xte)
    gen = torch.Generator().manual_seed(seed)
    errs = []
    for p in range(1, REPEAT_PASSES[-1] + 1):
        for b in torch.randperm(len(yt), generator=gen).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[b]), yt[b]).backward()
            opt.step()
        if p in REPEAT_PASSES:
            with torch.no_grad():
                errs.append(float((net(Xv).argmax(1).numpy() != yte).mean()))
    return errs


def repeated_curves(refresh: bool = False, seeds: Sequence[int] = (0, 1), widths: Sequence[int] = REPEAT_WIDTHS) -> list[dict]:
    """Three-variable curves (random / SSP keep-hard pools, one per training seed): x = N, x2 = [D, U]."""
    seeds, widths = tuple(seeds), tuple(widths)
    cache = REPEAT_CACHE.with_name(f"scaling_repeated_curves{repeated_suffix(seeds, widths)}.json")
    if cache.exists() and not refresh:
        cached = json.loads(cache.read_text())
    else:
        import torch

        from tasks.prune.registry import MetricParams, compute_metric, select_by_metric

        torch.set_num_threads(1)
        Xtr, ytr, Xte, yte = _mnist_pca()
        Xtr, Xte = Xtr / Xtr.std(), Xte / Xtr.std()  # unit scale for Adam; the same map for both
        ssp = compute_metric("ssp", Xtr, params=MetricParams(k=10), seed=0)
        cached = []
        for pool, seed in [(p, s) for p in ("random", "ssp keep-hard") for s in seeds]:
            N, D, U, err = [], [], [], []
            for u in REPEAT_POOLS:
                if pool == "random":
                    idx = np.random.default_rng(seed).permutation(len(ytr))[:u]
                else:
                    idx = select_by_metric(ssp, "hard", count=u, seed=seed).indices
                for w in widths:
                    e = _mlp_test_errors(Xtr[idx].astype(np.float32), ytr[idx], Xte.astype(np.float32), yte, w, seed)
                    n_params = (Xtr.shape[1] + 1) * w + (w + 1) * 10
                    N += [n_params] * len(e)
                    D += [k * u for k in REPEAT_PASSES]
                    U += [u] * len(e)
                    err += e
            cached.append({"name": f"mnist mlp {pool} s{seed}", "x": N, "x2": np.column_stack([D, U]).tolist(), "y": err,
                           "holdout": 1, "truth": {"data": "mnist", "pool": pool, "seed": seed}})
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached, indent=1))
    return [{**c, "kind": "MLPs, repeated epochs on MNIST pools", "x": np.asarray(c["x"], dtype=float),
             "x2": np.asarray(c["x2"], dtype=float), "y": np.asarray(c["y"])} for c in cached]


def _real_kind(c: dict) -> dict:
    """Random subsets are scaling curves; SSP-pruned ones are pruning curves (their shape changes as the
    kept examples go from the hardest/easiest to all): two kinds."""
    return {**c, "kind": "probes, random subsets" if c["truth"]["subset"] == "random" else "probes, SSP-pruned subsets"}


def _x2_for(name: str, x2: np.ndarray | None) -> np.ndarray | None:
    return x2[:, 0] if x2 is not None and get_form(name).n_vars == 2 else x2


def score_curve(c: dict, origins: int | None = None) -> dict:
    """Held-out RMSLE of auto, the two naive forecasts and every single form on one curve."""
    from tasks.scaling.api import fit_report
    from tasks.scaling.validate import baseline_predictions, holdout_mask, rmsle

    x, y, x2 = c["x"], c["y"], c.get("x2")
    train, test = holdout_mask(x, c["holdout"])
    x2t = None if x2 is None else x2[train]
    x2h = None if x2 is None else x2[test]
    out: dict = {"kind": c["kind"], "name": c["name"], "n_train": int(train.sum()), "n_test": int(test.sum())}
    base = baseline_predictions(x[train], y[train], x2t)
    out["last_value"] = rmsle(y[test], np.full(test.sum(), base["last_value"]))
    out["best_small"] = rmsle(y[test], np.full(test.sum(), base["best_small"]))
    forms = ONE_VAR_FORMS if x2 is None else THREE_VAR_FORMS
    for name in forms:
        f = get_form(name)
        try:
            fit = fit_form(f, x[train], y[train], _x2_for(name, x2t))
            out[name] = rmsle(y[test], f.predict(fit.theta, x[test], _x2_for(name, x2h)))
        except Exception as err:  # noqa: BLE001 - a form that cannot fit this curve scores NaN
            out[name] = float("nan")
            out[f"{name}_error"] = str(err)
    t0 = time.perf_counter()
    rep = fit_report(x[train], y[train], x2=x2t, form="auto", holdout_largest=1, origins=origins,
                     predict_at=x[test] if x2 is None else np.column_stack([x[test], x2h]))  # auto's own candidates
    out["auto_seconds"] = time.perf_counter() - t0
    out["auto"] = rmsle(y[test], rep.predictions)
    out["auto_choice"] = rep.predictor
    lo, hi = rep.pred_lo, rep.pred_hi
    out["auto_interval_covers"] = float(np.mean((y[test] >= lo) & (y[test] <= hi)))
    return out


def curves_table(seed: int = 0, origins: int | None = None, curves: list[dict] | None = None) -> dict:
    rows = [score_curve(c, origins=origins) for c in (generated_curves(seed) if curves is None else curves)]
    kinds: dict[str, dict] = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        forms = ONE_VAR_FORMS if "repeated" not in kind else THREE_VAR_FORMS
        mean = {k: float(np.nanmean([r[k] for r in rs])) for k in ("auto", "last_value", "best_small", *forms)}
        best_form = min(forms, key=lambda f: mean[f] if np.isfinite(mean[f]) else np.inf)
        ref = min(mean["last_value"], mean[best_form])
        kinds[kind] = {"n": len(rs), "mean_rmsle": mean, "best_single_form": best_form,
                       "reference": ref, "auto_le_reference": bool(mean["auto"] <= ref * (1 + 1e-9)),
                       "choices": {ch: sum(r["auto_choice"] == ch for r in rs) for ch in dict.fromkeys(r["auto_choice"] for r in rs)},
                       "interval_coverage": float(np.mean([r["auto_interval_covers"] for r in rs]))}
    return {"rows": rows, "kinds": kinds, "origins": origins, "seed": seed}


def print_curves(res: dict) -> None:
    print("| kind | curves | auto | last value | best single form | auto <= better of the two | auto's choices | interval coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, k in res["kinds"].items():
        m = k["mean_rmsle"]
        ch = ", ".join(f"{c} x{n}" for c, n in k["choices"].items())
        print(f"| {kind} | {k['n']} | {m['auto']:.4f} | {m['last_value']:.4f} | {k['best_single_form']} {m[k['best_single_form']]:.4f} | "
              f"{'yes' if k['auto_le_reference'] else '**no**'} | {ch} | {k['interval_coverage']:.0%} |")


def epoch_holdout(curves: list[dict], max_train_passes: int = 8) -> list[dict]:
    """Extrapolation in passes: fit on runs of <= ``max_train_passes`` passes over their pool, score the
    RMSLE on the longer runs (same N and U), next to the naive forecast "more passes change nothing" (each
    (N, U) run's value at its last training pass)."""
    from tasks.scaling.validate import rmsle

    rows = []
    for c in curves:
        x, x2, y = c["x"], c["x2"], c["y"]
        passes = x2[:, 0] / x2[:, 1]
        train, test = passes <= max_train_passes + 1e-9, passes > max_train_passes + 1e-9
        row: dict = {"name": c["name"], "n_train": int(train.sum()), "n_test": int(test.sum())}
        last = {(n, u): v for n, u, v, p in zip(x[train], x2[train, 1], y[train], passes[train]) if p == max_train_passes}
        row["last_value"] = rmsle(y[test], np.array([last[(n, u)] for n, u in zip(x[test], x2[test, 1])]))
        for name in THREE_VAR_FORMS:
            f = get_form(name)
            fit = fit_form(f, x[train], y[train], _x2_for(name, x2[train]))
            row[name] = rmsle(y[test], f.predict(fit.theta, x[test], _x2_for(name, x2[test])))
            if name == "data_constrained":
                row["Rstar_D"], row["Rstar_N"] = fit.params["Rstar_D"], fit.params["Rstar_N"]
        rows.append(row)
    return rows


def print_epoch_holdout(rows: list[dict]) -> None:
    cols = ("last_value", *THREE_VAR_FORMS)
    print("| curve | " + " | ".join(cols) + " | fitted R*_D, R*_N |")
    print("|---|" + "---|" * (len(cols) + 1))
    for r in rows:
        print(f"| {r['name']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + f" | {r['Rstar_D']:.3g}, {r['Rstar_N']:.3g} |")
    print("| mean | " + " | ".join(f"{np.mean([r[c] for r in rows]):.4f}" for c in cols) + " | |")


def paired_summary(tables: list[dict]) -> list[dict]:
    """Per (table, kind): auto minus the better of last value and the best single form in hindsight, curve by
    curve — the mean difference, its standard error and t, and on how many curves auto is ahead / behind.
    A miss with |t| < 2 is inside the noise of a minimum over noisy means."""
    out = []
    for res in tables:
        for kind, k in res["kinds"].items():
            rs = [r for r in res["rows"] if r["kind"] == kind]
            ref_name = "last_value" if k["mean_rmsle"]["last_value"] <= k["mean_rmsle"][k["best_single_form"]] else k["best_single_form"]
            d = np.array([r["auto"] - r[ref_name] for r in rs])
            se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
            out.append({"table": res.get("label", res["seed"]), "kind": kind, "n": int(d.size), "reference": ref_name,
                        "mean_diff": float(d.mean()), "se": se, "t": float(d.mean() / se) if se > 0 else 0.0,
                        "ahead": int((d < 0).sum()), "behind": int((d > 0).sum())})
    return out


def print_paired(tables: list[dict]) -> None:
    print("| table | kind | curves | reference | auto − reference (mean) | SE | t | curves auto ahead / behind |")
    print("|---|---|---|---|---|---|---|---|")
    for r in paired_summary(tables):
        print(f"| {r['table']} | {r['kind']} | {r['n']} | {r['reference']} | {r['mean_diff']:+.4f} | {r['se']:.4f} | "
              f"{r['t']:+.2f} | {r['ahead']} / {r['behind']} |")


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scipy-starts", type=int, default=4500, help="run scipy on an even subsample and scale its time")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--curves", action="store_true", help="the generated-curve table: auto vs naive vs single forms")
    ap.add_argument("--origins", type=int, default=None, help="--curves: rolling origins of auto's own check (default: auto's)")
    ap.add_argument("--real", action="store_true", help="the table on the MNIST / digits probe curves instead of generated ones")
    ap.add_argument("--repeated", action="store_true",
                    help="the table on MNIST MLPs trained for 1-32 passes over pools (random / SSP-pruned), plus a "
                         "held-out-passes table")
    ap.add_argument("--repeated-seeds", type=int, nargs="+", default=[0, 1], metavar="S",
                    help="--repeated: training seeds of the MLPs (the pools' random draws and SSP tie-breaks use them too)")
    ap.add_argument("--repeated-widths", type=int, nargs="+", default=list(REPEAT_WIDTHS), metavar="H",
                    help="--repeated: hidden widths of the MLPs")
    ap.add_argument("--paired", nargs="+", type=Path, default=None, metavar="JSON",
                    help="read stored --curves/--real tables and print auto's paired differences to the reference")
    args = ap.parse_args()
    if args.paired:
        print_paired([{**json.loads(p.read_text()), "label": p.stem.removeprefix("bench_scaling_")} for p in args.paired])
        return
    if args.curves or args.real or args.repeated:
        suffix = repeated_suffix(args.repeated_seeds, args.repeated_widths)
        name = ("bench_scaling_real.json" if args.real else f"bench_scaling_repeated{suffix}.json" if args.repeated
                else f"bench_scaling_curves_seed{args.seed}.json")
        out = args.out or Path(__file__).parent / "out" / name
        t0 = time.perf_counter()
        curves = real_curves() if args.real else repeated_curves(seeds=args.repeated_seeds, widths=args.repeated_widths) if args.repeated else None
        res = curves_table(args.seed, args.origins, curves)
        if args.repeated:
            res["epoch_holdout"] = epoch_holdout(curves)
            print_epoch_holdout(res["epoch_holdout"])
        res["seconds"] = time.perf_counter() - t0
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, default=lambda o: np.asarray(o).tolist()))
        print_curves(res)
        print(f"{len(res['rows'])} curves in {res['seconds']:.0f} s; wrote {out}")
        return
    args.out = args.out or Path(__file__).parent / "out" / "bench_scaling.json"
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
