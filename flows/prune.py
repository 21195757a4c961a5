"""Prune stage flows: score -> select -> (evaluate) -> DuckDB; plus the perceptron experiment.

* :func:`prune_flow` — per source of the config: embeddings via :func:`flows.embed.embed_source`,
  scores / selections / SemDeDup report / pruning curve via :func:`tasks.prune.stage.prune_source`
  (a Prefect task), then one idempotent write (:func:`storage.prune.save_prune_results`). Every
  input check runs before the write, so bad input leaves the tables untouched.
* :func:`prune_eval` — the pruning-curve part alone, as a subflow (PNG + Prefect artifacts).
* :func:`perceptron_flow` — Sorscher et al. Fig. 1 teacher-student grid, stored and plotted.

Commands: cli/prune.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from configs.base import RunConfig
from configs.prune import PruneConfig
from storage.db import Store
from storage.prune import SelectionHeader, save_perceptron, save_prune_results
from tasks.errors import WinnowError
from tasks.prune.evaluate import PruningCurve, plot_pruning_curve
from tasks.prune.perceptron import perceptron_experiment, plot_perceptron, summarize_perceptron
from tasks.prune.stage import SourcePruneResult, StageOptions, metric_params_from, prune_source

__all__ = ["prune_flow", "prune_eval", "perceptron_flow", "stage_options"]

log = logging.getLogger("winnow.prune")

# Arrays flow between these tasks: no result persistence, no input hashing of big arrays.
prune_source_task = task(name="prune-source", cache_policy=NO_CACHE, persist_result=False)(prune_source)
perceptron_task = task(name="perceptron-grid", cache_policy=NO_CACHE, persist_result=False)(perceptron_experiment)


def stage_options(cfg: PruneConfig, k: int, *, evaluate: bool = True) -> StageOptions:
    """:class:`StageOptions` for one source from the prune config and the resolved k."""
    ev = cfg.evaluate if evaluate else None
    return StageOptions(
        metrics=tuple(cfg.metrics),
        policies=tuple(cfg.policies),
        fractions=tuple(cfg.fractions),
        counts=tuple(cfg.counts),
        seed=cfg.seed,
        balance=cfg.balance,
        min_cluster_share=cfg.min_cluster_share,
        auto_alpha=cfg.auto_alpha,
        ccs_beta=cfg.ccs_beta,
        ccs_strata=cfg.ccs_strata,
        semdedup_eps=tuple(cfg.semdedup_eps),
        params=metric_params_from(cfg, k),
        eval_fractions=None if ev is None else tuple(ev.fractions),
        eval_seeds=(0,) if ev is None else tuple(ev.seeds),
        eval_policies=None if ev is None or ev.policies is None else tuple(ev.policies),
        probe_max_iter=200 if ev is None else ev.probe_max_iter,
        probe_weight_decay=1e-4 if ev is None else ev.probe_weight_decay,
    )


def _curve_rows(curve: PruningCurve) -> list[dict[str, Any]]:
    return [
        {"metric": s["metric"], "policy": s["policy"], "ran": s["resolved_policy"], "fraction": s["fraction"],
         "n_kept": s["n_kept"], "accuracy": f"{s['mean']:.4f} ± {s['std']:.4f}", "seeds": s["n_seeds"]}
        for s in curve.summary()
    ]


def _publish_curve(run_id: str, source: str, curve: PruningCurve, png: str | None) -> None:
    """Markdown + table artifacts of a pruning curve (never fatal)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from flows.report import _md_table, artifact_key

    rows = _curve_rows(curve)
    key = artifact_key(f"{run_id}-{source}", "pruning-curve")
    try:
        md = f"# Pruning curve — {source} (`{run_id}`)\n\nLinear-probe test accuracy, mean ± std over seeds.\n\n"
        md += _md_table(rows) + (f"\nPlot: `{png}`\n" if png else "")
        create_markdown_artifact(markdown=md, key=key, description=f"pruning curve of {source}")
        create_table_artifact(table=rows, key=key + "-table", description=f"pruning curve of {source}")
    except Exception as err:  # noqa: BLE001 - reporting must not fail a finished computation
        log.warning("could not publish the pruning-curve artifact %s: %s", key, err)


