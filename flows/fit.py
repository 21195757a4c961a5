"""Scaling-law flows: ``winnow fit CSV`` (command in cli/fit.py) and the pipeline's ``extrapolate`` stage.

* :func:`fit_flow` fits a user CSV (one curve, or one per ``--by`` key, all in one process):
  validate (rolling origin vs naive baselines), choose the predictor if ``auto``, fit on all points
  with a run-level bootstrap, predict with intervals, plot, and store the fits in the ``fits`` /
  ``predictions`` / ``fit_details`` tables under a deterministic run id.
* :func:`tasks.scaling.pilots.extrapolate_pilots` fits one curve per mixture to pilot results in error space
  (1 - accuracy); :func:`extrapolate_flow` is the pipeline stage that loads the run's
  ``pilot_results`` (written by the mixture stage), calls it and stores the fits. The Projektor two-point map stays with the mixture stage; its
  numbers can be compared with these fits in the same DuckDB file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task

from configs.scaling import ExtrapolateConfig
from storage.db import Store
from storage.scaling import FitRecord, PredictionRow, save_fits
from tasks.errors import WinnowError
from tasks.scaling.api import FitReport, fit_report
from tasks.scaling.csvinput import FitData
from tasks.scaling.forms import get_form
from tasks.scaling.pilots import PilotFit, extrapolate_pilots, pilots_from_rows
from tasks.scaling.plot import plot_curves, plot_fit

fit_report_task = task(fit_report, name="fit-scaling-law")
plot_fit_task = task(plot_fit, name="plot-scaling-law")
plot_curves_task = task(plot_curves, name="plot-scaling-laws")


# ------------------------------------------------------------------------------------ records
def to_record(
    key: str, report: FitReport, *, x_col: str, y_col: str, x2_col: str | None, space: str, plot_path: str | None,
    x3_col: str | None = None, curve: dict | None = None, source_sql: str | None = None,
) -> FitRecord:
    """Flatten a :class:`FitReport` into the stored rows: ``fits`` (the final fit), ``predictions``
    (the reported predictor's targets and the validated fit's held-out points) and ``fit_details``."""
    fit, val = report.fit, report.validation
    form = get_form(fit.form)
    preds_y = report.predictions if report.predictions is not None else fit.predictions
    lo = report.pred_lo if report.pred_lo is not None else fit.pred_lo
    hi = report.pred_hi if report.pred_hi is not None else fit.pred_hi
    tx2 = fit.predict_at_x2 if report.target_x2 is None else report.target_x2  # as requested: U kept under a 2-variable form
    seen = None if tx2 is None else (tx2 if tx2.ndim == 1 else tx2[:, 0])
    preds = [
        PredictionRow("target", float(x), None if seen is None else float(seen[i]), float(preds_y[i]), float(lo[i]), float(hi[i]))
        for i, x in enumerate(fit.predict_at)
    ]
    if val is not None:
        preds += [
            PredictionRow("holdout", float(p[0]), None if np.isnan(p[1]) else float(p[1]), float(p[3]), y_obs=float(p[2]))
            for p in val.points
        ]
    details = {
        "predictor": report.predictor or fit.form,
        "curve": curve,
        "source_sql": source_sql,
        "x3_col": x3_col,
        "validated_params": None if val is None else val.params,
        "validated_n_train": None if val is None else val.n_train,
        "baseline_rmsle": None if val is None else val.baseline_rmsle,
        "candidates": None if report.selection is None else [list(r) for r in report.selection.ranking()],
        "interval_method": report.interval_method,
        "warnings": list(report.warnings),
        "notes": list(report.notes),
        "targets": None if tx2 is None or tx2.ndim == 1 else np.column_stack([fit.predict_at, tx2]).tolist(),
    }
    return FitRecord(
        fit_key=key, form=fit.form, formula=form.formula, x_col=x_col, x2_col=x2_col, y_col=y_col, space=space,
        n_points=fit.n_points, n_groups=fit.n_groups, n_starts=fit.n_starts, loss=fit.loss, stable=fit.stable,
        warning=fit.warning, params=fit.params, param_ci=fit.param_ci, bootstrap=fit.bootstrap, level=fit.level,
        holdout_largest=0 if val is None else val.holdout_largest,
        holdout_are=None if val is None else val.are, holdout_rmsle=None if val is None else val.rmsle,
        baseline_are=None if val is None else val.baseline_are,
        beats_baseline=None if val is None else val.beats_baseline,
        selection=None if report.selection is None else report.selection.message,
        plot_path=plot_path, predictions=preds, details=details,
    )


# ------------------------------------------------------------------------------------- printing
def _g(v: float) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.5g}"


def report_lines(report: FitReport) -> list[str]:
    """Short plain-text summary (used in pipeline summaries)."""
    fit = report.fit
    params = ", ".join(f"{k}={_g(v)}" for k, v in fit.params.items())
    lines = [f"{fit.form} (final fit on all {fit.n_points} points): {params} (loss {fit.loss:.3g}, {fit.n_starts} starts)"]
    if report.validation is not None:
        v = report.validation
        base = ", ".join(f"{b} {a:.4g}" for b, a in v.baseline_rmsle.items())
        lines.append(f"held-out RMSLE {v.rmsle:.4g} (validated {v.form} fit on {v.n_train} points) vs {base}"
                     + ("" if v.beats_baseline else "  <- does NOT beat the baseline"))
    if report.selection is not None:
        lines.append(report.selection.message)
    preds = report.predictions if report.predictions is not None else fit.predictions
    lo = report.pred_lo if report.pred_lo is not None else fit.pred_lo
    hi = report.pred_hi if report.pred_hi is not None else fit.pred_hi
    for i, x in enumerate(fit.predict_at):
        at = f"{x:.4g}" if fit.predict_at_x2 is None else f"({x:.4g}, {np.ravel(fit.predict_at_x2[i]).tolist()})"
        lines.append(f"predict {at}: {_g(preds[i])} [{_g(lo[i])}, {_g(hi[i])}] ({report.predictor or fit.form})")
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"warning: {w}" for w in report.warnings]
    return lines


def report_payload(report: FitReport) -> dict[str, Any]:
    """Everything ``winnow fit`` prints about one curve, as JSON-ready values (NaN -> None)."""
    fit, val, sel = report.fit, report.validation, report.selection
    px2 = fit.predict_at_x2
    preds = report.predictions if report.predictions is not None else fit.predictions
    lo = report.pred_lo if report.pred_lo is not None else fit.pred_lo
    hi = report.pred_hi if report.pred_hi is not None else fit.pred_hi
    out = {
        "predictor": report.predictor or fit.form,
        "form": fit.form,
        "params": fit.params,  # the final fit's (as in "final_fit")
        "param_ci": {k: list(v) for k, v in fit.param_ci.items()},
        "final_fit": {
            "what": f"fit on all {fit.n_points} points (held-out points included): the printed parameters",
            "params": fit.params, "param_ci": {k: list(v) for k, v in fit.param_ci.items()}, "loss": fit.loss,
            "stable": fit.stable, "unpinned": list(fit.unpinned), "n_points": fit.n_points, "n_groups": fit.n_groups,
            "n_starts": fit.n_starts, "bootstrap": fit.bootstrap, "level": fit.level, "prior": fit.prior,
        },
        "validated_fit": None if val is None else {
            "what": f"fit on the {val.n_train} training points only: the held-out errors come from it",
            "form": val.form, "params": val.params, "n_train": val.n_train, "n_test": val.n_test,
            "holdout_largest": val.holdout_largest, "origins": val.origins, "prior": val.prior,
        },
        "validation": None if val is None else {
            "are": val.are, "rmsle": val.rmsle, "baseline_are": val.baseline_are, "baseline_rmsle": val.baseline_rmsle,
            "beats_baseline": val.beats_baseline,
            "held_out_points": [{"x": p[0], "x2": p[1], "y": p[2], "y_pred": p[3]} for p in val.points.tolist()],
        },
        "selection": None if sel is None else {
            "message": sel.message, "chosen": sel.form, "best_form": sel.best_form,
            "candidates": [{"predictor": n, "rmsle": r, "are": a, "note": note} for n, r, a, note in sel.ranking()],
        },
        "predictions": [
            {"x": float(x), "x2": None if px2 is None else np.ravel(px2[i]).tolist() if px2.ndim == 2 else float(px2[i]),
             "y": float(preds[i]), "lo": float(lo[i]), "hi": float(hi[i])}
            for i, x in enumerate(fit.predict_at)
        ],
        "interval_method": report.interval_method,
        "notes": list(report.notes),
        "warnings": list(report.warnings),
    }
    return finite(out)


def finite(o: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(o, dict):
        return {str(k): finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return finite(o.tolist())
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def curve_summary(reports: dict[str, FitReport], skipped: dict[str, str]) -> dict[str, Any]:
    """``--by``: one row per curve and the per-predictor means of the held-out RMSLE over curves."""
    rows = []
    per: dict[str, list[float]] = {}
    for key, rep in reports.items():
        v = rep.validation
        rows.append({
            "curve": key, "predictor": rep.predictor, "form": rep.fit.form, "n_points": rep.fit.n_points,
            "holdout_rmsle": None if v is None else v.rmsle,
            "last_value_rmsle": None if v is None else v.baseline_rmsle.get("last_value"),
            "best_small_rmsle": None if v is None else v.baseline_rmsle.get("best_small"),
            "beats_baseline": None if v is None else v.beats_baseline, "stable": rep.fit.stable,
            "prediction": None if rep.predictions is None or not rep.predictions.size else float(rep.predictions[-1]),
            "lo": None if rep.pred_lo is None or not rep.pred_lo.size else float(rep.pred_lo[-1]),
            "hi": None if rep.pred_hi is None or not rep.pred_hi.size else float(rep.pred_hi[-1]),
            "warnings": len(rep.warnings),
        })
        cands = rep.selection.validations if rep.selection is not None else ({v.form: v} if v is not None else {})
        for name, cv in cands.items():
            if cv.error is None and np.isfinite(cv.rmsle):
                per.setdefault(name, []).append(cv.rmsle)
        if rep.selection is None and v is not None:
            for b, r in v.baseline_rmsle.items():
                per.setdefault(b, []).append(r)
    chosen = Counter(r["predictor"] for r in rows)
    means = [{"predictor": n, "mean_holdout_rmsle": float(np.mean(v)), "curves": len(v), "chosen": chosen.get(n, 0)}
             for n, v in sorted(per.items(), key=lambda kv: np.mean(kv[1]))]
    return finite({"curves": rows, "per_predictor": means, "skipped": skipped})


# -------------------------------------------------------------------------------------- CSV flow
def parse_targets(values: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``["1e9", "2e9"]`` -> sizes; ``["1.4e9:2.8e10", ...]`` -> (N, D) pairs; ``N:D:U`` triples ->
    (N, [D, U]). Commas also separate."""
    items = [s.strip() for v in (values or []) for s in str(v).split(",") if s.strip()]
    if not items:
        return np.empty(0), None
    parts = {s.count(":") for s in items}
    if len(parts) > 1:
        raise WinnowError(f"--predict values must all be sizes, all N:D pairs or all N:D:U triples, got {items}")
    try:
        arr = np.array([[float(a) for a in s.split(":")] for s in items], dtype=np.float64)
    except ValueError:
        raise WinnowError(f"cannot read --predict values {items}: give numbers (1e9), N:D pairs (1.4e9:2.8e10) "
                          "or N:D:U triples") from None
    if arr.shape[1] == 1:
        return arr[:, 0], None
    if arr.shape[1] == 2:
        return arr[:, 0], arr[:, 1]
    if arr.shape[1] == 3:
        return arr[:, 0], arr[:, 1:]
    raise WinnowError(f"cannot read --predict values {items}: at most three numbers N:D:U per point")


