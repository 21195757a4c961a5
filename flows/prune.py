"""Prune stage flows: score -> select -> de-duplicate -> (evaluate) -> DuckDB; plus the perceptron experiment.

* :func:`prune_flow` — per source of the config: embeddings via :func:`flows.embed.embed_source`
  (train and test rows embedded once), scores / selections / de-duplications / pruning curve via
  :func:`tasks.prune.stage.prune_source` (a Prefect task), the curve's PNG and artifacts, then one
  idempotent write of the :class:`~tasks.prune.outcome.PruneOutcome` (:func:`storage.prune.save_prune`).
  The options are built once (:meth:`~tasks.prune.options.PruneOptions.from_config`) and checked
  against every pool in :func:`preflight`, before any stage writes.
* :func:`perceptron_flow` — Sorscher et al. Fig. 1 teacher-student grid, stored and plotted.

Commands: cli/prune.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE

from configs.base import RunConfig
from configs.prune import PruneConfig
from flows.caching import heavy_task
from storage.db import Store
from storage.prune import save_perceptron, save_prune
from tasks.errors import WinnowError
from tasks.prune.evaluate import PruningCurve, mean_text, plot_pruning_curve
from tasks.prune.options import PoolInfo, PruneOptions
from tasks.prune.outcome import PruneOutcome, SourceOutcome
from tasks.prune.perceptron import perceptron_experiment, plot_perceptron, summarize_perceptron
from tasks.prune.stage import prune_source

__all__ = ["prune_flow", "perceptron_flow", "preflight", "pool_info"]

log = logging.getLogger("winnow.prune")

# Arrays flow between these tasks: no result persistence, no input hashing of big arrays.
# cached by content (embeddings, labels, options, code): a rerun after a crash skips sources already scored
prune_source_task = heavy_task(name="prune-source")(prune_source)
perceptron_task = task(name="perceptron-grid", cache_policy=NO_CACHE, persist_result=False)(perceptron_experiment)


def pool_info(src) -> PoolInfo:
    """What the option checks need to know about a source's pool (its train rows)."""
    n_pool = int((src.split == "train").sum())
    return PoolInfo(name=src.name, n_pool=n_pool, n_test=src.n - n_pool, has_labels=src.has_labels,
                    n_classes=src.n_classes)


