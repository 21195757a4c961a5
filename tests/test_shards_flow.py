"""The sharded flow equals the in-memory path (200k rows), writes its tables once, and resumes from cache."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")  # these tests run Prefect flows

N, D, K = 200_000, 32, 100


def _config(**over):
    from configs.sharded import ShardedConfig

    base = dict(source={"kind": "synthetic_embeddings", "n": N, "d": D, "clusters": 150, "duplicate_rate": 0.05,
                        "seed": 4},
                shard_rows=32_768, k=K, kmeans_iters=30, seed=7, semdedup_eps=[0.01, 0.05], fraction=0.3,
                policy="auto", task_runner={"kind": "threads", "max_workers": 2})
    base.update(over)
    return ShardedConfig(**base)


def _centroids(store, run_id):
    from storage.shards import load_sharded_run

    run = load_sharded_run(store, run_id)["sharded_runs"][0]
    col = pq.read_table(store.resolve(run["centroids_path"])).column("centroid").combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), col.type.list_size)


def test_sharded_flow_equals_the_in_memory_path_on_200k_rows(store):
    from flows.sharded import run_sharded
    from storage.shards import load_sharded_run
    from tasks.prune.kmeans import KMeansResult, spherical_kmeans
    from tasks.prune.select import select
    from tasks.prune.semdedup import semdedup
    from tasks.synthetic import SyntheticSpec, synthetic_embeddings

    cfg = _config()
    summary = run_sharded(cfg, store.path)
    assert summary["n_shards"] == 7 and summary["converged"]

    E = synthetic_embeddings(SyntheticSpec(n=N, d=D, clusters=150, duplicate_rate=0.05, seed=4)).vectors
    km = spherical_kmeans(E, K, iters=30, seed=7)  # same seed -> same subsample and k-means++ centres
    assert summary["n_iter"] == km.n_iter
    np.testing.assert_allclose(_centroids(store, summary["run_id"]), km.centroids, atol=1e-5)

    with store.read() as con:
        sc = con.execute(f'SELECT row_index, cluster, cos, score FROM "{summary["views"][1]}" ORDER BY row_index').fetchnumpy()
    assert np.array_equal(sc["row_index"], np.arange(N))
    assert np.array_equal(sc["cluster"], km.assign)
    np.testing.assert_allclose(sc["score"], 1.0 - km.cos_to_centroid, atol=1e-5)

    # auto as the in-memory stage decides it for unlabelled rows: k groups in the effective dimension
    from tasks.prune.select import effective_dim

    assert summary["effective_dim"] == effective_dim(E, seed=7) < D
    ref = select(1.0 - km.cos_to_centroid, fraction=0.3, policy="auto", dim=effective_dim(E, seed=7), n_groups=K, seed=7)
    tables = load_sharded_run(store, summary["run_id"])
    assert tables["sharded_selections"][0]["resolved_policy"] == ref.resolved_policy
    assert [r["row_index"] for r in tables["sharded_members"]] == ref.indices.tolist()

    # SemDeDup per cluster group == the in-memory kernel on the whole matrix with the same clustering
    mine = KMeansResult(centroids=km.centroids, assign=sc["cluster"].astype(np.int64), cos_to_centroid=sc["cos"],
                        sizes=np.bincount(sc["cluster"], minlength=K), objective=0.0, n_iter=0, converged=True, seed=7)
    whole = semdedup(E, eps=[0.01, 0.05], k=K, kmeans=mine)
    for e in (0.01, 0.05):
        got = [r["row_index"] for r in tables["sharded_dedup_removed"] if r["eps"] == e]
        assert got == np.flatnonzero(~whole.keep[e]).tolist()
        # and the counts equal the fully in-memory path's (its cosines differ in the 7th digit)
        assert summary["removed"][e] == semdedup(E, eps=e, k=K, kmeans=km).n_removed[e]


def test_rerun_is_served_from_the_cache_and_writes_the_same_tables(store, tmp_path, monkeypatch):
    import flows.sharded
    from flows.sharded import run_sharded
    from storage.shards import load_sharded_run

    passes = []  # Lloyd passes actually computed (a cached pass never calls the kernel)
    kernel = flows.sharded.kmeans_pass
    monkeypatch.setattr(flows.sharded, "kmeans_pass", lambda *a, **k: passes.append(1) or kernel(*a, **k))
    cfg = _config(source={"kind": "synthetic_embeddings", "n": 40_000, "d": 16, "clusters": 10, "seed": 1},
                  shard_rows=16_384, k=8, balance="proportional", semdedup_sub_rows=500)
    first = run_sharded(cfg, store.path)
    computed_first, passes[:] = len(passes), []
    before = load_sharded_run(store, first["run_id"])
    second = run_sharded(cfg, store.path)
    after = load_sharded_run(store, second["run_id"])
    strip = {"created_at"}
    norm = {t: [{k: v for k, v in r.items() if k not in strip and k != "timings"} for r in rs] for t, rs in before.items()}
    assert norm == {t: [{k: v for k, v in r.items() if k not in strip and k != "timings"} for r in rs]
                    for t, rs in after.items()}
    assert computed_first >= 3 and passes == []  # every pass of the rerun was served from the cache
    assert len(after["sharded_members"]) == round(0.3 * 40_000)


def test_an_embeddings_parquet_source_is_sharded_across_its_row_groups(store, tmp_path):
    import pyarrow as pa

    from flows.sharded import run_sharded
    from storage.shards import load_sharded_run
    from tasks.prune.kmeans import spherical_kmeans
    from tasks.prune.select import select
    from tasks.synthetic import SyntheticSpec, synthetic_embeddings

    E = synthetic_embeddings(SyntheticSpec(n=20_000, d=8, clusters=6, seed=3)).vectors
    path = tmp_path / "emb.parquet"
    flat = pa.array(E.reshape(-1), type=pa.float32())
    ids = 5 + 2 * np.arange(20_000, dtype=np.int64)  # the file's own row ids, not positions
    pq.write_table(pa.table({"row_index": ids,
                             "vector": pa.FixedSizeListArray.from_arrays(flat, 8)}), path, row_group_size=3_000)
    cfg = _config(source={"kind": "embeddings_parquet", "path": str(path)}, shard_rows=16_384, k=5, fraction=0.5,
                  policy="hard", semdedup_eps=[0.01])
    summary = run_sharded(cfg, store.path)
    assert summary["n_shards"] == 2  # 16,384 + 3,616 rows, cut inside a 3,000-row row group
    km = spherical_kmeans(E, 5, iters=30, seed=7)
    np.testing.assert_allclose(_centroids(store, summary["run_id"]), km.centroids, atol=1e-5)
    tables = load_sharded_run(store, summary["run_id"])
    kept = [r["row_index"] for r in tables["sharded_members"]]
    assert {r["row_index"] for r in tables["sharded_dedup_removed"]} <= set(ids.tolist())  # one id space for all tables
    assert kept == ids[select(1.0 - km.cos_to_centroid, fraction=0.5, policy="hard", seed=7).indices].tolist()