def fit_config_json(data: FitData, **options: Any) -> str:
    """Canonical JSON of what a ``winnow fit`` computes (its run id is derived from it)."""
    cfg = {"csv": str(Path(data.path).resolve()), "x": data.x_col, "x2": data.x2_col, "y": data.y_col, "group": data.group_col}
    if data.x3_col or data.by_cols or data.source_sql:  # keys only when used: old run ids stay the same
        cfg.update({"unique": data.x3_col, "by": list(data.by_cols), "sql": data.source_sql})
    cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=lambda o: np.asarray(o).tolist())


def fit_curves(data: FitData, **kwargs: Any) -> tuple[dict[str, FitReport], dict[str, str]]:
    """One :func:`fit_report` per ``--by`` curve (all rows when there is none), in one process.
    A curve that cannot be fitted (too few points, ...) is skipped with its one-line reason."""
    if data.curves is None:
        return {data.y_col: fit_report(data.x, data.y, x2=data.x2, groups=data.groups, **kwargs)}, {}
    reports: dict[str, FitReport] = {}
    skipped: dict[str, str] = {}
    for key in sorted(set(data.curves.tolist())):
        d = data.subset(data.curves == key)
        try:
            reports[key] = fit_report(d.x, d.y, x2=d.x2, groups=d.groups, **kwargs)
        except WinnowError as err:
            skipped[key] = str(err)
    if not reports:
        first = next(iter(skipped.items()))
        raise WinnowError(f"no --by curve could be fitted ({len(skipped)} curves); e.g. {first[0]}: {first[1]}")
    return reports, skipped


