"""PNGs of scaling-law fits: data, fitted curves, interval band, held-out points and predictions.

One-variable forms: ``y`` against ``x`` on log-log axes. Two- and three-variable forms: ``y`` against
compute ``6 N D``, one fitted line per run (``groups``; without runs: per tokens-per-parameter ratio
``D/N``, or per ``(N, U)`` for data-constrained data), at most ``max_lines`` of them (spread over the
range of sizes; the title says how many were drawn), so that training-curve files with thousands of
runs stay readable. Held-out points are drawn as red open circles. :func:`plot_curves` draws many
``--by`` curves as small multiples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.files import save_figure  # noqa: E402
from tasks.scaling.api import FitReport  # noqa: E402
from tasks.scaling.bootstrap import percentile_interval  # noqa: E402
from tasks.scaling.forms import get_form  # noqa: E402

MAX_LINES = 12


def _run_keys(report: FitReport, groups: np.ndarray | None) -> np.ndarray:
    x, x2 = report.x, report.x2
    if groups is not None:
        return np.asarray(groups).astype(str)
    if x2 is not None and x2.ndim == 2:
        return np.array([f"N={a:.3g}, U={u:.3g}" for a, u in zip(x, x2[:, 1])], dtype=object)
    return np.array([f"D/N={r:.3g}" for r in np.asarray(x2) / x], dtype=object)


def _pick(keys: np.ndarray, order_by: np.ndarray, max_lines: int) -> list:
    """At most ``max_lines`` run keys, spread evenly over the runs sorted by their largest size."""
    uniq = list(dict.fromkeys(keys.tolist()))
    if len(uniq) <= max_lines:
        return uniq
    top = {k: float(order_by[keys == k].max()) for k in uniq}
    ranked = sorted(uniq, key=top.__getitem__)
    idx = np.unique(np.round(np.linspace(0, len(ranked) - 1, max_lines)).astype(int))
    return [ranked[i] for i in idx]


def _densify(a: np.ndarray, steps: int = 6) -> np.ndarray:
    """Log-linear interpolation between consecutive rows of ``a`` (k, m) -> ((k-1)*steps+1, m)."""
    la = np.log(a)
    t = np.linspace(0.0, 1.0, steps, endpoint=False)
    out = [la[i] + t[:, None] * (la[i + 1] - la[i]) for i in range(len(la) - 1)] + [la[-1:]]
    return np.exp(np.vstack(out))


def _draw(ax, report: FitReport, groups: np.ndarray | None, max_lines: int, x_label: str, legend: bool = True) -> str:
    fit = report.fit
    form = get_form(fit.form)
    x, y, x2 = report.x, report.y, report.x2
    held = report.holdout_mask if report.holdout_mask is not None else np.zeros(x.size, dtype=bool)
    preds = report.predictions if report.predictions is not None else fit.predictions
    lo = report.pred_lo if report.pred_lo is not None else fit.pred_lo
    hi = report.pred_hi if report.pred_hi is not None else fit.pred_hi
    note = ""
    if form.n_vars == 1:
        lo_x = min(x.min(), fit.predict_at.min()) if fit.predict_at.size else x.min()
        hi_x = max(x.max(), fit.predict_at.max()) if fit.predict_at.size else x.max()
        grid = np.geomspace(lo_x, hi_x, 200)
        line = ax.plot(grid, form.predict(fit.theta, grid), lw=1.5, label=f"{fit.form} (final fit)")[0]
        if fit.boot_theta is not None:
            blo, bhi = percentile_interval(form.predict(fit.boot_theta, grid), fit.level)
            ax.fill_between(grid, blo, bhi, color=line.get_color(), alpha=0.18, lw=0)
        pos, pos_pred = x, fit.predict_at
        ax.set_xlabel(x_label)
    else:
        seen = x2 if x2.ndim == 1 else x2[:, 0]
        pos = 6.0 * x * seen
        keys = _run_keys(report, groups)
        chosen = _pick(keys, pos, max_lines)
        n_runs = len(set(keys.tolist()))
        cmap = plt.get_cmap("viridis")
        for i, k in enumerate(chosen):
            m = keys == k
            o = np.argsort(pos[m])
            cols = [x[m][o], seen[m][o]] + ([x2[m][o][:, 1]] if x2.ndim == 2 else [])
            dense = _densify(np.column_stack(cols)) if m.sum() > 1 else np.column_stack(cols)
            dx2 = dense[:, 1] if x2.ndim == 1 or form.n_vars == 2 else dense[:, 1:]  # two-variable forms: D = seen
            color = cmap(i / max(1, len(chosen) - 1))
            ax.plot(6.0 * dense[:, 0] * dense[:, 1], form.predict(fit.theta, dense[:, 0], dx2), lw=1.0, color=color,
                    label=str(k) if legend and len(chosen) <= 8 else None)
            ax.scatter(pos[m & ~held], y[m & ~held], s=10, color=color, zorder=3)
        others = ~np.isin(keys, chosen)
        if others.any():
            ax.scatter(pos[others & ~held], y[others & ~held], s=4, c="0.75", zorder=2, label="other runs (not drawn as lines)")
        note = f"{len(chosen)} of {n_runs} runs drawn as lines" if n_runs > len(chosen) else ""
        pp2 = fit.predict_at_x2
        pos_pred = 6.0 * fit.predict_at * (pp2 if pp2 is None or pp2.ndim == 1 else pp2[:, 0]) if fit.predict_at.size else fit.predict_at
        ax.set_xlabel("compute 6·N·D")
    if form.n_vars == 1:
        ax.scatter(pos[~held], y[~held], s=18, c="k", zorder=3, label="data")
    if held.any():
        ax.scatter(pos[held], y[held], s=40, facecolors="none", edgecolors="r", zorder=4, label="held out")
    if fit.predict_at.size and preds is not None:
        # the interval is drawn from its own ends (not as +/- offsets around the point): a prediction can
        # fall outside its bootstrap interval, and errorbar refuses the negative offset that would need
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.vlines(pos_pred[ok], np.minimum(lo, hi)[ok], np.maximum(lo, hi)[ok], colors="tab:purple", lw=1.2, zorder=5)
            ax.scatter(np.r_[pos_pred[ok], pos_pred[ok]], np.r_[lo[ok], hi[ok]], marker="_", s=60, c="tab:purple", zorder=5)
        ax.scatter(pos_pred, preds, marker="D", s=25, c="tab:purple", zorder=6,
                   label=f"prediction ({report.predictor or fit.form})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    return note


def plot_fit(
    path: str | Path,
    report: FitReport,
    *,
    x_label: str = "x",
    y_label: str = "y",
    title: str | None = None,
    groups: np.ndarray | None = None,
    max_lines: int = MAX_LINES,
) -> str:
    """Write the figure to ``path`` (parents created; a link there is replaced, not followed) and return
    the path as a string."""
    fit = report.fit
    form = get_form(fit.form)
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    note = _draw(ax, report, groups, max_lines, x_label)
    ax.set_ylabel(y_label)
    band = f", {int(round(fit.level * 100))}% run-bootstrap band (approx.)" if fit.boot_theta is not None else ""
    head = title or f"{fit.form}: {form.formula}{band}"
    ax.set_title(head + (f"\n{note}" if note else ""), fontsize=8)
    ax.legend(fontsize=6)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> str:
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_curves(
    path: str | Path,
    reports: dict[str, FitReport],
    *,
    x_label: str = "x",
    y_label: str = "y",
    groups: dict[str, np.ndarray | None] | None = None,
    max_panels: int = 16,
    max_lines: int = 6,
) -> str:
    """Small multiples of ``--by`` curves (the first ``max_panels`` keys); returns the path."""
    keys = list(reports)[:max_panels]
    n = max(1, len(keys))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=100, squeeze=False)
    for ax, k in zip(axes.ravel(), keys):
        _draw(ax, reports[k], None if groups is None else groups.get(k), max_lines, x_label, legend=False)
        r = reports[k]
        ax.set_title(f"{k}: {r.predictor}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_xlabel(ax.get_xlabel(), fontsize=6)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    more = f" (first {len(keys)} of {len(reports)} curves)" if len(reports) > len(keys) else ""
    fig.suptitle(f"{y_label} per curve{more}; red circles: held out", fontsize=9)
    return _save(fig, path)
