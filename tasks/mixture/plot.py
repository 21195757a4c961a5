"""Plots of a mixture study (matplotlib, Agg, PNG to a given path).

- :func:`plot_predicted_vs_measured` — held-out / extrapolated predictions against real accuracies.
- :func:`plot_surface` — a value over the 3-source simplex as a triangle heatmap, optionally with the
  selection path and the chosen mixture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.tri as mtri  # noqa: E402
import numpy as np  # noqa: E402

from tasks.files import save_figure  # noqa: E402


def ternary_xy(P: np.ndarray) -> np.ndarray:
    """Barycentric (G, 3) → 2-D points in an equilateral triangle (vertex 1 at (0,0), 2 at (1,0), 3 at top)."""
    P = np.atleast_2d(np.asarray(P, dtype=np.float64))
    return np.column_stack([P[:, 1] + 0.5 * P[:, 2], P[:, 2] * np.sqrt(3) / 2])


def plot_surface(
    P: np.ndarray,
    values: np.ndarray,
    path: str | Path,
    *,
    names: Sequence[str] = ("s1", "s2", "s3"),
    title: str = "",
    label: str = "accuracy",
    sel_path: np.ndarray | None = None,
    chosen: np.ndarray | None = None,
) -> str:
    """Triangle heatmap of ``values`` (G,) over mixtures P (G, 3); optional selection path (T, 3)."""
    P = np.asarray(P)
    if P.shape[1] != 3:
        raise ValueError(f"the triangle heatmap needs 3 sources, got {P.shape[1]}")
    xy = ternary_xy(P)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    tri = mtri.Triangulation(xy[:, 0], xy[:, 1])
    cs = ax.tripcolor(tri, np.asarray(values, dtype=float), shading="gouraud", cmap="viridis")
    ax.scatter(xy[:, 0], xy[:, 1], s=6, c="k", alpha=0.4)
    fig.colorbar(cs, ax=ax, label=label)
    corners = ternary_xy(np.eye(3))
    ax.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=0.8)
    for (x, y), nm, dx, dy in zip(corners, names, (-0.05, 0.05, 0.0), (-0.05, -0.05, 0.03)):
        ax.text(x + dx, y + dy, nm, ha="center", fontsize=10)
    if sel_path is not None and len(sel_path):
        q = ternary_xy(sel_path)
        ax.plot(q[:, 0], q[:, 1], "w.-", lw=1.2, ms=4, label="ascent path")
    if chosen is not None:
        c = ternary_xy(chosen)[0]
        ax.plot(c[0], c[1], "r*", ms=14, label="chosen")
    if sel_path is not None or chosen is not None:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(-0.22, 1.22)
    ax.set_ylim(-0.12, 0.98)
    ax.set_aspect("equal")
    ax.axis("off")
    return _finish(fig, ax, title, path)


def plot_predicted_vs_measured(
    series: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, title: str = "", unit: float = 100.0
) -> str:
    """Scatter of predicted vs measured accuracy per named series {name: (measured, predicted)}, in points."""
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = np.inf, -np.inf
    for name, (y, yhat) in series.items():
        y, yhat = np.asarray(y) * unit, np.asarray(yhat) * unit
        ok = np.isfinite(y) & np.isfinite(yhat)
        if not ok.any():
            continue
        mae = np.abs(y[ok] - yhat[ok]).mean()
        ax.scatter(y[ok], yhat[ok], s=18, alpha=0.8, label=f"{name} (MAE {mae:.1f})")
        lo, hi = min(lo, y[ok].min(), yhat[ok].min()), max(hi, y[ok].max(), yhat[ok].max())
    if np.isfinite(lo):
        pad = 0.05 * (hi - lo + 1e-9)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.set_xlabel("measured accuracy (points)")
    ax.set_ylabel("predicted accuracy (points)")
    ax.legend(fontsize=7)
    return _finish(fig, ax, title, path)


def _finish(fig, ax, title: str, path: str | Path) -> str:
    """Title, layout, write (never through a link: :func:`tasks.files.save_figure`), close."""
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def study_plots(study, names: Sequence[str], out_dir: Path, run_id: str) -> dict[str, str]:
    """The PNGs of a mixture study (:class:`tasks.mixture.stage.MixtureStudy`): pilot, OT and predicted
    surfaces (3 pools), and predicted vs measured (held-out mixtures, extrapolations at N)."""
    from tasks.mixture.predictor import fit_predictor

    out_dir.mkdir(parents=True, exist_ok=True)
    grid, table, sel = study.outcome.grid, study.table, study.outcome.selection.result
    plots: dict[str, str] = {}
    n_big = int(table.sizes[-1])
    if grid.shape[1] == 3:
        plots["surface"] = plot_surface(grid, 100 * table.median[-1], out_dir / f"{run_id}-surface.png", names=names,
                                        title=f"pilot accuracy (median), N={n_big}", label="accuracy (points)")
        plots["ot_surface"] = plot_surface(grid, study.ot_values, out_dir / f"{run_id}-ot.png", names=names,
                                           title="label-aware OT to the target", label="OT")
        plots["selection"] = plot_surface(grid, 100 * study.grid_obj, out_dir / f"{run_id}-selection.png", names=names,
                                          title=f"predicted accuracy at N={sel.n_target} ({study.surface.label})",
                                          label="predicted (points)", sel_path=study.proposal.path, chosen=sel.p[None])
    m = study.surface.splits["projektor"][0]
    series = {}
    if m.any() and (~m).any():
        for form in (study.surface.chosen, "projektor", "nearest_grid"):
            f = fit_predictor(form, grid[m], study.ot_values[m], table.median[-1][m], n=n_big)
            series[f"{form} (held-out p2>=0.5)"] = (table.median[-1][~m], f.predict(grid[~m], study.ot_values[~m]))
    ok = np.isfinite(study.measured)
    if ok.any():
        for key in (("power_law", "pilots"), ("log_n_map", "pilots")):
            series[f"{key[0]} @N={sel.n_target}"] = (study.measured[ok], study.ext[key][ok])
    plots["predicted_vs_measured"] = plot_predicted_vs_measured(series, out_dir / f"{run_id}-pred-vs-measured.png",
                                                                title="predicted vs measured")
    return plots
