"""The prune stage's compute for one source: scores -> selections (-> SemDeDup report, pruning curve).

Pure (arrays in, a frozen result out); :mod:`flows.prune` calls it per source and hands the result
to :mod:`storage.prune`. Every check on the inputs (labels a metric needs, budgets larger than the
pool, k > n, non-finite embeddings) happens here, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.errors import WinnowError
from tasks.prune.evaluate import PruningCurve, pruning_curve
from tasks.device import resolve_device
from tasks.prune.kmeans import check_embeddings, small_problem_threads, spherical_kmeans
from tasks.prune.registry import KMEANS_METRICS, MetricParams, MetricScores, compute_metric, metric_spec, select_by_metric
from tasks.prune.select import Selection, resolve_budget
from tasks.prune.semdedup import semdedup
from tasks.prune.supervised import DynamicsConfig

__all__ = ["StageOptions", "SourcePruneResult", "prune_source", "metric_params_from"]


@dataclass(frozen=True)
class StageOptions:
    """Everything :func:`prune_source` needs from the prune config (see configs/prune.py)."""

    metrics: tuple[str, ...]
    policies: tuple[str, ...]
    fractions: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    seed: int = 0
    balance: str = "none"
    min_cluster_share: float = 0.0
    auto_alpha: float = 3.0
    ccs_beta: float = 0.1
    ccs_strata: int = 50
    semdedup_eps: tuple[float, ...] = ()
    params: MetricParams = field(default_factory=MetricParams)
    eval_fractions: tuple[float, ...] | None = None
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    eval_policies: tuple[str, ...] | None = None
    probe_max_iter: int = 200
    probe_weight_decay: float = 1e-4


def metric_params_from(cfg, k: int) -> MetricParams:
    """:class:`MetricParams` from a ``configs.prune.PruneConfig`` and the resolved k."""
    return MetricParams(
        k=k,
        kmeans_iters=cfg.kmeans_iters,
        chunk=cfg.chunk,
        semdedup_keep=cfg.semdedup_keep,
        semdedup_block=cfg.semdedup_block,
        semdedup_max_pairs=cfg.semdedup_max_pairs,
        dbp_tau=cfg.dbp_tau,
        dbp_neighbors=cfg.dbp_neighbors,
        dynamics=DynamicsConfig(
            epochs=cfg.proxy_epochs, read_epoch=cfg.proxy_read_epoch, seeds=tuple(cfg.proxy_seeds)
        ),
        device=cfg.device,
    )


@dataclass(frozen=True)
class SourcePruneResult:
    """scores : {metric: MetricScores} on the pool rows; selections : [(metric, policy, budget_spec,
    Selection)]; semdedup_removed : {eps: n removed}; curve : the pruning curve or None."""

    n_pool: int
    scores: dict[str, MetricScores]
    selections: list[tuple[str, str, str, Selection]]
    semdedup_removed: dict[float, int]
    curve: PruningCurve | None


def _budgets(n: int, opts: StageOptions) -> list[tuple[str, dict]]:
    out = []
    for f in opts.fractions:
        resolve_budget(n, fraction=f)
        out.append((f"f={f:g}", {"fraction": f}))
    for c in opts.counts:
        if c > n:
            raise WinnowError(f"count={c} exceeds the {n} rows available to prune; lower prune.counts")
        out.append((f"n={c}", {"count": c}))
    if not out:
        raise WinnowError("no budget: give prune.fractions or prune.counts")
    return out


def prune_source(
    E: np.ndarray,
    y: np.ndarray | None,
    opts: StageOptions,
    *,
    n_classes: int | None = None,
    E_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    progress: bool = False,
) -> SourcePruneResult:
    """Score the pool ``E`` with every metric, make every selection, optionally evaluate.

    Parameters
    ----------
    E : (n, d) embeddings of the rows to prune (a source's train split).
    y : (n,) labels or None; handed only to metrics that need labels (and to the evaluation probe).
    opts : the stage options.
    n_classes : number of classes, for the ``auto`` rule's group count (default: k clusters).
    E_test, y_test : held-out rows for the pruning curve (needed when ``opts.eval_fractions`` is set).
    """
    E = check_embeddings(E, chunk=opts.params.chunk)
    with small_problem_threads(E.size):
        return _prune_source(E, y, opts, n_classes, E_test, y_test, progress)


def _prune_source(E, y, opts, n_classes, E_test, y_test, progress) -> SourcePruneResult:
    n, d = E.shape
    for m in opts.metrics:
        spec = metric_spec(m)
        if spec.needs_labels and y is None:
            raise WinnowError(
                f"metric {m!r} needs labels but the source has none; use label-free metrics "
                "(ssp, semdedup, dbp, moderate, random) or ingest a label column"
            )
    budgets = _budgets(n, opts)
    if opts.params.k > n:
        raise WinnowError(f"k={opts.params.k} clusters exceeds the {n} rows to prune; lower prune.k")
    if opts.eval_fractions is not None and (y is None or E_test is None or y_test is None or len(y_test) == 0):
        raise WinnowError(
            "prune.evaluate needs labels and test rows (the probe is supervised); "
            "remove the evaluate section for unlabelled sources"
        )

    km = None
    if any(m in KMEANS_METRICS for m in opts.metrics) or opts.semdedup_eps and "semdedup" in opts.metrics:
        km = spherical_kmeans(E, opts.params.k, iters=opts.params.kmeans_iters, seed=opts.seed, chunk=opts.params.chunk,
                              device=resolve_device(opts.params.device))
    scores: dict[str, MetricScores] = {}
    for m in opts.metrics:
        spec = metric_spec(m)
        scores[m] = compute_metric(
            m, E, y=y if spec.needs_labels else None, params=opts.params, seed=opts.seed,
            kmeans=km if m in KMEANS_METRICS else None,
        )
    groups_for_auto = n_classes or opts.params.k
    selections: list[tuple[str, str, str, Selection]] = []
    for m, ms in scores.items():
        for pol in ("random",) if m == "random" else opts.policies:
            for spec_str, budget in budgets:
                sel = select_by_metric(
                    ms, pol, **budget, balance=opts.balance, min_group_share=opts.min_cluster_share, dim=d,
                    n_groups=groups_for_auto, auto_threshold=opts.auto_alpha, ccs_beta=opts.ccs_beta,
                    ccs_strata=opts.ccs_strata, seed=opts.seed,
                )
                selections.append((m, pol, spec_str, sel))
    removed: dict[float, int] = {}
    if "semdedup" in opts.metrics and opts.semdedup_eps:
        p = opts.params
        r = semdedup(E, eps=opts.semdedup_eps, k=p.k, keep=p.semdedup_keep, block=p.semdedup_block,
                     max_pairs=p.semdedup_max_pairs, chunk=p.chunk, kmeans=km)
        removed = dict(r.n_removed)
    curve = None
    if opts.eval_fractions is not None:
        curve = pruning_curve(
            E, y, E_test, y_test,
            metrics=opts.metrics,
            policies=opts.eval_policies or opts.policies,
            fractions=opts.eval_fractions,
            seeds=opts.eval_seeds,
            params=opts.params,
            balance=opts.balance,
            min_group_share=opts.min_cluster_share,
            auto_threshold=opts.auto_alpha,
            ccs_beta=opts.ccs_beta,
            ccs_strata=opts.ccs_strata,
            probe_max_iter=opts.probe_max_iter,
            probe_weight_decay=opts.probe_weight_decay,
            progress=progress,
        )
    return SourcePruneResult(n_pool=n, scores=scores, selections=selections, semdedup_removed=removed, curve=curve)
