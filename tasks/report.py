"""Render a run report: one self-contained HTML page with PNG plots embedded as base64.

Pure rendering from data already read (see :func:`storage.report.load_report_data`): no SQL, no
Prefect. Sections: run, sources, selections, pruning curve, mixture surface, the plan and its alternatives,
fitted laws with their
intervals, predictions, then every other table of the run. A section whose table is absent is
skipped; a plot whose table lacks the columns it needs is skipped and the rows are shown instead.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

PREVIEW_ROWS = 50


@dataclass(frozen=True)
class ReportData:
    """What a report shows: ``run`` (the runs row + ``sources`` + ``tables`` counts) and per-table rows."""

    run: dict
    sources: list[dict]
    tables: dict[str, pa.Table] = field(default_factory=dict)
    aggregated: frozenset[str] = frozenset()  # tables returned as per-group aggregates
    truncated: frozenset[str] = frozenset()  # tables cut at a row limit


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4} td.t{text-align:left} .meta td{text-align:left} .note{color:#666;font-size:.85em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0} pre{background:#f8f8f8;padding:.8em;overflow:auto;font-size:.8em}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _html_table(rows: list[dict[str, Any]], limit: int = PREVIEW_ROWS) -> str:
    if not rows:
        return "<p class=note>no rows</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows[:limit]:
        cells = "".join(
            f"<td{' class=t' if not isinstance(r[c], (int, float)) else ''}>{html.escape(_fmt(r[c]))}</td>" for c in cols)
        body.append(f"<tr>{cells}</tr>")
    more = f"<p class=note>{len(rows) - limit} more rows not shown</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _has(table: pa.Table, *cols: str) -> bool:
    return all(c in table.column_names for c in cols)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def _series(rows: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(" / ".join(str(r[k]) for k in keys if k in r), []).append(r)
    return out


# Plotters: (table, {source_id: name}) -> an <img> tag, or None when the table lacks the columns they need.
def _plot_sources(sources: list[dict]) -> str:
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(sources)))
    names = [f"{s['name']} v{s['version']}" for s in sources]
    train = np.array([s["n_train"] for s in sources]); test = np.array([s["n_test"] for s in sources])
    ax.barh(names, train, label="train"); ax.barh(names, test, left=train, label="test")
    ax.set_xlabel("rows"); ax.legend(loc="lower right"); ax.invert_yaxis()
    return _png(fig)


def _plot_pruning_curve(t: pa.Table, names: dict[int, str]) -> str | None:
    if _has(t, "fraction", "mean_accuracy", "metric"):
        y, err = "mean_accuracy", "std_accuracy"
    elif _has(t, "fraction", "accuracy", "metric"):
        y, err = "accuracy", None
    else:
        return None
    rows = [{**r, "source": names.get(r.get("source_id"), r.get("source_id"))} for r in _rows(t)]
    keys = [k for k in ("source", "metric", "policy") if k in rows[0]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in sorted(_series(rows, keys).items()):
        pts = sorted(pts, key=lambda r: r["fraction"])
        xs = [p["fraction"] for p in pts]; ys = [p[y] for p in pts]
        es = [p.get(err) or 0 for p in pts] if err and err in t.column_names else None
        if pts[0].get("metric") == "full" or len(set(xs)) == 1:
            ax.axhline(float(np.mean(ys)), ls="--", color="grey", label=f"{label} (all rows)")
        else:
            ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=label)
    ax.set_xlabel("fraction of data kept"); ax.set_ylabel("probe accuracy"); ax.invert_xaxis()
    ax.grid(alpha=.3); ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _plot_mixture_surface(t: pa.Table, names: dict[int, str]) -> str | None:
    if not _has(t, "p", "accuracy"):
        return None
    rows = [r for r in _rows(t) if r["p"] is not None and r["accuracy"] is not None]
    if not rows:
        return None
    k = len(rows[0]["p"])
    ns = sorted({r.get("n") for r in rows}, key=lambda v: (v is None, v))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if k == 2:
        for n in ns:
            pts = sorted((r for r in rows if r.get("n") == n), key=lambda r: r["p"][0])
            ax.plot([r["p"][0] for r in pts], [r["accuracy"] for r in pts], marker="o", ms=3, label=f"n={n}")
        ax.set_xlabel("weight of the first source (p₁)"); ax.set_ylabel("pilot accuracy"); ax.legend(fontsize=7)
        if _has(t, "ot"):
            pts = sorted((r for r in rows if r.get("ot") is not None), key=lambda r: r["p"][0])
            if pts:
                ax2 = ax.twinx()
                ax2.plot([r["p"][0] for r in pts], [r["ot"] for r in pts], color="k", ls=":", label="OT distance")
                ax2.set_ylabel("OT distance to target")
    else:
        last = [r for r in rows if r.get("n") == ns[-1]]
        P = np.array([r["p"] for r in last], dtype=float)
        # barycentric coordinates of the first three weights (exact for K = 3)
        x = P[:, 1] + P[:, 2] / 2 if k >= 3 else P[:, 0]
        yy = P[:, 2] * np.sqrt(3) / 2 if k >= 3 else np.zeros(len(P))
        sc = ax.scatter(x, yy, c=[r["accuracy"] for r in last], cmap="viridis", s=60)
        fig.colorbar(sc, ax=ax, label=f"pilot accuracy (n={ns[-1]})")
        ax.set_aspect("equal"); ax.set_xticks([]); ax.set_yticks([])
        ax.set_title("simplex: corners = sources 1, 2, 3", fontsize=9)
    ax.grid(alpha=.3)
    return _png(fig)


def _plot_predictions(t: pa.Table, names: dict[int, str]) -> str | None:
    if not _has(t, "x", "y_pred"):
        return None
    rows = _rows(t)
    keys = [k for k in ("fit_key",) if k in t.column_names]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in sorted(_series(rows, keys).items()):
        pts = sorted(pts, key=lambda r: r["x"])
        xs = np.array([p["x"] for p in pts], dtype=float)
        ys = np.array([np.nan if p["y_pred"] is None else p["y_pred"] for p in pts], dtype=float)
        line = ax.plot(xs, ys, marker="s", ms=4, label=f"{label} predicted")[0]
        if _has(t, "y_lo", "y_hi"):
            lo = np.array([np.nan if p["y_lo"] is None else p["y_lo"] for p in pts], dtype=float)
            hi = np.array([np.nan if p["y_hi"] is None else p["y_hi"] for p in pts], dtype=float)
            ax.fill_between(xs, lo, hi, alpha=.2, color=line.get_color(), label=f"{label} interval")
        if "y_obs" in t.column_names:
            obs = [(p["x"], p["y_obs"]) for p in pts if p.get("y_obs") is not None]
            if obs:
                ax.plot(*zip(*obs), "o", color=line.get_color(), mfc="none", label=f"{label} observed")
    if len(xs) and np.nanmin(xs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("x (examples)"); ax.set_ylabel("y"); ax.grid(alpha=.3, which="both"); ax.legend(fontsize=7)
    return _png(fig)


def _fits_rows(t: pa.Table) -> list[dict]:
    """Fitted laws with each parameter shown as ``value [lo, hi]``."""
    rows = []
    for r in _rows(t):
        params = json.loads(r["params"]) if isinstance(r.get("params"), str) else (r.get("params") or {})
        ci = json.loads(r["param_ci"]) if isinstance(r.get("param_ci"), str) else (r.get("param_ci") or {})
        shown = {k: r[k] for k in ("fit_key", "form", "formula", "n_points", "stable", "holdout_are", "warning") if k in r}
        shown["parameters (interval)"] = "; ".join(
            f"{k}={_fmt(v)}" + (f" [{_fmt(ci[k][0])}, {_fmt(ci[k][1])}]" if k in ci and ci[k] else "")
            for k, v in params.items())
        rows.append(shown)
    return rows


def _plot_plan(t: pa.Table, names: dict[int, str]) -> str | None:
    """Predicted accuracy at N with its interval per alternative, and the measured value (validation)."""
    del names
    if not _has(t, "name", "role", "predicted", "lo", "hi"):
        return None
    rows = _rows(t)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        color = "tab:red" if r["role"] == "plan" else ("tab:blue" if r["role"] == "finalist" else "tab:gray")
        ax.errorbar([100 * r["predicted"]], [i], xerr=[[100 * (r["predicted"] - r["lo"])], [100 * (r["hi"] - r["predicted"])]],
                    fmt="o", color=color, capsize=3, label="predicted [interval]" if i == 0 else None)
        if r.get("measured") is not None and np.isfinite(r["measured"]):
            ax.plot([100 * r["measured"]], [i], "x", color="k", ms=8, label="measured at N" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [f"{r['role']}: {r['name']}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy at N={rows[0].get('target_n', '')} (points)")
    ax.grid(alpha=.3, axis="x")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


# Page sections: (title, tables to look for, plotter(table, source names) or None, row formatter or None)
SECTIONS: list[tuple[str, tuple[str, ...], Callable[[pa.Table, dict[int, str]], str | None] | None, Callable | None]] = [
    ("Selections", ("selections",), None, None),
    ("Pruning curve", ("pruning_curve_summary", "pruning_curve"), _plot_pruning_curve, None),
    ("Mixture surface", ("mixture_surface",), _plot_mixture_surface, None),
    ("Chosen mixture", ("mixture_selections",), None, None),
    ("Plan", ("plan_sources",), None, None),
    ("Plan vs alternatives", ("plan_report",), _plot_plan, None),
    ("Fitted laws", ("fits",), None, _fits_rows),
    ("Predictions", ("predictions",), _plot_predictions, None),
]


def render_report(data: ReportData, progress: bool = False) -> tuple[str, list[str]]:
    """The HTML page of a run and the names of its sections."""
    from tasks.progress import progress_bar

    run = data.run
    sections: list[str] = ["Run"]
    meta = {k: run.get(k) for k in ("run_id", "flow", "name", "status", "started_at", "finished_at",
                                    "code_version", "prefect_flow_run_id", "error") if run.get(k) is not None}
    config = run.get("config")
    config = json.dumps(json.loads(config), indent=2) if isinstance(config, str) else json.dumps(config, indent=2, default=str)
    parts = [f"<h1>winnow run <code>{html.escape(run['run_id'])}</code></h1>",
             "<table class=meta>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                                            for k, v in meta.items()) + "</table>",
             f"<details><summary>config</summary><pre>{html.escape(config)}</pre></details>"]
    used: set[str] = set()
    source_names = {s["source_id"]: s["name"] for s in data.sources}
    with progress_bar(progress) as bar:
        job = bar.add_task("report", total=len(SECTIONS) + 2)
        if data.sources:
            sections.append("Sources")
            parts += ["<h2>Sources</h2>", _plot_sources(data.sources), _html_table(data.sources)]
        bar.advance(job)
        for title, candidates, plotter, formatter in SECTIONS:
            bar.advance(job)
            name = next((n for n in candidates if n in data.tables), None)
            if name is None:
                continue
            used.update(n for n in candidates if n in data.tables)
            table = data.tables[name]
            sections.append(title)
            parts.append(f"<h2>{html.escape(title)}</h2><p class=note>from <code>{name}</code></p>")
            if plotter is not None:
                img = plotter(table, source_names)
                if img:
                    parts.append(img)
            parts.append(_html_table(formatter(table) if formatter else _rows(table)))
        others = [n for n in data.tables if n not in used]
        if others:
            sections.append("Other tables")
            parts.append("<h2>Other tables of this run</h2>")
            for n in others:
                how = " (per-group aggregate of a per-example table)" if n in data.aggregated else ""
                cut = " (first rows only)" if n in data.truncated else ""
                parts.append(f"<h3><code>{html.escape(n)}</code>{how}{cut}</h3>{_html_table(_rows(data.tables[n]))}")
        bar.advance(job)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>winnow {html.escape(run['run_id'])}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return page, sections
