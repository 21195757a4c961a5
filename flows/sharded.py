"""The sharded flow: SSP scores, SemDeDup and one selection over a source processed shard by shard.

Every heavy step is a Prefect task submitted to the configured task runner (threads locally, Dask
workers to scale out), one per shard, per k-means pass, per cluster group:

===================  ==================================================  ======================
step                 task (one per ...)                                  runs on
===================  ==================================================  ======================
embed                ``embed-shard`` (shard): generate/copy, write file   workers
k-means init         ``gather-rows`` (shard): the seeded subsample        workers; k-means++ here
Lloyd iterations     ``kmeans-pass`` (shard x pass): sums, counts         workers; reduce here
scoring              ``score-shard`` (shard): scores, cluster groups      workers
SemDeDup             ``semdedup-group`` (group of whole clusters)         workers
selection            ``select-histogram`` / ``-candidates`` / ``-members``  workers; thresholds here
tables               DuckDB writes (one transaction, bounded batches)    this (flow) process
===================  ==================================================  ======================

Heavy tasks are cached across runs by (shard content hash, metric parameters, centroids) — see
:mod:`flows.caching` — so a rerun after a crash skips the shards and passes already done. The flow
process holds one int32 cluster id per row between passes and never a shard's vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from configs.sharded import ParquetEmbeddingsConfig, ShardedConfig, SyntheticSourceConfig
from flows.caching import heavy_task_options
from flows.runner import task_runner_scope
from storage.db import Store
from storage.shards import (
    ShardFile, content_hash, read_columns, read_vectors, register_shards, run_dir, save_sharded_run, set_dir,
    shard_name, vector_dim, vectors_table, write_atomic,
)
from tasks.errors import WinnowError
from tasks.shards.dedup import dedup_clusters, gather_group
from tasks.shards.kmeans import PassPartial, init_centroids, init_sample, kmeans_pass, next_centroids, reduce_passes
from tasks.shards.plan import Shard, plan_shards
from tasks.shards.score import balanced_groups, cluster_parts, score_shard
from tasks.shards.select import (
    PASS_BITS, BoundaryState, boundary_candidates, narrow, plan_selection, region_histogram, resolve_boundary,
    select_mask, shard_ties, sortable_u32, start_boundary,
)
from tasks.prune.select import effective_dim_rows, participation_ratio
from tasks.synthetic import SyntheticSpec, synthetic_embeddings

#: gather the boundary rows once the regions hold at most this many rows (else another radix pass)
CANDIDATE_CAP = 1 << 20
LIGHT = {"cache_policy": NO_CACHE, "persist_result": False}


# ----------------------------------------------------------------------------------------- tasks
@task(**heavy_task_options(name="embed-shard"))
def embed_shard(source: SyntheticSourceConfig | ParquetEmbeddingsConfig, index: int, start: int, stop: int,
                out_dir: str) -> ShardFile:
    """Produce rows [start, stop) of the source as one shard file (synthetic: generated; Parquet: copied)."""
    if isinstance(source, SyntheticSourceConfig):
        spec = SyntheticSpec(**source.model_dump(exclude={"kind"}))
        X = synthetic_embeddings(spec, start, stop).vectors
        row_index = np.arange(start, stop, dtype=np.int64)
    else:
        import pyarrow.parquet as pq

        table = pq.ParquetFile(source.path).read_row_groups(_row_groups(source.path, start, stop))
        first = _row_groups_start(source.path, start)
        table = table.slice(start - first, stop - start)
        col = table.column("vector").combine_chunks()
        X = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        row_index = table.column("row_index").to_numpy()
    h = content_hash(row_index, X)
    path = write_atomic(vectors_table(row_index, X), Path(out_dir) / shard_name(index), compression="none")
    return ShardFile(index, start, stop, path, h)


@task(name="gather-rows", **LIGHT)
def gather_rows(shard: ShardFile, rows: np.ndarray) -> np.ndarray:
    """The shard's rows with global numbers ``rows`` (sorted), raw."""
    _, X, _ = read_vectors(shard.path)
    return np.array(X[np.asarray(rows) - shard.start])


