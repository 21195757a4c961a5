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
for all ``S`` starts is a few dozen numpy operations on an ``(S, n)`` array (for forms that declare
:attr:`~tasks.scaling.forms.Form.lse_terms`, e.g. Chinchilla, a fused value-and-gradient pass:
:func:`_fused_lse_huber`); starts that converge, stall above the best or fall far behind it drop out
of the batch, and the best 32 are polished to tight tolerances. 4,500 starts on 240 points take
~1.3 s of CPU on the shared 2-core machine, ~9x less than a Python loop of scipy L-BFGS-B calls over
the same starts (docs/scaling.md "Speed"; bench/bench_scaling.py, ``python -m bench --only scaling_fit``).

The spread of the near-best solutions (loss within ``rtol`` of the best) is reported; a large
spread means the data do not pin down the form, and :class:`MultiStartFit` carries a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tasks.errors import WinnowError
from tasks.scaling.forms import FORMS, Form

Array = np.ndarray
_BLOCK_ELEMENTS = 1 << 16
_FUSED_BLOCK_ELEMENTS = 1 << 15
BatchFn = Callable[[Array, Array], tuple[Array, Array]]

_WORDS = {1: "one", 2: "two", 3: "three"}
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
    """``H g`` for each row, L-BFGS two-loop recursion; empty history slots have ``rho == 0``.

    The history is slot-major: ``sh``, ``yh`` are ``(m, k, p)`` and ``rho`` is ``(m, k)``, oldest
    slot first, so that each slot is one contiguous ``(k, p)`` block. Slots that are empty in every
    row contribute exactly nothing and are skipped (the first ``m`` iterations of a batch).
    """
    q = g.copy()
    m = sh.shape[0]
    used = np.flatnonzero(rho.any(axis=1))
    alpha = np.zeros((m, g.shape[0]))
    for i in used[::-1]:
        a = rho[i] * np.einsum("kp,kp->k", sh[i], q)
        alpha[i] = a
        q -= a[:, None] * yh[i]
    last_s, last_y = sh[-1], yh[-1]
    yy = np.einsum("kp,kp->k", last_y, last_y)
    sy = np.einsum("kp,kp->k", last_s, last_y)
    gamma = np.where((rho[-1] > 0) & (yy > 0), sy / np.where(yy > 0, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for i in used:
        b = rho[i] * np.einsum("kp,kp->k", yh[i], r)
        r += sh[i] * (alpha[i] - b)[:, None]
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
    n_iter = np.zeros(S, dtype=np.int64)
    # State of the running starts is kept compact (rows act of the batch) and shrunk only when starts
    # leave; finished rows are written back to theta / f / status / n_iter. f_done: best finished f.
    act = np.flatnonzero(status == 0)
    th_a, f_a, g_a = theta[act], f[act], g[act]
    sh_a = np.zeros((memory, act.size, p))  # correction pairs, slot-major (see _two_loop)
    yh_a = np.zeros((memory, act.size, p))
    rho_a = np.zeros((memory, act.size))
    it_a = np.zeros(act.size, dtype=np.int64)
    ring_a = np.full((act.size, stall_window), np.inf)
    f_done = float(f[status != 0].min()) if act.size < S else np.inf
    del g
    for it in range(max_iter):
        if act.size == 0:
            break
        fixed = ((th_a <= lower) & (g_a > 0)) | ((th_a >= upper) & (g_a < 0))
        d = -_two_loop(g_a, sh_a, yh_a, rho_a)
        d[fixed] = 0.0
        gd = np.einsum("kp,kp->k", g_a, d)
        bad = ~(gd < 0)
        if bad.any():  # not a descent direction: restart from projected steepest descent
            d[bad] = -np.where(fixed[bad], 0.0, g_a[bad])
            rho_a[:, bad] = 0.0
            sh_a[:, bad] = 0.0
            yh_a[:, bad] = 0.0
            gd[bad] = np.einsum("kp,kp->k", g_a[bad], d[bad])
        has_hist = rho_a.any(axis=0)
        dmax = np.abs(d).max(axis=1)
        t = np.where(has_hist, 1.0, np.minimum(1.0, 1.0 / np.maximum(dmax, 1e-300)))
        k = act.size
        accepted = np.zeros(k, dtype=bool)
        th_new, f_new, g_new = th_a.copy(), f_a.copy(), g_a.copy()
        pending = np.flatnonzero(dmax > 0)
        for _ls in range(max_ls):
            if pending.size == 0:
                break
            every = pending.size == k
            th_p = th_a if every else th_a[pending]
            cand = np.clip(th_p + t[pending, None] * d[pending], lower, upper)
            fc, gc = fun(cand, act[pending])
            n_evals += 1
            step = cand - th_p
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
        if upd.any():  # drop the oldest correction pair, append (s, y): a shift in place
            u = slice(None) if upd.all() else np.flatnonzero(upd)
            for hist, new in ((sh_a, s), (yh_a, y), (rho_a, None)):
                hist[:-1, u] = hist[1:, u]
                hist[-1, u] = 1.0 / sy[u] if new is None else new[u]
        pg = np.abs(np.clip(th_new - g_new, lower, upper) - th_new).max(axis=1)
        st = np.zeros(k, dtype=np.int64)
        st[~accepted] = 3
        small_dec = accepted & ((f_a - f_new) <= ftol * np.maximum(np.abs(f_a), 1e-300))
        st[small_dec] = 2
        st[pg <= gtol] = 1
        slot = it % stall_window
        f_then = ring_a[:, slot].copy()
        ring_a[:, slot] = f_new
        f_min_new = float(f_new.min())
        fbest = min(f_done, float(f_a.min()), f_min_new)
        gap = f_new - fbest * (1.0 + stall_margin)
        progress = f_then - f_new
        stalled = compete & (st == 0) & (gap > 0) & ((progress <= stall_rtol * f_new) | (gap > stall_horizon * progress))
        st[stalled] = 6
        it_a += 1
        if it + 1 in race_at:
            fb = min(f_done, f_min_new)
            st[(st == 0) & (f_new > race_at[it + 1] * fb + 1e-300)] = 7
        done = st != 0
        if done.any():
            rows = act[done]
            theta[rows], f[rows], status[rows], n_iter[rows] = th_new[done], f_new[done], st[done], it_a[done]
            f_done = min(f_done, float(f_new[done].min()))
            keep = ~done
            act = act[keep]
            th_a, f_a, g_a = th_new[keep], f_new[keep], g_new[keep]
            sh_a, yh_a, rho_a = sh_a[:, keep], yh_a[:, keep], rho_a[:, keep]
            it_a, ring_a = it_a[keep], ring_a[keep]
        else:
            th_a, f_a, g_a = th_new, f_new, g_new
    theta[act], f[act], n_iter[act] = th_a, f_a, it_a
    status[act] = 4
    return BatchResult(theta=theta, f=f, n_iter=n_iter, status=status, n_evals=n_evals)


def huber_objective(form: Form, x: Array, y: Array, x2: Array | None = None, *, weights: Array | None = None,
                    delta: float = 1e-3) -> BatchFn:
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

    if form.lse_terms is not None:
        F = np.asarray(form.lse_terms(x, x2), dtype=np.float64)
        block = max(1, _FUSED_BLOCK_ELEMENTS // max(1, logy.shape[1]))
        part = _fused_lse_huber(F, logy[0], w_all, delta, block)
    else:
        part = _generic_part(form, x, x2, logy, w_all, delta)

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


def _generic_part(form: Form, x: Array, x2: Array | None, logy: Array, w_all: Array | None, delta: float) -> BatchFn:
    """Objective on one block of rows through ``form.log_y`` and its Jacobian columns."""

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

    return part


def _fused_lse_huber(F: Array, logy: Array, w_all: Array | None, delta: float, block: int) -> BatchFn:
    """Value and gradient of the summed Huber loss for a log-sum-exp-of-linear-terms form, one pass.

    With ``F`` the ``(T, n, p)`` term features of :attr:`Form.lse_terms` (``t_j = F_j theta``, term 0
    the anchor), ``d_j = t_j - t_0`` (j >= 1), ``s = 1 + sum_j exp(d_j)`` and
    ``r = t_0 + log s - log y``:

    .. math::

        F = \\sum_i w_i \\psi_i (r_i - \\psi_i / 2),\\quad \\psi = \\mathrm{clip}(r, \\pm\\delta),\\qquad
        \\nabla F = \\sum_i w_i \\psi_i \\Big(F_{0,i} / s_i + \\sum_{j \\ge 1} F_{j,i}\\, e^{d_{j,i}} / s_i\\Big)

    (the log-sum-exp weights are the softmax of the terms). Per block of ``k`` rows: ``T`` small
    GEMMs ``[theta, 1] @ G_j`` give every ``d_j`` and ``t_0 - log y`` (the data folded into ``G``; an
    anchor that is the same at every point, like the floor ``E``, is added per row instead), one
    ``exp`` over the ``(T-1, k, n)`` exponents, one ``log``, a handful of in-place passes, and ``T``
    GEMMs ``(k, n) @ (n, p_j)`` for the gradient (``p_j``: the parameters term ``j`` depends on). All
    buffers are allocated once per objective and reused (so one objective must not be called from two
    threads at once); float64 throughout. Exponents are clipped to [-700, 700] as in
    :func:`tasks.scaling.forms._lse`, but only when a per-row bound ``|theta| @ max_i |F_j - F_0|`` says
    they could leave that range (never for the Chinchilla form inside its bounds on realistic data).
    """
    T, n, p = F.shape
    if T < 2:
        raise ValueError(f"lse_terms gave {T} term(s); the fused objective needs at least 2")
    A = F[1:] - F[0][None]  # (T-1, n, p): d_j = A_j theta
    G = np.zeros((T, p + 1, n))
    G[: T - 1, :p] = A.transpose(0, 2, 1)
    G[T - 1, :p] = F[0].T
    G[T - 1, p] = -logy
    H = np.concatenate([F[1:], F[:1]], axis=0)  # gradient features, in buffer order
    # Only the parameters a term depends on get a GEMM column (Chinchilla: 2, 2 and 1 of 5).
    cols = [np.flatnonzero(np.any(H[j] != 0.0, axis=0)) for j in range(T)]
    Hc = [np.ascontiguousarray(H[j][:, c]) for j, c in enumerate(cols)]
    amax = np.abs(A).max(axis=1).T  # (p, T-1)
    # An anchor that is the same at every point (the floor E) is a per-row constant: no GEMM for it.
    const_anchor = bool(np.all(F[0] == F[0][:1]))
    f0 = F[0][0].copy()
    logy_row = logy[None, :]
    Z = np.empty((T, block, n))  # [d_1 .. d_{T-1}, t_0 - log y]; then [exp(d) ..., psi]; then [q e^d ..., q]
    S = np.empty((block, n))
    R = np.empty((block, n))
    W = None if w_all is None else np.empty((block, n))
    Th = np.ones((block, p + 1))

    def part(theta: Array, rows: Array) -> tuple[Array, Array]:
        k = theta.shape[0]
        th = Th[:k]
        th[:, :p] = theta
        z = Z[:, :k]
        for j in range(T - 1 if const_anchor else T):
            np.matmul(th, G[j], out=z[j])
        P = z[: T - 1]
        if not np.all((np.abs(theta) @ amax) <= 700.0):
            np.clip(P, -700.0, 700.0, out=P)
        np.exp(P, out=P)
        s = S[:k]
        if T == 2:
            np.add(P[0], 1.0, out=s)
        else:
            np.add(P[0], P[1], out=s)
            for j in range(2, T - 1):
                s += P[j]
            s += 1.0
        r = R[:k]
        np.log(s, out=r)
        if const_anchor:
            r += (theta @ f0)[:, None]
            r -= logy_row
        else:
            r += z[T - 1]
        psi = z[T - 1]
        np.clip(r, -delta, delta, out=psi)
        if w_all is None:
            fval = np.vecdot(psi, r)
            fval -= 0.5 * np.vecdot(psi, psi)
        else:
            w = w_all if w_all.ndim == 1 else w_all[rows]
            h = W[:k]
            np.multiply(psi, 0.5, out=h)
            np.subtract(r, h, out=h)
            psi *= w
            fval = np.vecdot(psi, h)
        np.divide(psi, s, out=psi)  # q = w psi / s: the anchor's weight times w psi
        np.multiply(P, psi, out=P)  # q e^{d_j}: term j's weight times w psi
        grad = np.zeros((k, p))
        for j in range(T):
            grad[:, cols[j]] += z[j] @ Hc[j]
        return fval, grad

    return part


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
    near_theta: Array | None = None  # (k, p) fit coordinates of the near-best solutions (best first)
    unpinned: tuple[str, ...] = ()  # parameters whose near-best spread exceeds spread_tol
    prior: dict[str, tuple[float, float]] | None = None  # Gaussian prior used, {name: (mean, sd)} in fit coordinates


def check_xy(
    form: Form, x: Array, y: Array, x2: Array | None, weights: Array | None = None, n_prior: int = 0
) -> tuple[Array, Array, Array | None]:
    """Validate fit inputs; one :class:`WinnowError` naming the problem. ``n_prior`` parameters with a
    prior count as observations for the "enough points" check."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise WinnowError(f"x has {x.size} values but y has {y.size}; they must align")
    if form.n_vars >= 2 and x2 is None:
        hint = "pass x2 (--x2)" if form.n_vars == 2 else "pass tokens seen and unique tokens (--x2 D --unique U, or --epochs E --unique U)"
        raise WinnowError(f"form {form.name!r} takes {_WORDS[form.n_vars]} variables ({', '.join(form.x_names)}); {hint}")
    if form.n_vars == 1 and x2 is not None:
        raise WinnowError(f"form {form.name!r} takes one variable; x2 was given (choose a two-variable form: chinchilla, gadre)")
    if x2 is not None:
        x2 = np.asarray(x2, dtype=np.float64)
        if form.n_vars == 3:
            if x2.ndim != 2 or x2.shape != (x.size, 2):
                raise WinnowError(f"form {form.name!r} needs x2 as (n, 2) [tokens seen, unique tokens]; got shape {x2.shape} for {x.size} points")
        else:
            if form.n_vars == 2 and x2.ndim == 2:
                raise WinnowError(f"form {form.name!r} takes two variables (N, D); a unique-token column was given (use data_constrained)")
            x2 = x2.ravel()
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
    used = None if weights is None else np.asarray(weights) > 0
    n_eff = distinct_points(x, x2, used)
    if n_eff + n_prior < form.p:
        n_all = x.size if used is None else int(used.sum())
        more = f" ({n_all} points, replicates counted once)" if n_all > n_eff else ""
        raise WinnowError(
            f"form {form.name!r} has {form.p} parameters ({', '.join(form.names)}) but only {n_eff} data point(s){more}; "
            f"add points or choose a form with fewer parameters"
        )
    return x, y, x2


def distinct_points(x: Array, x2: Array | None = None, mask: Array | None = None) -> int:
    """Distinct design points (rows of x[, x2]) among ``mask``: replicates of one point pin down no more
    parameters than the point itself, so the "enough points" check and the short-curve prior count these."""
    cols = [np.asarray(x, dtype=np.float64).reshape(len(x), -1)]
    if x2 is not None:
        cols.append(np.asarray(x2, dtype=np.float64).reshape(len(x), -1))
    rows = np.hstack(cols)
    if mask is not None:
        rows = rows[np.asarray(mask, dtype=bool)]
    return int(np.unique(rows, axis=0).shape[0]) if rows.size else 0


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
    prior: dict[str, tuple[float, float]] | None = None,
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
    prior : ``{name: (mean, sd)}`` Gaussian prior on fit coordinates (e.g. ``{"c": (0.3, 0.2)}`` on an
        exponent): adds ``sum ((theta_j - mean) / sd)^2 / 2`` to the loss. Lets a short curve (fewer
        points than parameters) be fitted; a parameter with a prior counts as one observation.
    """
    if not delta > 0:
        raise WinnowError(f"huber_delta={delta!r} must be > 0")
    x, y, x2 = check_xy(form, x, y, x2, weights, n_prior=len(prior or {}))
    t0 = time.perf_counter()
    th0 = form.grid(x, x2, y) if starts is None else np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if starts is None and form.extends is not None:
        th0 = np.vstack([th0, _extended_starts(form, x, y, x2, weights, delta)])
    if th0.shape[1] != form.p:
        raise ValueError(f"starts have {th0.shape[1]} columns; form {form.name!r} has {form.p} parameters")
    fun = huber_objective(form, x, y, x2, weights=weights, delta=delta)
    if prior:
        fun = with_prior(fun, form, prior)
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
    order = np.flatnonzero(near)[np.argsort(f_all[near])]
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
        near_theta=theta_all[order],
        unpinned=tuple(wide),
        prior=dict(prior) if prior else None,
    )


def _extended_starts(form: Form, x: Array, y: Array, x2: Array | None, weights: Array | None, delta: float) -> Array:
    """Starts for a form that extends a simpler one (:class:`~tasks.scaling.forms.Extends`): the base
    form's best fit on each of its inputs, crossed with the extra parameters' grid."""
    ext = form.extends
    base = FORMS[ext.base]
    rows = []
    for xb in ext.inputs(x2):
        try:
            th = fit_form(base, x, y, xb, weights=weights, delta=delta, polish=4).theta
        except WinnowError:
            continue
        th = np.clip(th, form.lower[: base.p], form.upper[: base.p])
        rows.append(np.column_stack([np.repeat(th[None, :], ext.extra.shape[0], axis=0), ext.extra]))
    return np.vstack(rows) if rows else np.empty((0, form.p))


def with_prior(fun: BatchFn, form: Form, prior: dict[str, tuple[float, float]]) -> BatchFn:
    """``fun`` plus a Gaussian penalty ``sum ((theta_j - mean_j) / sd_j)^2 / 2`` on named fit coordinates."""
    idx, mu, sd = [], [], []
    for name, (m, s) in prior.items():
        if name not in form.names:
            raise ValueError(f"prior on {name!r}: form {form.name!r} has parameters {form.names}")
        if not s > 0:
            raise ValueError(f"prior sd for {name!r} must be > 0, got {s!r}")
        idx.append(form.names.index(name))
        mu.append(m)
        sd.append(s)
    j, m, v = np.array(idx), np.array(mu), np.array(sd) ** 2

    def penalised(theta: Array, rows: Array) -> tuple[Array, Array]:
        f, g = fun(theta, rows)
        d = theta[:, j] - m
        f = f + 0.5 * np.sum(d * d / v, axis=1)
        g = g.copy()
        g[:, j] += d / v
        return f, g

    return penalised
