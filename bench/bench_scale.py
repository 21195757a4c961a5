"""Sharded SSP + SemDeDup + an ``auto`` selection at 30 % on 1M / 3M / 10M x 384 synthetic rows.

Each sharded run happens in a fresh child process (the flow process) that starts a real
``dask scheduler`` and ``dask worker`` processes (1 thread each, ``--memory-limit``, ``--preload
flows.sharded`` so that imports happen at start-up, which is timed apart), a Prefect API
(:class:`SubprocessASGIServer`) and a fresh ``PREFECT_HOME`` (no cache hits between runs), and
reports the peak RSS of every process: the flow (``ru_maxrss``), each worker and the scheduler
(``ru_maxrss`` read inside them), and the nannies / Prefect server (sampled with psutil).

References measured in the same run:

* **in-memory path at 1M rows**: the same kernels on the whole matrix in one process
  (``ssp_scores`` -> :func:`~tasks.shards.dedup.dedup_clusters` on all rows -> ``select``); the
  sharded per-row throughput at every n is reported against it (target >= 0.7x);
* **1 worker x 1 thread** vs 2 workers x 1 thread at 1M rows (target speed-up >= 1.6x).

Prints the memory / time curve over n (flat memory, linear time expected).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Context, Row, Section, fmt_bytes, run_child

SIZES = {
    "full": {"ns": [1_000_000, 3_000_000, 10_000_000], "d": 384, "clusters": 1000, "duplicate_rate": 0.05, "k": 50,
             "iters": 6, "shard_rows": 262_144, "sub_rows": 1000, "eps": [0.01], "fraction": 0.3, "ref_n": 1_000_000,
             "memory_limit": "2GiB", "workers": 2},
    "quick": {"ns": [100_000, 200_000], "d": 64, "clusters": 100, "duplicate_rate": 0.05, "k": 20, "iters": 6,
              "shard_rows": 32_768, "sub_rows": 1000, "eps": [0.01], "fraction": 0.3, "ref_n": 100_000,
              "memory_limit": "2GiB", "workers": 2},
}
LIMIT = 2 * 10**9  # the "<= 2 GB" per process
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _config(sz: dict[str, Any], n: int, address: str | None) -> dict[str, Any]:
    return {"source": {"kind": "synthetic_embeddings", "n": n, "d": sz["d"], "clusters": sz["clusters"],
                       "duplicate_rate": sz["duplicate_rate"], "seed": 0},
            "shard_rows": sz["shard_rows"], "k": sz["k"], "kmeans_iters": sz["iters"], "seed": 0,
            "semdedup_eps": sz["eps"], "semdedup_sub_rows": sz["sub_rows"], "fraction": sz["fraction"],
            "policy": "auto", "task_runner": {"kind": "dask", "address": address} if address else {"kind": "threads"}}


# ------------------------------------------------------------------------------------ child: sharded
class _Sampler:
    """Max RSS per process of a process tree, sampled every ``every`` seconds (psutil)."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        self.psutil = psutil
        self.peak: dict[int, tuple[str, int]] = {}
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = self.psutil.Process()
        while not self._stop.is_set():
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                    name = " ".join(p.cmdline()[1:4])[:80]
                except (self.psutil.Error, OSError):
                    continue
                if rss > self.peak.get(p.pid, ("", 0))[1]:
                    self.peak[p.pid] = (name, rss)
            self._stop.wait(self.every)

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def sharded_child(config: dict[str, Any], n_workers: int, memory_limit: str, workdir: str) -> dict[str, Any]:
    """Run the sharded flow on a fresh scheduler + ``n_workers`` workers; return times and peak RSS."""
    import resource
    import socket
    import subprocess

    home = Path(workdir) / "prefect"
    os.environ.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    procs: list[subprocess.Popen] = []
    out: dict[str, Any] = {}
    with _Sampler() as sampler:
        server = SubprocessASGIServer()
        server.start(timeout=180)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            address = f"tcp://127.0.0.1:{port}"
            env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": server.api_url,
                   "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False"}  # flows.runner.WORKER_MEMORY, as the CLI sees it
            t0 = time.perf_counter()
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                           "--port", str(port), "--no-dashboard"], env=env, cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            for i in range(n_workers):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--memory-limit", memory_limit, "--no-dashboard", "--name", f"w{i}", "--preload", "flows.sharded"],
                    env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            from distributed import Client

            client = Client(address, timeout=180)
            client.wait_for_workers(n_workers, timeout=300)
            out["cluster_startup_s"] = round(time.perf_counter() - t0, 2)

            from configs.sharded import ShardedConfig
            from flows.sharded import run_sharded

            cfg = ShardedConfig(**{**config, "task_runner": {"kind": "dask", "address": address}})
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                t1 = time.perf_counter()
                summary = run_sharded(cfg, Path(workdir) / "db" / "w.duckdb")
                out["seconds"] = time.perf_counter() - t1
            out["summary"] = {k: summary[k] for k in ("n_rows", "n_shards", "n_iter", "converged", "n_kept",
                                                       "resolved_policy", "removed", "timings", "histogram_passes",
                                                       "n_parts", "subclusters")}
            out["worker_peak_rss"] = {
                str(k): v for k, v in client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024).items()}
            out["scheduler_peak_rss"] = client.run_on_scheduler(
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            client.close()
        finally:
            for p in reversed(procs):
                try:
                    os.killpg(p.pid, 15)
                except ProcessLookupError:
                    pass
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
            server.stop()
    out["flow_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["sampled_peak_rss"] = sorted(([name, rss] for name, rss in sampler.peak.values()), key=lambda x: -x[1])
    out["removed"] = {str(k): v for k, v in out["summary"].pop("removed").items()}
    return out


# ------------------------------------------------------------------------------------ child: in memory
def inmemory_child(config: dict[str, Any]) -> dict[str, Any]:
    """The same computation on the whole matrix in one process (the small-input path)."""
    import numpy as np

    from tasks.prune.kmeans import spherical_kmeans
    from tasks.prune.select import select
    from tasks.prune.ssp import ssp_scores
    from tasks.shards.dedup import dedup_clusters
    from tasks.synthetic import SyntheticSpec, synthetic_embeddings

    src = config["source"]
    spec = SyntheticSpec(n=src["n"], d=src["d"], clusters=src["clusters"], duplicate_rate=src["duplicate_rate"],
                         seed=src["seed"])
    t = {}
    t0 = time.perf_counter()
    syn = synthetic_embeddings(spec)
    E, planted = syn.vectors, syn.duplicate_of >= 0
    t["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ssp = ssp_scores(spherical_kmeans(E, config["k"], iters=config["kmeans_iters"], seed=config["seed"]))
    t["kmeans+score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dd = dedup_clusters(E, np.arange(E.shape[0]), ssp.cluster, ssp.kmeans.cos_to_centroid, eps=config["semdedup_eps"],
                        sub_rows=config["semdedup_sub_rows"], seed=config["seed"])
    t["semdedup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sel = select(ssp.scores, fraction=config["fraction"], policy="auto", dim=E.shape[1], seed=config["seed"])
    t["select"] = time.perf_counter() - t0
    e = float(config["semdedup_eps"][0])
    removed = dd.removed[e]
    # recall of the planted near-copies: a pair counts when either member is removed
    pairs = np.flatnonzero(planted)
    hit = np.isin(pairs, removed) | np.isin(syn.duplicate_of[pairs], removed)
    return {"seconds": sum(t.values()), "timings": t, "n_iter": ssp.kmeans.n_iter, "removed": int(removed.size),
            "planted": int(planted.sum()), "planted_pairs_caught": float(hit.mean()), "n_kept": int(sel.indices.size),
            "resolved_policy": sel.resolved_policy}


# ------------------------------------------------------------------------------------ parent
def _max_rss(res: dict[str, Any]) -> tuple[int, str]:
    cands = [(res["flow_peak_rss"], "flow"), (res["scheduler_peak_rss"], "scheduler")]
    cands += [(v, f"worker {k}") for k, v in res["worker_peak_rss"].items()]
    cands += [(rss, name) for name, rss in res["sampled_peak_rss"]]
    return max(cands)


def _log(ctx: Context, kind: str, n: int, res: dict[str, Any]) -> None:
    """Append one finished measurement to ``<out>/scale_runs.jsonl`` (kept when a long run is stopped)."""
    with open(ctx.out_dir / "scale_runs.jsonl", "a") as fh:
        fh.write(json.dumps({"kind": kind, "n": n, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                             "load_avg_1m": os.getloadavg()[0], **res}, default=float) + "\n")


def _sharded(sz: dict[str, Any], n: int, n_workers: int) -> dict[str, Any]:
    work = tempfile.mkdtemp(prefix=f"winnow-scale-{n}-", dir=os.environ.get("WINNOW_BENCH_TMP"))
    try:
        print(f"[scale] sharded n={n:,} on {n_workers} worker(s) ...", file=sys.stderr, flush=True)
        res = run_child("bench.bench_scale:sharded_child",
                        {"config": _config(sz, n, None), "n_workers": n_workers, "memory_limit": sz["memory_limit"],
                         "workdir": work}, timeout=6 * 3600)
        print(f"[scale]   {res['seconds']:.0f} s, max RSS {fmt_bytes(_max_rss(res)[0])}", file=sys.stderr, flush=True)
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(ctx: Context) -> Section:
    sz = ctx.sizes("scale", SIZES)
    sec = Section("scale")
    ref_n = sz["ref_n"]  # 0: no references (e.g. a 10M run in its own process)
    ref = one = None
    per_row_ref = None
    if ref_n:
        print(f"[scale] in-memory reference n={ref_n:,} ...", file=sys.stderr, flush=True)
        ref = run_child("bench.bench_scale:inmemory_child", {"config": _config(sz, ref_n, None)}, timeout=6 * 3600)
        _log(ctx, "in-memory", ref_n, ref)
        per_row_ref = ref["seconds"] / ref_n
        sec.rows.append(Row("scale", f"in-memory path n={ref_n:,} (reference)", ref["seconds"], None, None, "-", None,
                            note=f"phases {json.dumps({k: round(v, 1) for k, v in ref['timings'].items()})}; peak RSS "
                                 f"{fmt_bytes(ref['peak_rss_bytes'])}; removed {ref['removed']:,}; planted near-copy "
                                 f"pairs caught {ref['planted_pairs_caught']:.3f}; {ref['resolved_policy']}"))
        one = _sharded(sz, ref_n, 1)
        _log(ctx, "sharded-1-worker", ref_n, one)
    runs: dict[int, dict[str, Any]] = {}
    for n in sz["ns"]:
        runs[n] = _sharded(sz, n, sz["workers"])
        _log(ctx, f"sharded-{sz['workers']}-workers", n, runs[n])
    curve_n, curve_t, curve_m = [], [], []
    for n, res in runs.items():
        rss, who = _max_rss(res)
        ratio = per_row_ref / (res["seconds"] / n) if per_row_ref else None
        curve_n.append(n)
        curve_t.append(res["seconds"])
        curve_m.append(rss)
        s = res["summary"]
        sec.rows.append(Row("scale", f"sharded SSP+SemDeDup+auto@30% n={n:,} ({sz['workers']} workers x 1 thread)", res["seconds"],
                            per_row_ref * n if per_row_ref else None, ratio, ">= 0.7 (throughput vs in-memory at 1M)",
                            None if ratio is None else ratio >= 0.7,
                            ratio_label="throughput ours/in-memory",
                            note=f"phases {json.dumps(s['timings'])}; {s['n_shards']} shards, {s['n_iter']} k-means "
                                 f"passes, {s['n_parts']} SemDeDup groups ({s['subclusters']} sub-clusters), removed "
                                 f"{res['removed']}, kept {s['n_kept']:,} ({s['resolved_policy']}), "
                                 f"{s['histogram_passes']} histogram passes; cluster start-up {res['cluster_startup_s']} s"))
        sec.rows.append(Row("scale", f"peak RSS of every process n={n:,}", rss, LIMIT, rss / LIMIT, "<= 2 GB",
                            rss <= LIMIT, unit="bytes",
                            note=f"largest: {who}; flow {fmt_bytes(res['flow_peak_rss'])}, workers "
                                 + ", ".join(fmt_bytes(v) for v in res["worker_peak_rss"].values())
                                 + f", scheduler {fmt_bytes(res['scheduler_peak_rss'])}"))
    two = runs.get(ref_n)
    if two is not None and one is not None:
        speed = one["seconds"] / two["seconds"]
        sec.rows.append(Row("scale", f"speed-up 2 workers vs 1 worker (1 thread each), n={ref_n:,}", two["seconds"],
                            one["seconds"], speed, ">= 1.6x", speed >= 1.6, ratio_label="x faster",
                            note=f"1 worker phases {json.dumps(one['summary']['timings'])}; peak RSS "
                                 f"{fmt_bytes(_max_rss(one)[0])}"))
    sec.curves["sharded_seconds"] = {"n": curve_n, "seconds": curve_t}
    sec.details.update({"peak_rss_bytes": dict(zip(map(str, curve_n), curve_m)), "sizes": sz, "reference": ref,
                        "one_worker": one, "runs": {str(n): r for n, r in runs.items()},
                        "curve_note": f"{sz['workers']} workers x 1 thread, same machine"})
    print(f"[scale] memory / time curve ({sz['workers']} workers x 1 thread):", file=sys.stderr)
    print(f"[scale] {'n':>12} {'seconds':>9} {'s per 1M rows':>14} {'max RSS (any process)':>22}", file=sys.stderr)
    for n, t_, m in zip(curve_n, curve_t, curve_m):
        print(f"[scale] {n:>12,} {t_:>9.1f} {t_ / n * 1e6:>14.1f} {fmt_bytes(m):>22}", file=sys.stderr, flush=True)
    return sec
