"""Scaling-law fitting: Huber robustness, batched multi-start vs a scipy reference, run-bootstrap
coverage, rolling-origin validation against baselines, and the Gadre et al. extrapolation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from tasks.errors import WinnowError
from tasks.scaling.api import fit_curve, fit_report
from tasks.scaling.bootstrap import bootstrap_fit, resample_weights
from tasks.scaling.fit import fit_form, huber_objective, minimize_lbfgs_batched
from tasks.scaling.forms import get_form
from tasks.scaling.validate import are, holdout_mask, rmsle, rolling_origin, select_form

DATA = Path(__file__).parent / "data" / "gadre_overtrain_104models.csv"
M2 = get_form("m2")


def m2_curve(x, E=0.4, B=30.0, c=0.45):
    return E + B * np.asarray(x, dtype=float) ** -c


def chinchilla_like(n: int = 240, seed: int = 0, noise: float = 0.02):
    rng = np.random.default_rng(seed)
    f = get_form("chinchilla")
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), n))
    D = N * np.exp(rng.uniform(np.log(5.0), np.log(200.0), n))
    theta = f.from_natural({"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366})
    return N, D, f.predict(theta, N, D) * np.exp(rng.normal(0.0, noise, n))


# ----------------------------------------------------------------------------------- robustness
def test_huber_ignores_a_few_outliers_that_pull_least_squares_away():
    rng = np.random.default_rng(0)
    x = np.geomspace(10, 1e5, 30)
    y = m2_curve(x) * np.exp(rng.normal(0.0, 0.002, x.size))
    y[[5, 12, 20]] *= np.array([1.6, 0.55, 1.8])  # three gross outliers
    robust = fit_form(M2, x, y, delta=1e-3)
    squares = fit_form(M2, x, y, delta=10.0)  # delta >> residuals: plain least squares in log space
    for k, v in {"E": 0.4, "B": 30.0, "c": 0.45}.items():
        assert robust.params[k] == pytest.approx(v, rel=0.03), (k, robust.params)
    worst_ls = max(abs(squares.params[k] / v - 1) for k, v in {"E": 0.4, "B": 30.0, "c": 0.45}.items())
    assert worst_ls > 0.05  # least squares is visibly pulled by the outliers


# ------------------------------------------------------------------------ batched vs scipy loop
def test_batched_multistart_reaches_the_scipy_optimum_on_a_small_grid():
    N, D, y = chinchilla_like(seed=1)
    form = get_form("chinchilla")
    starts = form.grid(N, D, y)[::150]  # 30 of the 4,500 Epoch starts
    fun = huber_objective(form, N, y, D)
    bounds = list(zip(form.lower, form.upper))

    def scalar(t):
        f, g = fun(t[None, :], np.zeros(1, dtype=int))
        return float(f[0]), g[0]

    with threadpool_limits(1):  # scipy's L-BFGS-B core is slow with threaded BLAS on tiny problems
        ref = [minimize(scalar, s, jac=True, method="L-BFGS-B", bounds=bounds,
                        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}) for s in starts]
    best_ref = min(ref, key=lambda r: r.fun)
    ours = fit_form(form, N, y, D, starts=starts, race=None, stall_horizon=np.inf)
    assert ours.loss <= best_ref.fun * (1 + 1e-9)
    assert ours.loss == pytest.approx(best_ref.fun, rel=1e-7)
    np.testing.assert_allclose(ours.theta, best_ref.x, rtol=1e-4, atol=1e-4)
    # and the default (raced, full 4,500-start grid) fit lands on the same optimum
    full = fit_form(form, N, y, D)
    assert full.n_starts == 4500
    assert full.loss == pytest.approx(best_ref.fun, rel=1e-7)


def test_batched_lbfgs_respects_bounds_and_reports_status():
    # minimise sum (t - 3)^2 with t <= 1: the bound is active at the optimum
    def fun(t, rows):
        return ((t - 3.0) ** 2).sum(1), 2 * (t - 3.0)

    res = minimize_lbfgs_batched(fun, np.array([[0.0, -5.0], [0.5, 0.9]]), np.array([-10.0, -10.0]), np.array([1.0, 1.0]))
    np.testing.assert_allclose(res.theta, 1.0)
    assert set(res.status.tolist()) <= {1, 2}


def test_unidentifiable_fit_is_flagged_unstable():
    # every run at D = 20 N: Chinchilla cannot tell the N term from the D term
    rng = np.random.default_rng(0)
    N = np.geomspace(1e7, 1e9, 12)
    form = get_form("chinchilla")
    y = form.predict(form.from_natural({"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.35, "beta": 0.37}), N, 20 * N)
    fit = fit_form(form, N, y * np.exp(rng.normal(0, 0.01, N.size)), 20 * N)
    assert not fit.stable and "unstable fit" in fit.warning
    good = fit_form(M2, np.geomspace(10, 1e5, 20), m2_curve(np.geomspace(10, 1e5, 20)))
    assert good.stable and good.warning is None


# ---------------------------------------------------------------------------------- bootstrap
def test_resampling_draws_whole_runs():
    groups = np.repeat(np.arange(5), 3)
    w = resample_weights(groups, groups.size, 50, np.random.default_rng(0))
    assert w.shape == (50, 15)
    assert (w.reshape(50, 5, 3) == w.reshape(50, 5, 3)[:, :, :1]).all()  # a run's points share one count
    assert (w.sum(1) == 15).all()


def _coverage(reps: int, n_boot: int) -> tuple[float, float]:
    """Fraction of replications whose 90% interval covers the true c and the true y(1e6)."""
    x_runs = np.geomspace(100, 1e5, 15)
    truth_c, target = 0.45, 1e6
    truth_y = float(m2_curve(target))
    hit_c = hit_y = 0
    for r in range(reps):
        rng = np.random.default_rng(100 + r)
        xs = np.concatenate([x_runs * f for f in (0.6, 0.8, 1.0)])
        run = np.tile(np.arange(x_runs.size), 3)
        run_noise = rng.normal(0, 0.01, x_runs.size)[run]  # correlated within a run
        y = m2_curve(xs) * np.exp(run_noise + rng.normal(0, 0.002, xs.size))
        fit = fit_curve(xs, y, form="m2", groups=run, bootstrap=n_boot, predict_at=[target], seed=r, level=0.9)
        lo, hi = fit.param_ci["c"]
        hit_c += lo <= truth_c <= hi
        hit_y += fit.pred_lo[0] <= truth_y <= fit.pred_hi[0]
    return hit_c / reps, hit_y / reps


def test_run_bootstrap_intervals_cover_the_truth_near_the_nominal_rate():
    cov_c, cov_y = _coverage(reps=30, n_boot=200)
    # nominal 0.90; 30 replications -> standard error ~0.055
    assert 0.75 <= cov_c <= 1.0, cov_c
    assert 0.75 <= cov_y <= 1.0, cov_y


@pytest.mark.slow
def test_run_bootstrap_coverage_many_replications():
    cov_c, cov_y = _coverage(reps=200, n_boot=400)
    assert 0.84 <= cov_c <= 0.96, cov_c
    assert 0.84 <= cov_y <= 0.96, cov_y


def test_bootstrap_intervals_bracket_the_estimate_and_align_with_targets():
    x = np.geomspace(10, 1e5, 24)
    y = m2_curve(x) * np.exp(np.random.default_rng(3).normal(0, 0.01, x.size))
    fit = fit_curve(x, y, form="m2", bootstrap=100, predict_at=[1e6, 1e7], seed=1)
    assert fit.predictions.shape == fit.pred_lo.shape == fit.pred_hi.shape == (2,)
    assert (fit.pred_lo <= fit.predictions).all() and (fit.predictions <= fit.pred_hi).all()
    for k, v in fit.params.items():
        lo, hi = fit.param_ci[k]
        assert lo <= v <= hi, k
    assert fit.boot_theta.shape == (100, 3)
    b = bootstrap_fit(M2, x, y, M2.from_natural(fit.params), n_boot=20, seed=1)
    assert b.n_failed == 0 and b.n_groups == x.size


# --------------------------------------------------------------------------------- validation
def test_metrics():
    assert are([1.0, 2.0], [1.1, 1.8]) == pytest.approx(0.1)
    assert rmsle([1.0], [np.e]) == pytest.approx(1.0)


def test_holdout_masks_take_the_largest_distinct_scales():
    x = np.array([1, 2, 2, 4, 8, 8, 16.0])
    train, test = holdout_mask(x, 2)
    assert test.tolist() == [False, False, False, False, True, True, True]
    assert train.tolist() == [True, True, True, True, False, False, False]
    train, test = holdout_mask(x, 1, origin=1)
    assert test.sum() == 2 and train.sum() == 4
    with pytest.raises(WinnowError, match="only 5 distinct"):
        holdout_mask(x, 5)


def test_downstream_holds_out_the_lowest_losses_the_largest_models():
    """downstream's x is a loss: the "largest scales" to hold out, and the last-value forecast, are at the
    smallest x (the strongest models), not the largest."""
    L = np.array([4.5, 4.0, 3.6, 3.3, 3.05, 2.85, 2.7, 2.6])  # small models first
    err = 0.78 - 2.5 * np.exp(-0.6 * L)
    v = rolling_origin("downstream", L, err, holdout_largest=2)
    assert sorted(v.points[:, 0].tolist()) == [2.6, 2.7] and v.n_train == 6
    assert v.baseline_rmsle["last_value"] == pytest.approx(rmsle(err[-2:], np.full(2, err[5])))
    assert v.rmsle < 1e-3  # the true form extrapolates to the stronger models
    rep = fit_report(L, err, form="downstream", holdout_largest=1, bootstrap=0, predict_at=[2.4])
    assert rep.holdout_mask.tolist() == [False] * 7 + [True]
    with pytest.raises(ValueError, match="cannot be compared"):
        select_form(L, err, holdout_largest=1, candidates=["downstream", "m2"])


def test_more_origins_than_the_data_allow_are_capped_with_a_note():
    x = np.geomspace(10, 1e6, 6)
    rep = fit_report(x, m2_curve(x), form="m2", holdout_largest=1, origins=20, bootstrap=0)
    assert rep.validation.origins == 4 and any("origins=20" in n and "used 4" in n for n in rep.notes)


def test_each_rolling_origin_is_scored_on_every_point_beyond_its_cut():
    x = np.geomspace(10, 1e6, 10)
    y = m2_curve(x) * np.exp(np.random.default_rng(1).normal(0, 0.01, x.size))
    v = rolling_origin("m1", x, y, holdout_largest=1, origins=3)
    for o in range(3):  # origin o fits the 9 - o smallest scales and predicts the 1 + o largest
        fit = fit_curve(x[: 9 - o], y[: 9 - o], form="m1", predict_at=x[9 - o:])
        assert v.origin_rmsle[o] == pytest.approx(rmsle(y[9 - o:], fit.predictions), rel=1e-6)
    assert v.rmsle == pytest.approx(np.mean(v.origin_rmsle)) and v.n_test == 1


def test_fit_beats_baselines_on_a_true_power_law():
    x = np.geomspace(10, 1e6, 16)
    v = rolling_origin("m2", x, m2_curve(x), holdout_largest=3)
    assert v.are < 1e-4 and v.beats_baseline
    assert set(v.baseline_are) == {"last_value", "best_small"} and min(v.baseline_are.values()) > 0.001


def test_tool_says_when_no_form_beats_the_last_value():
    # the curve flattens at the largest scales: every decreasing form over-extrapolates
    x = np.geomspace(10, 1e6, 16)
    y = m2_curve(x, E=0.0, B=5.0, c=0.3)
    y[-4:] = y[-5]
    sel = select_form(x, y, holdout_largest=3, candidates=["m1", "m2"])
    assert not sel.beats_baseline
    assert "no form beats the naive baseline" in sel.message
    assert sel.validations[sel.form].baseline_are["last_value"] == pytest.approx(0.0, abs=1e-12)


def test_auto_choice_is_by_held_out_error_and_skips_forms_with_too_few_points():
    x = np.geomspace(10, 1e6, 6)
    y = m2_curve(x) * np.exp(np.random.default_rng(0).normal(0, 0.003, x.size))
    rep = fit_report(x, y, form="auto", holdout_largest=2, candidates=["m1", "m2", "bnsl"])
    sel = rep.selection
    # 6 parameters, 4 training points + 1 exponent prior: still too few
    assert "only 4 data point" in sel.validations["bnsl"].error
    assert set(sel.validations) == {"m1", "m2", "bnsl", "last_value", "best_small"}  # naive forecasts compete
    ranked = sorted((v.rmsle, n) for n, v in sel.validations.items() if v.error is None)
    assert [r[0] for r in sel.ranking()][: len(ranked)] == [n for _, n in ranked]
    # 6 scales, 2 held out: two origins (the deepest keeps 3 scales); the simplest candidate within the
    # larger of one standard error of its paired per-origin difference from the lowest RMSLE and the
    # residual scatter (median over the forms)
    e = {n: np.array(v.origin_rmsle) for n, v in sel.validations.items() if v.error is None}
    top = ranked[0][1]
    assert len(e[top]) == 2
    noise = float(np.median([v.train_rmsle for n, v in sel.validations.items() if v.error is None and v.train_rmsle is not None]))
    within = [n for r, n in ranked if r - ranked[0][0] <= max(np.std(e[n] - e[top], ddof=1) / np.sqrt(2), noise)]
    order = {"last_value": -2, "best_small": -1, "m1": 2, "m2": 3, "bnsl": 6}
    assert sel.form == min(within, key=lambda n: (order[n], sel.validations[n].rmsle)) == rep.predictor == rep.fit.form
    assert sel.form == "m2"  # the true form
    with pytest.raises(WinnowError, match="holdout_largest >= 1"):
        fit_report(x, y, form="auto", holdout_largest=0)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "x, y, match",
    [
        ([1.0, 2.0, 3.0, 4.0], [1.0, 0.5, 0.3], "must align"),
        ([1.0, -2.0, 3.0, 4.0], [1.0, 0.5, 0.3, 0.2], r"x must be > 0.*index 1 has x=-2.0"),
        ([1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 0.3, 0.2], "non-finite"),
        ([1.0, 2.0], [1.0, 0.5], "3 parameters .* only 2 data point"),
    ],
)
def test_bad_inputs_give_clear_errors(x, y, match):
    with pytest.raises(WinnowError, match=match):
        fit_curve(x, y, form="m2")


def test_two_variable_form_needs_x2_and_pairs():
    with pytest.raises(WinnowError, match="pass x2"):
        fit_curve([1e7, 1e8, 1e9, 1e10, 1e11], [3, 2.5, 2.2, 2.1, 2.0], form="gadre")
    with pytest.raises(WinnowError, match="pair"):
        fit_curve([1e7, 1e8, 1e9, 1e10, 1e11], [3, 2.5, 2.2, 2.1, 2.0], form="gadre", x2=np.full(5, 1e11), predict_at=[1e12])


# ---------------------------------------------------------------------- Gadre et al. 2024 data
def gadre(dataset: str):
    rows = [r for r in csv.DictReader(DATA.open()) if r["dataset"] == dataset]
    col = lambda k: np.array([float(r[k]) for r in rows])  # noqa: E731
    return col("N"), col("D"), col("tok_per_param_M"), col("loss_c4_val")


def test_gadre_form_predicts_the_large_redpajama_runs_within_one_percent():
    """The paper's setting: fit on five small runs (0.011B-0.411B at M=20, 0.011B at M=320),
    predict the 1.4B (M=20, M=640) and 6.9B (M=20) runs' C4 validation loss."""
    N, D, M, loss = gadre("rpj")
    small5 = ((M == 20) & (N < 1e9)) | ((N < 2e7) & (M == 320))
    assert small5.sum() == 5
    v = rolling_origin("gadre", N, loss, D, holdout_largest=2, train_mask=small5)
    assert v.n_train == 5 and v.n_test == 3
    rel = np.abs(v.points[:, 3] / v.points[:, 2] - 1)
    assert rel.max() < 0.01, rel
    assert v.beats_baseline