@task(**heavy_task_options(name="kmeans-pass"))
def kmeans_pass_task(shard: ShardFile, centroids: np.ndarray, prev_assign: np.ndarray | None) -> PassPartial:
    """One Lloyd iteration over one shard (cached by shard hash, centroids, previous assignment)."""
    _, X, _ = read_vectors(shard.path)
    return kmeans_pass(X, centroids, prev_assign, row_offset=shard.start)


@dataclass(frozen=True)
class ScoredShard:
    """Where a scored shard went: its score file, its cluster-group files (None: no rows), cluster sizes."""

    index: int
    start: int
    stop: int
    scores_path: str
    part_paths: list[str | None]
    sizes: np.ndarray
    content_hash: str


@task(**heavy_task_options(name="score-shard", scratch=["out_dir"]))
def score_shard_task(shard: ShardFile, centroids: np.ndarray, group_of: np.ndarray, out_dir: str) -> ScoredShard:
    """Final assignment + SSP scores of one shard; its rows regrouped into cluster groups (``group_of``: (k,))."""
    row_index, X, _ = read_vectors(shard.path)
    sc = score_shard(X, centroids)
    out = Path(out_dir)
    scores_path = write_atomic(_scores_table(row_index, sc.assign, sc.cos, sc.scores),
                               out / "scores" / shard_name(shard.index))
    part_paths: list[str | None] = []
    for p, rows in enumerate(cluster_parts(sc.assign, int(group_of.max()) + 1, group_of)):
        if rows.size == 0:
            part_paths.append(None)
            continue
        part_paths.append(write_atomic(
            vectors_table(row_index[rows], X[rows], cluster=sc.assign[rows], cos=sc.cos[rows]),
            out / "parts" / f"p-{p:04d}" / shard_name(shard.index), compression="none"))
    sizes = np.bincount(sc.assign, minlength=centroids.shape[0]).astype(np.int64)
    return ScoredShard(shard.index, shard.start, shard.stop, scores_path, part_paths, sizes,
                       content_hash(sc.assign, sc.scores))


@task(**heavy_task_options(name="semdedup-group", scratch=["out_path"]))
def semdedup_group_task(files: list[str], inputs_key: str, eps: list[float], keep: str, block: int | None,
                        max_pairs: int, sub_rows: int | None, sub_iters: int, seed: int, out_path: str) -> dict[str, Any]:
    """SemDeDup over one group of whole clusters; removed ids written to ``out_path``.

    ``inputs_key`` (the scored shards' hashes) keys the cache: the group files are rewritten in place."""
    import pyarrow as pa

    meta = [read_columns(f, ["row_index", "cluster", "cos"]) for f in files]
    X, row_index, cluster, cos = gather_group(meta, lambda i: read_vectors(files[i])[1])
    res = dedup_clusters(X, row_index, cluster, cos, eps=eps, keep=keep, block=block, max_pairs=max_pairs,
                         sub_rows=sub_rows, sub_iters=sub_iters, seed=seed, overwrite=True)
    eps_col = np.concatenate([np.full(res.removed[e].size, e) for e in res.eps])
    write_atomic(pa.table({"eps": eps_col,
                           "row_index": np.concatenate([res.removed[e] for e in res.eps]),
                           "cluster": np.concatenate([res.removed_cluster[e] for e in res.eps]).astype(np.int32)}),
                 out_path)
    return {"path": out_path, "n_rows": res.n_rows, "n_removed": {e: int(res.removed[e].size) for e in res.eps},
            "n_subclusters": res.n_subclusters, "not_converged": res.not_converged}


def _selection_inputs(s: ScoredShard, resolved: str, grouped: bool) -> tuple[np.ndarray, np.ndarray]:
    cols = read_columns(s.scores_path, ["cluster", "score"])
    g = cols["cluster"].astype(np.int64) if grouped else np.zeros(s.stop - s.start, dtype=np.int64)
    return sortable_u32(cols["score"], resolved), g


@task(name="select-histogram", **LIGHT)
def histogram_task(s: ScoredShard, resolved: str, grouped: bool, state: BoundaryState, bits: int) -> np.ndarray:
    u, g = _selection_inputs(s, resolved, grouped)
    return region_histogram(u, g, state, bits)


