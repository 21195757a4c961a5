"""``winnow fit CSV``: fit a scaling law to a CSV (one curve, or one per ``--by`` key), validate,
predict with intervals, plot, store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from cli.app import app, console, escape, plot_path, print_json


def _g(v: float | None) -> str:
    import math

    return "nan" if v is None or not math.isfinite(v) else f"{v:.5g}"


def _by_columns(by: str | None) -> tuple[str, ...]:
    """The --by columns: at least one name, none twice (``--by ','`` would silently pool every curve)."""
    from tasks.errors import WinnowError

    if by is None:
        return ()
    cols = tuple(c.strip() for c in by.split(","))
    if not any(cols) or not all(cols):
        raise WinnowError(f"--by {by!r}: give column names separated by commas, e.g. --by task or --by domain,task")
    twice = sorted({c for c in cols if cols.count(c) > 1})
    if twice:
        raise WinnowError(f"--by {by!r} names {', '.join(map(repr, twice))} twice")
    return cols


def print_report(report: Any, out: Console = console) -> None:
    """Rich tables: final-fit parameters with intervals, the validated fit, held-out errors vs the
    naive forecasts (and auto's per-form table), predictions with intervals, notes and warnings."""
    from tasks.scaling.forms import get_form

    fit, val, sel = report.fit, report.validation, report.selection
    form = get_form(fit.form)
    pct = int(round(fit.level * 100))
    t = Table(title=f"parameters of the FINAL fit on all {fit.n_points} points (held-out points included) - "
                    f"{fit.form}: {form.formula}   (summed Huber loss {fit.loss:.4g}, {fit.n_groups} runs, "
                    f"{fit.n_starts} starts, {fit.seconds:.2f} s)")
    t.add_column("parameter")
    t.add_column("final fit", justify="right")
    t.add_column(f"{pct}% interval (run bootstrap, approx.)" if fit.bootstrap else "interval (use --bootstrap B)", justify="right")
    if val is not None and val.params and val.form == fit.form:
        t.add_column(f"validated fit ({val.n_train} training points)", justify="right")
    for k, v in fit.params.items():
        lo, hi = fit.param_ci[k]
        cells = [k + (" (not pinned down)" if k in fit.unpinned else ""), _g(v), escape(f"[{_g(lo)}, {_g(hi)}]") if fit.bootstrap else "-"]
        if val is not None and val.params and val.form == fit.form:
            cells.append(_g(val.params.get(k)))
        t.add_row(*cells)
    out.print(t)
    if sel is not None:
        s = Table(title="auto: candidates ranked by held-out RMSLE (the naive forecasts compete)")
        for c in ("predictor", "RMSLE", "ARE", "note"):
            s.add_column(c)
        for name, r, a, note in sel.ranking():
            s.add_row(name, _g(r), _g(a), escape(note))
        out.print(s)
    if val is not None:
        scales = ("smallest x value(s) (x is a loss: the largest models)"
                  if val.form not in ("last_value", "best_small") and get_form(val.form).scale_sign < 0 else "largest scale(s)")
        vt = Table(title=f"held out: {val.n_test} point(s) at the {val.holdout_largest} {scales}; "
                         f"validated fit on the other {val.n_train} (over {val.origins} origin(s))")
        for c in ("predictor", "ARE", "RMSLE"):
            vt.add_column(c, justify="right" if c != "predictor" else "left")
        vt.add_row(f"{val.form}" + ("" if val.form in ("last_value", "best_small") else " (validated fit)"), _g(val.are), _g(val.rmsle))
        for b in val.baseline_are:
            vt.add_row(f"baseline: {b.replace('_', ' ')}", _g(val.baseline_are[b]), _g(val.baseline_rmsle[b]))
        out.print(vt)
        if not val.beats_baseline and not report.naive:
            out.print(f"[bold yellow]the {val.form} fit does NOT beat the naive baseline ({val.best_baseline.replace('_', ' ')}) "
                      "on the held-out scales: do not trust its extrapolation[/bold yellow]")
    if sel is not None:
        out.print(sel.message, highlight=False, markup=False)
    if fit.predict_at.size:
        pt = Table(title=f"predictions from: {report.predictor}" + (" (final fit)" if not report.naive else ""))
        pt.add_column(form.x_names[0])
        px2 = fit.predict_at_x2 if report.target_x2 is None else report.target_x2  # as requested (U too)
        extra = [] if px2 is None else ((list(form.x_names[1:]) if form.n_vars == 3 else [form.x_names[1], "U"])
                                        if px2.ndim == 2 else [form.x_names[1]])
        for c in extra:
            pt.add_column(c)
        pt.add_column("prediction", justify="right")
        pt.add_column("interval", justify="right")
        for i, x in enumerate(fit.predict_at):
            cells = [f"{x:.4g}"] + ([] if px2 is None else [f"{v:.4g}" for v in (px2[i] if px2.ndim == 2 else [px2[i]])])
            cells += [_g(report.predictions[i]), escape(f"[{_g(report.pred_lo[i])}, {_g(report.pred_hi[i])}]")]
            pt.add_row(*cells)
        out.print(pt)
        out.print(f"interval: {report.interval_method}", highlight=False, markup=False)
    for n in report.notes:
        out.print(f"note: {n}", highlight=False, markup=False)
    for w in report.warnings:
        out.print(f"[bold yellow]warning:[/bold yellow] {escape(w)}", highlight=False)


def print_curves(table: dict, out: Console = console, max_rows: int = 40) -> None:
    """``--by``: one row per curve (first ``max_rows``), then the per-predictor means."""
    rows = table["curves"]
    t = Table(title=f"{len(rows)} curves (held-out RMSLE of the validated fits; prediction at the last target)")
    for c in ("curve", "predictor", "points", "held-out RMSLE", "last value", "best small", "prediction [interval]", "warnings"):
        t.add_column(escape(c), justify="left" if c in ("curve", "predictor") else "right")
    for r in rows[:max_rows]:
        pred = "-" if r["prediction"] is None else f"{_g(r['prediction'])} [{_g(r['lo'])}, {_g(r['hi'])}]"
        t.add_row(escape(r["curve"]), r["predictor"], str(r["n_points"]), _g(r["holdout_rmsle"]), _g(r["last_value_rmsle"]),
                  _g(r["best_small_rmsle"]), escape(pred), str(r["warnings"]))
    out.print(t)
    if len(rows) > max_rows:
        out.print(f"... {len(rows) - max_rows} more curves: see --json or the fits / fit_details tables", highlight=False)
    m = Table(title="per predictor: mean held-out RMSLE over the curves it was validated on")
    for c in ("predictor", "mean RMSLE", "curves", "chosen"):
        m.add_column(c)
    for r in table["per_predictor"]:
        m.add_row(r["predictor"], _g(r["mean_holdout_rmsle"]), str(r["curves"]), str(r["chosen"]))
    out.print(m)
    for k, why in table["skipped"].items():
        out.print(f"[yellow]skipped[/yellow] {escape(k)}: {escape(why)}", highlight=False)


def _split_cols(cols: list[str] | None) -> list[tuple[str, str]]:
    from tasks.errors import WinnowError

    out = []
    for c in cols or []:
        name, sep, expr = c.partition("=")
        if not sep or not name.strip() or not expr.strip():
            raise WinnowError(f"--col {c!r}: write NAME=SQL, e.g. --col D=FLOP/(6*N)")
        out.append((name.strip(), expr.strip()))
    return out


@app.command("fit")
def fit_command(
    csv: Path = typer.Argument(..., help="CSV (or .parquet) with one row per observation"),
    x: str = typer.Option(..., "--x", help="size column (data, parameters, steps, compute); N for two-variable forms"),
    y: str = typer.Option(..., "--y", help="value column in error space (loss, 1 - accuracy), > 0"),
    form: str = typer.Option("auto", "--form", help="m1, m2, pow4, bnsl, chinchilla, gadre, data_constrained, "
                                                    "data_constrained_ot, downstream, or auto"),
    x2: Optional[str] = typer.Option(None, "--x2", help="second variable: D (tokens seen) for chinchilla/gadre/data_constrained"),
    unique: Optional[str] = typer.Option(None, "--unique", help="unique tokens/examples U (data-constrained forms; needs --x2 or --epochs)"),
    epochs: Optional[str] = typer.Option(None, "--epochs", help="epochs column: tokens seen = epochs x --unique (instead of --x2)"),
    group: Optional[str] = typer.Option(None, "--group", help="run column: the bootstrap resamples whole runs; plots draw one line per run"),
    by: Optional[str] = typer.Option(None, "--by", help="COL[,COL]: one fit per curve (all in one process), a summary table"),
    where: Optional[str] = typer.Option(None, "--where", help="DuckDB SQL filter on the rows, e.g. \"loss < 3.5\""),
    col: Optional[list[str]] = typer.Option(None, "--col", help="NAME=SQL derived column (repeatable, in order), e.g. D=FLOP/(6*N)"),
    sql: Optional[str] = typer.Option(None, "--sql", help="a read-only SELECT over the table `data` (the file) giving the rows"),
    holdout_largest: int = typer.Option(1, "--holdout-largest", min=0, help="largest scales held out for validation "
                                                                               "(downstream, whose x is a loss: the smallest x)"),
    origins: Optional[int] = typer.Option(None, "--origins", min=1, help="rolling origins of the held-out check "
                                                                         "(default: up to 4 for auto, each keeping at least "
                                                                         "half the scales; 1 for a given form)"),
    predict: Optional[list[str]] = typer.Option(None, "--predict", help="size to predict (repeatable; N:D pairs, N:D:U triples)"),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="run-level bootstrap replicates (0: intervals from the "
                                                                   "near-optimal spread and the held-out error only)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="bootstrap and start-grid seed"),
    delta: float = typer.Option(1e-3, "--delta", help="Huber delta on log residuals"),
    level: float = typer.Option(0.95, "--level", help="interval coverage"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG path (default: next to the DuckDB file)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --plot file"),
    db: Optional[str] = typer.Option(None, "--db", help="DuckDB file (default: $WINNOW_DB or ./.winnow/winnow.duckdb)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (everything the tables show) instead of tables"),
) -> None:
    """Fit a scaling law to a CSV, validate it on the largest scales against the naive forecasts,
    predict with intervals, plot, and store the fit in DuckDB (tables fits, predictions, fit_details)."""
    import numpy as np

    from flows.fit import fit_flow, parse_targets, report_payload
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
    by_cols = _by_columns(by)
    table = source_sql = None
    cols = _split_cols(col)
    if where or cols or sql:
        from storage.scaling import select_fit_rows

        table, source_sql = select_fit_rows(csv, where=where, cols=cols, sql=sql)
    data = read_fit_csv(csv, x=x, y=y, x2=x2, group=group, unique=unique, epochs=epochs, by=by_cols, table=table,
                        source_sql=source_sql)
    n_vars = 1 if data.x2 is None else (3 if data.x2.ndim == 2 else 2)
    if form != "auto" and not by_cols:
        check_xy(get_form(form), data.x, data.y, data.x2)  # before Prefect starts or the DB is touched
    px, px2 = parse_targets(predict)
    split_targets(px, px2, get_form(form).n_vars if form != "auto" else n_vars)
    if form == "auto" and holdout_largest < 1:
        raise WinnowError("--form auto chooses by held-out error: use --holdout-largest 1 or more")
    if holdout_largest and not by_cols:
        levels = int(np.unique(data.x).size)
        if holdout_largest >= levels:
            raise WinnowError(f"--holdout-largest {holdout_largest} needs at least {holdout_largest + 1} distinct --x values "
                              f"(one left to fit on); the data have {levels}")
    store = Store(resolve_db_path(db))
    store.check_usable()  # a file that cannot take the fit is refused before the work, and no plot is written
    result = fit_flow(
        data=data, db=str(store.path), form=form, holdout_largest=holdout_largest, bootstrap=bootstrap,
        predict_at=px.tolist(), predict_at_x2=None if px2 is None else px2.tolist(), seed=seed,
        huber_delta=delta, level=level, plot_path=plot_path(plot, force=force), origins=origins,
    )
    head = {"run_id": result["run_id"], "db": result["db"], "plot": result["plot"], "source_sql": source_sql}
    if by_cols:
        if as_json:
            print_json({**head, "by": list(by_cols), **result["table"],
                        "fits": {k: report_payload(r) for k, r in result["reports"].items()}})
            return
        print_curves(result["table"])
    else:
        report = result["report"]
        if as_json:
            print_json({**head, **report_payload(report)})
            return
        print_report(report)
    if source_sql:
        console.print(f"rows from: {source_sql}", highlight=False, markup=False)
    console.print(f"plot: [bold]{escape(str(result['plot']))}[/bold]")
    console.print(f"stored as run [bold]{result['run_id']}[/bold] in {escape(str(result['db']))} (tables fits, predictions, fit_details)")
