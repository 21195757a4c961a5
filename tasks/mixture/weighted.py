"""Mixture OT as a weighted measure over the union of revealed samples (winnow's design, spec §"Mixture
as a weighted measure").

Sources X_1..X_K (n_i revealed examples each) form the union U; example x ∈ X_i carries the weight
a_x(p) = p_i / n_i. The cost matrix C (|U| × m, label-aware, see :mod:`tasks.mixture.ot`) is built
**once**; each mixture p is just a new weight vector:

.. math:: \\mathrm{OT}(p) = \\min_{\\pi \\in \\Pi(a(p), \\mathbf{1}/m)} \\langle C, \\pi \\rangle
          \\qquad \\frac{\\partial \\mathrm{OT}}{\\partial p_i} = \\frac{1}{n_i}\\sum_{x \\in X_i} f_x

where f is the dual potential on U (defined up to an additive constant, which cancels on the
simplex's tangent space). Label distances are between (source, class) nodes and the target's
classes, so they do not depend on p either.

Solvers
-------
* ``exact``: ``ot.emd`` with its dual potentials, warm-started from the previous mixture's; zero-weight
  rows (which POT leaves out) get the c-transform of the target potential, min_j C_xj − g_j, so the
  gradient at an edge or vertex of the simplex is the one-sided derivative towards the empty source.
* ``sinkhorn``: the entropic objective OT_ε(a, b) = min ⟨C, π⟩ + ε KL(π ‖ a⊗b) (Feydy et al. 2019),
  solved in float32 with the kernel exp(−C/ε) computed once per sweep and the potentials
  warm-started from the neighbouring mixture; its gradient is exactly the potential f (the soft
  c-transform of g, defined also where a_x = 0). Falls back to float64, then to the log domain, when
  the cost range over ε would underflow.
* ``sinkhorn_debiased``: S_ε(p) = OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b), gradient f_ab − f_aa.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import ot
import torch

from tasks.mixture.labeldist import LabelMethod
from tasks.mixture._threads import torch_threads
from tasks.mixture.batch import SinkhornDiverged, resolve_device, sinkhorn_batch_until
from tasks.progress import track
from tasks.mixture.ot import SOLVERS, CostScale, check_labelled, raw_costs
from tasks.mixture.simplex import check_mixture, snake_order

FLOAT32_SPREAD = 60.0  # exp(±(60 + log n)) stays inside float32 range
FLOAT64_SPREAD = 650.0


@dataclass(frozen=True)
class UnionProblem:
    """Everything that does not depend on p.

    C : (n_u, m) float64 label-aware cost union → target; source_of : (n_u,) source index of each row;
    sizes : (K,) revealed examples per source; C_uu : (n_u, n_u) union → union cost (debiased only);
    C_vv : (m, m) target → target cost (debiased only); scale : the cost units.
    """

    C: np.ndarray
    source_of: np.ndarray
    sizes: np.ndarray
    scale: CostScale
    C_uu: np.ndarray | None = None
    C_vv: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.sizes.size)

    def weights(self, p: np.ndarray) -> np.ndarray:
        """a(p) : (n_u,) with a_x = p_i / n_i for x ∈ X_i."""
        return (np.asarray(p, dtype=np.float64) / self.sizes)[self.source_of]

    def source_means(self, f: np.ndarray) -> np.ndarray:
        """(K,) mean of a per-row vector f over each source's rows: the gradient of OT w.r.t. p."""
        return np.bincount(self.source_of, weights=np.asarray(f, dtype=np.float64), minlength=self.k) / self.sizes