@task(name="select-candidates", **LIGHT)
def candidates_task(s: ScoredShard, resolved: str, grouped: bool, state: BoundaryState, seed: int) -> tuple:
    u, g = _selection_inputs(s, resolved, grouped)
    return boundary_candidates(u, shard_ties(seed, s.start, s.stop - s.start), g, state)


@task(name="select-members", **LIGHT)
def members_task(s: ScoredShard, resolved: str, grouped: bool, K: np.ndarray, T: np.ndarray, seed: int,
                 out_path: str) -> int:
    import pyarrow as pa

    u, g = _selection_inputs(s, resolved, grouped)
    mask = select_mask(u, shard_ties(seed, s.start, s.stop - s.start), g, K, T)
    # the source's own row_index (an embeddings Parquet's may not be 0..n-1), as the scores and SemDeDup tables hold
    rows = read_columns(s.scores_path, ["row_index"])["row_index"].astype(np.int64)
    write_atomic(pa.table({"row_index": rows[mask]}), out_path)
    return int(mask.sum())


# ----------------------------------------------------------------------------------------- helpers
def _row_groups_start(path: str, start: int) -> int:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    pos = 0
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        if pos + n > start:
            return pos
        pos += n
    return pos


def _row_groups(path: str, start: int, stop: int) -> list[int]:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    out, pos = [], 0
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        if pos < stop and pos + n > start:
            out.append(i)
        pos += n
    return out


def _scores_table(row_index: np.ndarray, assign: np.ndarray, cos: np.ndarray, scores: np.ndarray):
    import pyarrow as pa

    return pa.table({"row_index": np.asarray(row_index, dtype=np.int64), "cluster": assign.astype(np.int32),
                     "cos": cos.astype(np.float32), "score": scores.astype(np.float32)})


def _results(futures: list) -> list:
    return [f.result() for f in futures]


def _source_rows(cfg: ShardedConfig) -> int:
    if isinstance(cfg.source, SyntheticSourceConfig):
        return cfg.source.n
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(cfg.source.path)
    if not path.is_file():
        raise WinnowError(f"embeddings Parquet not found: {path}")
    try:  # checked before the run is recorded: a file the shard tasks cannot read is refused here
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
    except (OSError, pa.ArrowException) as err:
        raise WinnowError(f"cannot read embeddings Parquet {path}: {str(err).splitlines()[0]}") from None
    names = set(schema.names)
    if "row_index" not in names or not pa.types.is_integer(schema.field("row_index").type):
        raise WinnowError(f"embeddings Parquet {path}: needs an integer column 'row_index' (the embed stage's files have one)")
    if "vector" not in names or not (pa.types.is_fixed_size_list(schema.field("vector").type)
                                     and pa.types.is_floating(schema.field("vector").type.value_type)):
        got = schema.field("vector").type if "vector" in names else "no such column"
        raise WinnowError(f"embeddings Parquet {path}: column 'vector' must be FLOAT[d] (a fixed-size float list), got {got}")
    return meta.metadata.num_rows


def _set_id(cfg: ShardedConfig) -> str:
    import hashlib
    import json

    if isinstance(cfg.source, SyntheticSourceConfig):
        ident = cfg.source.model_dump(mode="json")
    else:
        st = Path(cfg.source.path).stat()
        ident = {"path": str(Path(cfg.source.path).resolve()), "size": st.st_size, "mtime": st.st_mtime_ns}
    ident["shard_rows"] = cfg.shard_rows
    return "set-" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- flow
def _lap_timer(timings: dict[str, float]) -> Any:
    """``lap(name)`` records the seconds since the previous lap (or since this call) under ``name``."""
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now_ = time.perf_counter()
        timings[name] = round(now_ - last[0], 3)
        last[0] = now_

    return lap


def _score(C: np.ndarray, files: list[ShardFile], group_of: np.ndarray, out_dir: Path) -> list[ScoredShard]:
    """Scoring pass (one task per shard): final assignment, SSP scores, rows regrouped by cluster group;
    a cached result whose files are gone is re-made."""
    scored: list[ScoredShard] = _results([score_shard_task.submit(f, C, group_of, str(out_dir)) for f in files])
    if any(not Path(s.scores_path).exists() for s in scored):
        scored = [score_shard_task.with_options(refresh_cache=True)(f, C, group_of, str(out_dir)) for f in files]
    return scored


