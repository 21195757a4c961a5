"""Pruning curves: probe accuracy against the kept fraction, per metric x policy, against random.

For every seed the scores are recomputed with that seed (k-means init, proxy-training seed,
random draw), one selection is made per (metric, policy, fraction), and a linear probe
(:func:`tasks.probe.train_linear_probe`, deterministic L-BFGS multinomial logistic regression) is
trained on each kept subset and tested on the fixed held-out set. The curve reports
mean ± std over seeds; ``fraction = 1`` is the full-data probe (metric ``"full"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.errors import WinnowError
from tasks.device import resolve_device
from tasks.prune.kmeans import check_embeddings, small_problem_threads, spherical_kmeans
from tasks.prune.registry import KMEANS_METRICS, MetricParams, compute_metric, metric_spec, select_by_metric
from tasks.prune.select import AUTO_ALPHA_THRESHOLD, POLICIES

__all__ = ["CurvePoint", "PruningCurve", "pruning_curve", "plot_pruning_curve"]



@dataclass(frozen=True)
class CurvePoint:
    """Accuracy of one probe trained on one selection."""

    metric: str
    policy: str
    resolved_policy: str
    fraction: float
    seed: int
    n_kept: int
    accuracy: float
    reason: str


@dataclass(frozen=True)
class PruningCurve:
    points: tuple[CurvePoint, ...]

    def summary(self) -> list[dict]:
        """Mean/std accuracy per (metric, policy, fraction), sorted by metric, policy, -fraction."""
        groups: dict[tuple, list[CurvePoint]] = {}
        for p in self.points:
            groups.setdefault((p.metric, p.policy, p.fraction), []).append(p)
        out = []
        for (m, pol, f), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
            acc = np.array([p.accuracy for p in ps])
            out.append(
                {
                    "metric": m,
                    "policy": pol,
                    "resolved_policy": ",".join(sorted({p.resolved_policy for p in ps})),
                    "fraction": f,
                    "mean": float(acc.mean()),
                    "std": float(acc.std()),
                    "n_seeds": len(ps),
                    "n_kept": int(np.mean([p.n_kept for p in ps])),
                }
            )
        return out

    def mean(self, metric: str, policy: str, fraction: float) -> float:
        v = [p.accuracy for p in self.points if p.metric == metric and p.policy == policy and p.fraction == fraction]
        if not v:
            raise KeyError((metric, policy, fraction))
        return float(np.mean(v))


def pruning_curve(
    E_train: np.ndarray,
    y_train: np.ndarray,
    E_test: np.ndarray,
    y_test: np.ndarray,
    *,
    metrics: Sequence[str] = (),
    policies: Sequence[str] = ("hard", "easy"),
    series: Sequence[tuple[str, str]] | None = None,
    fractions: Sequence[float] = (1.0, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05),
    seeds: Sequence[int] = (0, 1, 2),
    params: MetricParams = MetricParams(),
    balance: str = "none",
    min_group_share: float = 0.0,
    auto_threshold: float = AUTO_ALPHA_THRESHOLD,
    ccs_beta: float = 0.1,
    ccs_strata: int = 50,
    probe_max_iter: int = 200,
    probe_weight_decay: float = 1e-4,
    probe_fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float] | None = None,
    progress: bool = False,
) -> PruningCurve:
    """Probe accuracy vs kept fraction for each metric x policy (metric ``random`` runs once, as
    policy ``random``), several seeds.

    Parameters
    ----------
    E_train : (n, d) embeddings of the pool to prune; y_train : (n,) labels (the probe needs them;
        label-free metrics never see them).
    E_test : (m, d), y_test : (m,) — the fixed held-out set.
    metrics : registry names; policies : "hard" | "easy" | "auto" | "ccs" | "random".
    series : explicit (metric, policy) pairs to run instead of metrics x policies.
    fractions : keep fractions in (0, 1]; 1 adds the full-data probe.
    seeds : one scoring + selection per seed.
    params, balance, min_group_share, auto_threshold, ccs_beta, ccs_strata : see
        :func:`tasks.prune.select.select` and :class:`~tasks.prune.registry.MetricParams`.
    probe_max_iter, probe_weight_decay : the linear probe (:mod:`tasks.probe`).
    probe_fn : optional replacement probe ``(E_kept, y_kept, E_test, y_test) -> accuracy`` called
        once per subset (e.g. scikit-learn's LogisticRegression to reproduce a published setting).
    """

    from tasks.probe import train_linear_probe

    E_train = check_embeddings(E_train, "E_train")
    E_test = check_embeddings(E_test, "E_test")
    if y_train is None or y_test is None:
        raise WinnowError("evaluating a pruning needs labels on the train and test rows (the probe is supervised)")
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    if series is not None:
        series = [(str(m), str(p)) for m, p in series]
        metrics = list(dict.fromkeys(m for m, _ in series))
    if not metrics:
        raise WinnowError("metrics is empty")
    for m in metrics:
        metric_spec(m)
    for p in list(policies) + [p for _, p in series or ()]:
        if p not in POLICIES:
            raise WinnowError(f"policy={p!r} must be one of {', '.join(POLICIES)}")
    for f in fractions:
        if not (0 < f <= 1):
            raise WinnowError(f"fraction={f} must be in (0, 1]")
    if not seeds:
        raise WinnowError("seeds is empty")
    n, d = E_train.shape
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    pruned_fracs = [float(f) for f in fractions if f < 1]

    from rich.progress import Progress

    points: list[CurvePoint] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("pruning curve", total=len(seeds))
        for seed in seeds:
            jobs: list[tuple[str, str, float, object]] = []
            km = None
            if any(m in KMEANS_METRICS for m in metrics):
                km = spherical_kmeans(E_train, params.k, iters=params.kmeans_iters, seed=seed, chunk=params.chunk,
                                      device=resolve_device(params.device))
            for m in metrics:
                spec = metric_spec(m)
                ms = compute_metric(m, E_train, y=y_train if spec.needs_labels else None, params=params,
                                    seed=seed, kmeans=km if m in KMEANS_METRICS else None)
                if series is not None:
                    pols = [p for mm, p in series if mm == m]
                else:
                    pols = ["random"] if m == "random" else list(policies)
                for pol in pols:
                    for f in pruned_fracs:
                        sel = select_by_metric(
                            ms, pol, fraction=f, balance=balance, min_group_share=min_group_share, dim=d,
                            n_groups=n_classes, auto_threshold=auto_threshold, ccs_beta=ccs_beta,
                            ccs_strata=ccs_strata, seed=seed,
                        )
                        jobs.append((m, pol, f, sel))
            train_sets = [np.arange(n)] + [j[3].indices for j in jobs]
            if probe_fn is None:
                # one probe per subset: cost grows with the kept rows, not with the pool (a stacked
                # solve would touch all n rows for every subset)
                def probe_fn(a, b, c, d_):
                    with small_problem_threads(a.size):
                        return train_linear_probe(
                            a, b, c, d_, n_classes=n_classes, max_iter=probe_max_iter, weight_decay=probe_weight_decay
                        ).accuracy
            accs = [float(probe_fn(E_train[s], y_train[s], E_test, y_test)) for s in train_sets]
            if any(f == 1 for f in fractions):
                points.append(CurvePoint("full", "none", "none", 1.0, int(seed), n, float(accs[0]), "all rows"))
            for (m, pol, f, sel), acc in zip(jobs, accs[1:]):
                points.append(CurvePoint(m, pol, sel.resolved_policy, f, int(seed), sel.budget, float(acc), sel.reason))
            bar.update(task, advance=1)
    return PruningCurve(points=tuple(points))


def plot_pruning_curve(curve: PruningCurve, path: str, *, title: str = "pruning curve") -> str:
    """Accuracy (mean ± std over seeds) vs kept fraction, log x axis, random dashed; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = curve.summary()
    full = [s for s in summary if s["metric"] == "full"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series: dict[tuple[str, str], list[dict]] = {}
    for s in summary:
        if s["metric"] != "full":
            series.setdefault((s["metric"], s["policy"]), []).append(s)
    for (m, pol), ss in sorted(series.items()):
        ss = sorted(ss, key=lambda s: s["fraction"])
        x = [s["fraction"] for s in ss]
        y = [s["mean"] for s in ss]
        e = [s["std"] for s in ss]
        style = dict(ls="--", color="black", lw=2) if m == "random" else dict(ls="-", marker="o", ms=3)
        ax.errorbar(x, y, yerr=e, label=m if m == "random" else f"{m} / {pol}", capsize=2, **style)
    if full:
        ax.axhline(full[0]["mean"], color="grey", lw=1, ls=":", label=f"full data {full[0]['mean']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training data kept")
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