def build_union_problem(
    sources: Sequence[tuple[np.ndarray, np.ndarray]],
    target: tuple[np.ndarray, np.ndarray],
    *,
    lambda_x: float = 1.0,
    lambda_y: float = 1.0,
    label_method: LabelMethod = "gaussian",
    normalize: bool = True,
    debiased: bool = False,
    seed: int = 0,
) -> UnionProblem:
    """Build the cost matrix of the union of revealed source samples against the target, once.

    Parameters
    ----------
    sources : K pairs (X_i (n_i, d), y_i (n_i,)) with labels in the target's label codes.
    target : (X_t (m, d), y_t (m,)).
    debiased : also build the union→union and target→target costs needed by S_ε.
    """
    if len(sources) < 1:
        raise ValueError("need at least one source")
    Xt, yt = check_labelled(*target, name="target")
    checked = [check_labelled(X, y, f"source {i}") for i, (X, y) in enumerate(sources)]
    for i, (X, _) in enumerate(checked):
        if X.shape[1] != Xt.shape[1]:
            raise ValueError(f"source {i} has feature dimension d={X.shape[1]} but the target has d={Xt.shape[1]}")
    if lambda_x < 0 or lambda_y < 0 or lambda_x + lambda_y == 0:
        raise ValueError(f"lambda_x={lambda_x}, lambda_y={lambda_y} must be >= 0 and not both 0")
    wl = lambda_y > 0
    blocks = [raw_costs(X, y, Xt, yt, with_labels=wl, label_method=label_method, seed=seed) for X, y in checked]
    Cx = np.concatenate([b[0] for b in blocks])
    Cy = np.concatenate([b[1] for b in blocks])
    if normalize:
        scale = CostScale(feature=float(Cx.mean()) or 1.0, label=float(Cy.mean()) or 1.0)
    else:
        scale = CostScale()
    C = lambda_x * Cx / scale.feature + lambda_y * Cy / scale.label
    sizes = np.array([X.shape[0] for X, _ in checked], dtype=np.int64)
    source_of = np.repeat(np.arange(len(checked)), sizes)
    C_uu = C_vv = None
    if debiased:
        rows = []
        for Xa, ya in checked:
            parts = [raw_costs(Xa, ya, Xb, yb, with_labels=wl, label_method=label_method, seed=seed) for Xb, yb in checked]
            rows.append(np.concatenate([lambda_x * px / scale.feature + lambda_y * py / scale.label for px, py in parts], axis=1))
        C_uu = np.concatenate(rows)
        px, py = raw_costs(Xt, yt, Xt, yt, with_labels=wl, label_method=label_method, seed=seed)
        C_vv = lambda_x * px / scale.feature + lambda_y * py / scale.label
    return UnionProblem(C=C, source_of=source_of, sizes=sizes, scale=scale, C_uu=C_uu, C_vv=C_vv)


@dataclass(frozen=True)
class MixtureOT:
    """OT(p) for one mixture. grad : (K,) ∂OT/∂p_i (raw; project onto Σ dp = 0 before use)."""

    p: np.ndarray
    value: float
    grad: np.ndarray
    n_iter: int
    seconds: float
    converged: bool


class _Sinkhorn:
    """Entropic OT between weights a (rows of C) and b (columns), kernel computed once.

    Potentials follow the a⊗b convention: π = a_i b_j exp((f_i + g_j − C_ij)/ε).
    """

    def __init__(self, C: np.ndarray, reg: float, dtype: str = "float32", symmetric: bool = False,
                 device: torch.device | None = None):
        self.reg = float(reg)
        self.device = device or torch.device("cpu")
        self.c0 = float(C.min())
        spread = (float(C.max()) - self.c0) / self.reg
        self.symmetric = symmetric
        if dtype == "float32" and spread <= FLOAT32_SPREAD:
            self.mode, tdt = "kernel", torch.float32
        elif spread <= FLOAT64_SPREAD:
            self.mode, tdt = "kernel", torch.float64
        else:
            self.mode, tdt = "log", torch.float32 if dtype == "float32" else torch.float64
        self.dtype = tdt
        Ct = torch.from_numpy(np.ascontiguousarray(C - self.c0)).to(device=self.device, dtype=tdt)
        if self.mode == "kernel":
            self.K = torch.exp(-Ct / self.reg)
            self.Kt = self.K.T.contiguous() if not symmetric else self.K
        else:
            self.Cn = -Ct / self.reg

    def _rowsolve(self, w: torch.Tensor, logw: torch.Tensor, h: torch.Tensor, transpose: bool) -> torch.Tensor:
        """Soft c-transform: returns φ/ε with φ_i = −ε log Σ_j w_j exp((h_j − C_ij)/ε) (h given as h/ε)."""
        if self.mode == "kernel":
            K = self.Kt if transpose else self.K
            return -torch.log(K @ (w * torch.exp(h)))
        M = self.Cn.T if transpose else self.Cn
        return -torch.logsumexp(M + (logw + h)[None, :], dim=1)

    def solve(self, a: np.ndarray, b: np.ndarray, init: tuple[np.ndarray, np.ndarray] | None, tol: float, max_iter: int):
        """Returns (value, f, g, n_iter, converged); f, g in cost units (shift c0 added back)."""
        at = torch.from_numpy(a).to(device=self.device, dtype=self.dtype)
        bt = torch.from_numpy(b).to(device=self.device, dtype=self.dtype)
        la, lb = torch.log(at), torch.log(bt)
        eps = self.reg
        if init is None:
            f = torch.zeros(len(a), dtype=self.dtype, device=self.device)
            g = torch.zeros(len(b), dtype=self.dtype, device=self.device)
        else:
            f = torch.from_numpy((init[0] - self.c0) / eps).to(device=self.device, dtype=self.dtype)
            g = torch.from_numpy(init[1] / eps).to(device=self.device, dtype=self.dtype)
            if self.symmetric:
                f = torch.from_numpy((init[0] - self.c0 / 2) / eps).to(device=self.device, dtype=self.dtype)
        converged, it = False, 0
        f_next = None  # the f-update computed by the last marginal check, reused by the next iteration
        for it in range(1, max_iter + 1):
            if self.symmetric:
                f = 0.5 * (f + self._rowsolve(at, la, f, False))
            else:
                f = self._rowsolve(bt, lb, g, False) if f_next is None else f_next
                f_next = None
                g = self._rowsolve(at, la, f, True)
            if it % 5 == 0 or it == max_iter:
                if self.symmetric:
                    err = torch.sum(torch.abs(at * torch.exp(f - self._rowsolve(at, la, f, False)) - at))
                else:
                    # the source-marginal error needs K (b e^g), which is exactly the next f-update:
                    # keep it, so checking costs no extra pass over the kernel (one read in ten saved)
                    f_next = self._rowsolve(bt, lb, g, False)
                    err = torch.sum(torch.abs(at * torch.exp(f - f_next) - at))
                if not torch.isfinite(err):
                    raise SinkhornDiverged(f"Sinkhorn diverged (reg={eps}); raise reg or use solver='exact'")
                if float(err) < tol:
                    converged = True
                    break
        fn = f.double().cpu().numpy() * eps
        if self.symmetric:
            value = 2.0 * float(a @ fn) + self.c0
            return value, fn + self.c0 / 2, fn + self.c0 / 2, it, converged
        gn = g.double().cpu().numpy() * eps
        value = float(a @ fn + b @ gn) + self.c0
        return value, fn + self.c0, gn, it, converged


