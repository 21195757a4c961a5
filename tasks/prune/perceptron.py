"""Teacher-student perceptron pruning experiment — Sorscher et al. 2022, "Beyond neural scaling
laws: beating power law scaling via data pruning", Fig. 1.

Protocol (pruning.md): a teacher :math:`T \\in \\mathbb{R}^N` (unit norm), inputs
:math:`x \\sim \\mathcal{N}(0, I_N)`, labels :math:`y = \\operatorname{sign}(T^\\top x)`,
:math:`P = \\alpha_{tot} N` training examples. A probe :math:`J` at angle θ to T defines the margin
:math:`|J^\\top x|`; a pruning keeps a fraction *f*:

* keep-hard — the smallest margins; keep-easy — the largest; random — uniform.

A max-margin student (``LinearSVC(C=1e4, loss="hinge", fit_intercept=False)``) is trained on the
kept examples, and its generalisation error is exact for the isotropic Gaussian input:

.. math::  \\varepsilon = \\frac{1}{\\pi} \\arccos R, \\qquad R = \\frac{S^\\top T}{\\lVert S \\rVert\\,\\lVert T \\rVert}.

The theory's pattern: with little data (small α_tot) keep-easy beats random and keep-hard loses;
with abundant data keep-hard wins. The policies of one (α_tot, seed) share the same draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError

__all__ = ["PerceptronRow", "PerceptronResult", "perceptron_experiment", "summarize_perceptron", "plot_perceptron"]

POLICIES = ("random", "hard", "easy")


MAX_CELLS = 200_000_000  # P x N values of one data matrix (1.6 GB in float64)


@dataclass(frozen=True)
class PerceptronRow:
    """One trained student: test error ``test_error`` with ``n_kept`` of ``P`` examples."""

    N: int
    theta: float
    alpha_tot: float
    fraction: float
    policy: str
    seed: int
    P: int
    n_kept: int
    test_error: float


@dataclass(frozen=True)
class PerceptronResult:
    rows: tuple[PerceptronRow, ...]

    def mean_error(self, alpha_tot: float, fraction: float, policy: str) -> float:
        v = [
            r.test_error
            for r in self.rows
            if r.alpha_tot == alpha_tot and r.fraction == fraction and r.policy == policy
        ]
        if not v:
            raise KeyError(f"no rows for alpha_tot={alpha_tot}, fraction={fraction}, policy={policy}")
        return float(np.mean(v))


def _student_error(X: np.ndarray, y: np.ndarray, T: np.ndarray, C: float, max_iter: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if np.unique(y).size < 2:  # one class only: the student carries no direction information
        return 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm = LinearSVC(C=C, loss="hinge", fit_intercept=False, dual=True, max_iter=max_iter, tol=1e-4)
        svm.fit(X, y)
    S = svm.coef_.ravel()
    norm = np.linalg.norm(S)
    if norm == 0:
        return 0.5
    R = float(np.clip(S @ T / norm, -1.0, 1.0))
    return float(np.arccos(R) / np.pi)


def check_grid(N: int, alphas: Sequence[float], fractions: Sequence[float], theta: float = 0.0) -> None:
    """The teacher-student grid's arguments: N >= 2, distinct finite alphas > 0 whose data fit
    :data:`MAX_CELLS`, distinct fractions in (0, 1], the probe's angle theta in [0, π/2]."""
    if N < 2:
        raise WinnowError(f"N={N} must be >= 2")
    if not (0 <= theta <= np.pi / 2):  # nan too
        raise WinnowError(f"theta={theta} must be in [0, pi/2] radians")
    for name, values in (("alpha_tot", alphas), ("fraction", fractions)):
        if not len(values):
            raise WinnowError(f"no {name} values given")
        if len(set(values)) < len(values):
            raise WinnowError(f"{name} values {list(values)} repeat a value (each is one grid point)")
    for a in alphas:
        if not (0 < a < np.inf):
            raise WinnowError(f"alpha_tot={a} must be a finite number > 0")
        if round(a * N) * N > MAX_CELLS:
            raise WinnowError(f"alpha_tot={a:g} with N={N} needs a {round(a * N):,} x {N:,} data matrix; "
                              f"the limit is {MAX_CELLS:,} values (lower alpha_tot or N)")
    for f in fractions:
        if not (0 < f <= 1):
            raise WinnowError(f"fraction={f} must be in (0, 1]")


