"""The joint planner's pure functions (no Prefect, no DuckDB): pruning options per pool, the feasible
candidate space under availability / budget / per-source budget / simplex constraints, the OT
reweighting of the union measure, row draws, the design and baselines, the predictors and trials.

Small synthetic arrays with fixed seeds; every expectation is recomputed independently (brute force
over the product of options and mixtures) rather than read back from the code under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import blobs
from tasks.errors import WinnowError
from tasks.mixture.predictor import BASELINES, OT_FORMS
from tasks.mixture.simplex import mixture_counts, simplex_grid
from tasks.plan.planner import baseline_specs, capped_counts, choose_design
from tasks.plan.predict import confirm_curve, extrapolate_accuracy, fit_screen
from tasks.plan.space import (
    Constraints, PoolOption, draw_rows, enumerate_candidates, pool_options, revealed_masks, union_weights,
)
from tasks.plan.trials import Trial, chunk_trials, make_trials, trial_seed
from tasks.prune.registry import MetricParams, compute_metric


# ------------------------------------------------------------------------------------------ helpers
def synthetic_options(pool: int, n: int, fractions=(0.5,), seed: int = 0) -> list[PoolOption]:
    """'none' plus one random subset per fraction (the shapes pool_options returns, without metrics)."""
    rng = np.random.default_rng(seed + 17 * pool)
    out = [PoolOption(pool, "none", 1.0, np.arange(n, dtype=np.int64))]
    for f in fractions:
        k = max(1, int(round(f * n)))
        out.append(PoolOption(pool, "random:hard:none", float(f), np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)))
    return out


def brute_force(options, grid, cons: Constraints):
    """Reference: (set of canonical feasible (options, grid index) keys, rejected counts per constraint)."""
    K = len(options)
    rejected = {"availability": 0, "budget": 0, "source_budget": 0}
    feasible = set()
    for combo in itertools.product(*[range(len(o)) for o in options]):
        for g, p in enumerate(grid):
            c = mixture_counts(p, cons.target_n)
            spend = c * cons.costs
            ok_av = all(c[i] <= options[i][combo[i]].size for i in range(K))
            ok_b = cons.budget is None or spend.sum() <= cons.budget + 1e-9
            ok_sb = cons.source_budget is None or all(spend[i] <= cons.source_budget[i] + 1e-9 for i in range(K))
            rejected["availability"] += not ok_av
            rejected["budget"] += not ok_b
            rejected["source_budget"] += not ok_sb
            if ok_av and ok_b and ok_sb:
                feasible.add(tuple(0 if c[i] == 0 else combo[i] for i in range(K)) + (g,))
    return feasible, rejected


def keys_of(cands, grid) -> list[tuple]:
    gi = [int(np.flatnonzero(np.all(np.isclose(grid, p), axis=1))[0]) for p in cands.p]
    return [tuple(int(o) for o in opt) + (g,) for opt, g in zip(cands.options, gi)]


# ------------------------------------------------------------------------------------ pool_options
POLICIES = [("ssp", "hard", "none"), ("ssp", "easy", "none"), ("random", "hard", "equal")]


def test_pool_options_start_with_the_whole_pool_and_keep_round_f_n_rows_per_option():
    X, y = blobs(n=101, d=8, k=3, seed=0)
    opts = pool_options(X, y, pool=2, policies=POLICIES, fractions=[0.5, 0.25], metric_k=5, seed=0)
    assert len(opts) == 1 + len(POLICIES) * 2
    none = opts[0]
    assert none.policy == "none" and none.label == "none" and none.fraction == 1.0
    np.testing.assert_array_equal(none.kept, np.arange(101))
    got = {(o.policy, o.fraction) for o in opts[1:]}
    assert got == {(f"{m}:{k}:{b}", f) for m, k, b in POLICIES for f in (0.5, 0.25)}
    for o in opts:
        assert o.pool == 2 and o.kept.dtype == np.int64
        assert np.all(np.diff(o.kept) > 0) and o.kept.min() >= 0 and o.kept.max() < 101  # sorted, distinct, in range
        if o.policy != "none":
            assert o.size == round(o.fraction * 101) and o.label == f"{o.policy}@{o.fraction:g}"
    again = pool_options(X, y, pool=2, policies=POLICIES, fractions=[0.5, 0.25], metric_k=5, seed=0)
    assert all(np.array_equal(a.kept, b.kept) for a, b in zip(opts, again))  # seeded


def test_equal_class_balance_gives_equal_counts_where_classes_have_room():
    X, _ = blobs(n=120, d=8, k=3, seed=1)
    y = np.repeat([0, 1, 2], [60, 40, 20])       # every class holds >= 20 = 60 / 3
    opts = pool_options(X, y, pool=0, policies=[("random", "hard", "equal"), ("ssp", "hard", "equal")],
                        fractions=[0.5], metric_k=5, seed=0)
    for o in opts[1:]:
        np.testing.assert_array_equal(np.bincount(y[o.kept], minlength=3), [20, 20, 20])
    y_small = np.repeat([0, 1, 2], [70, 45, 5])  # class 2 has no room for 20: it gives all it has
    opts = pool_options(X, y_small, pool=0, policies=[("random", "hard", "equal")], fractions=[0.5], metric_k=5, seed=0)
    per = np.bincount(y_small[opts[1].kept], minlength=3)
    assert per.sum() == 60 and per[2] == 5 and per[0] >= 20 and per[1] >= 20 and abs(int(per[0]) - int(per[1])) <= 1


def test_keep_hard_and_keep_easy_take_opposite_extremes_of_the_metric():
    X, y = blobs(n=100, d=8, k=3, seed=2)
    opts = pool_options(X, y, pool=0, policies=[("ssp", "hard", "none"), ("ssp", "easy", "none")],
                        fractions=[0.5, 0.2], metric_k=5, seed=3)
    s = compute_metric("ssp", X, params=MetricParams(k=5), seed=3).scores
    by = {(o.policy, o.fraction): o.kept for o in opts[1:]}
    for f in (0.5, 0.2):
        hard, easy = by[("ssp:hard:none", f)], by[("ssp:easy:none", f)]
        assert np.intersect1d(hard, easy).size == 0
        assert s[hard].min() >= s[easy].max()
        order = np.argsort(s, kind="stable")
        k = int(round(f * 100))
        assert set(hard.tolist()) == set(order[-k:].tolist()) and set(easy.tolist()) == set(order[:k].tolist())
    # at f = 0.5 the two halves are complementary
    np.testing.assert_array_equal(np.union1d(by[("ssp:hard:none", 0.5)], by[("ssp:easy:none", 0.5)]), np.arange(100))


def test_supervised_metric_is_scored_with_the_pool_labels():
    X, y = blobs(n=90, d=6, k=3, seed=4)
    (_, o) = pool_options(X, y, pool=0, policies=[("supervised_prototypes", "hard", "none")], fractions=[0.3], seed=0)
    s = compute_metric("supervised_prototypes", X, y=y, seed=0).scores
    np.testing.assert_array_equal(o.kept, np.sort(np.argsort(s, kind="stable")[-27:]))
    # other labels give other scores: the labels reach the metric
    y2 = np.random.default_rng(0).permutation(y)
    (_, o2) = pool_options(X, y2, pool=0, policies=[("supervised_prototypes", "hard", "none")], fractions=[0.3], seed=0)
    assert not np.array_equal(o.kept, o2.kept)


# --------------------------------------------------------------------------- enumerate_candidates
def two_pools():
    return [synthetic_options(0, 100, (0.5,)), synthetic_options(1, 60, (0.5,))]


def test_availability_rejects_candidates_that_take_more_than_the_pruned_pool_holds():
    options = two_pools()                       # pool sizes per option: [100, 50] and [60, 30]
    grid = simplex_grid(2, 0.25)
    cons = Constraints(target_n=100, costs=np.ones(2))
    cands = enumerate_candidates(options, grid, cons)
    for opt, c in zip(cands.options, cands.counts):
        assert all(c[i] <= options[i][opt[i]].size for i in range(2))
    ref, rej = brute_force(options, grid, cons)
    assert sorted(keys_of(cands, grid)) == sorted(ref)
    assert cands.rejected == rej and rej["availability"] > 0 and rej["budget"] == 0 and rej["source_budget"] == 0
    assert cands.n_enumerated == 4 * len(grid)
    # p = (0, 1) needs 100 rows of pool 1 (60 rows): gone; p = (1, 0) only unpruned (pruned holds 50)
    assert not np.any(np.all(np.isclose(cands.p, [0, 1]), axis=1))
    alone0 = np.all(np.isclose(cands.p, [1, 0]), axis=1)
    assert alone0.sum() == 1 and np.array_equal(cands.options[alone0][0], [0, 0])
    # (0.25, 0.75): 75 rows > 60 of pool 1: rejected for every option
    assert not np.any(np.all(np.isclose(cands.p, [0.25, 0.75]), axis=1))


def test_total_budget_with_pool_costs_bounds_the_spend_and_counts_rejections():
    options = [synthetic_options(0, 200), synthetic_options(1, 200)]
    grid = simplex_grid(2, 0.25)
    cons = Constraints(target_n=100, costs=np.array([1.0, 3.0]), budget=200.0)  # p=(.5,.5) costs exactly 200
    cands = enumerate_candidates(options, grid, cons)
    spend = (cands.counts * cons.costs).sum(1)
    assert np.all(spend <= 200 + 1e-9)
    assert np.any(np.isclose(spend, 200))      # the budget is inclusive
    ref, rej = brute_force(options, grid, cons)
    assert sorted(keys_of(cands, grid)) == sorted(ref)
    assert cands.rejected["budget"] > 0 and cands.rejected["availability"] == 0
    # mixtures with p_1 > 0.5 cost more than 200 and are all gone
    assert np.all(cands.p[:, 1] <= 0.5 + 1e-12)


def test_per_source_budget_caps_each_pool_spend():
    options = [synthetic_options(0, 200), synthetic_options(1, 200), synthetic_options(2, 200)]
    grid = simplex_grid(3, 0.25)
    sb = np.array([np.inf, 90.0, np.inf])
    cons = Constraints(target_n=100, costs=np.array([1.0, 3.0, 0.5]), source_budget=sb)
    cands = enumerate_candidates(options, grid, cons)
    spend = cands.counts * cons.costs
    assert np.all(spend <= sb + 1e-9) and np.all(cands.counts[:, 1] <= 30)
    ref, rej = brute_force(options, grid, cons)
    assert sorted(keys_of(cands, grid)) == sorted(ref)
    assert cands.rejected["source_budget"] > 0 and cands.rejected["budget"] == 0


@pytest.mark.parametrize("kind", ["budget", "source_budget"])
def test_rejected_counts_are_per_candidate_for_every_constraint(kind):
    options = [synthetic_options(0, 200), synthetic_options(1, 200)]   # 4 pruning configurations
    grid = simplex_grid(2, 0.25)
    extra = {"budget": 200.0} if kind == "budget" else {"source_budget": np.array([np.inf, 90.0])}
    cons = Constraints(target_n=100, costs=np.array([1.0, 3.0]), **extra)
    cands = enumerate_candidates(options, grid, cons)
    _, rej = brute_force(options, grid, cons)
    too_dear = 2 if kind == "budget" else 3   # total 200: p_1 in {0.75, 1}; pool cap 90 at cost 3: p_1 in {0.5, 0.75, 1}
    assert rej[kind] == 4 * too_dear                                    # too-dear mixtures x 4 configurations
    assert cands.rejected == rej


@pytest.mark.parametrize("n", [100, 101, 97])
def test_candidates_lie_on_the_simplex_and_take_exactly_n(n):
    options = [synthetic_options(i, 300, (0.5, 0.25), seed=n) for i in range(3)]
    grid = simplex_grid(3, 0.2)
    cands = enumerate_candidates(options, grid, Constraints(target_n=n, costs=np.ones(3)))
    assert len(cands) > 0
    assert np.all(cands.p >= 0) and np.allclose(cands.p.sum(1), 1)
    assert np.all(cands.counts >= 0) and np.all(cands.counts.sum(1) == n)
    for p, c in zip(cands.p, cands.counts):
        np.testing.assert_array_equal(c, mixture_counts(p, n))
        assert np.all(np.abs(c - p * n) < 1)   # largest remainder: every count within 1 of p_i N


def test_options_of_unused_pools_are_canonical_and_candidates_distinct():
    options = [synthetic_options(i, 300, (0.5, 0.25), seed=1) for i in range(3)]
    grid = simplex_grid(3, 0.5)
    cands = enumerate_candidates(options, grid, Constraints(target_n=100, costs=np.ones(3)))
    assert np.all(cands.options[cands.counts == 0] == 0)
    rows = {tuple(o) + tuple(np.round(p, 9)) for o, p in zip(cands.options, cands.p)}
    assert len(rows) == len(cands)
    # options hold 300 / 150 / 75 rows; N = 100. Vertices: the pool's none or @0.5 (2 each, the others
    # canonical); edges (50 + 50): 3 x 3 option pairs each. 33 distinct of 27 configurations x 6 mixtures.
    assert len(cands) == 3 * 2 + 3 * 9 and cands.n_enumerated == 27 * 6
    assert cands.rejected["availability"] == 3 * 9   # a vertex with its pool @0.25, any options elsewhere
    un = cands.unpruned()
    assert un.size == len(grid) and np.all(cands.options[un] == 0)


def test_nothing_feasible_names_the_binding_constraint():
    options = two_pools()
    grid = simplex_grid(2, 0.5)
    with pytest.raises(WinnowError, match=r"no \(pruning, mixture\) candidate is feasible for target_n=1000.*availability rejects"):
        enumerate_candidates(options, grid, Constraints(target_n=1000, costs=np.ones(2)))
    with pytest.raises(WinnowError, match="budget rejects") as e:
        enumerate_candidates(options, grid, Constraints(target_n=20, costs=np.ones(2), budget=10.0))
    assert "availability rejects" not in str(e.value) and "raise the budget" in str(e.value)
    with pytest.raises(WinnowError, match="source_budget rejects"):
        enumerate_candidates(options, grid, Constraints(target_n=20, costs=np.ones(2), source_budget=np.array([5.0, 5.0])))


def test_too_many_candidates_is_refused_before_enumerating():
    options = [synthetic_options(i, 50, (0.5, 0.25)) for i in range(3)]
    grid = simplex_grid(3, 0.1)  # 66 mixtures x 27 configurations = 1,782
    with pytest.raises(WinnowError, match=r"1,782 candidates.*plan.max_candidates=1,000"):
        enumerate_candidates(options, grid, Constraints(target_n=10, costs=np.ones(3)), max_candidates=1000)
    with pytest.raises(ValueError, match=r"expected \(G, 3\)"):  # a caller bug, not bad input
        enumerate_candidates(options, simplex_grid(2, 0.5), Constraints(target_n=10, costs=np.ones(3)))


# ------------------------------------------------------------------ union weights, masks, draws
def test_union_weights_rows_sum_to_one_and_ignore_pruned_rows():
    options = [synthetic_options(0, 80, (0.5, 0.25), seed=3), synthetic_options(1, 40, (0.5,), seed=3)]
    revealed = [np.arange(0, 80, 2), np.arange(40)]
    masks = revealed_masks(options, revealed)
    assert [m.shape for m in masks] == [(3, 40), (2, 40)]
    grid = simplex_grid(2, 0.25)
    cands = enumerate_candidates(options, grid, Constraints(target_n=20, costs=np.ones(2)))
    W = union_weights(masks, cands.options, cands.p)
    assert W.shape == (len(cands), 80)
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-6)
    assert np.all(W >= 0)
    for w, opt, p in zip(W, cands.options, cands.p):
        for i, (lo, hi) in enumerate([(0, 40), (40, 80)]):
            kept = np.isin(revealed[i], options[i][opt[i]].kept)
            block = w[lo:hi]
            assert np.all(block[~kept] == 0)                     # pruned rows carry no mass
            np.testing.assert_allclose(block[kept], p[i] / kept.sum(), rtol=1e-6)  # uniform on kept rows
            np.testing.assert_allclose(block.sum(), p[i], atol=1e-6)


def test_revealed_masks_refuse_an_option_that_keeps_no_revealed_row():
    opts = [[PoolOption(0, "none", 1.0, np.arange(10)), PoolOption(0, "ssp:hard:none", 0.5, np.arange(5, 10))]]
    with pytest.raises(WinnowError, match=r"pool 0: options \['ssp:hard:none@0.5'\] keep none of the 3 revealed rows; raise plan.reveal"):
        revealed_masks(opts, [np.array([0, 1, 2])])


def test_draw_rows_are_distinct_sorted_and_inside_the_option():
    opt = synthetic_options(0, 200, (0.3,), seed=5)[1]
    a = draw_rows(opt, 25, np.random.default_rng(0))
    assert a.size == 25 and np.unique(a).size == 25 and np.all(np.diff(a) > 0)
    assert np.all(np.isin(a, opt.kept))
    np.testing.assert_array_equal(a, draw_rows(opt, 25, np.random.default_rng(0)))
    np.testing.assert_array_equal(draw_rows(opt, opt.size, np.random.default_rng(1)), opt.kept)
    with pytest.raises(ValueError, match="holds 60 rows, 61 requested"):
        draw_rows(opt, 61, np.random.default_rng(0))


def test_draw_rows_with_repeat_takes_whole_passes_and_a_distinct_remainder():
    opt = synthetic_options(0, 200, (0.3,), seed=5)[1]            # 60 rows
    a = draw_rows(opt, 150, np.random.default_rng(0), repeat=True)  # 2 passes + 30 more
    seen = np.bincount(np.searchsorted(opt.kept, a), minlength=opt.size)
    assert a.size == 150 and np.all(np.isin(a, opt.kept))
    assert np.all((seen == 2) | (seen == 3)) and int((seen == 3).sum()) == 30
    np.testing.assert_array_equal(draw_rows(opt, 120, np.random.default_rng(1), repeat=True), np.repeat(opt.kept, 2))
    np.testing.assert_array_equal(draw_rows(opt, 25, np.random.default_rng(0), repeat=True), draw_rows(opt, 25, np.random.default_rng(0)))


def test_max_epochs_admits_candidates_that_repeat_a_pruned_pool():
    opts = [synthetic_options(0, 100, (0.25,)), synthetic_options(1, 100, (0.25,))]
    grid = np.array([[1.0, 0.0], [0.5, 0.5]])
    once = enumerate_candidates(opts, grid, Constraints(target_n=60, costs=np.ones(2)))
    twice = enumerate_candidates(opts, grid, Constraints(target_n=60, costs=np.ones(2), max_epochs=2.0))
    # p=(1, 0) with pool 0 @0.25 (25 rows) needs 60: rejected once, still rejected at 2 epochs (50 < 60);
    # p=(.5, .5) needs 30 per pool: pools @0.25 hold 25, so only the 2-epoch space has them
    key = lambda c: {(tuple(o), tuple(p)) for o, p in zip(c.options.tolist(), c.p.tolist())}  # noqa: E731
    added = key(twice) - key(once)
    assert added == {((1, 0), (0.5, 0.5)), ((0, 1), (0.5, 0.5)), ((1, 1), (0.5, 0.5))}
    assert key(once) <= key(twice)


# ------------------------------------------------------------------------------------- planner
def test_capped_counts_leave_feasible_counts_alone():
    opts = [synthetic_options(0, 100)[0], synthetic_options(1, 100)[0]]
    c, note = capped_counts(np.array([0.3, 0.7]), opts, Constraints(target_n=50, costs=np.ones(2)))
    np.testing.assert_array_equal(c, [15, 35])
    assert note == ""


@pytest.mark.parametrize("small, cons_kw, expect, binds", [
    (30, {"costs": np.ones(2)}, [30, 30], "availability"),                                    # pool 1 holds 30
    (1000, {"costs": np.ones(2), "budget": 40.0}, [20, 20], "budget"),
    (1000, {"costs": np.array([1.0, 2.0]), "source_budget": np.array([np.inf, 20.0])}, [10, 10], "source_budget"),
    (30, {"costs": np.ones(2), "budget": 40.0}, [20, 20], "availability and budget"),          # the tighter cap wins
])
def test_capped_counts_scale_down_keeping_proportions(small, cons_kw, expect, binds):
    opts = [PoolOption(0, "none", 1.0, np.arange(1000)), PoolOption(1, "none", 1.0, np.arange(small))]
    cons = Constraints(target_n=100, **cons_kw)
    c, note = capped_counts(np.array([0.5, 0.5]), opts, cons)
    np.testing.assert_array_equal(c, expect)
    assert f"takes {sum(expect)} < N=100 examples ({binds} binds)" == note
    assert all(bool(v[0]) for v in cons.check(c[None], np.array([[1000, small]])).values())


def test_capped_counts_refuse_a_baseline_that_can_take_no_example():
    opts = [PoolOption(0, "none", 1.0, np.arange(300)), PoolOption(1, "none", 1.0, np.arange(300))]
    cons = Constraints(target_n=280, costs=np.array([1.0, 1000.0]), budget=300.0)  # one example of pool 1 costs 1000
    with pytest.raises(WinnowError, match="cannot take any example"):
        capped_counts(np.array([0.0, 1.0]), opts, cons)


def _space(seed=0):
    options = [synthetic_options(i, 120, (0.5, 0.25), seed=seed) for i in range(3)]
    grid = simplex_grid(3, 0.25)
    cons = Constraints(target_n=100, costs=np.ones(3))
    return options, grid, cons, enumerate_candidates(options, grid, cons)


def test_baselines_are_named_and_the_best_unpruned_is_the_screen_argmax():
    options, grid, cons, cands = _space()
    screen = np.random.default_rng(7).uniform(0.5, 0.9, len(cands))
    base = baseline_specs(options, cands, screen, cons, ["a", "b", "c"])
    assert [b.name for b in base] == ["best_mixture_unpruned", "uniform_random_pruning", "alone:a", "alone:b", "alone:c"]
    un = cands.unpruned()
    best = un[np.argmax(screen[un])]
    assert screen[best] < screen.max()   # the overall argmax is pruned here: the baseline must not pick it
    b0 = base[0]
    np.testing.assert_array_equal(b0.options, [0, 0, 0])
    np.testing.assert_allclose(b0.p, cands.p[best])
    np.testing.assert_array_equal(b0.counts, cands.counts[best])
    u = base[1]
    np.testing.assert_allclose(u.p, np.full(3, 1 / 3))
    np.testing.assert_array_equal(u.options, [0, 0, 0])
    np.testing.assert_array_equal(u.counts, mixture_counts(np.full(3, 1 / 3), 100))
    assert u.note == ""
    for i, b in enumerate(base[2:]):
        np.testing.assert_allclose(b.p, np.eye(3)[i])
        np.testing.assert_array_equal(b.counts, 100 * np.eye(3, dtype=int)[i])
        np.testing.assert_array_equal(b.options, [0, 0, 0])


def test_alone_baselines_are_capped_by_availability_with_a_note():
    options = [synthetic_options(0, 400), synthetic_options(1, 60)]
    grid = simplex_grid(2, 0.5)
    cons = Constraints(target_n=100, costs=np.ones(2))
    cands = enumerate_candidates(options, grid, cons)
    base = {b.name: b for b in baseline_specs(options, cands, np.zeros(len(cands)), cons, ["big", "small"])}
    np.testing.assert_array_equal(base["alone:small"].counts, [0, 60])
    assert "takes 60 < N=100" in base["alone:small"].note and "availability" in base["alone:small"].note
    np.testing.assert_array_equal(base["alone:big"].counts, [100, 0]) and base["alone:big"].note == ""


def test_with_repeats_allowed_a_baseline_may_repeat_examples_as_the_candidates_do():
    """max_epochs = 3: a 60-row pool alone can give 100 examples (each seen up to twice), as a candidate
    with the same mixture can; at most 3 passes: 180."""
    options = [synthetic_options(0, 400), synthetic_options(1, 60)]
    grid = simplex_grid(2, 0.5)
    cons = Constraints(target_n=100, costs=np.ones(2), max_epochs=3.0)
    cands = enumerate_candidates(options, grid, cons)
    base = {b.name: b for b in baseline_specs(options, cands, np.zeros(len(cands)), cons, ["big", "small"])}
    np.testing.assert_array_equal(base["alone:small"].counts, [0, 100]) and base["alone:small"].note == ""
    c, note = capped_counts(np.array([0.0, 1.0]), [o[0] for o in options], Constraints(target_n=500, costs=np.ones(2), max_epochs=3.0))
    np.testing.assert_array_equal(c, [0, 180])
    assert "takes 180 < N=500" in note and "availability" in note


def test_design_covers_every_unpruned_candidate_and_every_used_option():
    options, grid, cons, cands = _space()
    used = {(i, int(o)) for c in range(len(cands)) for i, o in enumerate(cands.options[c]) if o and cands.counts[c, i] > 0}
    d = choose_design(cands, len(used), seed=3)
    un = cands.unpruned()
    assert set(un.tolist()) <= set(d.tolist())
    assert np.unique(d).size == d.size and d.size == un.size + len(used)
    covered = {(i, int(o)) for c in d for i, o in enumerate(cands.options[c]) if o and cands.counts[c, i] > 0}
    assert covered == used
    np.testing.assert_array_equal(d, choose_design(cands, len(used), seed=3))  # deterministic for a seed
    assert not np.array_equal(d, choose_design(cands, len(used), seed=4))
    # n_design = 0: the unpruned grid only; a huge n_design: everything once
    np.testing.assert_array_equal(choose_design(cands, 0, seed=0), un)
    np.testing.assert_array_equal(np.sort(choose_design(cands, 10 ** 6, seed=0)), np.arange(len(cands)))


# ------------------------------------------------------------------------------------- predict
def test_extrapolate_accuracy_recovers_a_pure_power_law():
    sizes = np.array([50, 100, 200, 400])
    B, c = np.array([0.8, 2.0]), np.array([0.25, 0.5])
    acc = 1 - B[None, :] * sizes[:, None] ** (-c[None, :])
    np.testing.assert_allclose(extrapolate_accuracy(sizes, acc, 5000), 1 - B * 5000.0 ** (-c), rtol=0, atol=1e-12)


def _screen_data(D=14, seed=0):
    rng = np.random.default_rng(seed)
    grid = simplex_grid(3, 0.25)
    P = grid[rng.choice(len(grid), size=D, replace=False)]
    ot = 0.2 + 0.8 * P[:, 0] + 0.3 * P[:, 1] + rng.normal(0, 0.01, D)
    sizes = [40, 80, 160]
    acc = np.stack([0.95 - 0.4 * ot - 3.0 / n + rng.normal(0, 0.002, D) for n in sizes])
    return P, ot, acc, sizes


def test_fit_screen_chooses_a_form_by_held_out_error_and_refuses_small_designs():
    P, ot, acc, sizes = _screen_data()
    m = fit_screen(P, ot, acc, sizes, seed=0)
    assert m.form in OT_FORMS and len(m.fits) == 3 and list(m.sizes) == sizes
    assert {v.form for v in m.validation} == set(OT_FORMS) | set(BASELINES)
    assert m.holdout_mae() == min(m.holdout_mae(f) for f in OT_FORMS)
    assert m.holdout_mae() < 0.02                                # OT explains these accuracies
    pred = m.predict_pilots(P, ot)
    assert pred.shape == (3, len(P)) and np.abs(pred - acc).max() < 0.03
    assert m.predict_at(P, ot, 1000).shape == (len(P),)
    with pytest.raises(WinnowError, match="at least 6 design candidates.*got 5"):
        fit_screen(P[:5], ot[:5], acc[:, :5], sizes)
    with pytest.raises(ValueError, match=r"expected \(3, 14\)"):
        fit_screen(P, ot, acc[:2], sizes)


def test_confirm_curve_interval_brackets_the_prediction_and_covers_the_truth():
    """Well-specified: pilots follow err = B·N^-c with 3% multiplicative noise, 4 reps at 4 sizes; the
    95% bootstrap interval at N = 2000 (5x the largest pilot) must bracket the point prediction and
    contain the true accuracy in most of 20 independent pilot sets (measured: ~92% over 60 sets)."""
    B, c, n = 1.5, 0.4, 2000
    truth = 1 - B * n ** (-c)
    sizes = np.repeat([50, 100, 200, 400], 4)
    hits = 0
    for s in range(20):
        acc = 1 - B * sizes ** (-c) * np.exp(np.random.default_rng(s).normal(0, 0.03, sizes.size))
        cp = confirm_curve(sizes, acc, n, form="m1", bootstrap=100, seed=0)
        assert cp.lo <= cp.predicted <= cp.hi and cp.hi > cp.lo
        assert abs(cp.predicted - truth) < 0.01 and cp.n_points == 16 and cp.form == "m1"
        hits += cp.lo <= truth <= cp.hi
    assert hits >= 16
    exact = confirm_curve(sizes, 1 - B * sizes ** (-c), n, form="m1", bootstrap=100, seed=0)
    assert abs(exact.predicted - truth) < 1e-4 and exact.lo <= truth + 1e-4 and truth - 1e-4 <= exact.hi
    assert abs(exact.params["c"] - c) < 1e-3 and abs(exact.params["B"] - B) < 1e-2
    with pytest.raises(WinnowError, match=">= 2 sizes"):
        confirm_curve(np.array([100, 100]), np.array([0.8, 0.81]), n)


# -------------------------------------------------------------------------------------- trials
def _trial_setup():
    sizes = np.array([100, 80, 60])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    opts = [synthetic_options(0, 100, (0.5,), seed=1)[1], synthetic_options(1, 80, (0.5,), seed=1)[0],
            synthetic_options(2, 60, (0.5,), seed=1)[1]]
    return sizes, offsets, opts


def test_make_trials_draw_the_mixture_counts_from_the_pruned_pools():
    sizes, offsets, opts = _trial_setup()
    p = np.array([0.5, 0.25, 0.25])
    trials = make_trials("c7", "design", opts, p, [20, 41, 60], 3, offsets, seed=5)
    assert len(trials) == 9 and {(t.n, t.rep) for t in trials} == {(n, r) for n in (20, 41, 60) for r in range(3)}
    pool_of = lambda idx: np.searchsorted(offsets, idx, side="right") - 1  # noqa: E731
    for t in trials:
        assert t.idx.size == t.n and np.unique(t.idx).size == t.n
        np.testing.assert_array_equal(np.bincount(pool_of(t.idx), minlength=3), mixture_counts(p, t.n))
        for i, o in enumerate(opts):
            rows = t.idx[pool_of(t.idx) == i] - offsets[i]
            assert np.all(np.isin(rows, o.kept))
        assert t.seed == trial_seed(5, "c7", "design", t.n, t.rep)
    # the same trial gets the same rows whatever else is drawn with it, and in any order
    other = make_trials("c7", "design", opts, p, [60, 20], 3, offsets, seed=5)
    first = {(t.n, t.rep): t.idx for t in trials}
    for t in other:
        np.testing.assert_array_equal(t.idx, first[(t.n, t.rep)])
    # other keys, stages and seeds draw differently
    assert trial_seed(5, "c7", "design", 20, 0) != trial_seed(5, "c8", "design", 20, 0)
    assert trial_seed(5, "c7", "design", 20, 0) != trial_seed(5, "c7", "confirm", 20, 0)
    assert trial_seed(5, "c7", "design", 20, 0) != trial_seed(6, "c7", "design", 20, 0)
    # counts_at overrides the counts at one size (a capped baseline)
    (t,) = make_trials("b:x", "validate", opts, p, [60], 1, offsets, seed=5, counts_at={60: np.array([10, 0, 20])})
    np.testing.assert_array_equal(np.bincount(pool_of(t.idx), minlength=3), [10, 0, 20])


def test_chunk_trials_group_equal_sizes_within_the_row_budget():
    rng = np.random.default_rng(0)
    trials = [Trial(f"k{i}", "design", n, 0, i, rng.choice(1000, n, replace=False)) for i, n in enumerate([30, 50, 30, 30, 50, 70] * 3)]
    chunks = chunk_trials(trials, rows_budget=100)
    assert sorted(t.key for c in chunks for t in c) == sorted(t.key for t in trials)
    for c in chunks:
        assert len({t.idx.size for t in c}) == 1
        assert len(c) <= max(1, 100 // c[0].idx.size)
    assert [c[0].idx.size for c in chunks] == sorted(c[0].idx.size for c in chunks)
    assert [len(c) for c in chunks] == [3, 3, 3, 2, 2, 2, 1, 1, 1]
    assert chunk_trials([], 100) == []


def test_a_negative_plan_seed_is_refused_by_the_config():
    from pydantic import ValidationError

    from configs.plan import PlanConfig

    with pytest.raises(ValueError, match="expected non-negative"):  # what the run hits today, after pruning and OT
        trial_seed(-1, "c0", "design", 40, 0)
    with pytest.raises(ValidationError, match="seed"):
        PlanConfig(target_n=100, pilot_sizes=[10, 20], seed=-1)


# ------------------------------------------------------------------------- finalists and the plan
def test_a_baseline_equal_to_a_finalist_shares_its_trials_key():
    from tasks.plan.planner import BaselineSpec, confirm_entries, unique_by_key

    options = [synthetic_options(0, 200), synthetic_options(1, 200)]
    grid = simplex_grid(2, 0.25)
    cands = enumerate_candidates(options, grid, Constraints(target_n=100, costs=np.ones(2)))
    c = int(cands.unpruned()[0])
    base = [BaselineSpec("best_mixture_unpruned", cands.options[c], cands.p[c], cands.counts[c]),
            BaselineSpec("alone:x", np.zeros(2, np.int64), np.array([1.0, 0.0]), np.array([100, 0]))]
    entries = confirm_entries(cands, [c, int(cands.unpruned()[1])], base)
    assert [e.name for e in entries] == ["finalist-1", "finalist-2", "best_mixture_unpruned", "alone:x"]
    assert entries[2].key == entries[0].key == f"c{c}" and entries[3].key == "b:alone:x"
    assert [e.key for e in unique_by_key(entries)] == [f"c{c}", f"c{int(cands.unpruned()[1])}", "b:alone:x"]


def test_a_capped_baseline_is_piloted_at_its_own_proportions_and_scale():
    from tasks.plan.planner import Entry, pilot_counts

    full = Entry("k", "baseline", "b", np.zeros(2, np.int64), np.array([0.5, 0.5]), np.array([500, 500]))
    assert pilot_counts(full, [100, 200], 1000) is None
    capped = Entry("k", "baseline", "b", np.zeros(2, np.int64), np.array([0.0, 1.0]), np.array([0, 600]))
    got = pilot_counts(capped, [100, 200, 400], 1000)
    assert {n: c.tolist() for n, c in got.items()} == {100: [0, 60], 200: [0, 120], 400: [0, 240]}


def test_the_plan_is_the_alternative_with_the_best_trainings_at_n_baselines_included():
    from tasks.mixture.decide import choose_by_draws

    rank = {"c1": np.array([0.70, 0.72]), "b:best_mixture_unpruned": np.array([0.80, 0.78]),
            "b:alone:x": np.array([0.91, 0.89])}
    assert choose_by_draws(rank) == "b:alone:x"  # a baseline is eligible to become the plan
    assert choose_by_draws({"a": np.array([0.5, 0.7]), "b": np.array([0.6, 0.6])}, ["b", "a"]) == "b"  # tie: order wins
    with pytest.raises(ValueError):
        choose_by_draws({"a": np.zeros(0)})


def test_materialized_ids_follow_the_rows_and_refuse_a_count_mismatch():
    from tasks.plan.planner import materialize

    ids = [np.arange(100, 105), np.arange(200, 203)]
    m = materialize(np.array([0, 4, 5, 7]), np.array([5, 3]), ids, ["a", "b"], np.array([2, 2]))
    assert m["example_id"].tolist() == [100, 104, 200, 202] and m["pool"].tolist() == ["a", "a", "b", "b"]
    with pytest.raises(RuntimeError, match="differ"):
        materialize(np.array([0, 4, 5]), np.array([5, 3]), ids, ["a", "b"], np.array([1, 2]))


def test_calibrated_interval_widens_with_the_extrapolation_distance_and_never_narrows():
    from tasks.plan.predict import CurvePrediction, calibrated_interval

    pred = CurvePrediction(predicted=0.8, lo=0.79, hi=0.81, params={}, n_points=9, form="m1")
    sizes = np.array([100, 200, 400])
    res = np.array([0.1, -0.1, 0.05])
    lo1, hi1, w1 = calibrated_interval(pred, 800, sizes, res)
    lo2, hi2, w2 = calibrated_interval(pred, 3200, sizes, res)
    assert 0 < w1 < w2 and lo2 < lo1 <= 0.79 and hi2 > hi1 >= 0.81
    assert np.isclose(w1, np.quantile(np.abs(res), 0.95) * 1.0)        # log(800/400) / log(400/200) = 1
    assert calibrated_interval(pred, 300, sizes, res)[:2] == (0.79, 0.81)   # inside the pilots: bootstrap only
    assert calibrated_interval(pred, 800, sizes, np.array([]))[:2] == (0.79, 0.81)
