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

from tasks.device import resolve_device
from tasks.prune.kmeans import check_embeddings, small_problem_threads, spherical_kmeans
from tasks.prune.registry import KMEANS_METRICS, MetricParams, compute_metric, metric_spec, select_by_metric
from tasks.prune.select import POLICIES, SelectOptions, effective_dim

__all__ = ["AutoOverride", "CurvePoint", "GuardNote", "PruningCurve", "auto_override", "losses_to_random",
           "mean_text", "plot_pruning_curve", "pruning_curve", "validation_split"]


def mean_text(mean: float, std: float, n_seeds: int) -> str:
    """``0.9123±0.0040`` over several seeds; ``0.9123 (1 seed)`` over one, which has no spread to show."""
    return f"{mean:.4f}±{std:.4f}" if n_seeds > 1 else f"{mean:.4f} (1 seed)"


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

    def fractions(self) -> list[float]:
        """The pruned fractions measured (f < 1), descending."""
        return sorted({p.fraction for p in self.points if p.fraction < 1}, reverse=True)

    def seeds(self) -> list[int]:
        return sorted({p.seed for p in self.points})

    def restricted(self, seeds) -> "PruningCurve":
        """The same curve on a subset of its seeds (e.g. to decide on some seeds and judge on the others)."""
        keep = {int(s) for s in seeds}
        return PruningCurve(points=tuple(p for p in self.points if p.seed in keep))

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
    select: SelectOptions = SelectOptions(),
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
    params : metric knobs (:class:`~tasks.prune.registry.MetricParams`); select : balance, minimum
        group share, ``auto`` threshold, CCS options (:class:`~tasks.prune.select.SelectOptions`).
    probe_max_iter, probe_weight_decay : the linear probe (:mod:`tasks.probe`).
    probe_fn : optional replacement probe ``(E_kept, y_kept, E_test, y_test) -> accuracy`` called
        once per subset (e.g. scikit-learn's LogisticRegression to reproduce a published setting).
    """

    from tasks.probe import train_linear_probe

    E_train = check_embeddings(E_train, "E_train")
    E_test = check_embeddings(E_test, "E_test")
    if y_train is None or y_test is None:
        raise ValueError("evaluating a pruning needs labels on the train and test rows (the probe is supervised)")
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    if series is not None:
        series = [(str(m), str(p)) for m, p in series]
        metrics = list(dict.fromkeys(m for m, _ in series))
    if not metrics:
        raise ValueError("metrics is empty")
    for m in metrics:
        metric_spec(m)
    for p in list(policies) + [p for _, p in series or ()]:
        if p not in POLICIES:
            raise ValueError(f"policy={p!r} must be one of {', '.join(POLICIES)}")
    for f in fractions:
        if not (0 < f <= 1):
            raise ValueError(f"fraction={f} must be in (0, 1]")
    if not seeds:
        raise ValueError("seeds is empty")
    n, _ = E_train.shape
    d = effective_dim(E_train)  # the auto rule's dimension, as in the stage
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    pruned_fracs = [float(f) for f in fractions if f < 1]

    from tasks.progress import progress_bar

    points: list[CurvePoint] = []
    with progress_bar(progress) as bar:
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
                        sel = select_by_metric(ms, pol, options=select, fraction=f, dim=d, n_groups=n_classes,
                                               seed=seed)
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


def validation_split(y: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the pool to fit on and rows to validate on: ``share`` of every class (rounded, at least
    one row of a class with two or more, never all of it), drawn with ``seed``; both index arrays sorted.

    The stage decides ``auto``'s switch on a curve measured on this split of the pool (selections on the
    fit rows, probes validated on the held-out rows), so the test rows only report.
    """
    y = np.asarray(y)
    if not 0 < share < 1:
        raise ValueError(f"share={share} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        m = min(max(int(round(share * rows.size)), 1), rows.size - 1)
        if m > 0:
            val.append(rng.choice(rows, size=m, replace=False))
    held = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    fit = np.setdiff1d(np.arange(y.size), held)
    return fit, held


@dataclass(frozen=True)
class GuardNote:
    """A series of the curve that lost to random beyond noise at one fraction, and what did better."""

    metric: str
    policy: str
    fraction: float
    mean: float
    std: float
    random_mean: float
    random_std: float
    best: str
    best_mean: float
    n_seeds: int = 2
    random_n_seeds: int = 2

    def measured(self) -> str:
        """"<mean±std> vs random <mean±std>" (no ±std over one seed)."""
        return (f"{mean_text(self.mean, self.std, self.n_seeds)} vs random "
                f"{mean_text(self.random_mean, self.random_std, self.random_n_seeds)}")

    def line(self) -> str:
        noise = "beyond noise" if min(self.n_seeds, self.random_n_seeds) > 1 else "(one seed: no noise estimate)"
        return (f"{self.metric}/{self.policy} at f={self.fraction:g}: {mean_text(self.mean, self.std, self.n_seeds)} is below "
                f"random {mean_text(self.random_mean, self.random_std, self.random_n_seeds)} {noise}; "
                f"better here: {self.best} {self.best_mean:.4f}")


def losses_to_random(curve: PruningCurve) -> list[GuardNote]:
    """Every (metric, policy, fraction) whose mean accuracy is below random's by more than the
    larger of the two seed stds, with the best series at that fraction (possibly random itself).

    With one seed there is no noise estimate and any loss counts.
    """
    summ = curve.summary()
    rnd = {s["fraction"]: s for s in summ if s["metric"] == "random"}
    notes = []
    for s in summ:
        r = rnd.get(s["fraction"])
        if s["metric"] in ("random", "full") or r is None:
            continue
        if s["mean"] < r["mean"] - max(s["std"], r["std"]):
            at = [t for t in summ if t["fraction"] == s["fraction"] and t["metric"] != "full"]
            b = max(at, key=lambda t: t["mean"])
            name = "random" if b["metric"] == "random" else f"{b['metric']}/{b['policy']}"
            notes.append(GuardNote(s["metric"], s["policy"], s["fraction"], s["mean"], s["std"], r["mean"], r["std"],
                                   name, b["mean"], s["n_seeds"], r["n_seeds"]))
    return notes


@dataclass(frozen=True)
class AutoOverride:
    """The curve's verdict on ``metric``/auto at one fraction: it lost, beyond noise, to another measured
    option, and ``auto`` resolves to the best-measured one instead (``to_metric``/``to_policy``:
    another policy of the same metric, or ``random``/``random``)."""

    metric: str
    fraction: float
    from_policy: str  # what auto had resolved to in the curve ("easy", "hard", ...)
    mean: float
    std: float
    to_metric: str
    to_policy: str
    to_mean: float
    to_std: float
    n_seeds: int
    basis: str = "the pruning curve"  # what measured it (the stage: a validation split of the pool)

    @property
    def target(self) -> str:
        return "random" if self.to_metric == "random" else f"{self.to_metric}/{self.to_policy}"

    def reason(self) -> str:
        return (f"auto -> {self.target} (switched from keep-{self.from_policy} by {self.basis}): at f={self.fraction:g} "
                f"{self.metric}/auto measured {mean_text(self.mean, self.std, self.n_seeds)} vs {self.target} "
                f"{mean_text(self.to_mean, self.to_std, self.n_seeds)}"
                + (f" over {self.n_seeds} seeds, a loss larger than one seed std" if self.n_seeds > 1
                   else ", one seed: any loss counts (no noise estimate)"))


def auto_override(curve: PruningCurve, metric: str, fraction: float, *, basis: str = "the pruning curve") -> AutoOverride | None:
    """The rule that makes ``auto`` act on the stage's own pruning curve.

    At ``fraction`` the candidates are every other measured policy of ``metric`` (hard, easy, ccs, ...)
    and random. If some candidate's mean beats ``metric``/auto's mean by more than one seed std (the
    larger of the two series' stds: the same noise margin as :func:`losses_to_random`; with one seed any
    loss counts), auto resolves to the candidate with the highest mean. Otherwise (or when the curve
    did not measure ``metric``/auto at that fraction) it returns None and auto keeps its rule.
    No tuning constant: the margin is the curve's own noise estimate.
    """
    at = [s for s in curve.summary() if abs(s["fraction"] - fraction) < 1e-9]
    auto = next((s for s in at if s["metric"] == metric and s["policy"] == "auto"), None)
    if auto is None:
        return None
    cands = [s for s in at if (s["metric"] == metric and s["policy"] != "auto") or s["metric"] == "random"]
    beaten_by = [c for c in cands if c["mean"] > auto["mean"] + max(auto["std"], c["std"])]
    if not beaten_by:
        return None
    best = max(cands, key=lambda c: c["mean"])
    return AutoOverride(metric, float(auto["fraction"]), auto["resolved_policy"], auto["mean"], auto["std"],
                        best["metric"], best["policy"], best["mean"], best["std"], int(auto["n_seeds"]), basis)


def robust_limits(values: Sequence[float], *, whisker: float = 3.0) -> tuple[float, float, int]:
    """Axis limits that keep the bulk of ``values`` readable: [Q1 - w*IQR, Q3 + w*IQR] cut to the data's
    range, padded 5 %; returns (lo, hi, number of values outside)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return 0.0, 1.0, 0
    q1, q3 = np.percentile(v, [25, 75])
    iqr = max(q3 - q1, 1e-3)
    lo, hi = max(v.min(), q1 - whisker * iqr), min(v.max(), q3 + whisker * iqr)
    pad = 0.05 * max(hi - lo, 1e-3)
    return float(lo - pad), float(hi + pad), int(((v < lo) | (v > hi)).sum())


def series_styles(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Matplotlib styles per (metric, policy): random is a thick dashed black line; every other series
    gets its own colour (20 of tab20) and marker, the line style saying the policy."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    markers = "osD^v<>pPhX*d12348"
    lines = {"hard": "-", "easy": "--", "auto": "-.", "ccs": ":"}
    out = {}
    others = sorted(k for k in keys if k[0] != "random")
    for j, (m, pol) in enumerate(others):
        colour = colours[(2 * j) % 20] if j < 10 else colours[(2 * (j - 10) + 1) % 20]
        out[(m, pol)] = dict(ls=lines.get(pol, "-"), color=colour, marker=markers[j % len(markers)], ms=4, lw=1.3,
                             label=f"{m} / {pol}")
    for k in keys:
        if k[0] == "random":
            out[k] = dict(ls="--", color="black", lw=2, marker="", label="random")
    return out


def plot_pruning_curve(curve: PruningCurve, path: str, *, title: str = "pruning curve") -> str:
    """Accuracy (mean ± std over seeds) vs kept fraction, log x axis, random dashed black; writes a PNG.

    Every series has its own colour (tab20) and marker, the line style says the policy; the y axis
    keeps the bulk of the points readable (:func:`robust_limits`) and a note counts any point left
    outside it (drawn as a triangle on the edge).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.files import save_figure

    summary = curve.summary()
    full = [s for s in summary if s["metric"] == "full"]
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    series: dict[tuple[str, str], list[dict]] = {}
    for s in summary:
        if s["metric"] != "full":
            series.setdefault((s["metric"], s["policy"]), []).append(s)
    lo, hi, n_out = robust_limits([s["mean"] for s in summary])
    styles = series_styles(list(series))
    for key, style in styles.items():
        ss = sorted(series[key], key=lambda s: s["fraction"])
        x = [s["fraction"] for s in ss]
        y = [s["mean"] for s in ss]
        e = [s["std"] for s in ss]
        ax.errorbar(x, np.clip(y, lo, hi), yerr=e, capsize=2, **style)
        out = [(a, b) for a, b in zip(x, y) if b < lo or b > hi]
        if out:
            ax.scatter([a for a, _ in out], [lo if b < lo else hi for _, b in out],
                       marker="v", color=style["color"], s=40, zorder=5, clip_on=False)
    if full:
        ax.axhline(full[0]["mean"], color="grey", lw=1, ls=":", label=f"full data {full[0]['mean']:.3f}")
    ax.set_ylim(lo, hi)
    if n_out:
        ax.text(0.01, 0.01, f"{n_out} point(s) outside the axis, drawn on its edge (triangles)",
                transform=ax.transAxes, fontsize=7, color="dimgrey")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training data kept")
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