def _curve_rows(curve: PruningCurve) -> list[dict[str, Any]]:
    return [
        {"metric": s["metric"], "policy": s["policy"], "ran": s["resolved_policy"], "fraction": s["fraction"],
         "n_kept": s["n_kept"], "accuracy": mean_text(s["mean"], s["std"], s["n_seeds"]), "seeds": s["n_seeds"]}
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
    opts = PruneOptions.from_config(cfg)
    for src in sources.values():  # the same check the task runs, before anything is embedded or written
        opts.check_against(pool_info(src))
    return sources, lines


def preflight(config: RunConfig, db: str) -> None:
    """Called by the pipeline before any stage runs, so bad prune input fails before embeddings are made."""
    from tasks.device import resolve_device

    if config.prune is not None:
        resolve_device(config.prune.device)
    resolve_sources(config, Store(db))


@flow(name="prune", log_prints=True)
def prune_flow(config: RunConfig, db: str, run_id: str, progress: bool = True) -> dict[str, Any]:
    """Score, select, de-duplicate (and evaluate) every source of ``prune.sources``; one write.

    Returns the stage summary ``{"lines": [...], "selections": n, "curve": [...]}``.
    """
    from flows.embed import embed_source

    cfg = config.prune or PruneConfig()
    opts = PruneOptions.from_config(cfg)
    store = Store(db)
    sources, lines = resolve_sources(config, store)
    outcomes: list[SourceOutcome] = []
    curve_summary: list[dict[str, Any]] = []
    for name, src in sources.items():
        pool, test = src.train(), src.test()
        E_all = embed_source(store, src, config.encoder, progress=progress)
        is_train = src.split == "train"
        res = prune_source_task(
            E_all[is_train], pool.y, opts, n_classes=src.n_classes, name=name,
            E_test=E_all[~is_train] if opts.evaluate is not None else None,
            y_test=test.y if opts.evaluate is not None else None,
            content=pool.X if pool.X is not None else pool.texts, progress=progress)
        outcomes.append(SourceOutcome(src.source_id, name, pool.example_ids, pool.row_index, res))
        lines += res.lines(name)
        if res.curve is not None:
            png = store.artifacts_dir / "prune" / f"{run_id}-{name}-curve.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            plot_pruning_curve(res.curve, str(png), title=f"pruning curve — {name} ({config.encoder.kind} embeddings)")
            _publish_curve(run_id, name, res.curve, str(png))
            lines.append(f"{name}: pruning curve plot {png}")
            curve_summary += [{"source": name, **s} for s in res.curve.summary()]
            lines += _curve_table_lines(name, res.curve) + _best_vs_random_lines(name, res.curve)
    save_prune(store, run_id, PruneOutcome(seed=opts.seed, sources=tuple(outcomes)))
    n_sel = sum(len(o.result.selections) + len(o.result.dedup) for o in outcomes)
    first = next((o for o in outcomes if o.result.selections or o.result.dedup), None)
    if first is not None:
        r = first.result
        sid = (f"{run_id}:{first.name}:{r.selections[0].metric}:{r.selections[0].policy}:{r.selections[0].spec}"
               if r.selections else f"{run_id}:{first.name}:{r.dedup[0].method}:dedup:{r.dedup[0].spec}")
        lines.append(f"export one with: winnow export {sid} --to kept.parquet")
    else:
        lines.append("no selections")
    return {"lines": lines, "selections": n_sel, "curve": curve_summary}


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
        text = f"{best['metric']}/{best['policy']} {mean_text(best['mean'], best['std'], best['n_seeds'])}"
        if rnd and rnd[0]["mean"] >= best["mean"]:  # never call a selection that loses to random the best
            r = rnd[0]
            out.append(f"{name}: f={f:g} best random {mean_text(r['mean'], r['std'], r['n_seeds'])}; "
                       f"every pruned selection is at or below it (best pruned {text})")
        else:
            vs = f" vs random {rnd[0]['mean']:.4f}" if rnd else ""
            out.append(f"{name}: f={f:g} best {text}{vs}")
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
    import json

    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    from flows.report import _md_table, artifact_key
    from storage.runs import make_run_id, recorded_run

    params = {"N": N, "alphas": list(alphas), "fractions": list(fractions), "seeds": list(seeds), "theta": theta}
    config_json = json.dumps(params, sort_keys=True)  # its hash is the run id (as before runs were recorded)
    run_id = make_run_id("perceptron", config_json)
    store = Store(db)
    if plot_path is None:
        plot_path = str(store.artifacts_dir / "perceptron" / f"{run_id}.png")
    with recorded_run(store, run_id, "perceptron", f"N={N} theta={theta:g}", config_json, flow_run.id) as rec:
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
        save_perceptron(store, run_id, rows)
        Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
        plot_perceptron(res, plot_path)
        table = _perceptron_table(summarize_perceptron(res))
        rec.summary = {"run_id": run_id, "db": str(store.path), "plot": plot_path, "rows": len(res.rows),
                       "lines": _perceptron_lines(table, plot_path)}
    try:
        create_markdown_artifact(
            markdown=f"# Perceptron pruning (`{run_id}`)\n\nTest error mean over seeds.\n\n{_md_table(table)}\nPlot: `{plot_path}`\n",
            key=artifact_key(run_id, "perceptron"), description="Sorscher et al. Fig. 1 reproduction")
    except Exception as err:  # noqa: BLE001
        log.warning("could not publish the perceptron artifact: %s", err)
    return {**rec.summary, "table": table}


def _perceptron_lines(table: list[dict[str, Any]], plot_path: str) -> list[str]:
    """Summary lines (``winnow show``): at the largest alpha_tot, each policy's test error at the smallest fraction."""
    if not table:
        return [f"plot: {plot_path}"]
    top = max(r["alpha_tot"] for r in table)
    last = min((r for r in table if r["alpha_tot"] == top), key=lambda r: r["f"])
    errs = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("alpha_tot", "f"))
    return [f"test error at alpha_tot={top:g}, f={last['f']:g} (mean over seeds): {errs}", f"plot: {plot_path}"]


def _perceptron_table(summary: list[dict]) -> list[dict[str, Any]]:
    cells: dict[tuple[float, float], dict[str, Any]] = {}
    for s in summary:
        row = cells.setdefault((s["alpha_tot"], s["fraction"]), {"alpha_tot": s["alpha_tot"], "f": s["fraction"]})
        row[s["policy"]] = round(s["mean"], 4)
    return [cells[k] for k in sorted(cells, key=lambda k: (k[0], -k[1]))]