def _embed(cfg: ShardedConfig, shards: list[Shard], vec_dir: str) -> list[ShardFile]:
    """One vectors file per shard (one task each); a cached result whose file is gone is re-made."""
    files: list[ShardFile] = _results([embed_shard.submit(cfg.source, s.index, s.start, s.stop, vec_dir) for s in shards])
    missing = [f.index for f in files if not Path(f.path).exists()]
    if missing:
        redo = embed_shard.with_options(refresh_cache=True)
        for i in missing:
            files[i] = redo(cfg.source, shards[i].index, shards[i].start, shards[i].stop, vec_dir)
    return files


def _semdedup(cfg: ShardedConfig, C: np.ndarray, scored: list[ScoredShard], out_dir: Path) -> list[dict]:
    """SemDeDup: one task per group of whole clusters (the rows the scoring pass regrouped)."""
    key = content_hash(C, np.array([s.content_hash for s in scored]))
    groups = []
    for p in range(len(scored[0].part_paths)):
        group_files = [s.part_paths[p] for s in scored if s.part_paths[p] is not None]
        if group_files:
            groups.append(semdedup_group_task.submit(
                group_files, key, list(cfg.semdedup_eps), cfg.semdedup_keep, cfg.semdedup_block, cfg.semdedup_max_pairs,
                cfg.semdedup_sub_rows, cfg.semdedup_sub_iters, cfg.seed, str(out_dir / "dedup" / f"p-{p:04d}.parquet")))
    return _results(groups)


def _kmeans(cfg: ShardedConfig, n: int, shards: list[Shard], files: list[ShardFile]) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Spherical k-means over the shards: seeded subsample (gathered from the shards) -> k-means++ ->
    Lloyd passes, each a map over the shards (one task each) and a reduce here. Returns (C, cluster sizes of
    the last pass, iterations, converged)."""
    sample, gen = init_sample(n, cfg.k, seed=cfg.seed, init_sample=cfg.init_sample)
    starts = np.array([s.start for s in shards])
    owner = np.searchsorted(starts, sample, side="right") - 1
    pieces = _results([gather_rows.submit(files[i], sample[owner == i]) for i in np.unique(owner)])
    C = init_centroids(np.concatenate(pieces), cfg.k, gen, cfg.init)
    del pieces
    prev: list[np.ndarray | None] = [None] * len(shards)
    converged, it = False, 0
    changed = n
    for it in range(1, cfg.kmeans_iters + 1):
        partials: list[PassPartial] = _results([kmeans_pass_task.submit(f, C, prev[f.index]) for f in files])
        prev = [p.assign for p in partials]
        red = reduce_passes(partials)
        del partials
        reseed = None
        if red.empty.size:
            rows = red.reseed_rows
            reseed = _in_order(rows, np.searchsorted(starts, rows, side="right") - 1, files)
        C = next_centroids(red, reseed)
        changed = red.changed
        if changed <= cfg.kmeans_tol * n and not red.empty.size:
            converged = True
            break
    if not converged and changed > 0.01 * n:
        print(f"warning: spherical k-means did not converge in kmeans_iters={cfg.kmeans_iters} "
              f"({changed} rows still changed cluster); raise kmeans_iters")
    return C, red.counts, it, converged


def _effective_dim(cfg: ShardedConfig, n: int, shards: list[Shard], files: list[ShardFile]) -> int:
    """The ``auto`` rule's dimension, as the in-memory stage measures it: the participation ratio of the
    same seeded sample of rows (:func:`tasks.prune.select.effective_dim_rows`), gathered from the shards."""
    rows = effective_dim_rows(n, seed=cfg.seed)
    rows = np.arange(n) if rows is None else rows
    owner = np.searchsorted(np.array([s.start for s in shards]), rows, side="right") - 1
    return participation_ratio(np.concatenate(_results([gather_rows.submit(files[i], rows[owner == i])
                                                        for i in np.unique(owner)])))


def _select(cfg: ShardedConfig, n: int, d_eff: int, sizes: np.ndarray, scored: list[ScoredShard], out_dir: Path) -> tuple[Any, Any, int, list[str]]:
    """The selection: budget and quotas from the cluster sizes, exact thresholds from per-shard radix
    histograms, members written per shard. ``auto`` divides the budget by k groups in ``d_eff``
    dimensions, as the in-memory stage does for unlabelled rows. Returns (plan, boundary state, kept,
    member files)."""
    grouped = cfg.balance != "none"
    plan = plan_selection(sizes if grouped else np.array([n]), d_eff, fraction=cfg.fraction, policy=cfg.policy,
                          balance=cfg.balance, auto_threshold=cfg.auto_alpha, auto_groups=cfg.k)
    state = start_boundary(plan.quotas)
    for bits in PASS_BITS:
        counts = np.sum(_results([histogram_task.submit(s, plan.resolved_policy, grouped, state, bits) for s in scored]),
                        axis=0)
        state, region = narrow(state, counts, bits)
        if region <= CANDIDATE_CAP:
            break
    cand = _results([candidates_task.submit(s, plan.resolved_policy, grouped, state, cfg.seed) for s in scored])
    K, T = resolve_boundary(state, cand)
    del cand
    member_files = [str(out_dir / "members" / shard_name(s.index)) for s in scored]
    kept = sum(_results([members_task.submit(s, plan.resolved_policy, grouped, K, T, cfg.seed, mf)
                         for s, mf in zip(scored, member_files)]))
    if kept != plan.budget:
        raise RuntimeError(f"selected {kept} rows, expected the budget {plan.budget}")
    return plan, state, kept, member_files


def _shards(cfg: ShardedConfig) -> tuple[int, list[Shard]]:
    """The source's row count and its shards (row ranges of ``cfg.shard_rows``)."""
    n = _source_rows(cfg)
    if cfg.k > n:
        raise WinnowError(f"k={cfg.k} clusters must be <= the {n} rows of the source")
    return n, plan_shards(n, cfg.shard_rows)


