"""Pure-function tests of the sharded kernels (no Prefect): synthetic source, k-means map/reduce,
SemDeDup per cluster group, exact selections from per-shard histograms, shard files."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.prune.kmeans import spherical_kmeans
from tasks.prune.select import select, tie_breaker
from tasks.prune.semdedup import semdedup
from tasks.shards.dedup import dedup_clusters, gather_group
from tasks.shards.kmeans import init_centroids, init_sample, kmeans_pass, next_centroids, reduce_passes
from tasks.shards.plan import plan_shards
from tasks.shards.score import cluster_parts, score_shard
from tasks.shards.select import (
    PASS_BITS, boundary_candidates, narrow, plan_selection, region_histogram, resolve_boundary, select_mask,
    shard_ties, sortable_u32, start_boundary,
)
from tasks.synthetic import BLOCK_ROWS, SyntheticSpec, synthetic_embeddings


def test_synthetic_rows_do_not_depend_on_the_shard_boundaries():
    spec = SyntheticSpec(n=2 * BLOCK_ROWS + 1000, d=8, clusters=5, seed=3)
    whole = synthetic_embeddings(spec)
    for start, stop in ((0, 10), (BLOCK_ROWS - 7, BLOCK_ROWS + 9), (2 * BLOCK_ROWS, spec.n)):
        part = synthetic_embeddings(spec, start, stop)
        assert np.array_equal(part.vectors, whole.vectors[start:stop])
        assert np.array_equal(part.duplicate_of, whole.duplicate_of[start:stop])
    with pytest.raises(ValueError):
        synthetic_embeddings(spec, 5, spec.n + 1)


def test_synthetic_planted_duplicates_are_near_copies_of_originals():
    spec = SyntheticSpec(n=20_000, d=32, clusters=4, duplicate_rate=0.1, seed=1)
    s = synthetic_embeddings(spec)
    dup = np.flatnonzero(s.duplicate_of >= 0)
    assert 0.08 < dup.size / spec.n < 0.12
    src = s.duplicate_of[dup]
    assert (src < dup).all() and (s.duplicate_of[src] == -1).all()  # copies of earlier originals
    X = s.vectors / np.linalg.norm(s.vectors, axis=1, keepdims=True)
    assert ((X[dup] * X[src]).sum(1) > 0.9999).all()


def _sharded_kmeans(E, k, shard_rows, iters=30, seed=0, tol=1e-3):
    shards = plan_shards(len(E), shard_rows)
    idx, gen = init_sample(len(E), k, seed=seed)
    C = init_centroids(E[idx], k, gen)
    prev = [None] * len(shards)
    for it in range(1, iters + 1):
        parts = [kmeans_pass(E[s.start:s.stop], C, prev[s.index], row_offset=s.start) for s in shards]
        prev = [p.assign for p in parts]
        red = reduce_passes(parts)
        C = next_centroids(red, E[red.reseed_rows] if red.empty.size else None)
        if red.changed <= tol * len(E) and not red.empty.size:
            break
    return C, it, shards


def test_sharded_kmeans_matches_the_in_memory_kernel():
    E = synthetic_embeddings(SyntheticSpec(n=60_000, d=24, clusters=15, seed=2)).vectors
    ref = spherical_kmeans(E, 12, iters=30, seed=5)
    C, it, shards = _sharded_kmeans(E, 12, 16_384, seed=5)
    assert it == ref.n_iter
    np.testing.assert_allclose(C, ref.centroids, atol=1e-5)
    sc = [score_shard(E[s.start:s.stop], C) for s in shards]
    assert np.array_equal(np.concatenate([x.assign for x in sc]), ref.assign)
    np.testing.assert_allclose(np.concatenate([x.scores for x in sc]), 1 - ref.cos_to_centroid, atol=1e-5)


def test_empty_clusters_are_reseeded_with_the_globally_farthest_rows():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(400, 6)).astype(np.float32)
    C = np.zeros((3, 6), dtype=np.float32)
    C[:, 0] = 1.0  # three identical centroids: clusters 1 and 2 get no rows
    parts = [kmeans_pass(E[a:a + 100], C, None, row_offset=a) for a in range(0, 400, 100)]
    red = reduce_passes(parts)
    assert red.empty.tolist() == [1, 2]
    cos = (E[:, 0] / np.linalg.norm(E, axis=1))
    assert red.reseed_rows.tolist() == np.argsort(cos, kind="stable")[:2].tolist()


def test_cluster_parts_group_whole_clusters_in_row_order():
    assign = np.array([3, 1, 0, 3, 2, 1, 0])
    parts = cluster_parts(assign, 2)
    assert [p.tolist() for p in parts] == [[2, 6, 4], [1, 5, 0, 3]]


def test_semdedup_per_cluster_group_equals_the_whole_matrix_kernel():
    spec = SyntheticSpec(n=6_000, d=16, clusters=6, duplicate_rate=0.1, seed=4)
    E = synthetic_embeddings(spec).vectors
    km = spherical_kmeans(E, 8, seed=0)
    whole = semdedup(E, eps=[0.01, 0.1], k=8, kmeans=km)
    removed = {0.01: [], 0.1: []}
    for rows in cluster_parts(km.assign, 3):
        g = dedup_clusters(E[rows], rows, km.assign[rows], km.cos_to_centroid[rows], eps=[0.01, 0.1])
        for e in removed:
            removed[e].append(g.removed[e])
    for e in removed:
        assert np.array_equal(np.sort(np.concatenate(removed[e])), np.flatnonzero(~whole.keep[e]))


def test_gather_group_reads_parts_one_at_a_time_into_the_kernels_order():
    spec = SyntheticSpec(n=3_000, d=8, clusters=5, duplicate_rate=0.1, seed=2)
    E = synthetic_embeddings(spec).vectors
    km = spherical_kmeans(E, 5, seed=0)
    shards = np.array_split(np.arange(spec.n), 4)  # parts in reading order: shard by shard
    meta = [{"row_index": r, "cluster": km.assign[r].astype(np.int32), "cos": km.cos_to_centroid[r]} for r in shards]
    read = []
    X, row_index, cluster, cos = gather_group(meta, lambda i: (read.append(i), E[shards[i]])[1])
    assert read == [0, 1, 2, 3]
    order = np.lexsort((np.arange(spec.n), km.assign))
    assert np.array_equal(row_index, order) and np.array_equal(X, E[order])
    assert np.array_equal(cluster, km.assign[order]) and np.array_equal(cos, km.cos_to_centroid[order])
    gathered = dedup_clusters(X, row_index, cluster, cos, eps=[0.01], sub_rows=200)
    shuffled = np.random.default_rng(0).permutation(spec.n)
    direct = dedup_clusters(E[shuffled], shuffled, km.assign[shuffled], km.cos_to_centroid[shuffled], eps=[0.01], sub_rows=200)
    assert gathered.removed[0.01].size > 0
    assert np.array_equal(gathered.removed[0.01], direct.removed[0.01])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_place_partition_is_stable_and_matches_a_copy(monkeypatch, seed):
    from tasks.shards import dedup

    monkeypatch.setattr(dedup, "_MOVE_ROWS", 3)  # many blocks: every block boundary is exercised
    rng = np.random.default_rng(seed)
    X0 = rng.normal(size=(50, 4)).astype(np.float32)
    for a, b, p in ((0, 50, 0.2), (5, 45, 0.8), (10, 11, 0.5)):
        side = rng.random(b - a) < p
        X, perm = X0.copy(), np.arange(50)
        n0 = dedup._partition(X, perm, a, b, side)
        want = np.concatenate([X0[a:b][~side], X0[a:b][side]])
        assert n0 == (~side).sum() and np.array_equal(X[a:b], want)
        assert np.array_equal(X[:a], X0[:a]) and np.array_equal(X[b:], X0[b:])
        assert np.array_equal(X0[perm], X)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_bisect_in_place_gives_the_leaves_of_splitting_copies():
    from tasks.shards.dedup import _bisect

    spec = SyntheticSpec(n=5_000, d=16, clusters=4, duplicate_rate=0.05, seed=3)
    X0 = synthetic_embeddings(spec).vectors
    want, todo = [], [np.arange(X0.shape[0])]  # the copy-per-node recursion it replaces
    while todo:
        rows = todo.pop()
        km = spherical_kmeans(X0[rows], 2, iters=5, seed=11, init="random")
        if km.sizes.min() == 0:
            want.append((rows, km.cos_to_centroid))
            continue
        for j in (0, 1):
            side = km.assign == j
            (todo.append(rows[side]) if side.sum() > 300 else want.append((rows[side], km.cos_to_centroid[side])))
    X = X0.copy()
    perm, leaves, _ = _bisect(X, 300, 5, 11)
    assert np.array_equal(X, X0[perm])
    got = sorted((perm[a:b].tolist(), c.tolist()) for a, b, c in leaves)
    assert got == sorted((r.tolist(), c.tolist()) for r, c in want) and len(got) >= 16


def test_semdedup_sub_clusters_still_remove_the_planted_near_copies():
    spec = SyntheticSpec(n=20_000, d=16, clusters=3, duplicate_rate=0.05, seed=6)
    s = synthetic_embeddings(spec)
    km = spherical_kmeans(s.vectors, 3, seed=0)
    g = dedup_clusters(s.vectors, np.arange(spec.n), km.assign, km.cos_to_centroid, eps=[0.001], sub_rows=500)
    assert g.n_subclusters >= 40  # ~6,700-row clusters split into sub-clusters of <= ~500
    planted = np.flatnonzero(s.duplicate_of >= 0)
    caught = np.isin(planted, g.removed[0.001]) | np.isin(s.duplicate_of[planted], g.removed[0.001])
    assert caught.mean() > 0.95
    assert g.removed[0.001].size <= 1.05 * planted.size  # and little else


def test_shard_ties_are_the_in_memory_tie_breaker():
    n = 10_000
    ref = tie_breaker(n, 9)
    for start, m in ((0, 5), (1234, 300), (n - 7, 7)):
        assert np.array_equal(shard_ties(9, start, m), ref[start:start + m])


def test_sortable_u32_keeps_the_order_of_the_key():
    s = np.array([-2.5, -0.0, 0.0, 1e-30, 0.3, 1.7, -1e-3], dtype=np.float32)
    for pol, key in (("hard", s), ("easy", -s)):
        u = sortable_u32(s, pol)
        a, b = np.meshgrid(np.arange(s.size), np.arange(s.size))
        strict = key[a] < key[b]
        assert (u[a][strict] < u[b][strict]).all()


@pytest.mark.parametrize("balance", ["none", "proportional", "equal"])
@pytest.mark.parametrize("policy", ["hard", "easy", "auto"])
@pytest.mark.parametrize("cap", [0, 10**9])  # all three radix passes / gather after the first
def test_histogram_selection_equals_the_in_memory_select(balance, policy, cap):
    rng = np.random.default_rng(1)
    n = 30_000
    scores = rng.random(n).astype(np.float32)
    scores[:4_000] = 0.25  # a block of ties, broken by the seeded tie order
    groups = rng.integers(0, 7, n)
    ref = select(scores, fraction=0.3, policy=policy, groups=None if balance == "none" else groups, balance=balance,
                 dim=16, seed=3)
    sizes = np.bincount(groups, minlength=7) if balance != "none" else np.array([n])
    plan = plan_selection(sizes, 16, fraction=0.3, policy=policy, balance=balance)
    assert (plan.budget, plan.resolved_policy) == (ref.budget, ref.resolved_policy)
    g = groups if balance != "none" else np.zeros(n, dtype=np.int64)
    shards = plan_shards(n, 7_000)
    keys = [sortable_u32(scores[s.start:s.stop], plan.resolved_policy) for s in shards]
    ties = [shard_ties(3, s.start, s.n_rows) for s in shards]
    state = start_boundary(plan.quotas)
    for bits in PASS_BITS:
        counts = sum(region_histogram(u, g[s.start:s.stop], state, bits) for u, s in zip(keys, shards))
        state, region = narrow(state, counts, bits)
        if region <= cap:
            break
    K, T = resolve_boundary(state, [boundary_candidates(u, t, g[s.start:s.stop], state)
                                    for u, t, s in zip(keys, ties, shards)])
    mask = np.concatenate([select_mask(u, t, g[s.start:s.stop], K, T) for u, t, s in zip(keys, ties, shards)])
    assert np.array_equal(np.flatnonzero(mask), ref.indices)


def test_shard_files_round_trip_and_register_one_view(store, tmp_path):
    from storage.shards import (
        ShardFile, content_hash, read_vectors, register_shards, vector_dim, vectors_table, write_atomic,
    )

    E = synthetic_embeddings(SyntheticSpec(n=3_000, d=8, seed=1)).vectors
    files = []
    for s in plan_shards(3_000, 1_024):
        rows = np.arange(s.start, s.stop)
        path = write_atomic(vectors_table(rows, E[s.start:s.stop]), tmp_path / f"{s.index}.parquet")
        files.append(ShardFile(s.index, s.start, s.stop, path, content_hash(rows, E[s.start:s.stop])))
    ri, X, _ = read_vectors(files[1].path)
    assert np.array_equal(ri, np.arange(1_024, 2_048)) and np.array_equal(X, E[1_024:2_048])
    assert vector_dim(files[0].path) == 8
    view = register_shards(store, "set-x", "vectors", files)
    with store.read() as con:
        assert con.execute(f'SELECT count(*), max(row_index) FROM "{view}"').fetchall() == [(3_000, 2_999)]
        assert con.execute("SELECT count(*) FROM shard_files WHERE set_id = 'set-x'").fetchall() == [(3,)]


def test_balanced_groups_even_out_the_pairwise_work():
    """Unequal clusters: longest-processing-time first keeps the largest group's work within 4/3 of the
    best split, where cluster % P piles the big clusters together."""
    from tasks.shards.score import balanced_groups

    sizes = np.array([1000, 10, 1000, 10, 900, 10, 800, 10, 50, 40])
    group = balanced_groups(sizes, 4)
    work = np.bincount(group, weights=sizes.astype(float) ** 2, minlength=4)
    modulo = np.bincount(np.arange(sizes.size) % 4, weights=sizes.astype(float) ** 2, minlength=4)
    assert work.max() <= 4 / 3 * max(work.sum() / 4, (sizes.astype(float) ** 2).max())
    assert work.max() < modulo.max()
    assert np.array_equal(group, balanced_groups(sizes, 4))  # deterministic
    # with sub_rows the cost of a big cluster is linear in its size
    capped = balanced_groups(sizes, 4, sub_rows=100)
    assert set(capped.tolist()) == {0, 1, 2, 3}


def test_cluster_parts_follow_the_given_groups():
    assign = np.array([2, 0, 1, 2, 0, 3])
    parts = cluster_parts(assign, 2, group_of=np.array([1, 0, 1, 0]))
    assert [p.tolist() for p in parts] == [[2, 5], [1, 4, 0, 3]]  # ordered by (cluster, row) within a group
