"""Benchmark: MNIST pruning curves — SSP (hard, easy), SemDeDup, DBP, CCS, EL2N against random.

Embeddings: the in-pipeline SimCLR CNN (``--embed ssl``, default; trained on the 60k training
images without labels, as in bench/ssl_vs_pca.py) or PCA of the pixels (``--embed pca``). They
are cached in ``bench/out/mnist_<embed>_<dim>.npz`` so a rerun only re-scores. For every seed the
scores are recomputed with that seed (k-means init, EL2N proxy seeds, random draw); a linear probe
(:func:`tasks.probe.train_linear_probe`) is trained on each kept subset of the 60k training rows
and tested on the 10k test rows. Prints mean ± std accuracy and each value's ratio to random at
the same fraction, and writes JSON + Markdown + PNG under bench/out/.

    .venv/bin/python bench/pruning_mnist.py                       # ssl embeddings, 3 seeds
    .venv/bin/python bench/pruning_mnist.py --embed pca --seeds 0  # quick look

Also ``--digits`` reproduces the sklearn-digits reference of docs/design pruning.md (PCA-32,
scikit-learn LogisticRegression, 5 stratified 80/20 splits) for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tasks.prune.evaluate import PruningCurve, plot_pruning_curve, pruning_curve  # noqa: E402
from tasks.prune.registry import MetricParams  # noqa: E402
from tasks.prune.select import SelectOptions  # noqa: E402
from tasks.prune.supervised import DynamicsConfig  # noqa: E402

OUT = ROOT / "bench" / "out"
FRACTIONS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.05)
# (label, metric, policy, balance); "proportional" = every k-means cluster keeps the same fraction
SERIES = (
    ("SSP keep-hard", "ssp", "hard", "none"),
    ("SSP keep-easy", "ssp", "easy", "none"),
    ("SSP keep-easy, cluster-balanced", "ssp", "easy", "proportional"),
    ("SemDeDup (keep unique)", "semdedup", "hard", "none"),
    ("DBP", "dbp", "hard", "none"),
    ("CCS over SSP", "ssp", "ccs", "none"),
    ("EL2N keep-hard", "el2n", "hard", "none"),
    ("CCS over EL2N", "el2n", "ccs", "none"),
    ("random", "random", "random", "none"),
)


def embeddings(kind: str, dim: int, epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    from ssl_vs_pca import load_mnist

    cache = OUT / f"mnist_{kind}_{dim}_e{epochs}.npz"
    Xtr, ytr, Xte, yte = load_mnist()
    if cache.exists():
        z = np.load(cache)
        return z["Etr"], ytr, z["Ete"], yte, json.loads(str(z["info"]))
    t0 = time.perf_counter()
    if kind == "ssl":
        from tasks.embed.ssl_cnn import embed_images, train_ssl_cnn

        res = train_ssl_cnn(Xtr, (28, 28), dim=dim, epochs=epochs, seed=0, progress=True)
        Etr = embed_images(res.state_dict, Xtr, (28, 28), progress=False)
        Ete = embed_images(res.state_dict, Xte, (28, 28), progress=False)
    else:
        from tasks.embed.pca import fit_pca

        m = fit_pca(Xtr, dim, seed=0)
        Etr, Ete = m.transform(Xtr), m.transform(Xte)
    info = {"kind": kind, "dim": dim, "epochs": epochs, "seconds": round(time.perf_counter() - t0, 1)}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, Etr=Etr.astype(np.float32), Ete=Ete.astype(np.float32), info=json.dumps(info))
    return Etr.astype(np.float32), ytr, Ete.astype(np.float32), yte, info


def table(curve: PruningCurve, series, fractions) -> list[str]:
    """Markdown rows; ``curve`` policies are tagged '<policy>@<balance>' by :func:`_tag`."""
    summ = curve.summary()
    get = {(s["metric"], s["policy"], s["fraction"]): s for s in summ}
    full = get[("full", "none", 1.0)]
    head = "| series | " + " | ".join(f"f={f:g}" for f in fractions if f < 1) + " |"
    lines = [f"Full data ({full['n_kept']} rows): **{full['mean']:.4f} ± {full['std']:.4f}**", "", head,
             "|---|" + "---|" * sum(f < 1 for f in fractions)]
    for label, m, pol0, bal in series:
        pol = _tagp(pol0, bal)
        cells = []
        for f in fractions:
            if f == 1:
                continue
            s = get.get((m, pol, f))
            r = get.get(("random", _tagp("random", "none"), f))
            if s is None:
                cells.append("—")
                continue
            cell = f"{s['mean']:.4f} ± {s['std']:.4f}"
            if m != "random" and r is not None:
                cell += f" ({s['mean'] / r['mean']:.3f}×)"
            if pol0 == "auto":
                cell += f" [{s['resolved_policy']}]"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _tagp(policy: str, balance: str) -> str:
    return policy if balance == "none" else f"{policy}@{balance}"


def _tag(curve: PruningCurve, balance: str) -> list:
    from dataclasses import replace

    return [p if p.metric == "full" else replace(p, policy=_tagp(p.policy, balance)) for p in curve.points]


def run_mnist(args) -> None:
    Etr, ytr, Ete, yte, info = embeddings(args.embed, args.dim, args.epochs)
    print(f"embeddings {info} train {Etr.shape} test {Ete.shape}", flush=True)
    params = MetricParams(k=args.k, dynamics=DynamicsConfig(epochs=args.proxy_epochs, read_epoch=args.proxy_epochs,
                                                             seeds=(0, 1)))
    t0 = time.perf_counter()
    points = []
    for seed in args.seeds:
        ts = time.perf_counter()
        for bal in dict.fromkeys(b for *_, b in SERIES):
            pairs = [(m, p) for _, m, p, b in SERIES if b == bal]
            c = pruning_curve(Etr, ytr, Ete, yte, series=pairs, fractions=FRACTIONS if bal == "none" else FRACTIONS[1:],
                              seeds=[seed], params=params, select=SelectOptions(balance=bal, ccs_beta=args.ccs_beta),
                              probe_max_iter=args.probe_iters)
            points += _tag(c, bal)
        print(f"seed {seed}: {time.perf_counter() - ts:.0f} s", flush=True)
        _write(PruningCurve(tuple(points)), args, info, t0)  # partial results after every seed


def _write(curve: PruningCurve, args, info: dict, t0: float) -> None:
    lines = table(curve, SERIES, FRACTIONS)
    print("\n".join(lines), flush=True)
    tag = f"mnist_{args.embed}{args.dim}"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"pruning_{tag}.md").write_text("\n".join(lines) + "\n")
    seeds = sorted({p.seed for p in curve.points})
    json.dump({"embeddings": info, "k": args.k, "seeds": seeds, "ccs_beta": args.ccs_beta,
               "seconds": round(time.perf_counter() - t0, 1), "summary": curve.summary()},
              open(OUT / f"pruning_{tag}.json", "w"), indent=1)
    plot_pruning_curve(curve, str(OUT / f"pruning_{tag}.png"), title=f"MNIST pruning ({args.embed}-{args.dim})")


def run_digits(args) -> None:
    """The spec's reference: digits, PCA-32, sklearn LogisticRegression, 5 stratified splits."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    warnings.simplefilter("ignore")

    def sk_probe(a, b, c, d):
        return LogisticRegression(max_iter=2000).fit(a, b).score(c, d)

    X, y = load_digits(return_X_y=True)
    fr = (1.0, 0.7, 0.3, 0.1, 0.05)
    series = (("SSP keep-easy", "ssp", "easy", "none"), ("SSP keep-hard", "ssp", "hard", "none"),
              ("SSP keep-easy, cluster-balanced", "ssp", "easy", "proportional"),
              ("SSP auto, cluster-balanced", "ssp", "auto", "proportional"),
              ("supervised prototypes keep-hard", "supervised_prototypes", "hard", "none"),
              ("supervised prototypes keep-easy, class-balanced", "supervised_prototypes", "easy", "proportional"),
              ("random", "random", "random", "none"))
    results = {}
    for k in (10, 50):
        pts = []
        for split in range(5):
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=split, stratify=y)
            p = PCA(32, random_state=0).fit(Xtr)
            Etr, Ete = p.transform(Xtr).astype(np.float32), p.transform(Xte).astype(np.float32)
            for bal in ("none", "proportional"):
                pairs = [(m, p) for _, m, p, b in series if b == bal]
                c = pruning_curve(Etr, ytr, Ete, yte, series=pairs, fractions=fr if bal == "none" else fr[1:],
                                  seeds=[split], params=MetricParams(k=k), select=SelectOptions(balance=bal),
                                  probe_fn=sk_probe)
                pts += _tag(c, bal)
        results[k] = PruningCurve(tuple(pts))
    ref = [("full data", "full", "none", 1.0, 0.968), ("random", "random", "random", 0.05, 0.851),
           ("SSP keep-easy (global rank)", "ssp", "easy", 0.05, 0.900),
           ("SSP keep-easy (cluster-balanced)", "ssp", "easy@proportional", 0.05, 0.900),
           ("random", "random", "random", 0.7, 0.961),
           ("sup. prototypes keep-hard", "supervised_prototypes", "hard", 0.7, 0.969)]
    lines = ["| quantity | reference | measured (k=10) | measured (k=50) |", "|---|---|---|---|"]
    for label, m, pol, f, v in ref:
        cells = [f"{results[k].mean(m, pol, f):.3f} ± {np.std([p.accuracy for p in results[k].points if p.metric == m and p.policy == pol and p.fraction == f]):.3f}" for k in (10, 50)]
        lines.append(f"| {label}, f={f:g} | {v:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "k=10 curves:", ""] + table(results[10], series, fr)
    lines += ["", "k=50 curves:", ""] + table(results[50], series, fr)
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pruning_digits.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embed", choices=("ssl", "pca"), default="ssl")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="SSL encoder epochs")
    ap.add_argument("--k", type=int, default=10, help="k-means clusters (SSP/SemDeDup/DBP)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ccs-beta", type=float, default=0.1)
    ap.add_argument("--proxy-epochs", type=int, default=2, help="EL2N read after this many proxy epochs")
    ap.add_argument("--probe-iters", type=int, default=200)
    ap.add_argument("--digits", action="store_true", help="run the sklearn-digits reference instead")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.digits:
        run_digits(args)
    else:
        run_mnist(args)


if __name__ == "__main__":
    main()
