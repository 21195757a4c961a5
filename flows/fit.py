"""Scaling-law flows: ``winnow fit CSV`` (command in cli/fit.py) and the pipeline's ``extrapolate`` stage.

* :func:`fit_flow` fits a user CSV: validate (rolling origin vs naive baselines), choose the form
  if ``auto``, fit on all points with a run-level bootstrap, predict, plot, and store the fit in the
  ``fits`` / ``predictions`` tables under a deterministic run id.
* :func:`extrapolate_pilots` fits one curve per mixture to pilot results in error space
  (1 - accuracy); :func:`extrapolate_flow` is the pipeline stage that loads the run's
  ``pilot_results`` (written by the mixture stage), calls it and stores the fits. The Projektor two-point map stays with the mixture stage; its
  numbers can be compared with these fits in the same DuckDB file.
"""

from __future__ import annotations

from collections import Counter

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from prefect import flow, task

from configs.scaling import ExtrapolateConfig
from storage.db import Store
from storage.scaling import FitRecord, PredictionRow, save_fits
from tasks.errors import WinnowError
from tasks.scaling.api import FitReport, fit_report, split_targets
from tasks.scaling.csvinput import FitData, read_fit_csv
from tasks.scaling.fit import check_xy
from tasks.scaling.forms import get_form
from tasks.scaling.plot import plot_fit

fit_report_task = task(fit_report, name="fit-scaling-law")
plot_fit_task = task(plot_fit, name="plot-scaling-law")


# ------------------------------------------------------------------------------------ records
def to_record(
    key: str, report: FitReport, *, x_col: str, y_col: str, x2_col: str | None, space: str, plot_path: str | None
) -> FitRecord:
    """Flatten a :class:`FitReport` into the stored row plus its prediction rows."""
    fit, val = report.fit, report.validation
    form = get_form(fit.form)
    preds = [
        PredictionRow("target", float(x), None if fit.predict_at_x2 is None else float(fit.predict_at_x2[i]),
                      float(fit.predictions[i]), float(fit.pred_lo[i]), float(fit.pred_hi[i]))
        for i, x in enumerate(fit.predict_at)
    ]
    if val is not None:
        preds += [
            PredictionRow("holdout", float(p[0]), None if np.isnan(p[1]) else float(p[1]), float(p[3]), y_obs=float(p[2]))
            for p in val.points
        ]
    return FitRecord(
        fit_key=key, form=fit.form, formula=form.formula, x_col=x_col, x2_col=x2_col, y_col=y_col, space=space,
        n_points=fit.n_points, n_groups=fit.n_groups, n_starts=fit.n_starts, loss=fit.loss, stable=fit.stable,
        warning=fit.warning, params=fit.params, param_ci=fit.param_ci, bootstrap=fit.bootstrap, level=fit.level,
        holdout_largest=0 if val is None else val.holdout_largest,
        holdout_are=None if val is None else val.are, holdout_rmsle=None if val is None else val.rmsle,
        baseline_are=None if val is None else val.baseline_are,
        beats_baseline=None if val is None else val.beats_baseline,
        selection=None if report.selection is None else report.selection.message,
        plot_path=plot_path, predictions=preds,
    )


# ------------------------------------------------------------------------------------- printing
def _g(v: float) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.5g}"


def report_lines(report: FitReport) -> list[str]:
    """Short plain-text summary (used in pipeline summaries)."""
    fit = report.fit
    params = ", ".join(f"{k}={_g(v)}" for k, v in fit.params.items())
    lines = [f"{fit.form}: {params} (loss {fit.loss:.3g}, {fit.n_points} points, {fit.n_starts} starts)"]
    if report.validation is not None:
        v = report.validation
        base = ", ".join(f"{b} {a:.4f}" for b, a in v.baseline_are.items())
        lines.append(f"held-out ARE {v.are:.4f} vs {base}" + ("" if v.beats_baseline else "  <- does NOT beat the baseline"))
    if report.selection is not None:
        lines.append(report.selection.message)
    for i, x in enumerate(fit.predict_at):
        at = f"{x:.4g}" if fit.predict_at_x2 is None else f"({x:.4g}, {fit.predict_at_x2[i]:.4g})"
        lines.append(f"predict {at}: {_g(fit.predictions[i])} [{_g(fit.pred_lo[i])}, {_g(fit.pred_hi[i])}]")
    if fit.warning:
        lines.append(f"warning: {fit.warning}")
    return lines