def test_chinchilla_form_on_all_small_redpajama_runs_extrapolates_within_a_few_percent():
    N, D, M, loss = gadre("rpj")
    v = rolling_origin("chinchilla", N, loss, D, holdout_largest=2)
    rel = np.abs(v.points[:, 3] / v.points[:, 2] - 1)
    assert v.n_train == 32 and rel.max() < 0.04, rel
    g = rolling_origin("gadre", N, loss, D, holdout_largest=2)
    assert np.abs(g.points[:, 3] / g.points[:, 2] - 1).max() < 0.01


# ------------------------------------------------------------ fused Chinchilla objective
@pytest.mark.parametrize("weights", ["none", "shared", "per_row"])
def test_fused_chinchilla_objective_matches_the_generic_log_y_path(weights):
    import dataclasses

    import tasks.scaling.fit as fit_mod

    N, D, y = chinchilla_like(n=60, seed=5)
    form = get_form("chinchilla")
    generic = dataclasses.replace(form, lse_terms=None)  # same form through log_y + Jacobian
    rng = np.random.default_rng(6)
    theta = np.clip(form.grid(N, D, y)[::40] + rng.normal(0.0, 0.3, (113, 5)), form.lower, form.upper)
    theta[:3] = [[-30.0, 60.0, -60.0, 0.0, 10.0], [60.0, -60.0, 60.0, 10.0, 0.0], [0.0, 60.0, 60.0, 0.0, 0.0]]
    theta[3] = form.from_natural({"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366})
    w = {"none": None, "shared": rng.integers(0, 3, N.size).astype(float),
         "per_row": rng.integers(0, 3, (theta.shape[0], N.size)).astype(float)}[weights]
    rows = np.arange(theta.shape[0])
    f0, g0 = huber_objective(generic, N, y, D, weights=w)(theta, rows)
    old = fit_mod._FUSED_BLOCK_ELEMENTS
    try:
        fit_mod._FUSED_BLOCK_ELEMENTS = 7 * N.size  # several blocks, the last one partial
        f1, g1 = huber_objective(form, N, y, D, weights=w)(theta, rows)
    finally:
        fit_mod._FUSED_BLOCK_ELEMENTS = old
    np.testing.assert_allclose(f1, f0, rtol=1e-12, atol=0)
    np.testing.assert_allclose(g1, g0, rtol=1e-9, atol=1e-12 * np.abs(g0).max())
    # a row subset in another order gives the same values (per-row weights follow `rows`)
    sub = rows[::-3]
    f2, g2 = huber_objective(form, N, y, D, weights=w)(theta[sub], sub)
    np.testing.assert_allclose(f2, f0[sub], rtol=1e-12)
    np.testing.assert_allclose(g2, g0[sub], rtol=1e-9, atol=1e-12 * np.abs(g0).max())


def test_fused_objective_clips_extreme_exponents_like_the_generic_path():
    import dataclasses

    form = get_form("chinchilla")
    generic = dataclasses.replace(form, lse_terms=None)
    N = np.array([1e200, 1e250, 1e300])  # alpha * log N > 700: exponents outside [-700, 700]
    D, y = N * 10.0, np.array([2.0, 2.1, 2.2])
    theta = np.array([[0.5, 1.0, 2.0, 2.0, 0.1], [0.5, 1.0, 2.0, 0.1, 0.2]])
    rows = np.arange(2)
    f0, g0 = huber_objective(generic, N, y, D)(theta, rows)
    f1, g1 = huber_objective(form, N, y, D)(theta, rows)
    assert np.isfinite(f1).all()
    np.testing.assert_allclose(f1, f0, rtol=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-9, atol=1e-12)


def test_the_ranking_notes_a_validated_fit_that_its_points_do_not_pin_down():
    """Six sizes of a plain power law cannot pin down bnsl's break: the ranking says which parameter,
    next to the held-out error it produced; a well-determined fit gets no such note."""
    from tasks.scaling.validate import Selection

    x = np.geomspace(10, 1e4, 7)
    y = (0.05 + 3 * x**-0.4) * np.exp(np.random.default_rng(3).normal(0, 0.01, x.size))
    loose = rolling_origin("bnsl", x, y, holdout_largest=1)  # deterministic: seeded noise, seeded starts
    xs = np.geomspace(10, 1e6, 16)
    tight = rolling_origin("m2", xs, m2_curve(xs), holdout_largest=3)
    assert loose.unpinned and not tight.unpinned
    rows = Selection("bnsl", {"bnsl": loose}, True, "").ranking()
    assert rows[0][3] == f"chosen; validated fit leaves {', '.join(loose.unpinned)} not pinned down"
    assert Selection("m2", {"m2": tight}, True, "").ranking()[0][3] == "chosen"


def test_a_downstream_curve_whose_forms_all_fail_keeps_its_direction():
    """x is a loss: when no form validates and the last value wins, the last value is the strongest model's
    error (the smallest loss), the held-out points are the strongest models, and the final fit is the
    downstream form, not a size law on a loss axis (it fell back to m1 and took the weakest model)."""
    L = np.array([4.0, 3.5, 3.0, 2.6])
    err = 0.8 - 3.0 * np.exp(-0.9 * L)
    rep = fit_report(L, err, form="auto", candidates=["downstream"], holdout_largest=2, predict_at=[2.2])
    assert rep.predictor == "last_value" and rep.fit.form == "downstream"
    assert rep.predictions[0] == pytest.approx(err[-1])
    assert rep.holdout_mask.tolist() == [False, False, True, True]


def test_the_held_out_band_widens_for_a_target_beyond_the_data_in_tokens_seen_too():
    """A target 30x beyond the largest D at a measured N is an extrapolation: its band is wider than an
    interior point's (both used to get the interior band: the stretch looked at N only)."""
    from tasks.scaling.forms import get_form

    rng = np.random.default_rng(0)
    f = get_form("gadre")
    th = f.from_natural({"E": 1.8, "a": 300.0, "b": 900.0, "eta": 0.17})
    N = np.repeat(np.geomspace(1e7, 4e8, 6), 3)
    D = N * np.tile([20, 40, 80], 6)
    y = f.predict(th, N, D) * np.exp(rng.normal(0, 0.01, N.size))
    tg = np.array([[4e8, 20 * 4e8], [4e8, 20 * 4e8 * 30]])
    rep = fit_report(N, y, x2=D, form="gadre", holdout_largest=1, predict_at=tg)
    inner, beyond = np.log(rep.pred_hi / rep.predictions)
    assert beyond > 2 * inner
