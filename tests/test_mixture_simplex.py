"""Simplex projections, grids, mixture counts and mixture validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from tasks.errors import WinnowError
from tasks.mixture.simplex import (
    check_mixture, mixture_counts, project_capped_simplex, project_simplex, simplex_grid, snake_order,
)


def test_projection_lands_on_the_simplex_and_is_idempotent():
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.normal(scale=3, size=rng.integers(1, 8))
        x = project_simplex(v)
        assert np.all(x >= 0) and x.sum() == pytest.approx(1.0)
        assert np.allclose(project_simplex(x), x)


def test_projection_is_the_closest_point_variational_inequality():
    # x = P(v) iff <v - x, y - x> <= 0 for all y in the simplex; linear in y, so vertices suffice
    rng = np.random.default_rng(1)
    for _ in range(200):
        k = int(rng.integers(2, 7))
        v = rng.normal(scale=2, size=k)
        x = project_simplex(v)
        assert np.all((np.eye(k) - x) @ (v - x) <= 1e-12)


def test_points_on_the_simplex_are_fixed_and_known_cases():
    assert np.allclose(project_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])
    assert np.allclose(project_simplex(np.array([2.0, 0.0, 0.0])), [1.0, 0.0, 0.0])
    assert np.allclose(project_simplex(np.array([0.5, 0.5, 0.5])), [1 / 3, 1 / 3, 1 / 3])


def _qp(v, upper, cost, budget):
    cons = [{"type": "eq", "fun": lambda x: x.sum() - 1}]
    if budget is not None:
        cons.append({"type": "ineq", "fun": lambda x: budget - cost @ x})
    res = minimize(lambda x: ((x - v) ** 2).sum(), np.full(v.size, 1 / v.size), jac=lambda x: 2 * (x - v),
                   bounds=[(0, u) for u in upper], constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x


def test_capped_budgeted_projection_matches_a_qp_solver():
    rng = np.random.default_rng(2)
    for _ in range(40):
        k = 4
        v = rng.normal(size=k)
        upper = rng.uniform(0.3, 0.9, size=k)
        cost = rng.uniform(0.5, 3.0, size=k)
        rem, cheapest = 1.0, 0.0
        for i in np.argsort(cost):  # cheapest feasible mixture: fill the cheapest sources to their caps
            take = min(upper[i], rem)
            cheapest, rem = cheapest + take * cost[i], rem - take
        budget = float(cheapest + 0.3 * (cost.mean() - cheapest))  # feasible, often binding
        x = project_capped_simplex(v, upper, cost, budget)
        assert x.sum() == pytest.approx(1.0) and np.all(x <= upper + 1e-9) and cost @ x <= budget + 1e-9
        ref = _qp(v, upper, cost, budget)
        assert ((x - v) ** 2).sum() <= ((ref - v) ** 2).sum() + 1e-6
        assert np.allclose(x, ref, atol=1e-4)


def test_capped_projection_without_constraints_is_the_plain_projection():
    v = np.array([0.9, -0.2, 0.6])
    assert np.allclose(project_capped_simplex(v), project_simplex(v))
    assert np.allclose(project_capped_simplex(v, upper=np.ones(3)), project_simplex(v))


def test_infeasible_caps_or_budget_are_clear_errors():
    with pytest.raises(WinnowError, match="sum to 0.6"):
        project_capped_simplex(np.zeros(3), upper=np.array([0.2, 0.2, 0.2]))
    with pytest.raises(WinnowError, match="budget"):
        project_capped_simplex(np.zeros(2), cost=np.array([2.0, 3.0]), budget=1.0)


def test_grid_has_66_points_for_three_sources_and_the_snake_path_steps_between_neighbours():
    g = simplex_grid(3, 0.1)
    assert g.shape == (66, 3) and np.allclose(g.sum(1), 1.0) and (g >= 0).all()
    assert len({tuple(np.round(r, 6)) for r in g}) == 66
    o = snake_order(g)
    assert sorted(o.tolist()) == list(range(66))
    steps = np.abs(np.diff(g[o], axis=0)).max(1)
    assert np.mean(steps <= 0.1 + 1e-9) > 0.95
    assert simplex_grid(4, 0.25).shape[0] == 35
    with pytest.raises(WinnowError, match="step=0.3"):
        simplex_grid(3, 0.3)


@pytest.mark.parametrize("p", [[0.5, 0.6, -0.1], [0.3, 0.3, 0.3], [0.5, np.nan, 0.5], [1.0]])
def test_mixtures_off_the_simplex_are_rejected_with_the_value(p):
    with pytest.raises(ValueError, match="p="):
        check_mixture(np.array(p), k=3)


def test_mixture_counts_round_and_sum_to_n():
    assert mixture_counts(np.array([0.5, 0.3, 0.2]), 10).tolist() == [5, 3, 2]
    rng = np.random.default_rng(3)
    for _ in range(100):
        p = rng.dirichlet(np.ones(4))
        n = int(rng.integers(1, 1000))
        c = mixture_counts(p, n)
        assert c.sum() == n and np.all(np.abs(c - p * n) < 1)
