"""Label-aware OT values against POT and hand/brute-force computations on tiny cases."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest

from tasks.mixture.labeldist import bures_wasserstein_sq, class_gaussians, label_distances, sq_euclidean
from tasks.mixture.ot import CostScale, label_aware_cost, ot_distance
from tasks.mixture.resample import draw_mixture, resample_ot
from tasks.mixture.weighted import WeightedOT, build_union_problem


def _brute_force_assignment(C: np.ndarray) -> float:
    """OT between two uniform measures of n points = min over permutations (Birkhoff) / n."""
    n = C.shape[0]
    return min(C[np.arange(n), list(perm)].sum() for perm in itertools.permutations(range(n))) / n


def _sample(n: int, d: int, classes: list[int], shift: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n)
    return rng.normal(size=(n, d)) + shift + 0.7 * y[:, None], y


def test_bures_matches_closed_form_in_one_dimension():
    # W2^2 between N(m, s^2) and N(m', s'^2) is (m - m')^2 + (s - s')^2
    rng = np.random.default_rng(0)
    Xa = rng.normal(1.0, 2.0, size=(4000, 1))
    Xb = rng.normal(-0.5, 0.5, size=(3000, 1))
    ga, gb = class_gaussians(Xa, np.zeros(4000, int), ridge=0), class_gaussians(Xb, np.zeros(3000, int), ridge=0)
    w2 = bures_wasserstein_sq(ga, gb)[0, 0]
    expected = (Xa.mean() - Xb.mean()) ** 2 + (Xa.std() - Xb.std()) ** 2
    assert w2 == pytest.approx(expected, rel=1e-9)


def test_bures_matches_commuting_covariances_formula():
    # diagonal covariances commute: trace term is sum (sqrt(a_i) - sqrt(b_i))^2
    from tasks.mixture.labeldist import ClassGaussians

    a, b = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    ga = ClassGaussians(np.array([0]), np.zeros((1, 3)), np.diag(a)[None], np.array([1]))
    gb = ClassGaussians(np.array([0]), np.ones((1, 3)), np.diag(b)[None], np.array([1]))
    assert bures_wasserstein_sq(ga, gb)[0, 0] == pytest.approx(3.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-10)


def test_exact_label_distance_equals_brute_force_assignment():
    Xa, ya = _sample(10, 2, [0, 1], 0.0, 1)
    Xb, yb = _sample(10, 2, [0, 1], 0.5, 2)
    W, ca, cb = label_distances(Xa, ya, Xb, yb, method="exact")
    for i, c in enumerate(ca):
        for j, c2 in enumerate(cb):
            A, B = Xa[ya == c], Xb[yb == c2]
            expected = ot.emd2(np.full(len(A), 1 / len(A)), np.full(len(B), 1 / len(B)), sq_euclidean(A, B))
            assert W[i, j] == pytest.approx(expected)
    # a class sample against itself: distance 0
    W_self, _, _ = label_distances(Xa, ya, Xa, ya, method="exact")
    assert np.allclose(np.diag(W_self), 0.0, atol=1e-12)


def test_exact_ot_equals_brute_force_permutation_with_label_cost():
    Xa, ya = _sample(6, 3, [0, 1, 2], 0.0, 3)
    Xb, yb = _sample(6, 3, [0, 1, 2], 1.0, 4)
    C, scale = label_aware_cost(Xa, ya, Xb, yb, lambda_x=1.0, lambda_y=0.5)
    res = ot_distance(Xa, ya, Xb, yb, solver="exact", lambda_x=1.0, lambda_y=0.5)
    assert res.value == pytest.approx(_brute_force_assignment(C), rel=1e-12)
    assert res.scale == scale and scale.feature > 0 and scale.label > 0
    # the cost is built as lambda_x * ||x - x'||^2 / s_x + lambda_y * W^2 / s_y
    W2, ca, cb = label_distances(Xa, ya, Xb, yb)
    Cy = W2[np.searchsorted(ca, ya)][:, np.searchsorted(cb, yb)]
    assert np.allclose(C, sq_euclidean(Xa, Xb) / scale.feature + 0.5 * Cy / scale.label)


def test_feature_only_exact_ot_in_raw_units_is_hand_computable():
    # two points each, shifted by 1 along x: every point moves distance 1 -> cost 1
    X = np.array([[0.0, 0.0], [5.0, 0.0]])
    y = np.array([0, 1])
    assert ot_distance(X, y, X + [1.0, 0.0], y, lambda_y=0.0, normalize=False).value == pytest.approx(1.0)


def test_sinkhorn_and_debiased_match_pot():
    Xa, ya = _sample(30, 2, [0, 1], 0.0, 5)
    Xb, yb = _sample(25, 2, [0, 1], 0.8, 6)
    reg = 0.5
    a, b = np.full(30, 1 / 30), np.full(25, 1 / 25)
    s = ot_distance(Xa, ya, Xb, yb, solver="sinkhorn", reg=reg, lambda_y=0.0, normalize=False)
    assert s.value == pytest.approx(float(ot.sinkhorn2(a, b, sq_euclidean(Xa, Xb), reg, stopThr=1e-10, numItermax=10000)), rel=1e-6)
    d = ot_distance(Xa, ya, Xb, yb, solver="sinkhorn_debiased", reg=reg, lambda_y=0.0, normalize=False)
    ref = ot.bregman.empirical_sinkhorn_divergence(Xa, Xb, reg, a, b, metric="sqeuclidean", stopThr=1e-10, numIterMax=10000)
    assert d.value == pytest.approx(float(ref), rel=1e-5)
    # debiasing: S(a, a) = 0
    assert ot_distance(Xa, ya, Xa, ya, solver="sinkhorn_debiased", reg=reg).value == pytest.approx(0.0, abs=1e-8)


def _union_case():
    sources = [_sample(12, 3, [0, 1, 2], 0.0, 7), _sample(15, 3, [0, 1], 1.0, 8), _sample(9, 3, [1, 2], -1.0, 9)]
    target = _sample(14, 3, [0, 1, 2], 0.3, 10)
    return sources, target


def test_weighted_exact_equals_emd2_on_the_weighted_union():
    sources, target = _union_case()
    prob = build_union_problem(sources, target)
    p = np.array([0.2, 0.5, 0.3])
    a = np.concatenate([np.full(len(X), w / len(X)) for (X, _), w in zip(sources, p)])
    assert np.allclose(prob.weights(p), a)
    r = WeightedOT(prob, solver="exact")(p)
    assert r.value == pytest.approx(ot.emd2(a, np.full(14, 1 / 14), prob.C), rel=1e-12)
    # a vertex of the simplex is the OT between that source alone and the target (same cost matrix rows)
    v = WeightedOT(prob, solver="exact")(np.array([0.0, 1.0, 0.0]))
    rows = prob.source_of == 1
    assert v.value == pytest.approx(ot.emd2(np.full(15, 1 / 15), np.full(14, 1 / 14), prob.C[rows]), rel=1e-12)


def test_weighted_sinkhorn_value_is_the_regularised_objective_of_pots_plan():
    sources, target = _union_case()
    prob = build_union_problem(sources, target)
    p, reg = np.array([0.3, 0.3, 0.4]), 0.2
    r = WeightedOT(prob, solver="sinkhorn", reg=reg, dtype="float64", tol=1e-12, max_iter=100_000)(p)
    a, b = prob.weights(p), np.full(14, 1 / 14)
    P = ot.sinkhorn(a, b, prob.C, reg, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
    ab = np.outer(a, b)
    kl = (P * np.log(P / ab)).sum() - P.sum() + ab.sum()
    assert r.value == pytest.approx((P * prob.C).sum() + reg * kl, rel=1e-8)


def test_weighted_debiased_matches_three_pot_solves():
    sources, target = _union_case()
    prob = build_union_problem(sources, target, debiased=True)
    p, reg = np.array([0.5, 0.25, 0.25]), 0.3

    def ot_eps(x, y, C):
        P = ot.sinkhorn(x, y, C, reg, method="sinkhorn_log", stopThr=1e-13, numItermax=100_000)
        xy = np.outer(x, y)
        m = P > 0
        return (P * C).sum() + reg * ((P[m] * np.log(P[m] / xy[m])).sum() - P.sum() + xy.sum())

    a, b = prob.weights(p), np.full(14, 1 / 14)
    expected = ot_eps(a, b, prob.C) - 0.5 * ot_eps(a, a, prob.C_uu) - 0.5 * ot_eps(b, b, prob.C_vv)
    r = WeightedOT(prob, solver="sinkhorn_debiased", reg=reg, dtype="float64", tol=1e-12, max_iter=100_000)(p)
    assert r.value == pytest.approx(expected, rel=1e-7)


def test_float32_kernel_tracks_exact_ordering_over_mixtures():
    sources, target = _union_case()
    prob = build_union_problem(sources, target)
    grid = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    ex = [WeightedOT(prob, solver="exact")(p).value for p in grid]
    eng = WeightedOT(prob, solver="sinkhorn", reg=0.2)
    sk = [eng(p).value for p in grid]
    assert eng.mode == "kernel-float32"
    assert np.corrcoef(ex, sk)[0, 1] > 0.99


def test_small_reg_falls_back_to_float64_then_log_domain_with_the_same_value():
    sources, target = _union_case()
    prob = build_union_problem(sources, target)
    spread = prob.C.max() - prob.C.min()
    p = np.array([0.3, 0.4, 0.3])
    kw = dict(solver="sinkhorn", dtype="float64", tol=1e-11, max_iter=200_000)
    reg64 = spread / 100  # exponent range 100: too wide for float32, fine for float64
    e64 = WeightedOT(prob, reg=reg64, **kw)
    assert WeightedOT(prob, reg=reg64, solver="sinkhorn").mode == "kernel-float64"
    assert e64.mode == "kernel-float64"
    reg_log = spread / 1000  # exp(-1000) underflows float64: log-domain
    elog = WeightedOT(prob, reg=reg_log, **kw)
    assert elog.mode == "log-float64"
    a, b = prob.weights(p), np.full(14, 1 / 14)
    for eng, reg in ((e64, reg64), (elog, reg_log)):
        P = ot.sinkhorn(a, b, prob.C, reg, method="sinkhorn_log", stopThr=1e-12, numItermax=200_000)
        ab = np.outer(a, b)
        m = P > 0
        ref = (P * prob.C).sum() + reg * ((P[m] * np.log(P[m] / ab[m])).sum() - P.sum() + ab.sum())
        assert eng(p).value == pytest.approx(ref, rel=1e-6)


def test_resample_mode_draws_round_p_n_and_uses_the_shared_scale():
    sources, target = _union_case()
    rng = np.random.default_rng(0)
    X, y = draw_mixture(sources, np.array([0.5, 0.25, 0.25]), 8, rng)
    assert X.shape == (8, 3) and y.shape == (8,)
    scale = CostScale(feature=2.0, label=3.0)
    r = resample_ot(sources, target, np.array([0.0, 1.0, 0.0]), 15, scale=scale, seed=1)
    # p at a vertex with n = pool size draws the whole pool (a permutation of it)
    Xs, ys = sources[1]
    direct = ot_distance(Xs, ys, target[0], target[1], scale=scale)
    assert r.scale == scale
    assert r.value == pytest.approx(direct.value, rel=1e-9)


def test_exact_ot_that_stops_before_the_optimum_is_an_error_not_a_value(monkeypatch):
    """ot.emd2 stopped by its iteration cap returns a cost above the optimum with only a warning; the
    resample path must not take that value (it raised nothing before)."""
    import tasks.mixture.ot as mot

    a, b, C = np.full(3, 1 / 3), np.full(2, 0.5), np.arange(6.0).reshape(3, 2)
    assert mot._solve(a, b, C, "exact", 0.1, 100) == pytest.approx(float(mot.ot.emd2(a, b, C)))
    monkeypatch.setattr(mot.ot, "emd2", lambda *x, **k: (9.9, {"result_code": 3, "warning": "numItermax reached"}))
    with pytest.raises(RuntimeError, match="did not reach an optimum on 3 x 2 points"):
        mot._solve(a, b, C, "exact", 0.1, 100)
