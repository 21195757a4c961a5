"""Safe selection's pieces (pure functions, no Prefect): finalists, intervals that stay in [0, 1] and
come from draws not used to choose, the pilot-corrected predictor, OT that always finishes, and the
mixture stage on a synthetic setting whose best mixture is a vertex."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.mixture.correct import choose_bandwidth, fit_corrected
from tasks.mixture.decide import (
    choose_by_draws, coverage, extrapolation_halfwidth, interval_sd, log_error_interval, measurement_interval,
    merge_finalists, pooled_logit_sd,
)
from tasks.mixture.simplex import simplex_grid


def test_finalists_merge_reasons_per_key_in_first_seen_order():
    f = merge_finalists([("3", "predicted-optimum"), ("0", "vertex:a"), ("3", "best-pilot-1"), ("3", "best-pilot-1")])
    assert [x.key for x in f] == ["3", "0"]
    assert f[0].reasons == ("predicted-optimum", "best-pilot-1") and f[0].name == "predicted-optimum"


def test_measurement_interval_stays_in_0_1_and_widens_with_fewer_draws():
    sd, df = pooled_logit_sd([np.array([0.97, 0.99, 0.98]), np.array([0.5, 0.55, 0.45])])
    assert df == 4 and sd > 0
    est, lo, hi = measurement_interval(np.array([0.995, 0.999, 0.998]), sd, df, n_future=3)
    assert 0 <= lo < est < hi <= 1
    _, lo1, hi1 = measurement_interval(np.array([0.6]), sd, df, n_future=3)
    _, lo3, hi3 = measurement_interval(np.array([0.6, 0.6, 0.6]), sd, df, n_future=3)
    assert hi1 - lo1 > hi3 - lo3
    assert measurement_interval(np.array([0.6]), float("nan"), 0)[1:] == (0.0, 1.0)  # no pooled SD: say nothing


def test_prediction_intervals_cover_a_fresh_measurement_at_the_nominal_rate():
    """Simulated draws (logit-normal): the interval from confirm draws covers a fresh mean of 3 draws ~95%."""
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(400):
        mu = rng.uniform(-1, 3)
        rank = [1 / (1 + np.exp(-(rng.normal(0, 0.2, 3) + m))) for m in rng.uniform(-1, 3, 6)]
        sd, df = pooled_logit_sd(rank)
        conf = 1 / (1 + np.exp(-(mu + rng.normal(0, 0.2, 3))))
        fresh = float(np.mean(1 / (1 + np.exp(-(mu + rng.normal(0, 0.2, 3))))))
        _, lo, hi = measurement_interval(conf, sd, df, n_future=3)
        hits.append(lo <= fresh <= hi)
    assert 0.90 <= np.mean(hits) <= 0.995


def test_log_error_intervals_never_leave_0_1_even_for_wild_predictions():
    lo, hi = log_error_interval(np.array([-0.3, 0.2, 0.97, 1.2]), 3.0)
    assert np.all((0 <= lo) & (lo <= hi) & (hi <= 1))
    assert extrapolation_halfwidth(np.zeros(0), 0.95, 4000, 400, 200) == np.inf
    w1 = extrapolation_halfwidth(np.array([0.1, -0.2, 0.05]), 0.95, 800, 400, 200)
    w2 = extrapolation_halfwidth(np.array([0.1, -0.2, 0.05]), 0.95, 4000, 400, 200)
    assert 0 < w1 < w2


def test_coverage_counts_only_measured_alternatives():
    c = coverage([(0.1, 0.3, 0.2), (0.1, 0.3, 0.4), (0.0, 1.0, float("nan"))])
    assert (c.inside, c.total) == (1, 2) and "1/2" in c.line(0.95)


def test_choose_by_draws_takes_the_best_mean():
    assert choose_by_draws({"a": np.array([0.8, 0.9]), "b": np.array([0.86, 0.86])}) == "b"


def _surface(seed=0):
    """Accuracy over the 3-simplex that the OT form misses at one vertex (a 'domain bonus')."""
    rng = np.random.default_rng(seed)
    P = simplex_grid(3, 0.1)
    ot = 1.0 - 0.5 * P[:, 0] - 0.2 * P[:, 1]
    acc = 0.9 - 0.3 * ot + 0.15 * np.exp(-((P - [0, 0, 1]) ** 2).sum(1) / 0.02) + rng.normal(0, 0.003, len(P))
    return P, ot, acc


def test_pilot_correction_is_chosen_by_held_out_error_and_agrees_with_the_pilots():
    P, ot, acc = _surface()
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(5):
        m = np.ones(len(P), bool)
        m[rng.choice(len(P), 20, replace=False)] = False
        masks.append(m)
    bw = choose_bandwidth("ot", P, ot, [acc], masks)
    assert bw.h > 0 and bw.mae[bw.h] < bw.mae[0.0]
    fit = fit_corrected("ot", P, ot, acc, bw.h)
    base = fit_corrected("ot", P, ot, acc, 0.0)
    v = np.flatnonzero(np.all(P == [0, 0, 1], axis=1))
    assert abs(fit.predict(P[v], ot[v])[0] - acc[v][0]) < 0.5 * abs(base.predict(P[v], ot[v])[0] - acc[v][0])


def test_corrected_gradient_matches_finite_differences():
    P, ot, acc = _surface()
    fit = fit_corrected("ot_linear", P, ot, acc, 0.1)
    p = np.array([0.2, 0.3, 0.5])
    ot_grad = np.array([-0.5, -0.2, 0.0])

    def f(q):
        return fit.predict(q[None], np.array([1.0 - 0.5 * q[0] - 0.2 * q[1]]))[0]

    g = fit.grad(p, 1.0 - 0.5 * p[0] - 0.2 * p[1], ot_grad)
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1e-6
        assert g[i] == pytest.approx((f(p + e) - f(p - e)) / 2e-6, rel=1e-4, abs=1e-6)


def test_sinkhorn_that_stalls_is_solved_again_at_larger_eps_and_says_so_per_row():
    from tasks.mixture.batch import STAGE_ITERS, eps_schedule, sinkhorn_batch_until

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 2.0
    C = ((X[:, None] - Y[None]) ** 2).sum(-1)
    C /= C.max()
    A = rng.dirichlet(np.ones(60), size=5)
    r = sinkhorn_batch_until(C, A, reg=0.002, tol=1e-6, max_iter=15, max_raise=3)
    assert r.row_iter.shape == (5,) and r.row_seconds.shape == (5,) and r.row_reg.shape == (5,)
    assert np.all(r.row_reg > 0.002)  # none converged at the first ε within 15 iterations
    bound = 5 * (15 + STAGE_ITERS * len(eps_schedule(1.0, 0.002)))  # attempts x (final stage cap + annealing stages)
    assert np.all(r.row_iter <= bound) and r.row_seconds.sum() == pytest.approx(r.seconds, rel=0.05)
    assert r.converged.dtype == bool and np.all(np.isfinite(r.lower))
    ok = sinkhorn_batch_until(C, A, reg=0.1, tol=1e-4, max_iter=2000)
    assert ok.converged.all() and np.all(ok.row_reg == 0.1)


def test_rows_raised_to_a_larger_eps_take_every_other_row_with_them():
    """The dual bound loosens as ε grows, so a sweep whose rows end at different ε would hand the
    predictor two quantities; the rows that converged at a smaller ε are solved again at the largest."""
    from tasks.mixture.batch import sinkhorn_batch, sinkhorn_batch_until

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 2.0
    C = ((X[:, None] - Y[None]) ** 2).sum(-1)
    C /= C.max()
    A = np.vstack([rng.dirichlet(np.ones(60), size=4), np.eye(60)[:2]])  # 4 that stall at 0.01, 2 point masses that do not
    mixed = sinkhorn_batch_until(C, A, reg=0.01, tol=1e-6, max_iter=60, same_reg=False)
    assert set(mixed.row_reg.tolist()) == {0.01, 0.02}
    same = sinkhorn_batch_until(C, A, reg=0.01, tol=1e-6, max_iter=60)
    assert np.all(same.row_reg == 0.02) and same.converged.all()
    again = sinkhorn_batch(C, A[4:], reg=0.02, tol=1e-6, max_iter=60)
    np.testing.assert_allclose(same.lower[4:], again.lower, rtol=1e-6)
    np.testing.assert_allclose(same.lower[:4], mixed.lower[:4])
    assert np.all(same.lower[4:] <= mixed.lower[4:] + 1e-6)  # never tighter at the larger ε


def test_weighted_sweep_reports_iterations_and_seconds_per_mixture():
    from tasks.mixture.weighted import build_union_problem, weighted_sweep

    rng = np.random.default_rng(0)
    blocks = [(rng.normal(size=(40, 5)) + i, rng.integers(0, 3, 40)) for i in range(3)]
    prob = build_union_problem(blocks, (rng.normal(size=(50, 5)), rng.integers(0, 3, 50)))
    grid = simplex_grid(3, 0.5)
    sw = weighted_sweep(prob, grid, reg=0.05)
    assert sw.n_iter.shape == (6,) and len(set(sw.n_iter.tolist())) > 1  # per mixture, not the batch's count
    assert sw.converged.all() and np.all(sw.regs == 0.05) and np.all(sw.seconds > 0)
    stalled = weighted_sweep(prob, grid, reg=0.001, tol=1e-7, max_iter=10)
    assert np.all(stalled.regs > 0.001) and stalled.n_unconverged >= 0 and np.all(np.isfinite(stalled.values))


def test_an_alternative_that_varies_more_than_the_pool_gets_its_own_wider_sd():
    calm = [np.array([0.80, 0.801, 0.799]), np.array([0.60, 0.601, 0.599])]
    noisy = np.array([0.70, 0.80, 0.75])
    s_own, df_own = interval_sd([noisy], calm + [noisy])
    s_all, _ = pooled_logit_sd(calm + [noisy])
    assert df_own == 2 and s_own > s_all
    assert interval_sd([calm[0]], calm + [noisy]) == pooled_logit_sd(calm + [noisy])  # calm: the pooled SD