def perceptron_experiment(
    *,
    N: int = 100,
    alphas: Sequence[float] = (1, 2, 4, 8, 16, 32, 64),
    fractions: Sequence[float] = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1),
    policies: Sequence[str] = POLICIES,
    seeds: Sequence[int] = (0, 1, 2),
    theta: float = 0.0,
    C: float = 1e4,
    max_iter: int = 20_000,
    progress: bool = False,
) -> PerceptronResult:
    """Run the teacher-student pruning grid.

    Parameters
    ----------
    N : input dimension (>= 2).
    alphas : α_tot values (> 0); P = round(α_tot N).
    fractions : keep fractions f in (0, 1].
    policies : subset of ("random", "hard", "easy").
    seeds : one independent teacher + data draw per seed.
    theta : angle (radians, in [0, π/2]) between the pruning probe J and the teacher T.
    C, max_iter : LinearSVC settings (large C ≈ hard margin).

    Returns
    -------
    PerceptronResult with one row per (seed, α_tot, f, policy).
    """
    check_grid(N, alphas, fractions, theta)
    for p in policies:
        if p not in POLICIES:
            raise WinnowError(f"policy={p!r} must be one of {', '.join(POLICIES)}")
    if not seeds:
        raise WinnowError("seeds is empty")
    from tasks.progress import progress_bar

    rows: list[PerceptronRow] = []
    total = len(seeds) * len(alphas)
    with progress_bar(progress) as bar:
        task = bar.add_task("perceptron", total=total)
        for seed in seeds:
            rng = np.random.default_rng(seed)
            T = rng.normal(size=N)
            T /= np.linalg.norm(T)
            u = rng.normal(size=N)
            u -= (u @ T) * T
            u /= np.linalg.norm(u)
            J = np.cos(theta) * T + np.sin(theta) * u
            for a in alphas:
                P = max(2, int(round(a * N)))
                X = rng.normal(size=(P, N))
                y = np.where(X @ T >= 0, 1, -1)
                margin = np.abs(X @ J)
                by_margin = np.argsort(margin, kind="stable")  # easiest last
                perm = rng.permutation(P)
                for f in fractions:
                    k = max(1, int(round(f * P)))
                    full_err = _student_error(X, y, T, C, max_iter) if k == P else None
                    for pol in policies:
                        if full_err is not None:  # f = 1: every policy keeps everything
                            rows.append(PerceptronRow(N, float(theta), float(a), float(f), pol, int(seed), P, k, full_err))
                            continue
                        if pol == "hard":
                            idx = by_margin[:k]
                        elif pol == "easy":
                            idx = by_margin[P - k :]
                        else:
                            idx = perm[:k]
                        err = _student_error(X[idx], y[idx], T, C, max_iter)
                        rows.append(PerceptronRow(N, float(theta), float(a), float(f), pol, int(seed), P, k, err))
                bar.update(task, advance=1)
    return PerceptronResult(rows=tuple(rows))


def summarize_perceptron(result: PerceptronResult) -> list[dict]:
    """Mean and std of the test error per (α_tot, f, policy), sorted."""
    groups: dict[tuple, list[float]] = {}
    for r in result.rows:
        groups.setdefault((r.alpha_tot, r.fraction, r.policy), []).append(r.test_error)
    out = []
    for (a, f, p), v in sorted(groups.items()):
        out.append(
            {"alpha_tot": a, "fraction": f, "policy": p, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        )
    return out


def plot_perceptron(result: PerceptronResult, path: str) -> str:
    """Test error vs α_tot (log-log), one line per (policy, f), like Sorscher et al. Fig. 1A; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.files import save_figure

    summary = summarize_perceptron(result)
    fracs = sorted({s["fraction"] for s in summary}, reverse=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, pol in zip(axes, ("hard", "easy")):
        for i, f in enumerate(fracs):
            for p, style in ((pol, "-o"), ("random", ":")):
                pts = [(s["alpha_tot"], s["mean"]) for s in summary if s["policy"] == p and s["fraction"] == f]
                if not pts or (p == "random" and f == 1.0):
                    continue
                x, yv = zip(*pts)
                ax.plot(x, np.maximum(yv, 1e-4), style, color=cmap(i / max(1, len(fracs) - 1)), ms=3,
                        label=f"f={f:g}" if p == pol else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$\alpha_{tot} = P/N$")
        ax.set_title(f"keep-{pol} (solid) vs random (dotted)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(r"test error $\varepsilon = \arccos(R)/\pi$")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
