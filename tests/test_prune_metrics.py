"""Pruning metrics on small synthetic data with known answers, and their input validation."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from tasks.errors import WinnowError
from tasks.prune.ccs import ccs_quotas, ccs_select
from tasks.prune.dbp import dbp_weights
from tasks.prune.kmeans import spherical_kmeans
from tasks.prune.moderate import group_medians, moderate_scores
from tasks.prune.registry import LABEL_FREE, REGISTRY, MetricParams, compute_metric, takes_labels
from tasks.prune.select import select
from tasks.prune.semdedup import semdedup, semdedup_scores
from tasks.prune.ssp import ssp_scores
from tasks.prune.supervised import (
    DynamicsConfig,
    aum_scores,
    el2n_scores,
    forgetting_scores,
    grand_scores,
    supervised_prototype_scores,
)

from helpers import blobs


def _directions(k: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return Q[:k]


def _clusters(n_per: int = 60, k: int = 4, d: int = 16, spread: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    C = _directions(k, d, seed)
    y = np.repeat(np.arange(k), n_per)
    E = C[y] + spread * rng.normal(size=(k * n_per, d))
    return E.astype(np.float32), y


# ------------------------------------------------------------------------------------ k-means
def test_spherical_kmeans_recovers_planted_clusters_and_is_seeded():
    E, y = _clusters()
    r = spherical_kmeans(E, 4, seed=0, chunk=37)  # odd chunk exercises the chunked passes
    # each true cluster maps to exactly one found cluster
    assert all(len(np.unique(r.assign[y == c])) == 1 for c in range(4))
    assert len(np.unique(r.assign)) == 4 and r.sizes.sum() == len(E)
    assert np.allclose(np.linalg.norm(r.centroids, axis=1), 1, atol=1e-5)
    assert r.cos_to_centroid.min() > 0.5
    r2 = spherical_kmeans(E, 4, seed=0, chunk=1000)
    assert np.array_equal(r.assign, r2.assign)
    rr = spherical_kmeans(E, 4, seed=3, init="random")
    assert len(np.unique(rr.assign)) == 4


@pytest.mark.parametrize(
    "E, k, error, match",
    [  # preconditions the stage guarantees (embeddings are checked when made, k by the option check): ValueError
        (np.array([[1.0, np.nan], [0.0, 1.0]]), 1, ValueError, "non-finite value nan at row 0"),
        (np.array([[1.0, 0.0], [np.inf, 1.0]]), 1, ValueError, "non-finite value inf at row 1"),
        (np.ones((5, 3)), 6, ValueError, "k=6 clusters must be in \\[1, n_samples=5\\]"),
        (np.ones((5, 3)), 0, ValueError, "k=0"),
        (np.zeros((0, 3)), 1, ValueError, "empty"),
        (np.ones(5), 1, ValueError, "2-D"),
        # an all-zero row of a raw/column source is the user's data: WinnowError
        (np.array([[1.0, 0.0], [0.0, 0.0]]), 1, WinnowError, "row 1 is all zeros"),
    ],
)
def test_kmeans_rejects_bad_input(E, k, error, match):
    with pytest.raises(error, match=match):
        spherical_kmeans(E, k)


# ------------------------------------------------------------------------------------ SSP
def test_ssp_ranks_planted_outliers_hardest():
    E, _ = _clusters(spread=0.05)
    rng = np.random.default_rng(1)
    outliers = rng.normal(size=(5, E.shape[1])).astype(np.float32)  # random directions: far from all prototypes
    X = np.vstack([E, outliers])
    r = ssp_scores(spherical_kmeans(X, 4, seed=0))
    top5 = set(np.argsort(-r.scores)[:5])
    assert top5 == set(range(len(E), len(X)))
    assert np.all(r.scores >= 0) and np.all(r.scores <= 2)


# ------------------------------------------------------------------------------------ SemDeDup
def test_semdedup_removes_exactly_the_planted_duplicates():
    rng = np.random.default_rng(0)
    base = _clusters(n_per=40, spread=0.3)[0]
    dup_of = rng.choice(len(base), 12, replace=False)
    dups = base[dup_of] + 1e-4 * rng.normal(size=(12, base.shape[1])).astype(np.float32)
    E = np.vstack([base, dups])
    for block in (None, 7):  # whole clusters and small blocks give the same answer
        r = semdedup(E, eps=[0.001, 0.5], k=4, seed=0, block=block)
        assert r.n_removed[0.001] == 12
        kept = r.keep[0.001]
        # from each planted pair exactly one survives
        for i, j in enumerate(dup_of):
            assert kept[j] ^ kept[len(base) + i]
        assert r.n_removed[0.5] > 12  # a loose threshold removes near neighbours too
    s = semdedup_scores(E, spherical_kmeans(E, 4, seed=0), block=5)
    lowest = set(np.argsort(s.scores)[:12])
    planted = {int(j) for j in dup_of} | set(range(len(base), len(E)))
    assert lowest <= planted and s.scores.min() < 1e-3


def test_semdedup_greedy_keeps_items_whose_duplicate_was_removed():
    # a ~ b and b ~ c but a !~ c: greedy ("kept before it") keeps a and c, removes b
    a = np.array([1.0, 0.0, 0.0])
    ang = 0.1
    b = np.array([np.cos(ang), np.sin(ang), 0.0])
    c = np.array([np.cos(2 * ang), np.sin(2 * ang), 0.0])
    E = np.vstack([a, b, c]).astype(np.float32)
    km = spherical_kmeans(E, 1, seed=0)
    eps = 1 - np.cos(ang) + 1e-4  # a~b and b~c, but a-c similarity cos(0.2) < 1-eps
    r = semdedup(E, eps=eps, k=1, kmeans=km, keep="farthest")
    assert r.n_removed[eps] == 1 and not r.keep[eps][1]


def test_semdedup_refuses_quadratic_memory_and_names_the_option():
    E, _ = _clusters(n_per=50)
    with pytest.raises(WinnowError, match="block \\(semdedup_block\\)"):
        semdedup(E, eps=0.01, k=1, block=None, max_pairs=100)
    with pytest.raises(WinnowError, match="raise k"):
        semdedup_scores(E, spherical_kmeans(E, 1), block=50, max_pairs=100)
    with pytest.raises(ValueError, match="eps=2.5"):  # the config allows (0, 2) only
        semdedup(E, eps=2.5, k=2)


# ------------------------------------------------------------------------------------ DBP
def test_dbp_weights_favour_complex_clusters_and_quotas_sum_to_budget():
    rng = np.random.default_rng(0)
    C = _directions(4, 16, 0)
    spreads = np.array([0.03, 0.03, 0.2, 0.2])
    y = np.repeat(np.arange(4), [100, 100, 30, 30])
    E = (C[y] + spreads[y, None] * rng.normal(size=(len(y), 16))).astype(np.float32)
    r = dbp_weights(spherical_kmeans(E, 4, seed=0))
    assert np.isclose(r.weights.sum(), 1.0)
    tight = [r.kmeans.assign[y == c][0] for c in (0, 1)]
    loose = [r.kmeans.assign[y == c][0] for c in (2, 3)]
    assert r.weights[loose].min() > r.weights[tight].max()
    for budget in (40, 100, 150):
        sel = select(r.scores, count=budget, groups=r.cluster, balance="weighted", group_weights=r.weights)
        assert sel.indices.size == budget and sel.quotas.sum() == budget
        assert np.all(sel.quotas <= r.kmeans.sizes)
    # at 150 the loose clusters (30 rows each) are capped and their excess goes to the others
    sel = select(r.scores, count=150, groups=r.cluster, balance="weighted", group_weights=r.weights)
    assert all(sel.quotas[j] == 30 for j in loose)
    # within a cluster the hardest (farthest from centroid) members are kept
    j = tight[0]
    members = np.flatnonzero(r.cluster == j)
    kept = np.intersect1d(members, sel.indices)
    assert r.scores[kept].min() >= r.scores[np.setdiff1d(members, kept)].max()
    with pytest.raises(WinnowError, match="k >= 2"):
        dbp_weights(spherical_kmeans(E, 1))


# ------------------------------------------------------------------------------------ Moderate
def test_moderate_keeps_the_band_around_the_median_distance():
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 2.0, 3.0], dtype=np.float32)
    g = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    assert np.allclose(group_medians(d, g, 2), [0.3, 2.0])
    E, _ = _clusters(n_per=50)
    r = moderate_scores(spherical_kmeans(E, 4, seed=0))
    sel = select(r.scores, fraction=0.2, policy="easy", groups=r.cluster, balance="proportional")
    for j in range(4):
        members = r.cluster == j
        kept = np.zeros(len(E), bool)
        kept[sel.indices] = True
        dk = r.distance[members & kept]
        dall = r.distance[members]
        # the kept band excludes both the nearest and the farthest members
        assert dk.min() > dall.min() and dk.max() < dall.max()


def test_moderate_under_auto_keeps_its_band_at_any_budget():
    """``auto`` on Moderate is the method's own selection (keep-easy: the median band), never the
    perceptron rule's keep-hard (the two tails), even where the rule would say hard (alpha >= 3)."""
    from tasks.prune.registry import select_by_metric

    E, _ = _clusters(n_per=50)
    ms = compute_metric("moderate", E, params=MetricParams(k=4), seed=0, kmeans=spherical_kmeans(E, 4, seed=0))
    auto = select_by_metric(ms, "auto", fraction=0.5, dim=2, n_groups=1, seed=0)  # alpha = 100/2: the rule says hard
    easy = select_by_metric(ms, "easy", fraction=0.5, dim=2, n_groups=1, seed=0)
    assert auto.resolved_policy == "easy" and "prescribed by moderate" in auto.reason
    assert np.array_equal(np.sort(auto.indices), np.sort(easy.indices))


