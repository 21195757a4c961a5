"""Bootstrap intervals for scaling-law fits, resampling whole runs.

Checkpoints of one training run share its seed, data order and schedule, so their errors are
correlated; resampling individual points would understate the uncertainty. Each replicate draws
``G`` runs (groups) with replacement from the ``G`` observed ones; a point's weight is the number of
times its run was drawn. All replicates are refitted together as one batched problem (one row of
weights per replicate) from the point estimate, and percentile intervals are read off the
replicates (Efron & Tibshirani 1993, ch. 13). They are approximate: with few runs the percentile
bootstrap under-covers, and it does not see error in the form itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.scaling.fit import huber_objective, minimize_lbfgs_batched, with_prior
from tasks.scaling.forms import Form

Array = np.ndarray


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap replicates and percentile intervals.

    ``theta`` (B, p) fit coordinates of each replicate (NaN rows where the refit failed);
    ``param_ci`` maps parameter name to ``(lo, hi)`` in natural units; ``predictions`` (B, k) and
    ``pred_lo``/``pred_hi`` (k,) are aligned with the requested prediction points.
    """

    theta: Array
    param_ci: dict[str, tuple[float, float]]
    predictions: Array
    pred_lo: Array
    pred_hi: Array
    level: float
    n_boot: int
    n_failed: int
    n_groups: int


def group_index(groups: Array | None, n: int) -> tuple[Array, int]:
    """Integer run index per point ``(n,)`` and the number of runs (each point its own run if None)."""
    if groups is None:
        return np.arange(n), n
    groups = np.asarray(groups)
    if groups.shape[0] != n:
        raise ValueError(f"groups has {groups.shape[0]} values but there are {n} points")
    _, inv = np.unique(groups, return_inverse=True)
    return inv.ravel(), int(inv.max()) + 1


def resample_weights(groups: Array | None, n: int, n_boot: int, rng: np.random.Generator) -> Array:
    """``(n_boot, n)`` point weights: how often each point's run was drawn in each replicate."""
    gi, g = group_index(groups, n)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot)  # (B, G) draws with replacement
    return counts[:, gi].astype(np.float64)


def percentile_interval(samples: Array, level: float) -> tuple[Array, Array]:
    """Column-wise equal-tailed percentile interval of ``samples`` (B, k), ignoring NaN rows."""
    a = 100.0 * (1.0 - level) / 2.0
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(samples, [a, 100.0 - a], axis=0)
    return lo, hi


def bootstrap_fit(
    form: Form,
    x: Array,
    y: Array,
    theta_hat: Array,
    *,
    x2: Array | None = None,
    groups: Array | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    delta: float = 1e-3,
    level: float = 0.95,
    predict_x: Array | None = None,
    predict_x2: Array | None = None,
    max_iter: int = 500,
    prior: dict[str, tuple[float, float]] | None = None,
) -> BootstrapResult:
    """Refit ``form`` on ``n_boot`` run-level resamples, starting each from ``theta_hat``.

    Parameters
    ----------
    x, y, x2 : (n,) data, as given to :func:`~tasks.scaling.fit.fit_form`.
    theta_hat : (p,) fit coordinates of the point estimate.
    groups : (n,) run label of each point (None: every point is its own run).
    n_boot : number of replicates (>= 1; 1,000 or more for reported intervals).
    seed : seed or Generator for the resampling.
    level : central coverage of the percentile intervals, in (0, 1).
    predict_x, predict_x2 : (k,) points at which to collect predictions.
    prior : the Gaussian exponent prior the point estimate was fitted with (short curves), so every
        replicate estimates the same penalised quantity (without it the replicates drift along the
        direction the data do not pin down).
    """
    if n_boot < 1:
        raise WinnowError(f"bootstrap={n_boot} must be >= 1")
    if not 0.0 < level < 1.0:
        raise WinnowError(f"level={level} must be in (0, 1)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = resample_weights(groups, x.size, n_boot, rng)
    n_groups = group_index(groups, x.size)[1]
    fun = huber_objective(form, x, y, x2, weights=w, delta=delta)
    if prior:
        fun = with_prior(fun, form, prior)
    th0 = np.repeat(np.asarray(theta_hat, dtype=np.float64)[None, :], n_boot, axis=0)
    res = minimize_lbfgs_batched(fun, th0, form.lower, form.upper, max_iter=max_iter, compete=False)
    theta = res.theta.copy()
    failed = ~np.isfinite(res.f)
    theta[failed] = np.nan
    nat = form.to_natural(theta)
    lo, hi = percentile_interval(nat, level)
    param_ci = {n: (float(a), float(b)) for n, a, b in zip(form.names, lo, hi)}
    if predict_x is not None and np.size(predict_x):
        preds = form.predict(theta, np.asarray(predict_x, dtype=np.float64), predict_x2)
        preds[failed] = np.nan
        plo, phi = percentile_interval(preds, level)
    else:
        preds = np.empty((n_boot, 0))
        plo = phi = np.empty(0)
    return BootstrapResult(
        theta=theta,
        param_ci=param_ci,
        predictions=preds,
        pred_lo=np.asarray(plo, dtype=np.float64),
        pred_hi=np.asarray(phi, dtype=np.float64),
        level=level,
        n_boot=n_boot,
        n_failed=int(failed.sum()),
        n_groups=n_groups,
    )
