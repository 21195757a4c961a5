"""Entropic OT for many source weightings at once: batched, stabilised, ε-annealed Sinkhorn.

Every mixture p of the weighted sweep (:mod:`tasks.mixture.weighted`) is an OT problem over the
**same** cost matrix C (n × m) with its own source weights a_b (a row of A). Solving them together
turns Sinkhorn's matrix-vector products into matrix-matrix products over one shared kernel, so each
iteration reads the kernel once per half-step for the whole batch instead of once per mixture.

Problem (a⊗b convention, Feydy et al. 2019, eq. 3; Peyré & Cuturi 2019, §4.2):

.. math:: \\pi_b = \\arg\\min_{\\pi \\in \\Pi(a_b, b)} \\langle C, \\pi \\rangle + \\varepsilon\\,\\mathrm{KL}(\\pi \\,\\|\\, a_b \\otimes b),
          \\qquad \\pi_{b,ij} = a_{b,i}\\, b_j \\exp\\big((f_{b,i} + g_{b,j} - C_{ij})/\\varepsilon\\big)

with the soft c-transform updates f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε) and
g_j = −ε log Σ_i a_i exp((f_i − C_ij)/ε) (f is defined also where a_i = 0).

Numerics
--------
* **Absorption** (Schmitzer 2019, "Stabilized sparse scaling algorithms", §3.2): the kernel is held as
  K̃_ij = exp((F_i + G_j − C_ij)/ε) for shared reference potentials (F, G); each row keeps only its
  residual scalings U_b = exp((f_b − F)/ε), V_b = exp((g_b − G)/ε). When a residual grows past
  ``ABSORB`` (in units of ε) the batch mean of the log-residuals is absorbed into (F, G) and K̃ is
  rebuilt, so float32 works at small ε.
* **ε-scaling** (annealing, Schmitzer 2019 §3.3; Feydy 2020 ch. 3): ε starts at the cost spread and
  is halved stage by stage down to ``reg``; each coarse stage runs a few iterations, the final stage
  runs until every row's source-marginal L1 error is below ``tol``. Converged rows leave the batch.
* **Value**: the transport cost ⟨C, π_b⟩ of the final plan (cost units) — not the entropic dual,
  whose bias ε·KL(π‖a⊗b) is far larger at useful ε.

References: M. Cuturi, "Sinkhorn distances", NeurIPS 2013; B. Schmitzer, "Stabilized sparse scaling
algorithms for entropy regularized transport problems", SIAM J. Sci. Comput. 41(3), 2019;
J. Feydy et al., "Interpolating between optimal transport and MMD using Sinkhorn divergences", AISTATS 2019.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from tasks.device import resolve_device
from tasks.progress import track

ABSORB = {torch.float32: 25.0, torch.float64: 200.0}  # |log residual| that triggers absorption
ANNEAL = 0.3  # ε ratio between stages
STAGE_ITERS = 10  # iterations per coarse ε stage
CHECK_EVERY = 5  # marginal-error check period in the final stage
OMEGA_MAX = 1.95  # cap on the over-relaxation factor
RATE_CHECKS = 2  # checks over which the convergence rate is measured to re-tune the over-relaxation


@dataclass(frozen=True)
class BatchOT:
    """Result of :func:`sinkhorn_batch`.

    values : (B,) transport cost ⟨C, π_b⟩ of each plan, in cost units (not the entropic dual);
    f : (B, n) source potentials in cost units (defined also where A[b, i] == 0);
    g : (B, m) target potentials; n_iter : Sinkhorn iterations run (all ε stages, largest over chunks);
    converged : (B,) source-marginal L1 error below ``tol``; seconds : wall time of the solve;
    row_iter / row_seconds : per-row iterations and share of the wall time (a row's share of an
    iteration is the iteration's time over the rows still running).
    """

    values: np.ndarray
    f: np.ndarray
    g: np.ndarray
    n_iter: int
    converged: np.ndarray
    seconds: float
    lower: np.ndarray | None = None
    row_iter: np.ndarray | None = None      # (B,) iterations each row ran (its own stop, or max_iter)
    row_seconds: np.ndarray | None = None   # (B,) each row's share of the wall time (sums to the solve)
    row_reg: np.ndarray | None = None       # (B,) the ε each row's final solve used (see sinkhorn_batch_until)


def _check(C: np.ndarray, A: np.ndarray, b: np.ndarray | None, reg: float, tol: float, max_iter: int,
           dtype: str, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    C = np.asarray(C, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    if C.ndim != 2 or C.size == 0:
        raise ValueError(f"C must be a non-empty (n, m) matrix, got shape {C.shape}")
    n, m = C.shape
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2 or A.shape[1] != n:
        raise ValueError(f"A must have shape (B, n={n}), got {A.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError("C has non-finite entries")
    if not np.all(np.isfinite(A)) or (A < 0).any():
        raise ValueError("A must be finite and non-negative")
    sums = A.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1) > 1e-6)
    if bad.size:
        raise ValueError(f"rows of A must sum to 1; row {bad[0]} sums to {sums[bad[0]]:.6g}")
    if b is None:
        b = np.full(m, 1.0 / m)
    b = np.asarray(b, dtype=np.float64)
    if b.shape != (m,) or not np.all(np.isfinite(b)) or (b <= 0).any() or abs(b.sum() - 1) > 1e-6:
        raise ValueError(f"b must be ({m},) positive weights summing to 1")
    if not reg > 0:
        raise ValueError(f"reg={reg} must be > 0")
    if not tol > 0:
        raise ValueError(f"tol={tol} must be > 0")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype={dtype!r} must be 'float32' or 'float64'")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    return C, A / sums[:, None], b / b.sum()


def eps_schedule(spread: float, reg: float) -> list[float]:
    """ε stages: from about the cost spread down to ``reg`` by factors of :data:`ANNEAL` (last = reg)."""
    eps = [reg]
    while eps[-1] < spread:
        eps.append(eps[-1] / ANNEAL)
    return eps[::-1]


class _Diverged(ArithmeticError):
    """A non-finite marginal error: exp() left the working dtype's range."""


class SinkhornDiverged(RuntimeError):
    """Sinkhorn left the float range even in float64 at this ε (a numerical failure, not bad input):
    :func:`sinkhorn_batch_until` retries at a larger ε; raised further it fails the run, evidence kept."""


class _Chunk:
    """One chunk of rows solved together over a shared absorbed kernel (all tensors on one device)."""

    def __init__(self, Cs: torch.Tensor, A: torch.Tensor, b: torch.Tensor):
        self.Cs, self.A, self.b = Cs, A, b
        self.dt = Cs.dtype
        B, (n, m) = A.shape[0], Cs.shape
        # potentials in cost units, float64: shared reference (F, G) + per-row residual log-scalings
        self.F = torch.zeros(n, dtype=torch.float64, device=Cs.device)
        self.G = torch.zeros(m, dtype=torch.float64, device=Cs.device)
        self.lu = torch.zeros(B, n, dtype=self.dt, device=Cs.device)  # (f_b - F) / eps
        self.lv = torch.zeros(B, m, dtype=self.dt, device=Cs.device)  # (g_b - G) / eps
        self.eps = math.inf
        self.K: torch.Tensor | None = None
        self.absorptions = 0

    def set_eps(self, eps: float) -> None:
        """Absorb the residuals' batch midrange into (F, G) and rebuild the kernel at ``eps``."""
        if self.K is not None:
            du = self.lu.double()
            dv = self.lv.double()
            du = (du.amax(0) + du.amin(0)) / 2
            dv = (dv.amax(0) + dv.amin(0)) / 2
            self.F += self.eps * du
            self.G += self.eps * dv
            self.lu = ((self.lu.double() - du) * (self.eps / eps)).to(self.dt)
            self.lv = ((self.lv.double() - dv) * (self.eps / eps)).to(self.dt)
        self.eps = eps
        self.absorptions += 1
        K = (self.F.to(self.dt)[:, None] + self.G.to(self.dt)[None, :]).sub_(self.Cs).div_(eps)
        self.K = K.exp_()

    def needs_absorb(self, rows: torch.Tensor) -> bool:
        """True when a residual is past ABSORB and absorbing the batch midrange would shrink it by half."""
        lim = ABSORB[self.dt]
        worst = max(float(self.lu[rows].abs().max()), float(self.lv[rows].abs().max()))
        if worst <= lim:
            return False
        spread = max(float((self.lu.amax(0) - self.lu.amin(0)).max()), float((self.lv.amax(0) - self.lv.amin(0)).max())) / 2
        return spread < worst / 2

    def f_update(self, rows: torch.Tensor) -> torch.Tensor:
        """log(K̃ (b V)) per row: the f-update is lu = −this. Per-row max shift keeps exp() in range."""
        lv = self.lv[rows]
        s = lv.max(dim=1, keepdim=True).values
        w = torch.exp(lv - s) * self.b
        return torch.log(w @ self.K.T) + s

    def g_update(self, rows: torch.Tensor) -> torch.Tensor:
        lu = self.lu[rows]
        s = lu.max(dim=1, keepdim=True).values
        w = torch.exp(lu - s) * self.A[rows]
        return torch.log(w @ self.K) + s

    def marginal_error(self, rows: torch.Tensor, lku: torch.Tensor) -> torch.Tensor:
        """Σ_i a_i |exp(lu_i + log(K̃ bV)_i) − 1|: L1 error of the source marginal of the current plan."""
        return (self.A[rows] * torch.abs(torch.exp(self.lu[rows] + lku) - 1)).sum(1)

    def transport_cost(self) -> torch.Tensor:
        """(B,) ⟨C_s, π_b⟩ (shifted cost) and total mass of each plan, in float64."""
        su = self.lu.max(dim=1, keepdim=True).values
        sv = self.lv.max(dim=1, keepdim=True).values
        wu = torch.exp(self.lu - su) * self.A
        wv = torch.exp(self.lv - sv) * self.b
        scale = torch.exp((su + sv).double()).squeeze(1)
        cost = ((wu @ (self.Cs * self.K)) * wv).double().sum(1) * scale
        mass = ((wu @ self.K) * wv).double().sum(1) * scale
        return cost, mass


def _solve_chunk(Cs: torch.Tensor, A: torch.Tensor, b: torch.Tensor, reg: float, tol: float, max_iter: int):
    ch = _Chunk(Cs, A, b)
    B = A.shape[0]
    dev = Cs.device
    stages = eps_schedule(float(Cs.max()), reg)
    all_rows = torch.arange(B, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    row_iter = torch.zeros(B, dtype=torch.int64, device=dev)
    row_sec = torch.zeros(B, dtype=torch.float64, device=dev)
    it = 0
    t_last = time.perf_counter()
    for k, eps in enumerate(stages):
        ch.set_eps(eps)
        final = k == len(stages) - 1
        rows = all_rows
        lku = ch.f_update(rows)
        n_stage, w, prev = 0, 1.0, None  # w: over-relaxation factor (1 = plain Sinkhorn)
        hist: list[float] = []  # worst error at each check since the last change of w
        while rows.numel():
            lv_old = ch.lv[rows]
            ch.lu[rows] = -lku if w == 1.0 else ch.lu[rows] * (1 - w) - w * lku
            lgv = ch.g_update(rows)
            ch.lv[rows] = -lgv if w == 1.0 else lv_old * (1 - w) - w * lgv
            it += 1
            n_stage += 1
            row_iter[rows] += 1
            lku = ch.f_update(rows)
            if ch.needs_absorb(rows):
                ch.set_eps(eps)
                lku = ch.f_update(rows)
            if not final:
                if n_stage >= STAGE_ITERS:
                    break
                continue
            if n_stage % CHECK_EVERY == 0 or it >= max_iter:
                now = time.perf_counter()
                row_sec[rows] += (now - t_last) / rows.numel()
                t_last = now
                err = ch.marginal_error(rows, lku)
                if not torch.isfinite(err).all():
                    raise _Diverged
                worst = float(err.max())
                hist.append(worst)
                if prev is not None:
                    if worst > prev:  # over-relaxation too aggressive: back off towards plain Sinkhorn
                        w = max(1.0, 1.0 + (w - 1.0) / 2)
                        hist = []
                    elif w == 1.0 and n_stage == 2 * CHECK_EVERY and worst > 0:
                        # Thibault et al. 2017: ω* = 2 / (1 + sqrt(1 − θ)), θ = plain Sinkhorn's linear
                        # rate, estimated on the slowest row
                        theta = min((worst / prev) ** (1.0 / CHECK_EVERY), 0.9999)
                        w = min(OMEGA_MAX, 2.0 / (1.0 + math.sqrt(1.0 - theta)))
                        hist = []
                    elif w > 1.0 and len(hist) > RATE_CHECKS and worst > 0:
                        # observed rate r slower than SOR's optimum ω* − 1: θ was underestimated. For SOR
                        # r^½ = (ωμ + sqrt(ω²μ² − 4(ω − 1)))/2 with μ² = θ, so μ = (r + ω − 1)/(ω r^½)
                        r = (worst / hist[-1 - RATE_CHECKS]) ** (1.0 / (RATE_CHECKS * CHECK_EVERY))
                        if w - 1.0 + 0.02 < r < 1.0:
                            theta = min(((r + w - 1.0) / (w * math.sqrt(r))) ** 2, 0.99999)
                            w_new = min(OMEGA_MAX, 2.0 / (1.0 + math.sqrt(1.0 - theta)))
                            if w_new > w + 0.01:
                                w, hist = w_new, []
                prev = worst
                done = err < tol
                if done.any():
                    converged[rows[done]] = True
                    ch.lu[rows[done]] = -lku[done]  # f = soft c-transform of the final g
                    rows, lku = rows[~done], lku[~done]
                    prev = float(err[~done].max()) if rows.numel() else None
            if it >= max_iter:
                break
        now = time.perf_counter()  # coarse stages: every row shares the time
        if rows.numel():
            row_sec[rows] += (now - t_last) / rows.numel()
        t_last = now
    if rows.numel():
        ch.lu[rows] = -lku
    cost, mass = ch.transport_cost()
    f = ch.F[None, :] + reg * ch.lu.double()
    g = ch.G[None, :] + reg * ch.lv.double()
    # dual lower bound on the unregularised OT: ⟨a, g^c⟩ + ⟨b, g⟩ with the hard c-transform g^c_i = min_j C_ij − g_j
    lower = torch.empty(B, dtype=torch.float64, device=dev)
    gd = g.to(Cs.dtype)
    for r in range(B):
        gc = (Cs - gd[r][None, :]).amin(1).double()
        lower[r] = A[r].double() @ gc + b.double() @ g[r]
    return cost / mass, lower, f, g, it, converged, row_iter, row_sec


def sinkhorn_batch(C: np.ndarray, A: np.ndarray, b: np.ndarray | None = None, *, reg: float, tol: float = 1e-4,
                   max_iter: int = 5000, device: str = "cpu", dtype: str = "float32", chunk: int = 256,
                   progress: bool = False) -> BatchOT:
    """Entropic OT between each row of A (B, n) (non-negative source weights summing to 1, zeros allowed)
    and b (m,) (default uniform) under cost C (n, m), all B problems solved together (matrix-matrix
    products over the shared kernel, chunks of ``chunk`` rows).

    Parameters
    ----------
    C : (n, m) cost matrix. A : (B, n) source weights (a (n,) vector is one problem). b : (m,) target weights.
    reg : ε in cost units (the final stage of the ε-annealing). tol : L1 error of each row's source
    marginal at which that row stops. max_iter : cap on iterations per chunk (all stages).
    device : torch device ('cpu', 'cuda', 'cuda:N'). dtype : 'float32' (fast; stabilised by absorption)
    or 'float64'. chunk : rows solved together (memory: a few (chunk, n) buffers plus two (n, m) kernels).

    Returns
    -------
    :class:`BatchOT` — values are the transport costs ⟨C, π_b⟩; f, g the potentials in cost units.
    """
    t0 = time.perf_counter()
    C, A, b = _check(C, A, b, reg, tol, max_iter, dtype, chunk)
    dev = resolve_device(device)
    tdt = torch.float32 if dtype == "float32" else torch.float64
    c0 = float(C.min())
    Cs = torch.from_numpy(C - c0).to(device=dev, dtype=tdt)
    bt = torch.from_numpy(b).to(device=dev, dtype=tdt)
    Bn = A.shape[0]
    values = np.zeros(Bn)
    lower = np.zeros(Bn)
    f = np.zeros(A.shape)
    g = np.zeros((Bn, C.shape[1]))
    conv = np.zeros(Bn, dtype=bool)
    row_iter = np.zeros(Bn, dtype=np.int64)
    row_sec = np.zeros(Bn)
    n_iter = 0
    starts = list(range(0, Bn, chunk))
    for s in track(starts, "Sinkhorn (batched)", enabled=progress and len(starts) > 1):
        At = torch.from_numpy(A[s:s + chunk]).to(device=dev, dtype=tdt)
        try:
            v, lo, fc, gc, it, cv, ri, rs = _solve_chunk(Cs, At, bt, reg, tol, max_iter)
        except _Diverged:
            if tdt == torch.float64:
                raise SinkhornDiverged(f"Sinkhorn diverged (reg={reg}) even in float64; raise reg") from None
            # float32 range exceeded (mixtures in the chunk too different at this ε): redo in float64
            try:
                v, lo, fc, gc, it, cv, ri, rs = _solve_chunk(Cs.double(), At.double(), bt.double(), reg, tol, max_iter)
            except _Diverged:
                raise SinkhornDiverged(f"Sinkhorn diverged (reg={reg}) even in float64; raise reg") from None
        values[s:s + chunk] = v.cpu().numpy() + c0
        lower[s:s + chunk] = lo.cpu().numpy() + c0
        f[s:s + chunk] = fc.cpu().numpy() + c0
        g[s:s + chunk] = gc.cpu().numpy()
        conv[s:s + chunk] = cv.cpu().numpy()
        row_iter[s:s + chunk] = ri.cpu().numpy()
        row_sec[s:s + chunk] = rs.cpu().numpy()
        n_iter = max(n_iter, it)
    seconds = time.perf_counter() - t0
    if row_sec.sum() > 0:  # setup (transfers, kernels, the lower bound) shared in proportion
        row_sec *= seconds / row_sec.sum()
    return BatchOT(values=values, lower=lower, f=f, g=g, n_iter=n_iter, converged=conv, seconds=seconds,
                   row_iter=row_iter, row_seconds=row_sec, row_reg=np.full(Bn, float(reg)))


def sinkhorn_batch_until(C: np.ndarray, A: np.ndarray, b: np.ndarray | None = None, *, reg: float, tol: float = 1e-4,
                         max_iter: int = 2000, max_raise: int = 3, device: str = "cpu", dtype: str = "float32",
                         chunk: int = 256, progress: bool = False, same_reg: bool = True) -> BatchOT:
    """:func:`sinkhorn_batch`, then the rows that did not converge within ``max_iter`` are solved again
    at 2ε, 4ε, ... (at most ``max_raise`` times); a row still unconverged keeps its last solve and
    ``converged[b] = False`` says so. With ``same_reg`` (default), once any row was raised, the rows
    solved at a smaller ε are solved again at the largest ε used, so every row's value is the same
    quantity: the dual bound loosens as ε grows (about 10 % below exact OT at 8ε = 0.4), and a
    regression over the rows must not read a raised row's looser bound as a closer mixture.
    ``row_reg`` is the ε each row's reported solve used, ``row_iter`` and ``row_seconds`` add up over
    its attempts. Always finishes within (2 + max_raise) · max_iter iterations per row."""
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    B, (n, m) = A.shape[0], np.shape(C)
    values, lower, f, g = np.full(B, np.nan), np.full(B, np.nan), np.zeros((B, n)), np.zeros((B, m))
    conv, it, sec, regs = np.zeros(B, bool), np.zeros(B, np.int64), np.zeros(B), np.full(B, float(reg))
    solved = np.zeros(B, bool)
    eps, seconds = float(reg), 0.0
    for attempt in range(max_raise + 1):
        todo = np.flatnonzero(~conv)
        if todo.size == 0:
            break
        t0 = time.perf_counter()
        try:
            r = sinkhorn_batch(C, A[todo], b, reg=eps, tol=tol, max_iter=max_iter, device=device, dtype=dtype, chunk=chunk,
                               progress=progress and attempt == 0)
        except SinkhornDiverged:  # left the float range at this ε: as good as not converged, try a larger one
            if attempt == max_raise and not solved.all():
                raise
            seconds += time.perf_counter() - t0
            eps *= 2
            continue
        values[todo], lower[todo], f[todo], g[todo] = r.values, r.lower, r.f, r.g
        conv[todo], regs[todo], solved[todo] = r.converged, eps, True
        it[todo] += r.row_iter
        sec[todo] += r.row_seconds
        seconds += r.seconds
        eps *= 2
    top = float(regs[solved].max()) if solved.any() else float(reg)
    low = np.flatnonzero(solved & (regs < top))
    if same_reg and low.size:
        r = sinkhorn_batch(C, A[low], b, reg=top, tol=tol, max_iter=max_iter, device=device, dtype=dtype, chunk=chunk)
        values[low], lower[low], f[low], g[low] = r.values, r.lower, r.f, r.g
        conv[low], regs[low] = r.converged, top
        it[low] += r.row_iter
        sec[low] += r.row_seconds
        seconds += r.seconds
    return BatchOT(values=values, lower=lower, f=f, g=g, n_iter=int(it.max()) if it.size else 0, converged=conv,
                   seconds=seconds, row_iter=it, row_seconds=sec, row_reg=regs)