@flow(name="prune-eval", log_prints=True)
def prune_eval(config: RunConfig, db: str, run_id: str, source: str, progress: bool = True) -> PruningCurve:
    """Pruning curve of one source: probe accuracy vs kept fraction per metric x policy against
    random, several seeds; writes a PNG next to the database and publishes Prefect artifacts.

    Reads the source and its (cached) embeddings; writes nothing to DuckDB (the caller stores the
    returned curve with the rest of the stage, in one transaction).
    """
    from flows.embed import embed_source
    from storage.sources import load_source
    from tasks.prune.evaluate import pruning_curve

    cfg = config.prune or PruneConfig()
    if config.encoder is None:
        raise WinnowError("the prune stage needs an 'encoder' section (e.g. encoder: {kind: pca, dim: 32})")
    store = Store(db)
    src = load_source(store, source)
    pool, test = src.train(), src.test()
    if pool.y is None or test.n == 0:
        raise WinnowError(f"prune.evaluate needs labels and test rows; source {source!r} has "
                          f"{'no labels' if pool.y is None else 'no test rows'}")
    opts = stage_options(cfg, cfg.k or (src.n_classes or 10), evaluate=True)
    E_all = embed_source(store, src, config.encoder, progress=progress)
    is_train = src.split == "train"
    curve = pruning_curve(
        E_all[is_train], pool.y, E_all[~is_train], test.y, metrics=opts.metrics,
        policies=opts.eval_policies or opts.policies, fractions=opts.eval_fractions, seeds=opts.eval_seeds,
        params=opts.params, balance=opts.balance, min_group_share=opts.min_cluster_share,
        auto_threshold=opts.auto_alpha, ccs_beta=opts.ccs_beta, ccs_strata=opts.ccs_strata,
        probe_max_iter=opts.probe_max_iter, probe_weight_decay=opts.probe_weight_decay, progress=progress,
    )
    png = str(store.artifacts_dir / "prune" / f"{run_id}-{source}-curve.png")
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    plot_pruning_curve(curve, png, title=f"pruning curve — {source} ({config.encoder.kind} embeddings)")
    _publish_curve(run_id, source, curve, png)
    return curve


def _tables_for(run_id: str, src, res: SourcePruneResult, pool_ids: np.ndarray, pool_rows: np.ndarray, seed: int):
    score_parts, headers, member_parts = [], [], []
    for m, ms in res.scores.items():
        n = ms.scores.shape[0]
        score_parts.append(pa.table({
            "source_id": pa.array(np.full(n, src.source_id, dtype=np.int32)),
            "example_id": pa.array(pool_ids),
            "metric": pa.array([m] * n, pa.string()),
            "seed": pa.array(np.full(n, seed, dtype=np.int32)),
            "score": pa.array(ms.scores.astype(np.float64)),
            "group_key": pa.array(ms.groups.astype(np.int32)) if ms.groups is not None else pa.nulls(n, pa.int32()),
        }))
    for m, pol, spec, sel in res.selections:
        sid = f"{run_id}:{src.name}:{m}:{pol}:{spec}"
        headers.append(SelectionHeader(
            selection_id=sid, source_id=src.source_id, source_name=src.name, metric=m, policy=pol,
            resolved_policy=sel.resolved_policy, balance=sel.balance, fraction=sel.fraction, budget_spec=spec,
            n_pool=sel.n, n_kept=sel.budget, reason=sel.reason,
        ))
        k = sel.indices.size
        member_parts.append(pa.table({
            "selection_id": pa.array([sid] * k, pa.string()),
            "example_id": pa.array(pool_ids[sel.indices]),
            "source_id": pa.array(np.full(k, src.source_id, dtype=np.int32)),
            "row_index": pa.array(pool_rows[sel.indices]),
        }))
    return score_parts, headers, member_parts


def resolve_sources(config: RunConfig, store: Store) -> tuple[dict[str, Any], list[str]]:
    """The sources to prune, every input check that needs no embeddings done (before any write)."""
    from storage.sources import load_source
    from tasks.embed import check_fits

    cfg = config.prune or PruneConfig()
    if config.encoder is None:
        raise WinnowError("the prune stage needs an 'encoder' section (e.g. encoder: {kind: pca, dim: 32})")
    lines: list[str] = []
    if cfg.sources is not None:
        for n in cfg.sources:
            config.source(n)  # unknown names -> WinnowError
        sources = {name: load_source(store, name) for name in cfg.sources}
        for src in sources.values():
            check_fits(src, config.encoder)  # named explicitly: must be embeddable
    else:  # every source the encoder can embed; the others are skipped with a line saying why
        sources = {}
        for s in config.sources:
            src = load_source(store, s.name)
            try:
                check_fits(src, config.encoder)
            except WinnowError as err:
                lines.append(f"skipped {s.name}: {err}")
                continue
            sources[s.name] = src
    if not sources:
        raise WinnowError(f"no source of this config can be embedded by encoder kind {config.encoder.kind!r}: "
                          + "; ".join(lines))
    for src in sources.values():  # every input check that needs no embeddings, before any write
        _precheck(cfg, src)
    return sources, lines


