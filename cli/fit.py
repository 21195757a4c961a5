"""``winnow fit CSV``: fit a scaling law to a CSV, validate, predict with intervals, plot, store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from cli.app import app, console, print_json


def _g(v: float) -> str:
    import math

    return "nan" if v is None or not math.isfinite(v) else f"{v:.5g}"


def print_report(report: Any, out: Console = console) -> None:
    """Rich tables: parameters with intervals, held-out errors vs baselines, predictions."""
    from tasks.scaling.forms import get_form

    fit = report.fit
    form = get_form(fit.form)
    pct = int(round(fit.level * 100))
    t = Table(title=f"{fit.form}: {form.formula}   (summed Huber loss {fit.loss:.4g}, {fit.n_points} points, "
                    f"{fit.n_groups} runs, {fit.n_starts} starts, {fit.seconds:.2f} s)")
    t.add_column("parameter")
    t.add_column("estimate", justify="right")
    t.add_column(f"{pct}% interval (run bootstrap, approx.)" if fit.bootstrap else "interval (use --bootstrap B)", justify="right")
    for k, v in fit.params.items():
        lo, hi = fit.param_ci[k]
        t.add_row(k, _g(v), f"[{_g(lo)}, {_g(hi)}]" if fit.bootstrap else "-")
    out.print(t)
    if report.selection is not None:
        s = Table(title="form choice by held-out error (ARE on the largest scales)")
        for c in ("form", "ARE", "RMSLE", "note"):
            s.add_column(c)
        for name, v in report.selection.validations.items():
            s.add_row(name, _g(v.are), _g(v.rmsle), v.error or ("chosen" if name == report.selection.form else ""))
        out.print(s)
    if report.validation is not None:
        v = report.validation
        vt = Table(title=f"held out: {v.n_test} point(s) at the {v.holdout_largest} largest scale(s); fitted on {v.n_train}")
        for c in ("predictor", "ARE", "RMSLE"):
            vt.add_column(c, justify="right" if c != "predictor" else "left")
        vt.add_row(f"{v.form} fit", _g(v.are), _g(v.rmsle))
        for b in v.baseline_are:
            vt.add_row(f"baseline: {b.replace('_', ' ')}", _g(v.baseline_are[b]), _g(v.baseline_rmsle[b]))
        out.print(vt)
        if not v.beats_baseline:
            out.print(f"[bold yellow]the {v.form} fit does NOT beat the naive baseline ({v.best_baseline.replace('_', ' ')}) "
                      "on the held-out scales: do not trust its extrapolation[/bold yellow]")
    if report.selection is not None:
        out.print(report.selection.message)
    if fit.predict_at.size:
        pt = Table(title="predictions")
        pt.add_column(form.x_names[0])
        if fit.predict_at_x2 is not None:
            pt.add_column(form.x_names[1])
        pt.add_column("prediction", justify="right")
        pt.add_column(f"{pct}% interval" if fit.bootstrap else "interval", justify="right")
        for i, x in enumerate(fit.predict_at):
            cells = [f"{x:.4g}"] + ([f"{fit.predict_at_x2[i]:.4g}"] if fit.predict_at_x2 is not None else [])
            cells += [_g(fit.predictions[i]), f"[{_g(fit.pred_lo[i])}, {_g(fit.pred_hi[i])}]" if fit.bootstrap else "-"]
            pt.add_row(*cells)
        out.print(pt)
    if fit.warning:
        out.print(f"[bold yellow]warning:[/bold yellow] {fit.warning}")



@app.command("fit")
def fit_command(
    csv: Path = typer.Argument(..., help="CSV with one row per observation"),
    x: str = typer.Option(..., "--x", help="size column (data, parameters, steps, compute); N for two-variable forms"),
    y: str = typer.Option(..., "--y", help="value column in error space (loss, 1 - accuracy), > 0"),
    form: str = typer.Option("auto", "--form", help="m1, m2, pow4, bnsl, chinchilla, gadre, downstream, or auto"),
    x2: Optional[str] = typer.Option(None, "--x2", help="second variable (D for chinchilla/gadre)"),
    group: Optional[str] = typer.Option(None, "--group", help="run column: the bootstrap resamples whole runs"),
    holdout_largest: int = typer.Option(1, "--holdout-largest", min=0, help="largest scales held out for validation"),
    predict: Optional[list[str]] = typer.Option(None, "--predict", help="size to predict (repeatable; N:D pairs for two-variable forms)"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="run-level bootstrap replicates (0 = no intervals)"),
    seed: int = typer.Option(0, "--seed"),
    delta: float = typer.Option(1e-3, "--delta", help="Huber delta on log residuals"),
    level: float = typer.Option(0.95, "--level", help="interval coverage"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG path (default: next to the DuckDB file)"),
    db: Optional[str] = typer.Option(None, "--db", help="DuckDB file (default: $WINNOW_DB or ./.winnow/winnow.duckdb)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Fit a scaling law to a CSV, validate it on the largest scales against naive baselines,
    predict with run-bootstrap intervals, plot, and store the fit in DuckDB."""
    import numpy as np

    from flows.fit import fit_flow, parse_targets
    from storage.db import Store, resolve_db_path
    from tasks.errors import WinnowError
    from tasks.scaling.api import split_targets
    from tasks.scaling.csvinput import read_fit_csv
    from tasks.scaling.fit import check_xy
    from tasks.scaling.forms import get_form

    if form != "auto":
        get_form(form)
    if not 0.0 < level < 1.0:
        raise WinnowError(f"--level {level} must be in (0, 1)")
    if not delta > 0:
        raise WinnowError(f"--delta {delta} must be > 0")
    data = read_fit_csv(csv, x=x, y=y, x2=x2, group=group)
    if form != "auto":
        check_xy(get_form(form), data.x, data.y, data.x2)  # before Prefect starts or the DB is touched
    px, px2 = parse_targets(predict)
    split_targets(px if px2 is None else np.column_stack([px, px2]), None, get_form(form).n_vars if form != "auto" else (1 if x2 is None else 2))
    if form == "auto" and holdout_largest < 1:
        raise WinnowError("--form auto chooses by held-out error: use --holdout-largest 1 or more")
    store = Store(resolve_db_path(db))
    result = fit_flow(
        data=data, db=str(store.path), form=form, holdout_largest=holdout_largest, bootstrap=bootstrap,
        predict_at=px.tolist(), predict_at_x2=None if px2 is None else px2.tolist(), seed=seed,
        huber_delta=delta, level=level, plot_path=None if plot is None else str(plot),
    )
    report = result["report"]
    if as_json:
        fit = report.fit
        payload = {
            "run_id": result["run_id"], "db": result["db"], "plot": result["plot"], "form": fit.form,
            "params": fit.params, "param_ci": {k: list(v) for k, v in fit.param_ci.items()},
            "loss": fit.loss, "stable": fit.stable, "warning": fit.warning, "n_starts": fit.n_starts,
            "predictions": [
                {"x": float(px_), "x2": None if fit.predict_at_x2 is None else float(fit.predict_at_x2[i]),
                 "y": float(fit.predictions[i]), "lo": float(fit.pred_lo[i]), "hi": float(fit.pred_hi[i])}
                for i, px_ in enumerate(fit.predict_at)
            ],
            "validation": None if report.validation is None else {
                "are": report.validation.are, "rmsle": report.validation.rmsle,
                "baseline_are": report.validation.baseline_are, "beats_baseline": report.validation.beats_baseline,
            },
            "selection": None if report.selection is None else report.selection.message,
        }
        typer.echo(json.dumps(_finite(payload), indent=2, default=str))
        return
    print_report(report)
    console.print(f"plot: [bold]{result['plot']}[/bold]")
    console.print(f"stored as run [bold]{result['run_id']}[/bold] in {result['db']} (tables fits, predictions)")
