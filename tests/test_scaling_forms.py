"""Scaling-law forms: analytic Jacobians match finite differences, and every form recovers its
parameters exactly from noiseless synthetic data through the multi-start fit."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import WinnowError
from tasks.scaling.fit import fit_form
from tasks.scaling.forms import FORMS, forms_for, get_form

# Known parameters (natural units) and the x range of each synthetic curve.
TRUTH: dict[str, dict[str, float]] = {
    "m1": {"B": 8.0, "c": 0.3},
    "m2": {"E": 0.4, "B": 30.0, "c": 0.45},
    "pow4": {"E": 0.3, "B": 12.0, "c": 0.5, "d": 200.0},
    "bnsl": {"a": 0.05, "b": 3.0, "c0": 0.1, "c1": 0.6, "d1": 3000.0, "f1": 0.5},
    "chinchilla": {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366},
    "gadre": {"E": 1.9, "a": 900.0, "b": 3000.0, "eta": 0.17},
    "downstream": {"eps": 0.78, "k": 2.5, "gamma": 0.6},
    # Muennighoff et al. 2023's fitted constants (their Appendix, rounded)
    "data_constrained": {"E": 1.87, "A": 521.0, "B": 1488.0, "alpha": 0.353, "beta": 0.353, "Rstar_D": 15.4, "Rstar_N": 5.3},
    "data_constrained_ot": {"E": 1.9, "a": 900.0, "b": 3000.0, "eta": 0.17, "Rstar_D": 15.4, "Rstar_N": 5.3},
}


def synthetic(name: str, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs spanning the usual range of each form's variables."""
    rng = np.random.default_rng(seed)
    if name.startswith("data_constrained"):
        # N from below to far above the compute-optimal size for U; 1 to 60 epochs of U
        N = np.exp(rng.uniform(np.log(1e7), np.log(3e9), n))
        U = np.exp(rng.uniform(np.log(1e8), np.log(1e10), n))
        return N, np.column_stack([U * np.exp(rng.uniform(0.0, np.log(60.0), n)), U])
    if name in ("chinchilla", "gadre"):
        N = np.exp(rng.uniform(np.log(1e7), np.log(5e9), n))
        D = N * np.exp(rng.uniform(np.log(5.0), np.log(640.0), n))
        return N, D
    if name == "downstream":
        return np.sort(rng.uniform(2.2, 6.0, n)), None
    return np.geomspace(10.0, 1e6, n), None


def test_registry_has_the_issue_forms():
    assert set(FORMS) == {"m1", "m2", "pow4", "bnsl", "chinchilla", "gadre", "downstream", "data_constrained", "data_constrained_ot"}
    assert set(forms_for(2)) == {"chinchilla", "gadre"}
    assert set(forms_for(3)) == {"data_constrained", "data_constrained_ot"}
    for name, truth in TRUTH.items():
        assert get_form(name).names == list(truth), name


def test_unknown_form_is_a_clear_error():
    with pytest.raises(WinnowError, match="unknown scaling-law form 'm9'.*m2"):
        get_form("m9")


@pytest.mark.parametrize("name", sorted(FORMS))
def test_jacobian_matches_finite_differences(name):
    form = get_form(name)
    x, x2 = synthetic(name, n=15, seed=1)
    rng = np.random.default_rng(2)
    theta = form.from_natural(TRUTH[name])[None, :] + rng.normal(0.0, 0.05, (3, form.p))
    ly, jac = form.log_y(theta, x, x2)
    assert np.isfinite(ly).all()
    for j in range(form.p):
        h = 1e-6
        tp, tm = theta.copy(), theta.copy()
        tp[:, j] += h
        tm[:, j] -= h
        fd = (form.log_y(tp, x, x2)[0] - form.log_y(tm, x, x2)[0]) / (2 * h)
        np.testing.assert_allclose(np.broadcast_to(jac[j], ly.shape), fd, rtol=1e-5, atol=1e-7, err_msg=f"{name}:{form.names[j]}")


@pytest.mark.parametrize("name", sorted(FORMS))
def test_exact_recovery_from_noiseless_data(name):
    form = get_form(name)
    x, x2 = synthetic(name)
    truth = TRUTH[name]
    y = form.predict(form.from_natural(truth), x, x2)
    fit = fit_form(form, x, y, x2)
    for k, v in truth.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-4), (name, k, fit.params)
    assert fit.loss < 1e-12


@pytest.mark.parametrize("name", sorted(n for n, f in FORMS.items() if f.lse_terms is not None))
def test_lse_terms_agree_with_log_y(name):
    form = get_form(name)
    x, x2 = synthetic(name, n=15, seed=3)
    rng = np.random.default_rng(4)
    theta = form.from_natural(TRUTH[name])[None, :] + rng.normal(0.0, 0.5, (4, form.p))
    F = form.lse_terms(x, x2)
    assert F.shape == (F.shape[0], x.size, form.p) and F.shape[0] >= 2
    terms = np.einsum("tnp,kp->ktn", F, theta)
    np.testing.assert_allclose(np.logaddexp.reduce(terms, axis=1), form.log_y(theta, x, x2)[0], rtol=1e-12, atol=1e-12)