# ------------------------------------------------------------------------------------ CCS
def test_ccs_allocates_from_the_smallest_stratum_up():
    sizes = np.array([2, 50, 0, 5, 30])
    q = ccs_quotas(sizes, 40)
    assert q.sum() == 40 and q[0] == 2 and q[2] == 0 and q[3] == 5
    assert abs(q[1] - q[4]) <= 1 and q[1] <= 50 and q[4] <= 30  # the rest split evenly
    with pytest.raises(ValueError, match="exceeds"):
        ccs_quotas(sizes, 100)


def test_ccs_drops_hardest_and_covers_all_strata():
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.uniform(0, 1, 900), rng.uniform(9, 10, 100)])  # a sparse hard tail
    r = ccs_select(s, 100, beta=0.05, n_strata=10, seed=0)
    assert r.indices.size == 100 and r.n_dropped_hard == 50
    assert s[r.indices].max() <= np.sort(s)[-51]  # the 50 hardest are never kept
    assert (r.quotas > 0).sum() == (r.sizes > 0).sum()  # every non-empty stratum is sampled
    assert np.array_equal(ccs_select(s, 100, beta=0.05, n_strata=10, seed=0).indices, r.indices)
    # budget larger than what survives beta: beta shrinks
    r2 = ccs_select(s, 990, beta=0.2, seed=0)
    assert r2.n_dropped_hard == 10 and r2.indices.size == 990
    with pytest.raises(ValueError, match="beta=1.5"):
        ccs_select(s, 10, beta=1.5)