def preflight(config: RunConfig, db: str) -> None:
    """Called by the pipeline before any stage runs, so bad prune input fails before embeddings are made."""
    from tasks.device import resolve_device

    if config.prune is not None:
        resolve_device(config.prune.device)
    resolve_sources(config, Store(db))


@flow(name="prune", log_prints=True)
def prune_flow(config: RunConfig, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Score, select (and evaluate) every source of ``config`` named by ``prune.sources``; one write.

    Returns the stage summary ``{"lines": [...], "selections": n, "curve": [...]}``.
    """
    from flows.embed import embed_source

    cfg = config.prune or PruneConfig()
    store = Store(db)
    sources, lines = resolve_sources(config, store)
    scores_t, headers, members_t, curve_rows, sem_rows = [], [], [], [], []
    curve_summary: list[dict[str, Any]] = []
    for name, src in sources.items():
        pool = src.train()
        k = cfg.k or (src.n_classes if src.n_classes else 10)
        opts = stage_options(cfg, k, evaluate=False)
        E_all = embed_source(store, src, config.encoder, progress=progress)
        is_train = src.split == "train"
        E_pool = E_all[is_train]
        res = prune_source_task(E_pool, pool.y, opts, n_classes=src.n_classes, progress=progress)
        curve = None
        if cfg.evaluate is not None:
            curve = prune_eval(config=config, db=db, run_id=run_id, source=name, progress=progress)
            lines.append(f"{name}: pruning curve plot {store.artifacts_dir / 'prune' / f'{run_id}-{name}-curve.png'}")
        s_parts, h, m_parts = _tables_for(run_id, src, res, pool.example_ids, pool.row_index, cfg.seed)
        scores_t += s_parts
        headers += h
        members_t += m_parts
        for eps, nr in res.semdedup_removed.items():
            sem_rows.append({"source_id": src.source_id, "eps": eps, "n_pool": res.n_pool, "n_removed": nr})
            lines.append(f"{name}: semdedup eps={eps:g} removes {nr} of {res.n_pool} ({nr / res.n_pool:.1%})")
        autos = {sel.reason for m, pol, _, sel in res.selections if pol == "auto"}
        lines.append(f"{name}: {len(res.selections)} selections over {len(res.scores)} metrics, pool {res.n_pool} rows, k={k}")
        lines += [f"{name}: {r}" for r in sorted(autos)]
        if curve is not None:
            for p in curve.points:
                curve_rows.append({"source_id": src.source_id, "metric": p.metric, "policy": p.policy,
                                   "resolved_policy": p.resolved_policy, "fraction": p.fraction, "seed": p.seed,
                                   "n_kept": p.n_kept, "accuracy": p.accuracy})
            for s in curve.summary():
                curve_summary.append({"source": name, **s})
            lines += _curve_table_lines(name, curve) + _best_vs_random_lines(name, curve)
    curve_schema = pa.schema([("source_id", pa.int32()), ("metric", pa.string()), ("policy", pa.string()),
                              ("resolved_policy", pa.string()), ("fraction", pa.float64()), ("seed", pa.int32()),
                              ("n_kept", pa.int64()), ("accuracy", pa.float64())])
    sem_schema = pa.schema([("source_id", pa.int32()), ("eps", pa.float64()), ("n_pool", pa.int64()), ("n_removed", pa.int64())])
    save_prune_results(
        store, run_id,
        scores=pa.concat_tables(scores_t) if scores_t else None,
        selections=headers,
        members=pa.concat_tables(members_t) if members_t else None,
        curve=pa.Table.from_pylist(curve_rows, schema=curve_schema) if curve_rows else None,
        semdedup=pa.Table.from_pylist(sem_rows, schema=sem_schema) if sem_rows else None,
    )
    lines.append(f"export one with: winnow export {headers[0].selection_id} --to kept.parquet" if headers else "no selections")
    return {"lines": lines, "selections": len(headers), "curve": curve_summary}


def _precheck(cfg: PruneConfig, src) -> None:
    """Refuse, before embedding or writing anything, what can be refused from the source alone."""
    from tasks.prune.registry import metric_spec

    n_pool = int((src.split == "train").sum())
    if n_pool == 0:
        raise WinnowError(f"source {src.name!r} has no train rows to prune")
    for m in cfg.metrics:
        if metric_spec(m).needs_labels and not src.has_labels:
            raise WinnowError(
                f"metric {m!r} needs labels but source {src.name!r} has none; use label-free metrics "
                "(ssp, semdedup, dbp, moderate, random) or ingest a label column"
            )
    if cfg.evaluate is not None and (not src.has_labels or n_pool == src.n):
        raise WinnowError(f"prune.evaluate needs labels and test rows; source {src.name!r} has "
                          f"{'no labels' if not src.has_labels else 'no test rows'}")
    for c in cfg.counts:
        if c > n_pool:
            raise WinnowError(f"count={c} exceeds the {n_pool} train rows of source {src.name!r}; lower prune.counts")
    k = cfg.k or (src.n_classes or 10)
    if k > n_pool:
        raise WinnowError(f"k={k} clusters exceeds the {n_pool} train rows of source {src.name!r}; lower prune.k")


def _curve_table_lines(name: str, curve: PruningCurve) -> list[str]:
    """The pruning curve as text: one line per kept fraction, every metric/policy next to random."""
    summ = curve.summary()
    out = [f"{name}: linear-probe accuracy on the test split by kept fraction (mean over {summ[0]['n_seeds']} seed(s)):"]
    for f in sorted({s["fraction"] for s in summ}, reverse=True):
        at = sorted((s for s in summ if s["fraction"] == f), key=lambda s: (s["metric"] != "random", s["metric"], s["policy"]))
        cells = [f"{s['metric']}" + ("" if s["metric"] in ("random", "full") else f"/{s['policy']}") + f" {s['mean']:.4f}" for s in at]
        out.append(f"  f={f:g}: " + " | ".join(cells))
    return out


def _best_vs_random_lines(name: str, curve: PruningCurve) -> list[str]:
    """One line per fraction: the best metric/policy against random."""
    summ = curve.summary()
    out = []
    for f in sorted({s["fraction"] for s in summ if s["metric"] != "full"}, reverse=True):
        at = [s for s in summ if s["fraction"] == f and s["metric"] not in ("full", "random")]
        rnd = [s for s in summ if s["fraction"] == f and s["metric"] == "random"]
        if not at:
            continue
        best = max(at, key=lambda s: s["mean"])
        vs = f" vs random {rnd[0]['mean']:.4f}" if rnd else ""
        out.append(f"{name}: f={f:g} best {best['metric']}/{best['policy']} {best['mean']:.4f}±{best['std']:.4f}{vs}")
    return out


@flow(name="perceptron", log_prints=True)
def perceptron_flow(
    db: str,
    N: int = 100,
    alphas: list[float] = [1, 2, 4, 8, 16, 32, 64],  # noqa: B006 - Prefect parameters are copied
    fractions: list[float] = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1],  # noqa: B006
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    theta: float = 0.0,
    plot_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Teacher-student perceptron pruning grid (Sorscher et al. 2022, Fig. 1): store, plot, summarise."""
    import hashlib
    import json

    from prefect.artifacts import create_markdown_artifact

    from flows.report import _md_table, artifact_key

    params = {"N": N, "alphas": list(alphas), "fractions": list(fractions), "seeds": list(seeds), "theta": theta}
    run_id = "perceptron-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    res = perceptron_task(N=N, alphas=alphas, fractions=fractions, seeds=seeds, theta=theta, progress=progress)
    rows = pa.table({
        "n_dim": pa.array([r.N for r in res.rows], pa.int32()),
        "theta": [r.theta for r in res.rows],
        "alpha_tot": [r.alpha_tot for r in res.rows],
        "fraction": [r.fraction for r in res.rows],
        "policy": [r.policy for r in res.rows],
        "seed": pa.array([r.seed for r in res.rows], pa.int32()),
        "n_train": pa.array([r.P for r in res.rows], pa.int64()),
        "n_kept": pa.array([r.n_kept for r in res.rows], pa.int64()),
        "test_error": [r.test_error for r in res.rows],
    })
    store = Store(db)
    save_perceptron(store, run_id, rows)
    if plot_path is None:
        plot_path = str(store.artifacts_dir / "perceptron" / f"{run_id}.png")
    Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
    plot_perceptron(res, plot_path)
    summary = summarize_perceptron(res)
    table = _perceptron_table(summary)
    try:
        create_markdown_artifact(
            markdown=f"# Perceptron pruning (`{run_id}`)\n\nTest error mean over seeds.\n\n{_md_table(table)}\nPlot: `{plot_path}`\n",
            key=artifact_key(run_id, "perceptron"), description="Sorscher et al. Fig. 1 reproduction")
    except Exception as err:  # noqa: BLE001
        log.warning("could not publish the perceptron artifact: %s", err)
    return {"run_id": run_id, "db": str(store.path), "plot": plot_path, "table": table, "rows": len(res.rows)}


def _perceptron_table(summary: list[dict]) -> list[dict[str, Any]]:
    cells: dict[tuple[float, float], dict[str, Any]] = {}
    for s in summary:
        row = cells.setdefault((s["alpha_tot"], s["fraction"]), {"alpha_tot": s["alpha_tot"], "f": s["fraction"]})
        row[s["policy"]] = round(s["mean"], 4)
    return [cells[k] for k in sorted(cells, key=lambda k: (k[0], -k[1]))]