fit_curves_task = task(fit_curves, name="fit-scaling-laws")


@flow(name="fit", log_prints=False)
def fit_flow(
    data: FitData,
    db: str,
    form: str = "auto",
    holdout_largest: int = 1,
    bootstrap: int = 1000,
    predict_at: list[float] | None = None,
    predict_at_x2: list | None = None,
    seed: int = 0,
    huber_delta: float = 1e-3,
    level: float = 0.95,
    plot_path: str | None = None,
    origins: int | None = None,
) -> dict[str, Any]:
    """Fit a validated input (one curve, or one per ``--by`` key), write the plot, and store run +
    fits + predictions + details; returns a summary with the reports."""
    from storage.runs import make_run_id, recorded_run

    options = dict(form=form, holdout_largest=holdout_largest, bootstrap=bootstrap, predict_at=predict_at or [],
                   predict_at_x2=predict_at_x2, seed=seed, huber_delta=huber_delta, level=level)
    if origins is not None:
        options["origins"] = origins
    config_json = fit_config_json(data, **options)
    run_id = make_run_id("fit", config_json)
    px = np.asarray(predict_at or [], dtype=np.float64)
    px2 = None if predict_at_x2 is None else np.asarray(predict_at_x2, dtype=np.float64)
    store = Store(db)
    # stored in fits.plot_path: absolute, so it still names the file from another directory
    # (the folder resolved, not the file: a link at the path is replaced as a link, never followed)
    png = (str(Path(plot_path).parent.resolve() / Path(plot_path).name) if plot_path
           else str(store.artifacts_dir / "plots" / f"{run_id}.png"))
    # the run is recorded from the start: `winnow runs` shows it running, its time is the fit's, a failure stays
    with recorded_run(store, run_id, "fit", Path(data.path).stem, config_json) as rec:
        reports, skipped = fit_curves_task(
            data, form=form, holdout_largest=holdout_largest, bootstrap=bootstrap, predict_at=px, predict_at_x2=px2,
            seed=seed, huber_delta=huber_delta, level=level, origins=origins,
        )
        _plot(png, data, reports)
        records = [
            to_record(key, rep, x_col=data.x_col, y_col=data.y_col, x2_col=data.x2_col, space="as given", plot_path=png,
                      x3_col=data.x3_col, curve=None if data.curve_values is None else data.curve_values.get(key),
                      source_sql=data.source_sql)
            for key, rep in reports.items()
        ]
        save_fits(store, run_id, records)
        summary, extra = _fit_summary(run_id, store, png, data, reports, skipped)
        rec.summary.update(summary)
    return {**summary, **extra}