# ------------------------------------------------------------------------------------ supervised
def test_supervised_scores_flag_mislabelled_examples():
    X, y = blobs(n=300, d=8, k=3, seed=0)
    y_noisy = y.copy()
    flipped = np.arange(10)
    y_noisy[flipped] = (y[flipped] + 1) % 3
    cfg = DynamicsConfig(epochs=4, read_epoch=2, seeds=(0,), batch_size=64, lr=0.05)
    for fn in (el2n_scores, grand_scores, aum_scores):
        s = fn(X, y_noisy, cfg=cfg)
        assert set(np.argsort(-s)[:10]) == set(flipped), fn.__name__
    f = forgetting_scores(X, y_noisy, cfg=cfg)
    assert f[flipped].mean() > f[10:].mean()
    p = supervised_prototype_scores(X, y_noisy)
    assert p[flipped].mean() > p[10:].mean()


def test_supervised_metrics_require_labels():
    X, _ = blobs(n=50)
    for name in ("el2n", "grand", "forgetting", "aum", "supervised_prototypes"):
        with pytest.raises(ValueError, match=f"metric '{name}' needs labels"):
            compute_metric(name, X, y=None)  # the stage refuses this in its option check (a WinnowError there)
    with pytest.raises(ValueError, match="shape"):
        compute_metric("el2n", X, y=np.zeros(3, dtype=int))


# ------------------------------------------------------------------------------------ label-free
def test_label_free_metrics_take_no_labels_parameter():
    assert set(LABEL_FREE) == {"ssp", "semdedup", "dbp", "moderate", "random"}
    for name in LABEL_FREE:
        assert not takes_labels(REGISTRY[name].compute), name
    for fn in (ssp_scores, semdedup, semdedup_scores, dbp_weights, moderate_scores, spherical_kmeans):
        assert not takes_labels(fn), fn.__name__
    for name, spec in REGISTRY.items():
        if spec.needs_labels:
            assert "y" in inspect.signature(spec.compute).parameters


def test_label_free_scores_ignore_permuted_or_absent_labels():
    E, y = _clusters(n_per=30)
    perm = np.random.default_rng(0).permutation(y)
    params = MetricParams(k=4)
    for name in LABEL_FREE:
        a = compute_metric(name, E, y=y, params=params, seed=0)
        b = compute_metric(name, E, y=perm, params=params, seed=0)
        c = compute_metric(name, E, y=None, params=params, seed=0)
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.scores, c.scores), name


def test_registry_rejects_unknown_metric_and_bad_embeddings():
    with pytest.raises(ValueError, match="unknown pruning metric 'magic'"):
        compute_metric("magic", np.ones((3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        compute_metric("ssp", np.array([[np.nan, 1.0], [1.0, 0.0]]), params=MetricParams(k=1))
