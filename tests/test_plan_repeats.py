"""Repeated data in the planner and the mixture extrapolation (issue 19): a mixture that asks a
pruned pool for more examples than it holds sees them several times, and its forecast is made at the
effective size N' = Σ_k D'_k (Muennighoff et al. 2023's D' = U + U·R*·(1 − exp(−R/R*))), not at N
as if every repeated example were new. Pure functions, small arrays, expectations recomputed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.mixture.extrapolate import PROBE_R_STAR, extrapolate_errors, fit_power_law, log_n_map, repeated_sizes
from tasks.mixture.simplex import mixture_counts
from tasks.plan.planner import effective_sizes, materialize
from tasks.plan.predict import extrapolate_accuracy
from tasks.plan.space import PoolOption
from tasks.plan.trials import make_trials
from tasks.scaling import R_STAR_D


def d_prime(u: float, c: float, r_star: float = R_STAR_D) -> float:
    """Eq. 5 of Muennighoff et al. written out: c examples drawn from u distinct ones."""
    if c <= u:
        return c
    R = c / u - 1.0
    return u + u * r_star * (1.0 - np.exp(-R / r_star))


def test_without_repetition_the_effective_size_is_n_and_nothing_is_reported():
    P = np.array([[0.5, 0.5], [0.2, 0.8], [1.0, 0.0]])
    r = repeated_sizes(P, 1000, [1000, 5000])
    np.testing.assert_array_equal(r.n_effective, [1000.0, 1000.0, 1000.0])
    assert not r.repeated.any() and np.all(r.epochs <= 1.0)
    assert r.describe(0, ["a", "b"]) == ""


def test_a_pool_pruned_below_n_p_is_seen_c_over_u_times_and_worth_d_prime():
    P = np.array([[0.6, 0.4], [0.1, 0.9]])
    unique = np.array([[250, 10_000], [250, 10_000]])  # pool a pruned to 250 rows
    r = repeated_sizes(P, 2000, unique)
    c = np.stack([mixture_counts(p, 2000) for p in P])
    np.testing.assert_allclose(r.epochs, c / unique)
    assert r.repeated.tolist() == [True, False]
    want = d_prime(250, c[0, 0]) + c[0, 1]
    np.testing.assert_allclose(r.n_effective, [want, 2000.0], rtol=1e-12)
    assert 250 + c[0, 1] < r.n_effective[0] < 2000  # worth more than the unique rows, less than new ones
    assert r.describe(0, ["a", "b"]) == f"a seen 4.80x; effective N {want:,.0f} of 2,000 (R*={R_STAR_D:g})"


def test_mixture_extrapolation_predicts_each_mixture_at_its_effective_size():
    sizes = np.array([100.0, 200.0, 400.0])
    err = np.array([[0.30, 0.20], [0.24, 0.15], [0.19, 0.11]])
    n_eff = np.array([1500.0, 3000.0])
    got = extrapolate_errors(sizes, err, 3000, "power_law", n_effective=n_eff)
    want = [fit_power_law(sizes, err[:, g], n_eff[g]).prediction for g in range(2)]
    np.testing.assert_allclose(got, want)
    assert got[0] > extrapolate_errors(sizes, err, 3000, "power_law")[0]  # a repeated mixture is forecast worse
    lm = extrapolate_errors(sizes, err, 3000, "log_n_map", n_effective=n_eff)
    np.testing.assert_allclose(lm, [log_n_map(200, err[1, g], 400, err[2, g], n_eff[g]) for g in range(2)])
    with pytest.raises(ValueError, match="n_effective has 3 values for 2 mixtures"):
        extrapolate_errors(sizes, err, 3000, n_effective=[1.0, 2.0, 3.0])


def test_screen_extrapolation_per_candidate_equals_one_candidate_at_a_time():
    acc = np.array([[0.60, 0.70, 0.50], [0.66, 0.74, 0.58], [0.70, 0.78, 0.63]])
    sizes = np.array([[100, 200, 400], [100, 200, 400], [90, 170, 300.0]])
    n = np.array([5000.0, 2000.0, 1200.0])
    got = extrapolate_accuracy(sizes, acc, n)
    for c in range(3):
        np.testing.assert_allclose(got[c], extrapolate_accuracy(sizes[c], acc[:, c:c + 1], n[c])[0])
    np.testing.assert_allclose(extrapolate_accuracy([100, 200, 400], acc, 5000),
                               extrapolate_accuracy(np.tile([100, 200, 400.0], (3, 1)), acc, np.full(3, 5000.0)))


def _options() -> list[list[PoolOption]]:
    a = [PoolOption(0, "none", 1.0, np.arange(400)), PoolOption(0, "ssp:hard:none", 0.25, np.arange(0, 400, 4))]
    b = [PoolOption(1, "none", 1.0, np.arange(400))]
    return [a, b]


def test_effective_sizes_of_plan_candidates_cover_the_pilots_and_n():
    opts = _options()
    P = np.array([[0.5, 0.5], [0.5, 0.5]])
    idx = np.array([[0, 0], [1, 0]])                       # pool a whole (400) or pruned to 100 rows
    counts = np.stack([mixture_counts(p, 600) for p in P])  # 300 + 300 at N = 600
    eff = effective_sizes(opts, idx, P, counts, [100, 200, 400], r_star=R_STAR_D)
    assert eff.repeated
    np.testing.assert_allclose(eff.target, [600.0, d_prime(100, 300) + 300])
    np.testing.assert_allclose(eff.pilots[0], [100, 200, 400])
    np.testing.assert_allclose(eff.pilots[1], [100, 200, d_prime(100, 200) + 200])  # the 400-pilot repeats pool a
    np.testing.assert_allclose(eff.at_n.epochs, [[0.75, 0.75], [3.0, 0.75]])
    plain = effective_sizes(opts, idx[:1], P[:1], counts[:1], [100, 200, 400])
    assert not plain.repeated
    probe = effective_sizes(opts, idx, P, counts, [100, 200, 400])  # the planner's default: the probe's R* = 0
    np.testing.assert_allclose(probe.target, [600.0, 100 + 300])
    np.testing.assert_allclose(probe.pilots[1], [100, 200, 100 + 200])


def test_the_probe_learns_nothing_from_whole_passes_so_its_r_star_is_zero():
    from helpers import blobs
    from tasks.probe import train_linear_probe

    X, y = blobs(n=240, d=8, k=4, seed=3)
    U = np.arange(0, 240, 4)                                # 60 unique rows
    once = train_linear_probe(X[U], y[U], X, y, n_classes=4)
    for k in (2, 5):
        again = train_linear_probe(X[np.tile(U, k)], y[np.tile(U, k)], X, y, n_classes=4)
        np.testing.assert_array_equal(again.test_pred, once.test_pred)
        assert again.train_loss == pytest.approx(once.train_loss, rel=1e-5)
    assert PROBE_R_STAR == 0.0
    r = repeated_sizes(np.array([[1.0]]), 300, [60], r_star=PROBE_R_STAR)
    assert r.n_effective[0] == 60.0 and r.epochs[0, 0] == 5.0


def test_trials_may_repeat_a_pruned_pool_and_the_plan_lists_each_example_once():
    opts = [o[-1] for o in _options()]                      # pool a pruned to 100 rows, pool b whole
    offsets = np.array([0, 400])
    (t,) = make_trials("c1", "rank", opts, np.array([0.5, 0.5]), [600], 1, offsets, seed=3, repeat=True)
    per_row = np.bincount(t.idx[t.idx < 400], minlength=400)[opts[0].kept]
    assert t.n == 600 and np.all(per_row == 3)              # every kept row of pool a, three times
    with pytest.raises(ValueError, match="holds 100 rows, 300 requested"):
        make_trials("c1", "rank", opts, np.array([0.5, 0.5]), [600], 1, offsets, seed=3)
    ids = [np.arange(400) + (1 << 32), np.arange(400) + (2 << 32)]
    m = materialize(t.idx, np.array([400, 400]), ids, ["a", "b"], np.array([300, 300]))
    assert m["example_id"].size == 100 + 300 and np.unique(m["example_id"]).size == 400
