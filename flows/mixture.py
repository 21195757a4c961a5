"""Mixture flow: OT sweep → pilots → predictor → extrapolation → safe selection (decided by trainings
at N, confirmed by fresh ones) → one write to DuckDB, plus plots.

The stage itself is :func:`tasks.mixture.stage.run_mixture`; this flow loads the sources (with the
encoder's embeddings as features where the config's feature space asks for them), runs the OT sweep
and the trainings as Prefect tasks (:func:`prefect_train`, injected as ``train=``) and stores the
outcome. ``winnow mixture CONFIG`` ingests the config's sources and runs this stage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from prefect import flow

from configs.base import RunConfig
from configs.mixture import MixtureConfig, ProbeSettings
from flows.caching import heavy_task
from storage.db import Store
from tasks.data import SourceData
from tasks.errors import WinnowError
from tasks.mixture.jobs import Train, Trial, TrialResult, chunk_trials, run_trials
from tasks.mixture.outcome import SweepRecord
from tasks.mixture.pilots import Pools
from tasks.mixture.pools import MixtureData, MixtureRows, draw_mixture_rows, prepare_mixture_data, reveal
from tasks.mixture.resample import resample_sweep
from tasks.mixture.simplex import simplex_grid
from tasks.mixture.weighted import UnionProblem, build_union_problem, weighted_sweep


# ----------------------------------------------------------------------------------------- tasks
# Cached by content like the training chunks, so a rerun after a crash goes straight to the unfinished
# trainings. Their results (the drawn pools and target; the sweep with its union problem, cost matrix
# included: revealed rows x target rows floats) are pickled into the run's cache folder.
@heavy_task(name="mixture-prepare")
def prepare_task(sources: dict, cfg: MixtureConfig) -> MixtureData:
    return prepare_mixture_data(sources, cfg)


@heavy_task(name="mixture-ot-sweep")
def ot_sweep_task(data: MixtureData, cfg: MixtureConfig, grid: np.ndarray, progress: bool = False) -> tuple[list[SweepRecord], UnionProblem]:
    """The OT sweep the predictor uses, plus the ``ot.compare`` sweeps (exact emd, resample mode) for timing."""
    o = cfg.ot
    revealed = reveal(data, o.reveal, o.seed)
    target = (data.target_ot_X, data.target_ot_y)
    t0 = time.perf_counter()
    problem = build_union_problem(revealed, target, lambda_x=o.lambda_x, lambda_y=o.lambda_y, label_method=o.label_method,
                                  debiased=o.solver == "sinkhorn_debiased", seed=o.seed)
    build_s = time.perf_counter() - t0
    sw = weighted_sweep(problem, grid, solver=o.solver, reg=o.reg, tol=o.tol, max_iter=o.max_iter, device=o.device, threads=None,
                        progress=progress)
    sw = replace(sw, setup_seconds=sw.setup_seconds + build_s)
    res = None
    if o.mode == "resample" or "resample" in o.compare:
        res = resample_sweep(revealed, target, grid, o.resample_n, scale=problem.scale, lambda_x=o.lambda_x,
                             lambda_y=o.lambda_y, label_method=o.label_method, seed=o.seed, progress=progress)
    if o.mode == "resample":
        records = [SweepRecord("resample", res, o.resample_n), SweepRecord(f"weighted-{o.solver}", sw)]
    else:
        records = [SweepRecord("weighted", sw)] + ([SweepRecord("resample", res, o.resample_n)] if res is not None else [])
    if "exact" in o.compare and o.solver != "exact":
        ex = weighted_sweep(problem, grid, solver="exact", progress=progress)
        records.append(SweepRecord("weighted-exact", replace(ex, setup_seconds=ex.setup_seconds + build_s)))
    return records, problem


@heavy_task(name="train-chunk")  # cached by content: a rerun after a crash skips finished pilot/trial chunks
def train_chunk_task(trials: list[Trial], pools: Pools, X_eval: np.ndarray, y_eval: np.ndarray, n_classes: int,
                     weight_decay: float, max_iter: int) -> list[TrialResult]:
    return run_trials(trials, pools, X_eval, y_eval, n_classes=n_classes, weight_decay=weight_decay, max_iter=max_iter)


def prefect_train(pools: Pools, data: MixtureData, probe: ProbeSettings) -> Train:
    """The ``train=`` of the mixture and plan stages: chunks of equal-size trainings as parallel Prefect tasks."""

    def train(trials: Sequence[Trial]) -> list[TrialResult]:
        futures = [train_chunk_task.submit(chunk, pools, data.target_eval_X, data.target_eval_y, data.n_classes,
                                           probe.weight_decay, probe.max_iter)
                   for chunk in chunk_trials(trials, probe.rows_per_task)]
        return [r for f in futures for r in f.result()]

    return train


# ------------------------------------------------------------------------- sources and preflight
def _uses_encoder(config: RunConfig, sources: dict[str, SourceData]) -> bool:
    space = config.mixture.features.space
    return space == "encoder" or (space == "auto" and any(s.X is None for s in sources.values()))


#: encoder kinds fitted on each source's own rows: their vectors are not comparable across sources
PER_SOURCE_ENCODERS = ("pca", "ssl_cnn")


def check_sources(config: RunConfig, sources: dict[str, SourceData]) -> None:
    """Every mixture source can enter the feature space: its own features, or the config's encoder's."""
    if not _uses_encoder(config, sources):
        if missing := sorted(n for n, s in sources.items() if s.X is None):
            raise WinnowError(f"mixture: source(s) {', '.join(missing)} have no feature matrix for features.space "
                              f"{config.mixture.features.space!r}: use 'auto' or 'encoder' with an 'encoder' section")
        return
    if config.encoder is None:
        text = sorted(n for n, s in sources.items() if s.X is None)
        raise WinnowError(f"mixture: source(s) {', '.join(text) or ', '.join(sources)} need embeddings (features.space "
                          f"{config.mixture.features.space!r}) but the config has no 'encoder' section: add one "
                          "(e.g. 'encoder: {kind: minilm}' for text)")
    if config.encoder.kind in PER_SOURCE_ENCODERS and len(sources) > 1:
        raise WinnowError(
            f"mixture feature space: encoder kind {config.encoder.kind!r} is fitted on each source separately, so "
            f"sources {', '.join(sorted(sources))} would land in different spaces and their OT distances would mean "
            "nothing; use features.space 'raw' (a shared PCA of the raw features) or an encoder with one space for "
            "every source (minilm, column, raw)")
    from tasks.embed import check_fits

    for s in sources.values():
        try:
            check_fits(s, config.encoder)
        except WinnowError as err:
            raise WinnowError(f"mixture feature space: {err}") from None


def _load_sources(store: Store, config: RunConfig) -> dict[str, SourceData]:
    from storage.sources import load_source

    cfg = config.mixture
    names = sorted({p.source for p in cfg.pools} | {cfg.target.source})
    for n in names:
        config.source(n)
    return {n: load_source(store, n) for n in names}


def mixture_sources(store: Store, config: RunConfig, progress: bool = False) -> dict[str, SourceData]:
    """The mixture's sources, with the encoder's (cached) embeddings as features where the feature space asks."""
    sources = _load_sources(store, config)
    check_sources(config, sources)
    if not _uses_encoder(config, sources):
        return sources
    from flows.embed import embed_source

    return {n: replace(s, X=embed_source(store, s, config.encoder, progress=progress), image_shape=None)
            for n, s in sources.items()}


def check_inputs(config: RunConfig, db: str) -> MixtureRows:
    """The checks the mixture and plan stages share, on the pinned sources: the OT device, every source
    can enter the feature space, and the pools and target can be drawn (sizes, labels) — the same
    :func:`~tasks.mixture.pools.draw_mixture_rows` the stage runs. Returns the rows drawn."""
    from tasks.device import resolve_device

    resolve_device(config.mixture.ot.device)
    sources = _load_sources(Store(db), config)
    check_sources(config, sources)
    return draw_mixture_rows(sources, config.mixture)


def preflight(config: RunConfig, db: str) -> None:
    """Input checks before any stage writes: :func:`check_inputs`, then that every pilot (and every
    training at the target size) fits its pools."""
    from tasks.mixture.stage import check_capacity

    if config.mixture is None:
        return
    cfg = config.mixture
    rows = check_inputs(config, db)
    check_capacity(rows.pool_sizes, simplex_grid(len(cfg.pools), cfg.grid_step), cfg, [p.name for p in cfg.pools])


# ------------------------------------------------------------------------------------- the stage
@flow(name="mixture", log_prints=True)
def mixture_flow(config: RunConfig, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Run the mixture stage of ``config`` into the DuckDB file ``db`` under ``run_id`` (one write at the end)."""
    from storage.mixture import save_mixture
    from tasks.mixture.plot import study_plots
    from tasks.mixture.stage import run_mixture

    cfg = config.mixture
    if cfg is None:
        raise WinnowError("the config has no 'mixture' section")
    store = Store(db)
    t_start = time.perf_counter()
    data = prepare_task(mixture_sources(store, config, progress), cfg)
    grid = simplex_grid(len(cfg.pools), cfg.grid_step)
    sweeps, problem = ot_sweep_task(data, cfg, grid, progress)
    pools = Pools.from_blocks(list(zip(data.pools_X, data.pools_y)))
    study = run_mixture(data, cfg, sweeps, problem, pools=pools, train=prefect_train(pools, data, cfg.probe))
    lines = study.lines
    if cfg.plots:
        study.outcome.plots = study_plots(study, data.names, store.artifacts_dir / "mixture", run_id)
        lines += [f"plot: {p}" for p in study.outcome.plots.values()]
    counts = save_mixture(store, run_id, study.outcome)
    lines.append("rows: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    sel = study.outcome.selection
    return {**study.summary, "lines": lines, "chosen_form": study.surface.label, "selection": np.round(sel.result.p, 4).tolist(),
            "seconds_total": round(time.perf_counter() - t_start, 2)}