def sharded_run_id(cfg: ShardedConfig) -> str:
    """``sharded-<hash of what determines the results>``: a rerun of the same config is the same run."""
    return f"sharded-{cfg.results_hash()}"


def sharded_config_json(cfg: ShardedConfig) -> str:
    """The config as stored with the run (``winnow show``): every field, the task runner included."""
    import json

    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What ``winnow prune-sharded`` and ``winnow show`` print about a finished sharded run."""
    removed = ", ".join(f"{n:,} at eps={float(e):g}" for e, n in summary["removed"].items())
    return [
        f"{summary['n_rows']:,} rows in {summary['n_shards']} shards, {summary['n_iter']} k-means passes"
        + ("" if summary["converged"] else " (not converged)")
        + f"; kept {summary['n_kept']:,} ({summary['resolved_policy']}); SemDeDup removed {removed}",
        f"views: {', '.join(summary['views'])}; tables sharded_members, sharded_dedup_removed",
    ]


@flow(name="prune-sharded", log_prints=True)
def sharded_flow(cfg: ShardedConfig, db: str) -> dict[str, Any]:
    """SSP + SemDeDup + one selection, shard by shard; tables written to ``db``, the run recorded in
    ``runs`` (flow ``prune-sharded``). Returns a summary."""
    from prefect.runtime import flow_run

    from storage.runs import recorded_run

    store = Store(db)
    run_id = sharded_run_id(cfg)
    n, shards = _shards(cfg)  # input checks: a refused config writes nothing
    set_id = _set_id(cfg)
    with recorded_run(store, run_id, "prune-sharded", cfg.name, sharded_config_json(cfg), flow_run.id) as rec:
        summary = _sharded(cfg, store, run_id, n, shards, set_id)
        rec.summary = summary
    return summary


def _sharded(cfg: ShardedConfig, store: Store, run_id: str, n: int, shards: list[Shard], set_id: str) -> dict[str, Any]:
    timings: dict[str, float] = {}
    lap = _lap_timer(timings)
    out_dir = run_dir(store, run_id)

    files = _embed(cfg, shards, str(set_dir(store, set_id)))
    d = vector_dim(files[0].path)
    d_eff = _effective_dim(cfg, n, shards, files)
    lap("embed")

    C, sizes_last, it, converged = _kmeans(cfg, n, shards, files)
    lap("kmeans")

    # scoring pass: final assignment, SSP scores, rows regrouped by cluster group
    n_parts = min(cfg.k, cfg.semdedup_groups or 2 * len(shards))  # a group holds ~half a shard of rows
    scored = _score(C, files, balanced_groups(sizes_last, n_parts, cfg.semdedup_sub_rows), out_dir)
    sizes = np.sum([s.sizes for s in scored], axis=0)
    lap("score")

    dedup = _semdedup(cfg, C, scored, out_dir)
    removed = {e: int(sum(g["n_removed"][e] for g in dedup)) for e in cfg.semdedup_eps}
    lap("semdedup")

    plan, state, kept, member_files = _select(cfg, n, d_eff, sizes, scored, out_dir)
    lap("select")

    # tables: shard sets + views, run, selection, members and removed ids in bounded batches
    centroids_path = write_atomic(_centroids_table(C), out_dir / "centroids.parquet")
    objective = sum(float(read_columns(s.scores_path, ["cos"])["cos"].astype(np.float64).sum()) for s in scored) / n
    vectors_view = register_shards(store, set_id, "vectors", files)
    scores_view = register_shards(store, run_id, "scores", [
        ShardFile(s.index, s.start, s.stop, s.scores_path, s.content_hash) for s in scored])
    selection_id = f"{run_id}:ssp:{cfg.policy}:f={cfg.fraction:g}"
    settings = cfg.model_dump(mode="json", exclude={"task_runner", "worker_memory_limit"})
    settings["n_parts"] = n_parts
    written = save_sharded_run(
        store,
        run={"run_id": run_id, "set_id": set_id, "n_rows": n, "dim": d, "n_shards": len(shards), "k": cfg.k,
             "n_iter": it, "converged": converged, "objective": objective, "centroids_path": centroids_path,
             "settings": settings, "timings": timings},
        selection={"selection_id": selection_id, "metric": "ssp", "policy": plan.policy,
                   "resolved_policy": plan.resolved_policy, "balance": plan.balance, "fraction": kept / n,
                   "n_pool": n, "n_kept": kept, "histogram_passes": state.passes, "reason": plan.reason},
        member_files=member_files,
        dedup=[{"eps": e, "n_pool": n, "n_removed": removed[e]} for e in cfg.semdedup_eps],
        dedup_files=[g["path"] for g in dedup],
        batch_rows=cfg.member_batch_rows,
    )
    lap("tables")
    summary = {"run_id": run_id, "db": str(store.path), "set_id": set_id, "selection_id": selection_id, "n_rows": n,
               "dim": d, "effective_dim": d_eff, "n_shards": len(shards), "n_iter": it, "converged": bool(converged), "n_kept": int(kept),
               "resolved_policy": plan.resolved_policy, "reason": plan.reason, "removed": removed,
               "views": [vectors_view, scores_view], "written": written, "timings": timings,
               "histogram_passes": int(state.passes), "n_parts": n_parts,
               "subclusters": int(sum(g["n_subclusters"] for g in dedup))}
    return {**summary, "lines": summary_lines(summary)}


def _in_order(rows: np.ndarray, own: np.ndarray, files: list[ShardFile]) -> np.ndarray:
    """Raw vectors of the global ``rows`` in the given order (gathered shard by shard)."""
    out: np.ndarray | None = None
    for i in np.unique(own):
        pos = np.flatnonzero(own == i)
        order = np.argsort(rows[pos])
        got = gather_rows(files[i], rows[pos][order])
        if out is None:
            out = np.empty((rows.size, got.shape[1]), dtype=np.float32)
        out[pos[order]] = got
    assert out is not None
    return out


def _centroids_table(C: np.ndarray):
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(C, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.table({"cluster": np.arange(C.shape[0], dtype=np.int32),
                     "centroid": pa.FixedSizeListArray.from_arrays(flat, C.shape[1])})


# ----------------------------------------------------------------------------------------- entry
def run_sharded(cfg: ShardedConfig, db: str | Path) -> dict[str, Any]:
    """Run :func:`sharded_flow` on the config's task runner; returns its summary."""
    with task_runner_scope(cfg.task_runner, memory_limit=cfg.worker_memory_limit) as runner:
        return sharded_flow.with_options(task_runner=runner)(cfg, str(Path(db).expanduser().resolve()))
