"""The exact gradient of OT(p) from the dual potentials, against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.mixture.weighted import WeightedOT, build_union_problem, weighted_sweep
from tasks.mixture.simplex import simplex_grid


def _problem(debiased: bool = False):
    rng = np.random.default_rng(0)

    def sample(n, classes, shift):
        y = rng.choice(classes, size=n)
        return rng.normal(size=(n, 4)) + shift + 0.6 * y[:, None], y

    sources = [sample(30, [0, 1, 2], 0.0), sample(40, [0, 1], 1.0), sample(25, [1, 2], -1.0)]
    return build_union_problem(sources, sample(35, [0, 1, 2], 0.3), debiased=debiased)


def _directional_fd(prob, solver, p, d, h, **kw):
    eng = WeightedOT(prob, solver=solver, warm_start=False, **kw)
    return (eng(p + h * d).value - eng(p - h * d).value) / (2 * h)


DIRECTIONS = [np.array([1.0, -1.0, 0.0]), np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.0, -1.0])]


@pytest.mark.parametrize("solver", ["sinkhorn", "sinkhorn_debiased"])
def test_entropic_gradient_matches_finite_differences(solver):
    prob = _problem(debiased=solver == "sinkhorn_debiased")
    kw = dict(reg=0.1, dtype="float64", tol=1e-12, max_iter=100_000)
    p = np.array([0.3, 0.5, 0.2])
    r = WeightedOT(prob, solver=solver, **kw)(p)
    for d in DIRECTIONS:
        fd = _directional_fd(prob, solver, p, d, 1e-5, **kw)
        assert r.grad @ d == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_exact_gradient_matches_finite_differences_to_a_tenth_of_a_percent():
    prob = _problem()
    p = np.array([0.3, 0.5, 0.2])
    r = WeightedOT(prob, solver="exact")(p)
    for d in DIRECTIONS:
        fd = _directional_fd(prob, "exact", p, d, 1e-4)
        assert r.grad @ d == pytest.approx(fd, rel=2e-3)


@pytest.mark.parametrize("warm", [False, True])
def test_exact_gradient_towards_an_empty_source_is_the_one_sided_derivative(warm):
    """At an edge (one source at weight 0) or a vertex, the gradient's component along a direction into
    the simplex equals the one-sided finite difference: the zero-weight rows carry the c-transform of
    the target potential (POT leaves them out; with a warm start their potentials were far off, by up to
    ~1900, and without one the sign could be wrong: -1.28 against +0.44). The agreement is to a few
    hundredths (the derivatives here are 0.04-0.6), not exact: on the boundary the optimal dual is not
    unique (at a vertex, one source's rows against the whole target), the one-sided derivative is the
    maximum over the optimal duals, and ot.emd returns one of them."""
    prob = _problem()
    eng = WeightedOT(prob, solver="exact", warm_start=warm)
    if warm:
        eng(np.array([0.2, 0.3, 0.5]))  # a previous interior solve to start from
    h = 1e-4
    for p, d in [(np.array([0.5, 0.5, 0.0]), np.array([-1.0, 0.0, 1.0])),
                 (np.array([0.5, 0.5, 0.0]), np.array([0.0, -1.0, 1.0])),
                 (np.array([1.0, 0.0, 0.0]), np.array([-1.0, 1.0, 0.0])),
                 (np.array([1.0, 0.0, 0.0]), np.array([-1.0, 0.0, 1.0]))]:
        cold = WeightedOT(prob, solver="exact", warm_start=False)
        fd = (cold(p + h * d).value - cold(p).value) / h
        assert eng(p).grad @ d == pytest.approx(fd, abs=0.05), (p, d)


def test_gradient_is_the_per_source_mean_of_the_potential():
    prob = _problem()
    f = np.arange(prob.source_of.size, dtype=float)
    g = prob.source_means(f)
    for i in range(3):
        assert g[i] == pytest.approx(f[prob.source_of == i].mean())


def test_zero_weight_source_still_gets_a_finite_gradient():
    prob = _problem()
    r = WeightedOT(prob, solver="sinkhorn", reg=0.1, dtype="float64", tol=1e-12, max_iter=100_000)(np.array([0.0, 0.6, 0.4]))
    assert np.all(np.isfinite(r.grad))
    # moving mass into the empty source: one-sided finite difference agrees
    eng = WeightedOT(prob, solver="sinkhorn", reg=0.1, dtype="float64", tol=1e-12, max_iter=100_000, warm_start=False)
    d = np.array([1.0, -1.0, 0.0])
    h = 1e-6
    fd = (eng(np.array([h, 0.6 - h, 0.4])).value - eng(np.array([0.0, 0.6, 0.4])).value) / h
    assert r.grad @ d == pytest.approx(fd, rel=1e-3)


def test_warm_started_sweep_equals_cold_solves_and_saves_iterations():
    prob = _problem()
    grid = simplex_grid(3, 0.2)
    kw = dict(solver="sinkhorn", reg=0.1, tol=1e-7, dtype="float64", batched=False)
    warm = weighted_sweep(prob, grid, warm_start=True, **kw)
    cold = weighted_sweep(prob, grid, warm_start=False, **kw)
    assert np.allclose(warm.values, cold.values, rtol=1e-5)
    assert np.allclose(warm.grads - warm.grads.mean(1, keepdims=True), cold.grads - cold.grads.mean(1, keepdims=True), atol=1e-4)
    assert warm.n_iter.sum() < cold.n_iter.sum()


def test_batched_sweep_values_are_within_a_percent_of_exact_and_grads_match_the_per_mixture_solver():
    prob = _problem()
    grid = simplex_grid(3, 0.2)
    ex = weighted_sweep(prob, grid, solver="exact")
    bat = weighted_sweep(prob, grid, solver="sinkhorn", reg=0.02, tol=1e-6)
    assert bat.mode == "batched-float32"
    assert np.all(bat.values <= ex.values * (1 + 1e-6))  # a dual bound: never above the exact value
    assert np.max(np.abs(bat.values - ex.values) / ex.values) < 0.01
    one = weighted_sweep(prob, grid, solver="sinkhorn", reg=0.02, tol=1e-6, dtype="float64", batched=False)
    centred = lambda G: G - G.mean(1, keepdims=True)  # noqa: E731 - gradients are defined up to a constant
    assert np.allclose(centred(bat.grads), centred(one.grads), atol=2e-3)


def test_single_mixture_engine_in_batched_mode_reports_the_sweeps_values():
    prob = _problem()
    grid = simplex_grid(3, 0.5)
    sweep = weighted_sweep(prob, grid, solver="sinkhorn", reg=0.02, tol=1e-6)
    eng = WeightedOT(prob, solver="sinkhorn", reg=0.02, tol=1e-6, batched=True)
    assert eng.mode == "batched-float32"
    one = np.array([eng(p).value for p in grid])
    assert np.allclose(one, sweep.values, rtol=1e-4)
