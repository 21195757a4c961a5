"""The prune stage's options, built once from the config, and the one check of them against a pool.

:class:`PruneOptions` is what every prune computation reads (the stage, its pruning curve, the
preflight): it is built with :meth:`PruneOptions.from_config` from a ``configs.prune.PruneConfig``
and never copied field by field again. :meth:`PruneOptions.check_against` refuses, with a message
naming the option to change, whatever cannot work on a given pool (labels a metric needs, budgets
or k larger than the pool, an evaluation without test rows); the preflight calls it before any
stage writes and :func:`tasks.prune.stage.prune_source` calls it again on the arrays it receives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tasks.errors import WinnowError
from tasks.prune.kmeans import DEFAULT_CHUNK
from tasks.prune.registry import MetricParams, metric_spec
from tasks.prune.select import SelectOptions, resolve_budget
from tasks.prune.semdedup import DEFAULT_BLOCK, DEFAULT_MAX_PAIRS
from tasks.prune.supervised import DynamicsConfig

__all__ = ["DedupOptions", "EvalOptions", "PoolInfo", "PruneOptions", "default_k", "DEDUP_METRICS"]

#: metrics that make de-duplication selections (kept ids per threshold) instead of a ranking
DEDUP_METRICS = ("exact_dedup",)


def default_k(n_pool: int, n_classes: int | None) -> int:
    """k-means clusters chosen from the data: ``round(sqrt(n_pool))`` clipped to
    ``[classes, 10 x classes]`` (classes = 10 when unknown), never more than ``n_pool``.

    Sorscher et al. (2022) find SSP insensitive to k within 10x of the class count; with k equal
    to the class count, clusters merge classes and keep-easy collapses onto the tight ones
    (sklearn digits, docs/pruning.md: k = 10 balanced keep-easy 0.820 vs random 0.873 at f = 0.05;
    k = 50: 0.909). A few dozen rows per cluster keeps quotas and SemDeDup blocks meaningful.
    """
    c = n_classes if n_classes and n_classes > 1 else 10
    k = min(max(round(math.sqrt(max(n_pool, 1))), c), 10 * c)
    return max(1, min(k, n_pool))


@dataclass(frozen=True)
class PoolInfo:
    """What the checks need to know about the rows to prune (no arrays)."""

    name: str
    n_pool: int
    n_test: int
    has_labels: bool
    n_classes: int | None = None


@dataclass(frozen=True)
class DedupOptions:
    """SemDeDup thresholds: raw ``eps``, ``rel_eps`` (multiples of the encoder's median
    nearest-neighbour cosine distance) and ``remove`` (the eps removing about that share); plus the
    share above which a threshold is reported as suspicious."""

    eps: tuple[float, ...] = ()
    rel_eps: tuple[float, ...] = ()
    remove: tuple[float, ...] = ()
    keep: str = "farthest"
    block: int | None = DEFAULT_BLOCK
    max_pairs: int = DEFAULT_MAX_PAIRS
    warn_share: float = 0.2

    @property
    def any(self) -> bool:
        return bool(self.eps or self.rel_eps or self.remove)


@dataclass(frozen=True)
class EvalOptions:
    """The pruning curve: keep fractions, seeds, policies (None: the stage's), the probe."""

    fractions: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    policies: tuple[str, ...] | None = None
    probe_max_iter: int = 200
    probe_weight_decay: float = 1e-4
    validation: float = 0.2  # share of the pool held out to decide auto's switch (0: auto keeps its rule)


@dataclass(frozen=True)
class PruneOptions:
    """Everything the prune computations read (see configs/prune.py for each knob)."""

    metrics: tuple[str, ...]
    policies: tuple[str, ...] = ("auto",)
    fractions: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    seed: int = 0
    k: int | None = None
    select: SelectOptions = field(default_factory=SelectOptions)
    dedup: DedupOptions = field(default_factory=DedupOptions)
    kmeans_iters: int = 20
    chunk: int = DEFAULT_CHUNK
    dbp_tau: float = 0.5
    dbp_neighbors: int = 20
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    device: str = "cpu"
    evaluate: EvalOptions | None = None

    @classmethod
    def from_config(cls, cfg) -> "PruneOptions":
        """From a ``configs.prune.PruneConfig`` (validated there)."""
        ev = cfg.evaluate
        return cls(
            metrics=tuple(cfg.metrics),
            policies=tuple(cfg.policies),
            fractions=tuple(cfg.fractions),
            counts=tuple(cfg.counts),
            seed=cfg.seed,
            k=cfg.k,
            select=SelectOptions(balance=cfg.balance, min_group_share=cfg.min_cluster_share,
                                 auto_threshold=cfg.auto_alpha, ccs_beta=cfg.ccs_beta, ccs_strata=cfg.ccs_strata),
            dedup=DedupOptions(eps=tuple(cfg.semdedup_eps), rel_eps=tuple(cfg.semdedup_rel_eps),
                               remove=tuple(cfg.semdedup_remove), keep=cfg.semdedup_keep, block=cfg.semdedup_block,
                               max_pairs=cfg.semdedup_max_pairs, warn_share=cfg.semdedup_warn),
            kmeans_iters=cfg.kmeans_iters,
            chunk=cfg.chunk,
            dbp_tau=cfg.dbp_tau,
            dbp_neighbors=cfg.dbp_neighbors,
            dynamics=DynamicsConfig(epochs=cfg.proxy_epochs, read_epoch=cfg.proxy_read_epoch,
                                    seeds=tuple(cfg.proxy_seeds)),
            device=cfg.device,
            evaluate=None if ev is None else EvalOptions(
                fractions=tuple(ev.fractions), seeds=tuple(ev.seeds),
                policies=None if ev.policies is None else tuple(ev.policies),
                probe_max_iter=ev.probe_max_iter, probe_weight_decay=ev.probe_weight_decay, validation=ev.validation),
        )

    # ------------------------------------------------------------------------------ derived
    @property
    def ranking_metrics(self) -> tuple[str, ...]:
        """The metrics that score and rank rows (all but the de-duplication-only ones)."""
        return tuple(m for m in self.metrics if m not in DEDUP_METRICS)

    def k_for(self, pool: PoolInfo) -> int:
        """The configured k, or :func:`default_k` of the pool."""
        return self.k if self.k is not None else default_k(pool.n_pool, pool.n_classes)

    def params(self, k: int) -> MetricParams:
        """The metric knobs with the resolved k."""
        return MetricParams(k=k, kmeans_iters=self.kmeans_iters, chunk=self.chunk, semdedup_keep=self.dedup.keep,
                            semdedup_block=self.dedup.block, semdedup_max_pairs=self.dedup.max_pairs,
                            dbp_tau=self.dbp_tau, dbp_neighbors=self.dbp_neighbors, dynamics=self.dynamics,
                            device=self.device)

    def budgets(self, n: int) -> list[tuple[str, dict]]:
        """``[(budget_spec, {"fraction": f} | {"count": c})]`` in config order."""
        out = [(f"f={f:g}", {"fraction": f}) for f in self.fractions]
        out += [(f"n={c}", {"count": c}) for c in self.counts]
        for _, b in out:
            if "fraction" in b:
                resolve_budget(n, fraction=b["fraction"])
        return out

    def without_evaluation(self) -> "PruneOptions":
        return replace(self, evaluate=None)

    # ------------------------------------------------------------------------------ the check
    def check_against(self, pool: PoolInfo) -> None:
        """Refuse what cannot work on ``pool``: a :class:`WinnowError` naming the option to change."""
        where = f"source {pool.name!r}" if pool.name else "the source"
        if pool.n_pool == 0:
            raise WinnowError(f"{where} has no train rows to prune")
        for m in self.metrics:
            if m in DEDUP_METRICS:
                continue
            if metric_spec(m).needs_labels and not pool.has_labels:
                raise WinnowError(
                    f"metric {m!r} needs labels but {where} has none; use label-free metrics "
                    "(ssp, semdedup, dbp, moderate, exact_dedup, random) or ingest a label column"
                )
        if not self.fractions and not self.counts and not (self.dedup.any and "semdedup" in self.metrics) \
                and not any(m in DEDUP_METRICS for m in self.metrics):
            raise WinnowError("no budget: give prune.fractions or prune.counts")
        for c in self.counts:
            if c > pool.n_pool:
                raise WinnowError(f"count={c} exceeds the {pool.n_pool} train rows of {where}; lower prune.counts")
        if self.k is not None and self.k > pool.n_pool:
            raise WinnowError(f"k={self.k} clusters exceeds the {pool.n_pool} train rows of {where}; lower prune.k")
        classifier = [f"metric {m!r}" for m in self.metrics if m not in DEDUP_METRICS and metric_spec(m).needs_labels]
        classifier += ["prune.evaluate"] if self.evaluate is not None else []
        if classifier and pool.has_labels and pool.n_classes is not None and pool.n_classes < 2:
            raise WinnowError(f"{classifier[0]} trains a classifier but {where} has {pool.n_classes} class; use "
                              "label-free metrics (ssp, semdedup, dbp, moderate, random) or a source with at least two classes")
        if self.evaluate is not None and (not pool.has_labels or pool.n_test == 0):
            raise WinnowError(f"prune.evaluate needs labels and test rows; {where} has "
                              f"{'no labels' if not pool.has_labels else 'no test rows'} "
                              "(remove the evaluate section for it)")
        if self.select.auto_threshold <= 0:
            raise WinnowError(f"prune.auto_alpha={self.select.auto_threshold} must be > 0")