# -------------------------------------------------------------------------------------- CSV flow
def parse_targets(values: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``["1e9", "2e9"]`` -> sizes; ``["1.4e9:2.8e10", ...]`` -> (N, D) pairs. Commas also separate."""
    items = [s.strip() for v in (values or []) for s in str(v).split(",") if s.strip()]
    if not items:
        return np.empty(0), None
    pairs = [":" in s for s in items]
    if any(pairs) and not all(pairs):
        raise WinnowError(f"--predict values must all be sizes or all be N:D pairs, got {items}")
    try:
        if all(pairs):
            arr = np.array([[float(a) for a in s.split(":")] for s in items], dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 2:
                raise ValueError
            return arr[:, 0], arr[:, 1]
        return np.array([float(s) for s in items]), None
    except ValueError:
        raise WinnowError(f"cannot read --predict values {items}: give numbers (1e9) or N:D pairs (1.4e9:2.8e10)") from None


def fit_config_json(data: FitData, **options: Any) -> str:
    """Canonical JSON of what a ``winnow fit`` computes (its run id is derived from it)."""
    cfg = {"csv": str(Path(data.path).resolve()), "x": data.x_col, "x2": data.x2_col, "y": data.y_col, "group": data.group_col}
    cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=lambda o: np.asarray(o).tolist())


@flow(name="fit", log_prints=False)
def fit_flow(
    data: FitData,
    db: str,
    form: str = "auto",
    holdout_largest: int = 1,
    bootstrap: int = 1000,
    predict_at: list[float] | None = None,
    predict_at_x2: list[float] | None = None,
    seed: int = 0,
    huber_delta: float = 1e-3,
    level: float = 0.95,
    plot_path: str | None = None,
) -> dict[str, Any]:
    """Fit a validated CSV, write the plot, and store run + fit + predictions; returns a summary."""
    from storage.runs import finish_run, make_run_id, start_run

    options = dict(form=form, holdout_largest=holdout_largest, bootstrap=bootstrap, predict_at=predict_at or [],
                   predict_at_x2=predict_at_x2, seed=seed, huber_delta=huber_delta, level=level)
    config_json = fit_config_json(data, **options)
    run_id = make_run_id("fit", config_json)
    report = fit_report_task(
        data.x, data.y, form=form, x2=data.x2, groups=data.groups, holdout_largest=holdout_largest,
        bootstrap=bootstrap, predict_at=np.asarray(predict_at or [], dtype=np.float64), predict_at_x2=predict_at_x2,
        seed=seed, huber_delta=huber_delta, level=level,
    )
    store = Store(db)
    png = plot_path or str(store.artifacts_dir / "plots" / f"{run_id}.png")
    plot_fit_task(png, report, x_label=data.x_col, y_label=data.y_col,
                  title=f"{Path(data.path).name}: {data.y_col} ~ {report.fit.form}")
    record = to_record(data.y_col, report, x_col=data.x_col, y_col=data.y_col, x2_col=data.x2_col, space="as given", plot_path=png)
    start_run(store, run_id, "fit", Path(data.path).stem, config_json, None)
    try:
        save_fits(store, run_id, [record])
    except BaseException as err:
        finish_run(store, run_id, "failed", error=f"{type(err).__name__}: {err}")
        raise
    summary = {"run_id": run_id, "db": str(store.path), "plot": png, "form": report.fit.form, "lines": report_lines(report)}
    finish_run(store, run_id, "completed", summary)
    return {**summary, "report": report}


# ---------------------------------------------------------------------------------- pilot curves
@dataclass(frozen=True)
class PilotFit:
    """The fit of one mixture's pilot curve (``report`` None when it was skipped, with ``note``)."""

    key: str
    report: FitReport | None
    note: str | None


def _columns(pilots: Any) -> dict[str, np.ndarray]:
    if hasattr(pilots, "column_names"):  # pyarrow Table
        return {c: np.asarray(pilots.column(c).to_pylist()) for c in pilots.column_names}
    if isinstance(pilots, Mapping):
        return {k: np.asarray(v) for k, v in pilots.items()}
    raise WinnowError(f"pilots must be a pyarrow Table or a mapping of columns, got {type(pilots).__name__}")


def extrapolate_pilots(
    pilots: Any,
    cfg: ExtrapolateConfig,
    *,
    key_col: str = "mixture",
    size_col: str = "size",
    accuracy_col: str = "accuracy",
    group_col: str | None = "seed",
) -> list[PilotFit]:
    """Fit one scaling curve per mixture to pilot results, in error space ``1 - accuracy``.

    Parameters
    ----------
    pilots : pyarrow Table or mapping of columns with ``key_col`` (mixture name), ``size_col``
        (training-set size, > 0), ``accuracy_col`` (in [0, 1]) and optionally ``group_col`` (the
        pilot run, e.g. its seed: the bootstrap resamples whole runs).
    cfg : the ``extrapolate`` section (form, target sizes, bootstrap, hold-out, Huber delta, seed).

    A mixture whose pilots have too few scales for the configured hold-out is fitted without
    validation (noted); one with a zero error (accuracy 1) is skipped (noted): log space needs y > 0.
    """
    cols = _columns(pilots)
    for c in (key_col, size_col, accuracy_col):
        if c not in cols:
            raise WinnowError(f"pilot results have no column {c!r} (columns: {', '.join(cols)})")
    keys = cols[key_col].astype(str)
    size = cols[size_col].astype(np.float64)
    acc = cols[accuracy_col].astype(np.float64)
    if ((acc < 0) | (acc > 1) | ~np.isfinite(acc)).any():
        raise WinnowError(f"pilot column {accuracy_col!r} must hold accuracies in [0, 1]")
    groups_all = cols[group_col].astype(str) if group_col and group_col in cols else None
    out: list[PilotFit] = []
    for key in sorted(set(keys.tolist())):
        m = keys == key
        err = 1.0 - acc[m]
        if (err <= 0).any():
            out.append(PilotFit(key, None, f"skipped: error 0 (accuracy 1) at size {size[m][err <= 0][0]:g}; a power law in log space needs error > 0"))
            continue
        g = None if groups_all is None else np.char.add(groups_all[m], "")
        note = None
        kwargs = dict(x2=None, groups=g, bootstrap=cfg.bootstrap, predict_at=cfg.target_sizes, seed=cfg.seed,
                      huber_delta=cfg.huber_delta, level=cfg.level)
        try:
            rep = fit_report(size[m], err, form=cfg.form, holdout_largest=cfg.holdout_largest, candidates=cfg.candidates, **kwargs)
        except WinnowError as e:
            if cfg.holdout_largest == 0 or "cannot hold out" not in str(e) and "no candidate form" not in str(e):
                out.append(PilotFit(key, None, f"skipped: {e}"))
                continue
            form = "m2" if cfg.form == "auto" else cfg.form
            note = f"not validated ({e}); fitted {form} on all points"
            try:
                rep = fit_report(size[m], err, form=form, holdout_largest=0, **kwargs)
            except WinnowError as e2:
                out.append(PilotFit(key, None, f"skipped: {e2}"))
                continue
        out.append(PilotFit(key, rep, note))
    return out


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
    forms = Counter(pf.report.fit.form for pf in fits)
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
        best = sorted(fits, key=lambda pf: pf.report.fit.predictions[i])[:3]
        lines.append(f"lowest predicted error at N={x:,.0f}: " + "; ".join(
            f"{pf.key} {_g(pf.report.fit.predictions[i])} [{_g(pf.report.fit.pred_lo[i])}, {_g(pf.report.fit.pred_hi[i])}]" for pf in best))
    return lines + skipped


def pilots_from_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    """Columns for :func:`extrapolate_pilots` from ``storage.mixture.load_pilot_results`` rows
    (mixture_id, n, rep, metric, value): one curve per mixture, runs = repetitions."""
    acc = [r for r in rows if r["metric"] == "accuracy"]
    return {
        "mixture": np.array([f"mixture-{int(r['mixture_id'])}" for r in acc], dtype=object),
        "size": np.array([float(r["n"]) for r in acc]),
        "accuracy": np.array([float(r["value"]) for r in acc]),
        "seed": np.array([str(r["rep"]) for r in acc], dtype=object),
    }


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
