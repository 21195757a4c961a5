"""PNG of a scaling-law fit: data, fitted curve, bootstrap band, held-out points and predictions.

One-variable forms: ``y`` against ``x`` on log-log axes. Two-variable forms (N, D): ``y`` against
compute ``6 N D``, with one fitted curve per distinct tokens-per-parameter ratio ``D/N`` in the data.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.scaling.api import FitReport  # noqa: E402
from tasks.scaling.bootstrap import percentile_interval  # noqa: E402
from tasks.scaling.forms import get_form  # noqa: E402


def plot_fit(
    path: str | Path,
    report: FitReport,
    *,
    x_label: str = "x",
    y_label: str = "y",
    title: str | None = None,
) -> str:
    """Write the figure to ``path`` (parents created) and return the path as a string."""
    fit = report.fit
    form = get_form(fit.form)
    x, y, x2 = report.x, report.y, report.x2
    held = report.holdout_mask if report.holdout_mask is not None else np.zeros(x.size, dtype=bool)
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
    lo_x = min(x.min(), fit.predict_at.min()) if fit.predict_at.size else x.min()
    hi_x = max(x.max(), fit.predict_at.max()) if fit.predict_at.size else x.max()
    if form.n_vars == 1:
        grid = np.geomspace(lo_x, hi_x, 200)
        curves = [(grid, None, grid, "fit")]
        pos, pos_pred = x, fit.predict_at
        ax.set_xlabel(x_label)
    else:
        ratios = np.unique(np.round(np.asarray(x2) / x, 6))
        pr = np.round(fit.predict_at_x2 / fit.predict_at, 6) if fit.predict_at.size else np.empty(0)
        ratios = np.unique(np.concatenate([ratios, pr]))
        curves = []
        for i, r in enumerate(ratios):
            n_grid = np.geomspace(lo_x, hi_x, 120)
            curves.append((n_grid, n_grid * r, 6.0 * n_grid * n_grid * r, f"D/N={r:g}" if len(ratios) <= 8 else None))
        pos = 6.0 * x * np.asarray(x2)
        pos_pred = 6.0 * fit.predict_at * fit.predict_at_x2 if fit.predict_at.size else fit.predict_at
        ax.set_xlabel("compute 6·N·D")
    for gx, gx2, gpos, label in curves:
        line = ax.plot(gpos, form.predict(fit.theta, gx, gx2), lw=1.5, label=label)[0]
        if fit.boot_theta is not None:
            samples = form.predict(fit.boot_theta, gx, gx2)
            blo, bhi = percentile_interval(samples, fit.level)
            ax.fill_between(gpos, blo, bhi, color=line.get_color(), alpha=0.18, lw=0)
    ax.scatter(pos[~held], y[~held], s=18, c="k", zorder=3, label="data")
    if held.any():
        ax.scatter(pos[held], y[held], s=40, facecolors="none", edgecolors="r", zorder=4, label="held out")
    if fit.predict_at.size:
        err = None
        if np.isfinite(fit.pred_lo).all():
            err = np.vstack([fit.predictions - fit.pred_lo, fit.pred_hi - fit.predictions])
        ax.errorbar(pos_pred, fit.predictions, yerr=err, fmt="D", ms=5, c="tab:purple", capsize=3, zorder=5, label="prediction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(y_label)
    band = f", {int(round(fit.level * 100))}% run-bootstrap band (approx.)" if fit.boot_theta is not None else ""
    ax.set_title(title or f"{fit.form}: {form.formula}{band}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return str(out)