@dataclass(frozen=True)
class SolverOptions:
    """How OT(p) is solved, for :class:`WeightedOT` and :func:`weighted_sweep`.

    Attributes
    ----------
    solver : "exact" | "sinkhorn" | "sinkhorn_debiased".
    reg : ε in units of the normalised cost.
    tol : L1 error of the source marginal at which Sinkhorn stops.
    max_iter : Sinkhorn iterations per solve (per attempt, in the batched solver).
    dtype : "float32" (fast) or "float64" for the entropic solvers.
    warm_start : start each solve from the previous mixture's potentials.
    threads : torch intra-op threads per solve (1 avoids oversubscription; None leaves torch's setting).
    device : torch device of the entropic solvers ('cpu', 'cuda', 'cuda:N').
    batched : for ``solver="sinkhorn"``, solve with :func:`tasks.mixture.batch.sinkhorn_batch`
        (ε-annealed, no warm start) and report the dual bound on the exact OT instead of OT_ε.
    """

    solver: str = "sinkhorn"
    reg: float = 0.05
    tol: float = 1e-4
    max_iter: int = 5_000
    dtype: str = "float32"
    warm_start: bool = True
    threads: int | None = 1
    device: str = "cpu"
    batched: bool = False


#: the sweep's defaults: the whole grid in one batched solve, escalating ε where 2,000 iterations do not converge
SWEEP_OPTIONS = SolverOptions(max_iter=2_000, batched=True)


