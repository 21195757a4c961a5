"""Multi-start robust fitting of a scaling-law form: one batched L-BFGS over every start.

Objective (Hoffmann et al. 2022 approach 3, as corrected by Besiroglu et al. 2024): for a form
predicting :math:`\\log \\hat y_i(\\theta)`,

.. math::

    F(\\theta) = \\sum_i w_i \\, \\mathrm{Huber}_\\delta\\big(\\log \\hat y_i(\\theta) - \\log y_i\\big),
    \\qquad \\mathrm{Huber}_\\delta(r) = \\begin{cases} r^2/2 & |r| \\le \\delta \\\\
    \\delta(|r| - \\delta/2) & \\text{otherwise}\\end{cases}

**summed**, not averaged (a mean makes L-BFGS stop early: the flaw Epoch found in the original
Chinchilla fit), with :math:`\\delta = 10^{-3}` by default.

All starts of the initialisation grid are minimised together: :func:`minimize_lbfgs_batched` runs
limited-memory BFGS (two-loop recursion, Nocedal & Wright 2006, Alg. 7.4) on an ``(S, p)`` batch of
parameter vectors with a batched projected backtracking (Armijo) line search; box bounds are kept by
projection and by freezing coordinates that sit on an active bound. One evaluation of the objective
for all ``S`` starts is a few dozen numpy operations on an ``(S, n)`` array; starts that converge,
stall above the best or fall far behind it drop out of the batch, and the best 32 are polished to
tight tolerances. 4,500 starts on 240 points take ~1.3 s of CPU on a (loaded) 2-core machine,
~9x less than a Python loop of scipy L-BFGS-B calls over the same starts (bench/bench_scaling.py).

The spread of the near-best solutions (loss within ``rtol`` of the best) is reported; a large
spread means the data do not pin down the form, and :class:`MultiStartFit` carries a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tasks.errors import WinnowError
from tasks.scaling.forms import Form

Array = np.ndarray
_BLOCK_ELEMENTS = 1 << 16
BatchFn = Callable[[Array, Array], tuple[Array, Array]]

STATUS = {
    0: "running",
    1: "gradient small",
    2: "no more decrease",
    3: "line search failed",
    4: "iteration limit",
    5: "invalid start",
    6: "stalled above the best",
    7: "dropped: far above the best",
}

# Successive racing of the starts: after `iteration` iterations, a start whose loss is above
# `factor` x the best loss of the batch so far is dropped (status 7). A more aggressive schedule
# (10x at 10 iterations ... 1.3x at 40) lost the optimum of the Gadre 5-run RedPajama fit, whose
# best basin starts slowly; this one matched the exhaustive run on every problem in
# bench/bench_scaling.py (which reports both) with ~1/3 of the work, together with the stall rule.
DEFAULT_RACE: tuple[tuple[int, float], ...] = ((20, 10.0), (50, 3.0), (100, 1.5))


@dataclass(frozen=True)
class BatchResult:
    """Result of :func:`minimize_lbfgs_batched` for ``S`` starts."""

    theta: Array  # (S, p)
    f: Array  # (S,)  inf for starts that never had a finite objective
    n_iter: Array  # (S,) int
    status: Array  # (S,) int, see STATUS
    n_evals: int  # batched objective calls


def _two_loop(g: Array, sh: Array, yh: Array, rho: Array) -> Array:
    """``H g`` for each row, L-BFGS two-loop recursion; empty history slots have ``rho == 0``."""
    q = g.copy()
    m = sh.shape[1]
    alpha = np.zeros((g.shape[0], m))
    for i in range(m - 1, -1, -1):
        a = rho[:, i] * np.einsum("kp,kp->k", sh[:, i], q)
        alpha[:, i] = a
        q -= a[:, None] * yh[:, i]
    last_s, last_y = sh[:, -1], yh[:, -1]
    yy = np.einsum("kp,kp->k", last_y, last_y)
    sy = np.einsum("kp,kp->k", last_s, last_y)
    gamma = np.where((rho[:, -1] > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for i in range(m):
        b = rho[:, i] * np.einsum("kp,kp->k", yh[:, i], r)
        r += sh[:, i] * (alpha[:, i] - b)[:, None]
    return r


def minimize_lbfgs_batched(
    fun: BatchFn,
    theta0: Array,
    lower: Array,
    upper: Array,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    gtol: float = 1e-11,
    ftol: float = 1e-13,
    max_ls: int = 30,
    c1: float = 1e-4,
    stall_window: int = 10,
    stall_rtol: float = 1e-6,
    stall_margin: float = 0.01,
    stall_horizon: float = 3.0,
    compete: bool = True,
    race: tuple[tuple[int, float], ...] | None = None,
) -> BatchResult:
    """Minimise ``S`` independent bounded problems at once with projected L-BFGS.

    Parameters
    ----------
    fun : callable ``(theta (k, p), rows (k,)) -> (f (k,), grad (k, p))``
        Batched objective; ``rows`` are the indices of the given rows in the full batch (so that a
        problem may use per-row data such as bootstrap weights). Non-finite ``f`` = infeasible.
    theta0 : (S, p) array, starting points (projected into the bounds).
    lower, upper : (p,) arrays, box bounds (may be infinite).
    memory : number of correction pairs kept per start.
    gtol : stop a start when the projected gradient's max-norm is below this.
    ftol : stop a start when an accepted step lowers ``f`` by less than ``ftol * |f|``.
    stall_window, stall_rtol, stall_margin, stall_horizon : stop a start that is more than
        ``stall_margin`` (relative) above the best ``f`` of the batch and, over the last
        ``stall_window`` iterations, fell by less than ``stall_rtol * f`` or by less than
        ``1/stall_horizon`` of its remaining gap to the best (at that rate it would need more than
        ``stall_horizon`` further windows to catch up). Starts creeping along a degenerate plateau
        (a term switched off, an exponent at 0) cannot become the answer; without this rule they
        run to ``max_iter``.
    compete : the rows are starts of ONE problem, so comparing their ``f`` is meaningful (stall and
        race rules). Pass ``False`` for a batch of different problems (bootstrap replicates).
    race : ``((iteration, factor), ...)``: after ``iteration`` iterations drop the starts whose loss
        is above ``factor`` times the best loss so far (status 7). ``None`` runs every start to the end.
    """
    race_at = dict(race or ()) if compete else {}
    theta = np.clip(np.asarray(theta0, dtype=np.float64), lower, upper).copy()
    S, p = theta.shape
    f, g = fun(theta, np.arange(S))
    n_evals = 1
    status = np.where(np.isfinite(f), 0, 5)
    f = np.where(np.isfinite(f), f, np.inf)
    sh = np.zeros((S, memory, p))
    yh = np.zeros((S, memory, p))
    rho = np.zeros((S, memory))
    n_iter = np.zeros(S, dtype=np.int64)
    f_ring = np.full((S, stall_window), np.inf)
    for it in range(max_iter):
        act = np.flatnonzero(status == 0)
        if act.size == 0:
            break
        th_a, f_a, g_a = theta[act], f[act], g[act]
        sh_a, yh_a, rho_a = sh[act], yh[act], rho[act]
        fixed = ((th_a <= lower) & (g_a > 0)) | ((th_a >= upper) & (g_a < 0))
        d = -_two_loop(g_a, sh_a, yh_a, rho_a)
        d[fixed] = 0.0
        gd = np.einsum("kp,kp->k", g_a, d)
        bad = ~(gd < 0)
        if bad.any():  # not a descent direction: restart from projected steepest descent
            d[bad] = -np.where(fixed[bad], 0.0, g_a[bad])
            rho_a[bad] = 0.0
            sh_a[bad] = 0.0
            yh_a[bad] = 0.0
            gd[bad] = np.einsum("kp,kp->k", g_a[bad], d[bad])
        has_hist = rho_a.any(axis=1)
        dmax = np.abs(d).max(axis=1)
        t = np.where(has_hist, 1.0, np.minimum(1.0, 1.0 / np.maximum(dmax, 1e-300)))
        k = act.size
        accepted = np.zeros(k, dtype=bool)
        th_new, f_new, g_new = th_a.copy(), f_a.copy(), g_a.copy()
        pending = np.flatnonzero(dmax > 0)
        for _ls in range(max_ls):
            if pending.size == 0:
                break
            cand = np.clip(th_a[pending] + t[pending, None] * d[pending], lower, upper)
            fc, gc = fun(cand, act[pending])
            n_evals += 1
            step = cand - th_a[pending]
            ok = np.isfinite(fc) & (fc <= f_a[pending] + c1 * np.einsum("kp,kp->k", g_a[pending], step))
            idx = pending[ok]
            th_new[idx], f_new[idx], g_new[idx] = cand[ok], fc[ok], gc[ok]
            accepted[idx] = True
            fail = pending[~ok]
            if fail.size:
                tf, fcf, gdf = t[fail], fc[~ok], gd[fail]
                with np.errstate(all="ignore"):
                    tq = -gdf * tf**2 / (2.0 * (fcf - f_a[fail] - gdf * tf))
                tq = np.where(np.isfinite(tq), tq, 0.1 * tf)
                t[fail] = np.clip(tq, 0.1 * tf, 0.5 * tf)
            pending = fail
        s = th_new - th_a
        y = g_new - g_a
        sy = np.einsum("kp,kp->k", s, y)
        ss = np.einsum("kp,kp->k", s, s)
        yy = np.einsum("kp,kp->k", y, y)
        upd = accepted & (sy > 1e-10 * np.sqrt(ss * yy))
        if upd.any():
            sh_a[upd] = np.roll(sh_a[upd], -1, axis=1)
            yh_a[upd] = np.roll(yh_a[upd], -1, axis=1)
            rho_a[upd] = np.roll(rho_a[upd], -1, axis=1)
            sh_a[upd, -1] = s[upd]
            yh_a[upd, -1] = y[upd]
            rho_a[upd, -1] = 1.0 / sy[upd]
        pg = np.abs(np.clip(th_new - g_new, lower, upper) - th_new).max(axis=1)
        st = np.zeros(k, dtype=np.int64)
        st[~accepted] = 3
        small_dec = accepted & ((f_a - f_new) <= ftol * np.maximum(np.abs(f_a), 1e-300))
        st[small_dec] = 2
        st[pg <= gtol] = 1
        slot = it % stall_window
        f_then = f_ring[act, slot]
        f_ring[act, slot] = f_new
        fbest = min(float(f.min()), float(f_new.min()))
        gap = f_new - fbest * (1.0 + stall_margin)
        progress = f_then - f_new
        stalled = compete & (st == 0) & (gap > 0) & ((progress <= stall_rtol * f_new) | (gap > stall_horizon * progress))
        st[stalled] = 6
        theta[act], f[act], g[act] = th_new, f_new, g_new
        sh[act], yh[act], rho[act] = sh_a, yh_a, rho_a
        n_iter[act] += 1
        status[act] = st
        if it + 1 in race_at:
            fb = float(np.min(f))
            status[(status == 0) & (f > race_at[it + 1] * fb + 1e-300)] = 7
    status[status == 0] = 4
    return BatchResult(theta=theta, f=f, n_iter=n_iter, status=status, n_evals=n_evals)


def huber_objective(
    form: Form,
    x: Array,
    y: Array,
    x2: Array | None = None,
    *,
    weights: Array | None = None,
    delta: float = 1e-3,
) -> BatchFn:
    """The summed Huber loss on log residuals as a batched ``(theta, rows) -> (f, grad)`` function.

    ``weights`` is ``(n,)`` (shared) or ``(B, n)`` (one row per problem, e.g. bootstrap counts).
    """
    logy = np.log(np.asarray(y, dtype=np.float64))[None, :]
    x = np.asarray(x, dtype=np.float64)
    x2 = None if x2 is None else np.asarray(x2, dtype=np.float64)
    w_all = None if weights is None else np.asarray(weights, dtype=np.float64)

    # Rows are evaluated in blocks of ~64k elements: temporaries then stay in cache and are reused by
    # the allocator; one (4500, 240) pass at once is ~3x slower (page faults on fresh 8 MB arrays).
    block = max(1, _BLOCK_ELEMENTS // max(1, logy.shape[1]))

    def part(theta: Array, rows: Array) -> tuple[Array, Array]:
        ly, jac = form.log_y(theta, x, x2)
        r = ly - logy
        psi = np.clip(r, -delta, delta)  # Huber'(r)
        half = r - 0.5 * psi  # Huber(r) = psi * (r - psi / 2) in both regimes
        if w_all is not None:
            w = w_all if w_all.ndim == 1 else w_all[rows]
            psi = psi * w
        fval = np.einsum("kn,kn->k", psi, half)
        grad = np.stack([np.einsum("kn,kn->k", psi, np.broadcast_to(jc, psi.shape)) for jc in jac], axis=1)
        return fval, grad

    def fun(theta: Array, rows: Array) -> tuple[Array, Array]:
        k = theta.shape[0]
        fval = np.empty(k)
        grad = np.empty((k, theta.shape[1]))
        with np.errstate(all="ignore"):
            for i in range(0, k, block):
                fval[i : i + block], grad[i : i + block] = part(theta[i : i + block], rows[i : i + block])
        ok = np.isfinite(fval) & np.isfinite(grad).all(axis=1)
        fval[~ok] = np.inf
        grad[~ok] = 0.0
        return fval, grad

    return fun


@dataclass(frozen=True)
class MultiStartFit:
    """Best of a multi-start fit, with the spread of the near-best solutions.

    ``theta`` are fit coordinates (log for positive constants); ``params`` natural values.
    ``spread[name]`` is the range of that parameter's fit coordinate over the near-best starts.
    """

    form: str
    theta: Array
    params: dict[str, float]
    loss: float
    n_starts: int
    n_valid: int
    n_near_best: int
    spread: dict[str, float]
    stable: bool
    warning: str | None
    seconds: float
    n_evals: int
    status_counts: dict[str, int] = field(default_factory=dict)


def check_xy(form: Form, x: Array, y: Array, x2: Array | None, weights: Array | None = None) -> tuple[Array, Array, Array | None]:
    """Validate fit inputs; one :class:`WinnowError` naming the problem."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise WinnowError(f"x has {x.size} values but y has {y.size}; they must align")
    if form.n_vars == 2 and x2 is None:
        raise WinnowError(f"form {form.name!r} takes two variables ({', '.join(form.x_names)}); pass x2 (--x2)")
    if form.n_vars == 1 and x2 is not None:
        raise WinnowError(f"form {form.name!r} takes one variable; x2 was given (choose a two-variable form: chinchilla, gadre)")
    if x2 is not None:
        x2 = np.asarray(x2, dtype=np.float64).ravel()
        if x2.shape != x.shape:
            raise WinnowError(f"x2 has {x2.size} values but x has {x.size}; they must align")
    for name, v in (("x", x), ("x2", x2), ("y", y)):
        if v is None:
            continue
        bad = ~np.isfinite(v)
        if bad.any():
            raise WinnowError(f"{name} has {int(bad.sum())} non-finite value(s) (first at index {int(np.argmax(bad))}); drop or fix them")
        if name != "x" or form.name != "downstream":
            nonpos = v <= 0
            if nonpos.any():
                i = int(np.argmax(nonpos))
                raise WinnowError(f"{name} must be > 0 for a power law in log space; index {i} has {name}={float(v[i])!r}")
    n_eff = x.size if weights is None else int(np.count_nonzero(np.asarray(weights) > 0))
    if n_eff < form.p:
        raise WinnowError(
            f"form {form.name!r} has {form.p} parameters ({', '.join(form.names)}) but only {n_eff} data point(s); "
            f"add points or choose a form with fewer parameters"
        )
    return x, y, x2


