"""Batched, stabilised Sinkhorn (tasks.mixture.batch.sinkhorn_batch) against POT's exact and entropic solvers."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from tasks.errors import WinnowError
from tasks.mixture.batch import resolve_device, sinkhorn_batch


def _case(seed: int = 0, n: int = 60, m: int = 40, B: int = 5):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, 3)), rng.normal(size=(m, 3)) + 0.3
    C = ((X[:, None] - Y[None]) ** 2).sum(-1)
    C /= C.mean()
    A = rng.random((B, n))
    A[1, : n // 3] = 0.0  # a row with zero weights
    if B > 2:
        A[2, n // 2 :] = 0.0
    A /= A.sum(1, keepdims=True)
    return C, A


def test_values_within_a_percent_of_emd_and_bracket_it():
    C, A = _case()
    b = np.full(C.shape[1], 1 / C.shape[1])
    r = sinkhorn_batch(C, A, reg=0.005, tol=1e-6, dtype="float64")
    exact = np.array([ot.emd2(a, b, C) for a in A])
    assert r.converged.all()
    assert np.all(np.abs(r.values - exact) / exact < 0.01)
    # the plan's transport cost is an upper bound, the hard c-transform dual a lower bound
    assert np.all(r.values >= exact * (1 - 1e-9)) and np.all(r.lower <= exact * (1 + 1e-9))
    assert np.all(np.abs(r.lower - exact) / exact < 0.01)


def test_potentials_match_pots_log_domain_sinkhorn_and_value_is_the_plans_cost():
    C, A = _case(1, B=3)
    b = np.full(C.shape[1], 1 / C.shape[1])
    reg = 0.1
    r = sinkhorn_batch(C, A, reg=reg, tol=1e-10, dtype="float64", max_iter=50_000)
    for k, a in enumerate(A):
        P = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000)
        assert r.values[k] == pytest.approx((P * C).sum(), rel=1e-6)
        # π = a_i b_j exp((f_i + g_j − C_ij)/ε) reproduces POT's plan
        Pr = a[:, None] * b[None] * np.exp((r.f[k][:, None] + r.g[k][None] - C) / reg)
        assert np.allclose(Pr, P, atol=1e-9)


def test_zero_weight_rows_get_the_soft_c_transform():
    C, A = _case(2, B=2)
    b = np.full(C.shape[1], 1 / C.shape[1])
    reg = 0.1
    r = sinkhorn_batch(C, A, reg=reg, tol=1e-10, dtype="float64", max_iter=50_000)
    zero = A[1] == 0
    assert zero.any() and np.all(np.isfinite(r.f[1]))
    soft = -reg * np.log((b[None] * np.exp((r.g[1][None] - C) / reg)).sum(1))
    assert np.allclose(r.f[1][zero], soft[zero], atol=1e-8)


def test_chunking_does_not_change_the_result():
    C, A = _case(3, B=7)
    full = sinkhorn_batch(C, A, reg=0.02, tol=1e-7, dtype="float64")
    parts = sinkhorn_batch(C, A, reg=0.02, tol=1e-7, dtype="float64", chunk=3)
    assert np.allclose(full.values, parts.values, rtol=1e-5)
    assert np.allclose(full.lower, parts.lower, rtol=1e-5)
    assert parts.converged.all()


def test_float32_agrees_with_float64_at_small_reg():
    C, A = _case(4)
    r32 = sinkhorn_batch(C, A, reg=0.01, tol=1e-5, dtype="float32")
    r64 = sinkhorn_batch(C, A, reg=0.01, tol=1e-5, dtype="float64")
    assert r32.converged.all() and r64.converged.all()
    assert np.allclose(r32.values, r64.values, rtol=1e-3)
    g32 = r32.g - r32.g.mean(1, keepdims=True)
    g64 = r64.g - r64.g.mean(1, keepdims=True)
    assert np.allclose(g32, g64, atol=1e-3)


def test_bad_inputs_name_the_problem():
    C, A = _case()
    with pytest.raises(ValueError, match="sum to 1"):
        sinkhorn_batch(C, A * 2, reg=0.1)
    with pytest.raises(ValueError, match=r"shape \(B, n=60\)"):
        sinkhorn_batch(C, A[:, :10], reg=0.1)
    with pytest.raises(ValueError, match="reg=0"):
        sinkhorn_batch(C, A, reg=0.0)
    with pytest.raises(WinnowError, match="device='tpu'"):
        sinkhorn_batch(C, A, reg=0.1, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(WinnowError, match="no CUDA device"):
        resolve_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    C, A = _case(5)
    cpu = sinkhorn_batch(C, A, reg=0.02, tol=1e-6)
    gpu = sinkhorn_batch(C, A, reg=0.02, tol=1e-6, device="cuda")
    assert np.allclose(cpu.values, gpu.values, rtol=1e-4)