def _fit_summary(run_id: str, store: Store, png: str, data: FitData, reports: dict[str, Any],
                 skipped: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the summary stored with the run, the reports the CLI prints)."""
    head = {"run_id": run_id, "db": str(store.path), "plot": png}
    if data.curves is None:
        report = reports[data.y_col]
        return ({**head, "form": report.fit.form, "predictor": report.predictor, "lines": report_lines(report)},
                {"report": report})
    table = curve_summary(reports, skipped)
    return ({**head, "curves": len(reports), "skipped": len(skipped), "per_predictor": table["per_predictor"]},
            {"reports": reports, "table": table})


def _plot(png: str, data: FitData, reports: dict[str, Any]) -> None:
    """One curve: its fit, intervals and prediction; several (``--by``): small multiples."""
    if data.curves is None:
        report = reports[data.y_col]
        plot_fit_task(png, report, x_label=data.x_col, y_label=data.y_col, groups=data.groups,
                      title=f"{Path(data.path).name}: {data.y_col} ~ {report.fit.form} (prediction: {report.predictor})")
    else:
        groups = {k: (None if data.groups is None else data.groups[data.curves == k]) for k in reports}
        plot_curves_task(png, reports, x_label=data.x_col, y_label=data.y_col, groups=groups)


# ---------------------------------------------------------------------------------- pilot curves
extrapolate_pilots_task = task(extrapolate_pilots, name="extrapolate-pilots")


def save_pilot_fits(store: Store, run_id: str, fits: list[PilotFit], plot_dir: Path | None = None) -> list[str]:
    """Plot (optional) and store the pilot fits of a run; returns a few summary lines.

    Per-fit detail (parameters, intervals, held-out errors, warnings) is in the ``fits`` and
    ``predictions`` tables; the lines aggregate it so that 66 mixtures do not flood the terminal.
    """
    records, skipped = [], []
    for pf in fits:
        if pf.report is None:
            skipped.append(f"{pf.key}: {pf.note}")
            continue
        png = None
        if plot_dir is not None:
            png = plot_fit(plot_dir / f"{run_id}-{pf.key}.png", pf.report, x_label="pilot size", y_label="error (1 - accuracy)", title=f"{pf.key}: error ~ {pf.report.fit.form}")
        records.append(to_record(pf.key, pf.report, x_col="size", y_col="1 - accuracy", x2_col=None, space="error", plot_path=png))
    save_fits(store, run_id, records)
    return summary_lines([pf for pf in fits if pf.report is not None], skipped)


def summary_lines(fits: list[PilotFit], skipped: list[str]) -> list[str]:
    """Aggregate lines: forms chosen, how many beat the naive baselines, best predicted mixtures."""
    if not fits:
        return ["no curve could be fitted"] + skipped
    forms = Counter(pf.report.predictor or pf.report.fit.form for pf in fits)
    validated = [pf for pf in fits if pf.report.validation is not None]
    beats = sum(bool(pf.report.validation.beats_baseline) for pf in validated)
    unstable = sum(not pf.report.fit.stable for pf in fits)
    lines = [
        f"{len(fits)} curves fitted in error space; forms: " + ", ".join(f"{f} x{n}" for f, n in forms.most_common()),
        f"held-out check (largest pilot size): {beats}/{len(validated)} fits beat the naive baselines"
        + ("" if beats == len(validated) else " - treat the others' extrapolations with suspicion"),
    ]
    if unstable:
        lines.append(f"{unstable} fits are unstable (the data do not pin down all parameters); see fits.warning")
    if len(fits[0].report.fit.predict_at):
        i = len(fits[0].report.fit.predict_at) - 1
        x = fits[0].report.fit.predict_at[i]
        best = sorted(fits, key=lambda pf: pf.report.predictions[i])[:3]
        lines.append(f"lowest predicted error at N={x:,.0f}: " + "; ".join(
            f"{pf.key} {_g(pf.report.predictions[i])} [{_g(pf.report.pred_lo[i])}, {_g(pf.report.pred_hi[i])}]"
            + ("" if not pf.report.naive else f" ({pf.report.predictor})") for pf in best))
    return lines + skipped


@flow(name="extrapolate", log_prints=False)
def extrapolate_flow(config: Any, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Pipeline stage: fit the run's pilot results per mixture and store fits and predictions.

    Pilots are the mixture stage's ``pilot_results`` rows of this run (kind 'pilot', metric
    'accuracy'); run the mixture stage first.
    """
    from storage.mixture import load_pilot_results

    cfg: ExtrapolateConfig = config.extrapolate
    store = Store(db)
    rows = load_pilot_results(store, run_id) if store.exists else []
    if not rows:
        raise WinnowError(f"run {run_id} has no pilot results: the extrapolate stage needs the mixture stage (add a 'mixture' section)")
    fits = extrapolate_pilots_task(pilots_from_rows(rows), cfg)
    lines = save_pilot_fits(store, run_id, fits, plot_dir=store.artifacts_dir / "plots")
    return {"lines": lines, "fits": sum(f.report is not None for f in fits)}