def fit_form(
    form: Form,
    x: Array,
    y: Array,
    x2: Array | None = None,
    *,
    weights: Array | None = None,
    delta: float = 1e-3,
    starts: Array | None = None,
    rtol: float = 1e-3,
    spread_tol: float = 0.05,
    max_iter: int = 1000,
    race: tuple[tuple[int, float], ...] | None = DEFAULT_RACE,
    stall_horizon: float = 3.0,
    ftol: float = 1e-9,
    gtol: float = 1e-8,
    polish: int = 32,
) -> MultiStartFit:
    """Fit ``form`` from every start of its grid (or ``starts``) in one batch and keep the best.

    Parameters
    ----------
    form : the :class:`~tasks.scaling.forms.Form` to fit.
    x, y : (n,) arrays; ``y > 0`` (fit in error/loss space). ``x2`` (n,) for two-variable forms.
    weights : optional (n,) non-negative point weights (e.g. bootstrap counts).
    delta : Huber threshold on log residuals.
    starts : (S, p) fit-coordinate starts; default ``form.grid(x, x2, y)``.
    rtol : solutions with loss <= best * (1 + rtol) count as "near-best" for the spread.
    spread_tol : flag the fit unstable when a near-best parameter's fit coordinate varies by more.
    race : racing schedule for dropping clearly worse starts early (``None``: no racing).
    stall_horizon : see :func:`minimize_lbfgs_batched` (``inf`` with ``race=None`` runs every
        start to convergence).
    ftol, gtol : tolerances of the first pass over all starts (scipy's L-BFGS-B defaults are looser:
        ftol ~2e-9 absolute). The ``polish`` best starts are then refined to ftol=1e-13,
        gtol=1e-11, and the near-best spread is measured on them.
    """
    if not delta > 0:
        raise WinnowError(f"huber_delta={delta!r} must be > 0")
    x, y, x2 = check_xy(form, x, y, x2, weights)
    t0 = time.perf_counter()
    th0 = form.grid(x, x2, y) if starts is None else np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if th0.shape[1] != form.p:
        raise WinnowError(f"starts have {th0.shape[1]} columns; form {form.name!r} has {form.p} parameters")
    fun = huber_objective(form, x, y, x2, weights=weights, delta=delta)
    res = minimize_lbfgs_batched(
        fun, th0, form.lower, form.upper, max_iter=max_iter, race=race, stall_horizon=stall_horizon, ftol=ftol, gtol=gtol
    )
    f_all, theta_all = res.f.copy(), res.theta.copy()
    top = np.argsort(f_all)[: max(1, polish)]
    top = top[np.isfinite(f_all[top])]
    if top.size:
        pol = minimize_lbfgs_batched(fun, theta_all[top], form.lower, form.upper, max_iter=max_iter, compete=False)
        better = pol.f <= f_all[top]
        f_all[top[better]] = pol.f[better]
        theta_all[top[better]] = pol.theta[better]
    polished = np.zeros(f_all.size, dtype=bool)
    polished[top] = True
    seconds = time.perf_counter() - t0
    valid = np.isfinite(f_all)
    if not valid.any():
        raise WinnowError(f"form {form.name!r}: no start gave a finite loss on these data (is y in its domain?)")
    best = int(np.argmin(np.where(valid, f_all, np.inf)))
    fbest = float(f_all[best])
    near = polished & valid & (f_all <= fbest * (1.0 + rtol) + 1e-300)
    th_near = theta_all[near]
    spread_arr = th_near.max(axis=0) - th_near.min(axis=0)
    spread = {n: float(v) for n, v in zip(form.names, spread_arr)}
    wide = [n for n, v in spread.items() if v > spread_tol]
    warning = None
    if wide:
        desc = ", ".join(f"{n} (log)" if q.log else n for n, q in zip(form.names, form.params) if n in wide)
        warning = (
            f"unstable fit: {int(near.sum())} solutions within {rtol:.0e} of the best loss disagree on {desc} "
            f"by up to {max(spread_arr):.2g} in fit coordinates; the data do not pin down form {form.name!r}"
        )
    counts: dict[str, int] = {}
    for code, name in STATUS.items():
        c = int(np.sum(res.status == code))
        if c:
            counts[name] = c
    theta = theta_all[best]
    return MultiStartFit(
        form=form.name,
        theta=theta,
        params={n: float(v) for n, v in zip(form.names, form.to_natural(theta))},
        loss=fbest,
        n_starts=int(th0.shape[0]),
        n_valid=int(valid.sum()),
        n_near_best=int(near.sum()),
        spread=spread,
        stable=not wide,
        warning=warning,
        seconds=seconds,
        n_evals=res.n_evals,
        status_counts=counts,
    )
