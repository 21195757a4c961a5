"""Predictor forms recover known coefficients; validation, extrapolation maps and selection."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.mixture.extrapolate import extrapolate_errors, fit_power_law, log_n_map, log_n_weights, loglinear_weights
from tasks.mixture.predictor import (
    ALL_FORMS, OT_FORMS, _design, choose_form, fit_predictor, metrics, projektor_split, random_splits, validate_forms,
)
from tasks.mixture.select import Objective, default_starts, select_mixture
from tasks.mixture.simplex import simplex_grid


def _synthetic(form: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    P = simplex_grid(3, 0.1)
    ot = 1.0 + 2.0 * P @ np.array([0.2, 0.9, 0.5]) + 0.3 * rng.normal(size=len(P))
    X, names = _design(form, P, ot)
    coef = rng.normal(size=len(names))
    return P, ot, X @ coef, coef


@pytest.mark.parametrize("form", OT_FORMS + ("quadratic_p",))
def test_each_form_recovers_known_coefficients(form):
    P, ot, acc, coef = _synthetic(form)
    fit = fit_predictor(form, P, ot, acc, n=100)
    assert np.allclose(fit.coef, coef, atol=1e-8)
    assert fit.train_rmse < 1e-10
    assert set(fit.as_dict()) == set(fit.coef_names)


def test_projektor_form_has_ten_coefficients_for_three_sources():
    P, ot, acc, coef = _synthetic("projektor")
    assert coef.size == 10


def test_predictor_gradient_matches_finite_differences_through_ot():
    P, ot, acc, _ = _synthetic("projektor", seed=1)
    fit = fit_predictor("projektor", P, ot, acc)
    a, gvec = np.array([1.0, 2.0, -1.0]), np.array([0.5, -0.3, 0.2])
    ot_fn = lambda p: 0.7 + a @ p + 0.5 * (p @ p)  # noqa: E731
    p = np.array([0.3, 0.45, 0.25])
    g = fit.grad(p, ot_fn(p), a + p)
    for d in (np.array([1.0, -1.0, 0.0]), np.array([0.0, 1.0, -1.0])):
        h = 1e-6
        f = lambda q: fit.predict(q[None], np.array([ot_fn(q)]))[0]  # noqa: E731
        assert g @ d == pytest.approx((f(p + h * d) - f(p - h * d)) / (2 * h), rel=1e-6)
    del gvec


def test_ridge_shrinks_but_keeps_the_intercept():
    P, ot, acc, _ = _synthetic("ot_linear")
    plain = fit_predictor("ot_linear", P, ot, acc)
    ridge = fit_predictor("ot_linear", P, ot, acc, ridge=100.0)
    assert np.abs(ridge.coef[1:]).sum() < np.abs(plain.coef[1:]).sum()


def test_validation_prefers_the_true_simple_form_over_projektors_on_the_extrapolation_split():
    rng = np.random.default_rng(3)
    P = simplex_grid(3, 0.1)
    ot = 1.0 + P @ np.array([0.1, 1.2, 0.6]) + 0.2 * rng.normal(size=len(P))
    acc = 0.9 - 0.2 * ot + 0.05 * P[:, 0] + 0.012 * rng.normal(size=len(P))
    splits = {"projektor": [projektor_split(P)], "random": random_splits(len(P), 20, 5, seed=0)}
    rows = validate_forms(P, ot, acc, splits, forms=ALL_FORMS, n=100)
    assert {r.form for r in rows} == set(ALL_FORMS)
    mae = {(r.form, r.split): r.mae for r in rows}
    assert mae[("ot_linear", "projektor")] < mae[("projektor", "projektor")]
    assert mae[("ot_linear", "projektor")] < 0.03
    assert choose_form(rows) in ("ot_linear", "ot")


def test_split_and_metric_definitions():
    P = simplex_grid(3, 0.1)
    m = projektor_split(P)
    assert m.sum() == 45 and np.all(P[~m, 1] >= 0.5)  # 21 mixtures with p2 >= 0.5 held out
    masks = random_splits(66, 21, 3, seed=1)
    assert all((~mm).sum() == 21 for mm in masks)
    mt = metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert mt["mae"] == pytest.approx(1 / 3) and mt["rmse"] == pytest.approx(np.sqrt(1 / 3)) and mt["r2"] == pytest.approx(0.5)


def test_nearest_grid_baseline_predicts_the_closest_training_point():
    P = simplex_grid(3, 0.5)
    acc = np.arange(len(P), dtype=float)
    fit = fit_predictor("nearest_grid", P, None, acc)
    assert fit.predict(np.array([[0.9, 0.1, 0.0]]))[0] == acc[np.argmin(np.abs(P - [0.9, 0.1, 0.0]).sum(1))]


def test_log_n_map_weights_match_the_spec_example():
    w0, w1 = log_n_weights(1000, 1500, 10_000)
    assert w1 == pytest.approx(5.68, abs=0.01) and w0 == pytest.approx(-4.68, abs=0.01)
    # a function linear in log N is mapped exactly
    L = lambda n: 0.5 - 0.05 * np.log(n)  # noqa: E731
    assert log_n_map(1000, L(1000), 1500, L(1500), 10_000) == pytest.approx(L(10_000))


def test_power_law_recovers_exponent_and_extrapolates_10x():
    sizes = np.array([100.0, 200.0, 400.0])
    err = 3.0 * sizes ** -0.4
    fit = fit_power_law(sizes, err, 4000)
    assert fit.prediction == pytest.approx(3.0 * 4000 ** -0.4, rel=1e-4)
    assert fit.c == pytest.approx(0.4, rel=1e-3)
    w = loglinear_weights(sizes, 4000)
    assert np.exp(w @ np.log(err)) == pytest.approx(3.0 * 4000 ** -0.4, rel=1e-9)
    both = extrapolate_errors(sizes, np.stack([err, 2 * err], axis=1), 4000, "power_law")
    assert both[1] == pytest.approx(2 * both[0], rel=1e-4)


def test_selection_finds_the_constrained_maximum_of_a_known_objective():
    # acc_N(p) = a + b * OT(p) with OT(p) = ||p - p*||^2: the maximum is p*, or its projection under caps
    target = np.array([0.2, 0.5, 0.3])
    P = simplex_grid(3, 0.1)
    ot_fn = lambda p: (float(((p - target) ** 2).sum()), 2 * (p - target))  # noqa: E731
    fits = [fit_predictor("ot", P, np.array([ot_fn(p)[0] for p in P]), 0.9 - 0.5 * np.array([ot_fn(p)[0] for p in P]), n=n)
            for n in (100, 200)]
    obj = Objective(fits, n_target=1000, extrapolation="log_n_map")
    starts = default_starts(3)
    res = select_mixture(obj, ot_fn, starts=starts, steps=80)
    assert np.allclose(res.p, target, atol=0.01)
    assert res.path.shape[1] == 3 and np.allclose(res.path.sum(1), 1.0)
    capped = select_mixture(obj, ot_fn, starts=starts, steps=80, available=[1000, 300, 1000])
    assert capped.p[1] <= 0.3 + 1e-9 and np.allclose(capped.p, [0.3, 0.3, 0.4], atol=0.02)
    budget = select_mixture(obj, ot_fn, starts=starts, steps=80, cost=[1.0, 3.0, 1.0], budget=1.6)
    assert np.array([1.0, 3.0, 1.0]) @ budget.p <= 1.6 + 1e-9


def test_scipy_fallback_power_law_matches_the_scaling_module():
    from tasks.mixture.extrapolate import _scipy_m1

    sizes = np.array([100.0, 200.0, 400.0, 800.0])
    err = 2.0 * sizes ** -0.3 * np.array([1.01, 0.99, 1.0, 1.005])
    a = _scipy_m1(sizes, err, 8000)
    b = fit_power_law(sizes, err, 8000)
    assert a.prediction == pytest.approx(b.prediction, rel=0.02)
