"""The prune options object and the stage's pure compute: counts-only budgets, k from the data, the
one check against a pool, exact and semantic de-duplication selections with thresholds that transfer
across encoders, the warning on loose thresholds, and the guard against losing to random."""

from __future__ import annotations

import numpy as np
import pytest

from configs.prune import PruneConfig
from tasks.errors import WinnowError
from tasks.prune.evaluate import (
    CurvePoint, PruningCurve, losses_to_random, plot_pruning_curve, robust_limits, series_styles,
)
from tasks.prune.exact import content_keys, exact_duplicates
from tasks.prune.kmeans import spherical_kmeans
from tasks.prune.options import PoolInfo, PruneOptions, default_k
from tasks.prune.semdedup import nn_distance_scale, resolve_thresholds, semdedup
from tasks.prune.stage import prune_source

from helpers import flipped_blobs


def _opts(**cfg) -> PruneOptions:
    return PruneOptions.from_config(PruneConfig(**cfg))


def _planted(n_base=400, n_dup=40, d=24, seed=0, spread=1.0, dup_noise=1e-3):
    """Rows on a few directions plus ``n_dup`` near-copies of random rows; returns E, is_copy."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(6, d))
    base = C[rng.integers(0, 6, n_base)] + spread * rng.normal(size=(n_base, d))
    src = rng.choice(n_base, n_dup, replace=False)
    dups = base[src] + dup_noise * spread * rng.normal(size=(n_dup, d))
    E = np.vstack([base, dups]).astype(np.float32)
    is_copy = np.r_[np.zeros(n_base, bool), np.ones(n_dup, bool)]
    return E, is_copy, src


def test_counts_without_fractions_run_only_the_counts():
    cfg = PruneConfig(counts=[50])
    assert cfg.fractions == [] and cfg.counts == [50]
    assert PruneConfig().fractions == [0.9, 0.7, 0.5, 0.3, 0.1]  # no counts: the default fractions
    assert PruneConfig(counts=[50], fractions=[0.5]).fractions == [0.5]  # both asked: both run
    E, _, _ = _planted()
    res = prune_source(E, None, _opts(metrics=["ssp", "random"], counts=[50], semdedup_rel_eps=[]))
    assert {s.spec for s in res.selections} == {"n=50"}
    assert all(s.selection.budget == 50 for s in res.selections)


def test_default_k_grows_with_the_pool_within_ten_times_the_classes():
    assert default_k(1437, 10) == 38  # sqrt(n)
    assert default_k(60_000, 10) == 100  # capped at 10 x classes
    assert default_k(100, 10) == 10  # at least the classes
    assert default_k(5, 10) == 5  # never more than the rows
    assert default_k(1780, None) == 42  # unlabelled: as if 10 classes
    E, _, _ = _planted()
    assert prune_source(E, None, _opts(metrics=["ssp"], fractions=[0.5], semdedup_rel_eps=[])).k == default_k(440, None)
    assert prune_source(E, None, _opts(metrics=["ssp"], fractions=[0.5], k=7, semdedup_rel_eps=[])).k == 7


@pytest.mark.parametrize("cfg, pool, match", [
    ({"metrics": ["el2n"]}, PoolInfo("s", 100, 10, False), "metric 'el2n' needs labels but source 's' has none"),
    ({"counts": [500]}, PoolInfo("s", 100, 10, True), "count=500 exceeds the 100 train rows of source 's'"),
    ({"k": 200}, PoolInfo("s", 100, 10, True), "k=200 clusters exceeds"),
    ({"evaluate": {"fractions": [0.5]}}, PoolInfo("s", 100, 0, True), "needs labels and test rows.*no test rows"),
    ({}, PoolInfo("s", 0, 10, True), "no train rows"),
    ({"metrics": ["el2n"]}, PoolInfo("s", 100, 10, True, 1), "metric 'el2n' trains a classifier but source 's' has 1 class"),
    ({"evaluate": {"fractions": [0.5]}}, PoolInfo("s", 100, 10, True, 1), "prune.evaluate trains a classifier"),
])
def test_check_against_names_the_option_to_change(cfg, pool, match):
    with pytest.raises(WinnowError, match=match):
        _opts(**cfg).check_against(pool)
    # the task runs the very same check on its arrays
    if pool.n_pool:
        E = np.random.default_rng(0).normal(size=(pool.n_pool, 4)).astype(np.float32)
        y = np.arange(pool.n_pool) % (pool.n_classes or 3) if pool.has_labels else None
        with pytest.raises(WinnowError, match=match.replace("source 's'", "the source")):
            prune_source(E, y, _opts(**cfg), n_classes=pool.n_classes, E_test=None if not pool.n_test else E[:pool.n_test],
                         y_test=None if not pool.n_test or y is None else y[:pool.n_test])


def test_exact_duplicates_by_content_whatever_the_labels():
    X = np.random.default_rng(0).random((30, 5)).astype(np.float32)
    X2 = np.vstack([X, X[[3, 7]], X[[3]]])  # rows 30, 31, 32 copy 3, 7, 3
    ex = exact_duplicates(content_keys(X=X2))
    assert ex.n_removed == 3 and not ex.keep[30:].any() and ex.keep[:30].all()
    assert ex.first[[30, 31, 32]].tolist() == [3, 7, 3]
    t = exact_duplicates(content_keys(texts=["a b", "c", "a b", "a  b"]))
    assert t.keep.tolist() == [True, True, False, True]
    res = prune_source(X2, None, _opts(metrics=["exact_dedup"], fractions=[], counts=[], semdedup_rel_eps=[]),
                       content=X2)
    (d,) = res.dedup
    assert (d.method, d.spec, d.n_removed) == ("exact_dedup", "exact", 3)
    assert res.scores["exact_dedup"].scores.tolist() == ex.keep.astype(float).tolist()


def test_relative_eps_finds_the_same_copies_on_encoders_with_different_scales():
    # the same planted data seen by two "encoders": 16-d and a 64-d one with extra noise dims; the
    # typical neighbour distance differs several-fold, so one raw eps cannot serve both
    E, is_copy, _ = _planted(d=16)
    rng = np.random.default_rng(1)
    E2 = np.hstack([E, 0.8 * rng.normal(size=(E.shape[0], 48)).astype(np.float32)])
    E2[is_copy] = E2[np.flatnonzero(~is_copy)[_planted(d=16)[2]]] + 1e-3 * rng.normal(size=(is_copy.sum(), 64))
    scales = []
    for X in (E, E2):
        km = spherical_kmeans(X, 8, seed=0)
        scale = nn_distance_scale(X, km, seed=0)
        scales.append(scale)
        (t,) = resolve_thresholds(rel_eps=[0.1], nn_scale=scale)
        kept = semdedup(X, eps=t.eps, k=8, kmeans=km).keep[t.eps]
        removed = ~kept
        # every planted pair loses exactly one member, and nothing else is removed
        assert removed.sum() == is_copy.sum()
    assert max(scales) / min(scales) > 2
    with pytest.raises(ValueError, match="nn_scale"):
        resolve_thresholds(rel_eps=[0.1])


def test_semdedup_selections_per_threshold_and_warning_on_loose_eps():
    E, is_copy, _ = _planted()
    opts = _opts(metrics=["semdedup"], fractions=[0.5], semdedup_eps=[0.6], semdedup_rel_eps=[0.1],
                 semdedup_remove=[0.2], k=6)
    res = prune_source(E, None, opts)
    specs = {d.spec: d for d in res.dedup}
    assert set(specs) == {"eps=0.6", "rel=0.1", "remove=0.2"}
    assert specs["rel=0.1"].n_removed == is_copy.sum()
    assert "median nearest-neighbour distance" in specs["rel=0.1"].reason
    # a removal target removes at most about that share (the greedy rule keeps some of the quantile)
    assert is_copy.sum() <= specs["remove=0.2"].n_removed <= round(0.2 * len(E)) + 1
    # a raw eps that removes most of the pool is reported, with what to use instead
    assert specs["eps=0.6"].n_removed > 0.2 * len(E)
    assert any("eps=0.6" in w and "semdedup_rel_eps" in w for w in res.warnings)
    assert not any("rel=0.1" in w for w in res.warnings)
    lines = res.lines("src")
    assert any(line.startswith("src: semdedup rel=0.1 removes 40 of 440") for line in lines)


def _curve(means: dict[tuple[str, str, float], list[float]]) -> PruningCurve:
    pts = [CurvePoint(m, p, p, f, s, 10, acc, "") for (m, p, f), accs in means.items() for s, acc in enumerate(accs)]
    return PruningCurve(tuple(pts))


def test_guard_flags_series_below_random_beyond_noise_and_names_the_better_one():
    c = _curve({("random", "random", 0.1): [0.90, 0.92], ("ssp", "auto", 0.1): [0.60, 0.62],
                ("dbp", "auto", 0.1): [0.905, 0.925], ("random", "random", 0.5): [0.95, 0.95],
                ("ssp", "auto", 0.5): [0.945, 0.955]})
    (g,) = losses_to_random(c)  # dbp within noise at 0.1, ssp within noise at 0.5
    assert (g.metric, g.policy, g.fraction, g.best) == ("ssp", "auto", 0.1, "dbp/auto")
    assert "below random" in g.line() and "better here: dbp/auto" in g.line()


def test_guard_reason_is_recorded_on_the_selection():
    # keep-hard by distance to the class mean on 20 % flipped labels keeps the mislabelled rows:
    # far worse for a probe than a random 10 %; the stage says so on the selection and in the summary
    E, y_noisy, flip, Et, yt = flipped_blobs()
    opts = _opts(metrics=["supervised_prototypes", "random"], policies=["hard"], fractions=[0.1], counts=[500],
                 semdedup_rel_eps=[], evaluate={"fractions": [0.1], "seeds": [0, 1]})
    res = prune_source(E, y_noisy, opts, n_classes=2, E_test=Et, y_test=yt)
    (g,) = res.guard
    assert (g.metric, g.policy, g.fraction, g.best) == ("supervised_prototypes", "hard", 0.1, "random")
    assert g.mean < g.random_mean - 0.3
    by = {(s.metric, s.spec): s.selection.reason for s in res.selections}
    assert "GUARD" in by[("supervised_prototypes", "f=0.1")] and "better: random" in by[("supervised_prototypes", "f=0.1")]
    assert "GUARD" not in by[("supervised_prototypes", "n=500")]  # a count budget is not evaluated: no verdict
    assert "GUARD" not in by[("random", "f=0.1")]
    assert any("WARNING supervised_prototypes/hard at f=0.1" in line for line in res.lines("s"))


def test_plot_has_distinct_series_and_robust_limits(tmp_path):
    lo, hi, out = robust_limits([0.95, 0.96, 0.94, 0.97, 0.95, -330.0])
    assert out == 1 and lo > 0.85 and hi < 1.0  # one blown-up point does not squash the others
    keys = [(f"m{i}", pol) for i in range(8) for pol in ("hard", "easy")][:15] + [("random", "random")]
    styles = series_styles(keys)
    pairs = {(st["color"], st["marker"]) for k, st in styles.items() if k[0] != "random"}
    assert len(pairs) == 15 and len({st["color"] for k, st in styles.items() if k[0] != "random"}) == 15
    assert styles[("random", "random")]["color"] == "black"
    means = {(m, p, f): [0.9, 0.91] for m, p in keys for f in (0.5, 0.1)}
    means[("m0", "easy", 0.1)] = [-5.0, -5.0]
    path = plot_pruning_curve(_curve(means), str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 10_000 and path.endswith("c.png")