class WeightedOT:
    """OT(p) and its gradient for many mixtures over one :class:`UnionProblem`, with warm starts.

    ``options`` (default :class:`SolverOptions`) says how each OT is solved; keyword ``overrides`` replace
    single fields of it (``WeightedOT(problem, solver="exact")``). With ``batched`` and
    ``solver="sinkhorn"`` each mixture is one row of the batched solver and its value is the same as the
    batched :func:`weighted_sweep`'s.
    """

    def __init__(self, problem: UnionProblem, options: SolverOptions | None = None, **overrides: object):
        o = replace(options or SolverOptions(), **overrides)
        solver, reg, tol, max_iter, dtype, device = o.solver, o.reg, o.tol, o.max_iter, o.dtype, o.device
        batched, warm_start, threads = o.batched, o.warm_start, o.threads
        dev = resolve_device(device)
        self.device, self.dtype = device, dtype
        self.batched = batched and solver == "sinkhorn"
        if solver not in SOLVERS:
            raise ValueError(f"solver={solver!r} must be one of {SOLVERS}")
        if solver != "exact" and not reg > 0:
            raise ValueError(f"reg={reg} must be > 0 for solver {solver!r}")
        if solver == "sinkhorn_debiased" and problem.C_uu is None:
            raise ValueError("solver 'sinkhorn_debiased' needs a UnionProblem built with debiased=True")
        self.problem, self.solver, self.reg, self.tol, self.max_iter = problem, solver, reg, tol, max_iter
        self.warm_start, self.threads = warm_start, threads
        m = problem.C.shape[1]
        self.b = np.full(m, 1.0 / m)
        self._state: tuple | None = None
        self._state_aa: tuple | None = None
        if solver != "exact" and not self.batched:
            self._ab = _Sinkhorn(problem.C, reg, dtype, device=dev)
        if solver == "sinkhorn_debiased":
            self._aa = _Sinkhorn(problem.C_uu, reg, dtype, symmetric=True, device=dev)
            vv = _Sinkhorn(problem.C_vv, reg, dtype, symmetric=True, device=dev)
            self._ot_bb = vv.solve(self.b, self.b, None, tol, max_iter)[0]

    @property
    def mode(self) -> str:
        """How the entropic kernel is held: 'kernel'/'log' and dtype; 'emd' for the exact solver."""
        if self.solver == "exact":
            return "emd"
        if self.batched:
            return f"batched-{self.dtype}"
        return f"{self._ab.mode}-{str(self._ab.dtype).replace('torch.', '')}"

    def __call__(self, p: np.ndarray) -> MixtureOT:
        with torch_threads(self.threads):
            return self._solve(p)

    def _solve(self, p: np.ndarray) -> MixtureOT:
        p = check_mixture(p, self.problem.k)
        a = self.problem.weights(p)
        t0 = time.perf_counter()
        init = self._state if self.warm_start else None
        if self.solver == "exact":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, log = ot.emd(a, self.b, self.problem.C, log=True, numItermax=1_000_000, potentials_init=init)
            if log["result_code"] != 1:
                raise RuntimeError(f"ot.emd did not reach an optimum ({log['warning']}); raise numItermax")
            f, g = np.array(log["u"], dtype=np.float64), np.asarray(log["v"], dtype=np.float64)
            # POT leaves out zero-weight rows and returns no meaningful potential for them (with a warm
            # start, far off): give them the c-transform of g, f_x = min_j C_xj - g_j, the potential that
            # makes the gradient the one-sided derivative towards a source at weight 0
            empty = a <= 0
            if empty.any():
                f[empty] = (self.problem.C[empty] - g[None, :]).min(axis=1)
            value, n_iter, conv = float(log["cost"]), 0, True
            grad = self.problem.source_means(f)
        elif self.batched:
            r = sinkhorn_batch_until(self.problem.C, a[None, :], self.b, reg=self.reg, tol=self.tol,
                                     max_iter=self.max_iter, device=self.device, dtype=self.dtype)
            value, f, g, n_iter, conv = float(r.lower[0]), r.f[0], r.g[0], r.n_iter, bool(r.converged[0])
            grad = self.problem.source_means(f)
            if not conv and not getattr(self, "_warned", False):  # once per engine: the ascent calls it often
                self._warned = True
                warnings.warn(f"Sinkhorn did not reach tol={self.tol} for p={np.round(p, 3).tolist()} even at "
                              f"ε={r.row_reg[0]:g} (further mixtures of this solve are not reported); raise reg",
                              RuntimeWarning, stacklevel=2)
        else:
            value, f, g, n_iter, conv = self._ab.solve(a, self.b, init, self.tol, self.max_iter)
            grad = self.problem.source_means(f)
            if self.solver == "sinkhorn_debiased":
                init_aa = self._state_aa if self.warm_start else None
                v_aa, f_aa, _, it2, conv2 = self._aa.solve(a, a, init_aa, self.tol, self.max_iter)
                self._state_aa = (f_aa, f_aa)
                value = value - 0.5 * v_aa - 0.5 * self._ot_bb
                grad = grad - self.problem.source_means(f_aa)
                n_iter, conv = n_iter + it2, conv and conv2
            if not conv:
                warnings.warn(
                    f"Sinkhorn stopped at max_iter={self.max_iter} above tol={self.tol} for p={np.round(p, 3).tolist()}; "
                    "raise max_iter or reg", RuntimeWarning, stacklevel=2,
                )
        self._state = (f, g)
        return MixtureOT(p=p, value=value, grad=grad, n_iter=n_iter, seconds=time.perf_counter() - t0, converged=conv)


@dataclass(frozen=True)
class SweepResult:
    """OT over a grid of mixtures. values : (G,); grads : (G, K); seconds : (G,) per mixture;
    n_iter : (G,); setup_seconds : time to build shared work (cost matrix, kernels); mode : solver mode;
    converged, regs : per mixture, whether its solve met ``tol`` and at which ε (batched Sinkhorn)."""

    grid: np.ndarray
    values: np.ndarray
    grads: np.ndarray
    seconds: np.ndarray
    n_iter: np.ndarray
    setup_seconds: float
    solver: str
    reg: float
    mode: str
    converged: np.ndarray | None = None   # (G,) per mixture (None: the solver does not report it)
    regs: np.ndarray | None = None        # (G,) ε each mixture's value was solved at (raised where it stalled)

    @property
    def n_unconverged(self) -> int:
        return 0 if self.converged is None else int((~self.converged).sum())

    @property
    def total_seconds(self) -> float:
        return float(self.setup_seconds + self.seconds.sum())


def weighted_sweep(problem: UnionProblem, grid: np.ndarray, options: SolverOptions = SWEEP_OPTIONS, *,
                   progress: bool = False, **overrides: object) -> SweepResult:
    """OT(p) and ∇OT(p) for every row of ``grid`` (G, K).

    ``solver="sinkhorn"`` with ``batched=True`` (default) solves the whole grid at once with
    :func:`tasks.mixture.batch.sinkhorn_batch` (ε-annealed, stabilised, matrix-matrix products over
    one kernel). Its values estimate the **unregularised** OT: the dual bound ⟨a, g^c⟩ + ⟨b, g⟩ with the
    hard c-transform g^c_i = min_j C_ij − g_j of the entropic target potential (a certified lower
    bound on the exact value; the entropic plan's ⟨C, π⟩ is an upper bound) — not the entropic dual
    OT_ε; grads are :meth:`UnionProblem.source_means` of the entropic f. ``n_iter`` and ``seconds`` are
    per mixture (its own iterations; its share of the batch's wall time). A mixture that has not
    converged after ``max_iter`` iterations is solved again at 2ε, 4ε, 8ε
    (:func:`tasks.mixture.batch.sinkhorn_batch_until`): the sweep always finishes, and ``regs`` /
    ``converged`` say per mixture which ε was used and whether it met ``tol``.
    Otherwise each mixture is solved in turn along :func:`snake_order` (warm-started potentials;
    values are the solver's own objective: exact OT, OT_ε or S_ε).
    """
    o = replace(options, **overrides)
    solver, reg, tol, max_iter, dtype, device, threads = o.solver, o.reg, o.tol, o.max_iter, o.dtype, o.device, o.threads
    t0 = time.perf_counter()
    grid = np.asarray(grid, dtype=np.float64)
    G = grid.shape[0]
    if solver == "sinkhorn" and o.batched:
        resolve_device(device)
        if not reg > 0:
            raise ValueError(f"reg={reg} must be > 0 for solver 'sinkhorn'")
        A = np.stack([problem.weights(check_mixture(p, problem.k)) for p in grid])
        m = problem.C.shape[1]
        with torch_threads(threads):
            r = sinkhorn_batch_until(problem.C, A, np.full(m, 1.0 / m), reg=reg, tol=tol, max_iter=max_iter,
                                     device=device, dtype=dtype, progress=progress)
        if not r.converged.all():
            bad = np.flatnonzero(~r.converged)
            warnings.warn(f"Sinkhorn did not reach tol={tol} for {bad.size} of {G} mixtures even at ε={r.row_reg.max():g} "
                          f"(first p={np.round(grid[bad[0]], 3).tolist()}); their values are the last iterate's "
                          "(ot_distances.converged); raise reg", RuntimeWarning, stacklevel=2)
        grads = np.stack([problem.source_means(f) for f in r.f])
        setup = time.perf_counter() - t0 - r.seconds
        return SweepResult(grid=grid, values=r.lower, grads=grads, seconds=r.row_seconds, n_iter=r.row_iter,
                           setup_seconds=max(setup, 0.0), solver=solver, reg=reg, mode=f"batched-{dtype}",
                           converged=r.converged, regs=r.row_reg)
    with torch_threads(threads):
        engine = WeightedOT(problem, replace(o, batched=False))
    setup = time.perf_counter() - t0
    values, secs, iters = np.zeros(G), np.zeros(G), np.zeros(G, dtype=np.int64)
    grads = np.zeros((G, problem.k))
    order = snake_order(grid)
    for idx in track(order, f"OT sweep ({solver})", enabled=progress):
        r = engine(grid[idx])
        values[idx], grads[idx], secs[idx], iters[idx] = r.value, r.grad, r.seconds, r.n_iter
    return SweepResult(grid=grid, values=values, grads=grads, seconds=secs, n_iter=iters, setup_seconds=setup,
                       solver=solver, reg=0.0 if solver == "exact" else reg, mode=engine.mode)
