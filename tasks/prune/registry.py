"""Metric registry: name -> scoring function, with whether it needs labels.

Label-free metrics are registered with functions whose signature has **no labels parameter**
(``fn(E, *, params, seed, kmeans)``); :func:`compute_metric` hands labels only to metrics whose
spec says ``needs_labels``. Tests check both the signatures and that permuted or absent labels
leave label-free scores unchanged.

Every metric returns :class:`MetricScores` (higher = harder) plus, where the method defines one,
the grouping and the balance its selection should use (DBP: cluster quotas from p_j; Moderate:
per-cluster band).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from tasks.prune import dbp as _dbp
from tasks.prune import moderate as _moderate
from tasks.prune import semdedup as _semdedup
from tasks.prune import ssp as _ssp
from tasks.prune import supervised as _sup
from tasks.prune.kmeans import DEFAULT_CHUNK, KMeansResult, check_embeddings, small_problem_threads, spherical_kmeans
from tasks.prune.select import SelectOptions, Selection, random_scores, select

__all__ = [
    "MetricParams",
    "MetricScores",
    "MetricSpec",
    "REGISTRY",
    "compute_metric",
    "metric_spec",
    "select_by_metric",
    "LABEL_FREE",
]


@dataclass(frozen=True)
class MetricParams:
    """Knobs of all metrics (filled from ``PruneConfig``)."""

    k: int = 10
    kmeans_iters: int = 20
    chunk: int = DEFAULT_CHUNK
    semdedup_keep: str = "farthest"
    semdedup_block: int | None = _semdedup.DEFAULT_BLOCK
    semdedup_max_pairs: int = _semdedup.DEFAULT_MAX_PAIRS
    dbp_tau: float = 0.5
    dbp_neighbors: int = 20
    dynamics: _sup.DynamicsConfig = field(default_factory=_sup.DynamicsConfig)
    device: str = "cpu"  # torch device of the k-means (the heavy part); "cuda" / "cuda:N" on a GPU


@dataclass(frozen=True)
class MetricScores:
    """scores : (n,) float32, higher = harder. groups : (n,) int64 cluster/class ids or None.
    group_weights : (n_groups,) per-group weights for ``balance="weighted"`` or None.
    balance : the balance the method itself prescribes (None = use the configured one).
    auto : the policy ``auto`` resolves to when the method prescribes one (None = the perceptron rule).
    info : small scalars worth logging (k-means objective, ...)."""

    metric: str
    scores: np.ndarray
    groups: np.ndarray | None = None
    group_weights: np.ndarray | None = None
    balance: str | None = None
    auto: str | None = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    needs_labels: bool
    compute: Callable[..., MetricScores]
    description: str


def _km_info(km: KMeansResult) -> dict:
    return {"k": km.k, "kmeans_objective": km.objective, "kmeans_iters": km.n_iter}


def _ssp_metric(E, *, params: MetricParams, seed: int, kmeans: KMeansResult) -> MetricScores:
    r = _ssp.ssp_scores(kmeans)
    return MetricScores("ssp", r.scores, r.cluster, info=_km_info(r.kmeans))


def _semdedup_metric(E, *, params: MetricParams, seed: int, kmeans: KMeansResult) -> MetricScores:
    r = _semdedup.semdedup_scores(E, kmeans, keep=params.semdedup_keep, block=params.semdedup_block,
                                  max_pairs=params.semdedup_max_pairs)
    # keep-easy on a uniqueness score would keep the redundant copies: auto always keeps the unique ones
    return MetricScores("semdedup", r.scores, r.cluster, auto="hard", info=_km_info(r.kmeans))


def _dbp_metric(E, *, params: MetricParams, seed: int, kmeans: KMeansResult) -> MetricScores:
    r = _dbp.dbp_weights(kmeans, tau=params.dbp_tau, n_neighbors=params.dbp_neighbors)
    return MetricScores("dbp", r.scores, r.cluster, group_weights=r.weights, balance="weighted", info=_km_info(r.kmeans))


def _moderate_metric(E, *, params: MetricParams, seed: int, kmeans: KMeansResult) -> MetricScores:
    r = _moderate.moderate_scores(kmeans)
    # Moderate coreset's own selection is the band around each group's median: keep-easy on this score
    # (keep-hard would keep the two tails, the opposite of the method)
    return MetricScores("moderate", r.scores, r.cluster, auto="easy", balance="proportional", info=_km_info(r.kmeans))


def _random_metric(E, *, params: MetricParams, seed: int, kmeans: KMeansResult | None) -> MetricScores:
    del params, kmeans
    return MetricScores("random", random_scores(E.shape[0], seed))


def _supervised(name: str, fn) -> Callable[..., MetricScores]:
    def compute(E, y, *, params: MetricParams, seed: int) -> MetricScores:
        if name == "supervised_prototypes":
            s = fn(E, y, chunk=params.chunk)
        else:
            s = fn(E, y, cfg=params.dynamics, seed=seed)
        return MetricScores(name, s, np.asarray(y, dtype=np.int64))

    return compute


REGISTRY: dict[str, MetricSpec] = {
    "ssp": MetricSpec("ssp", False, _ssp_metric, "cosine distance to the nearest spherical k-means prototype"),
    "semdedup": MetricSpec("semdedup", False, _semdedup_metric, "1 - max cosine similarity to an earlier cluster member"),
    "dbp": MetricSpec("dbp", False, _dbp_metric, "distance to centroid; cluster quotas from softmax(d_inter*d_intra/tau)"),
    "moderate": MetricSpec("moderate", False, _moderate_metric, "|distance to centroid - cluster median distance|"),
    "random": MetricSpec("random", False, _random_metric, "uniform random (seeded) baseline"),
    "el2n": MetricSpec("el2n", True, _supervised("el2n", _sup.el2n_scores), "EL2N of a linear probe, early epoch"),
    "grand": MetricSpec("grand", True, _supervised("grand", _sup.grand_scores), "last-layer gradient norm of a linear probe"),
    "forgetting": MetricSpec("forgetting", True, _supervised("forgetting", _sup.forgetting_scores), "forgetting events"),
    "aum": MetricSpec("aum", True, _supervised("aum", _sup.aum_scores), "minus area under the margin"),
    "supervised_prototypes": MetricSpec(
        "supervised_prototypes",
        True,
        _supervised("supervised_prototypes", _sup.supervised_prototype_scores),
        "cosine distance to the own class mean",
    ),
}

LABEL_FREE = tuple(n for n, s in REGISTRY.items() if not s.needs_labels)
KMEANS_METRICS = ("ssp", "semdedup", "dbp", "moderate")


def metric_spec(name: str) -> MetricSpec:
    """The spec of a metric; an unknown name (the config only lets known ones through) is a ValueError."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown pruning metric {name!r}; known: {', '.join(REGISTRY)}") from None


def takes_labels(fn: Callable) -> bool:
    """Whether a scoring function has a parameter through which labels could reach it."""
    params = inspect.signature(fn).parameters
    return any(p in params for p in ("y", "labels", "targets")) or any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()
    )


def compute_metric(
    name: str,
    E: np.ndarray,
    *,
    y: np.ndarray | None = None,
    params: MetricParams = MetricParams(),
    seed: int = 0,
    kmeans: KMeansResult | None = None,
) -> MetricScores:
    """Score every row of ``E`` with metric ``name``.

    Parameters
    ----------
    E : (n, d) float embeddings.
    y : (n,) int labels; used only by metrics with ``needs_labels`` (error if they are missing).
    params : metric knobs; seed : k-means / proxy-training / random seed.
    kmeans : a clustering of ``E`` with ``params.k`` clusters to share between k-means metrics (None: a
        k-means metric clusters ``E`` itself with ``params``).
    """
    spec = metric_spec(name)
    E = check_embeddings(E, chunk=params.chunk)
    if spec.needs_labels:
        y = _sup.check_labels(y, E.shape[0], name)
        with small_problem_threads(E.size):
            return spec.compute(E, y, params=params, seed=seed)
    if kmeans is not None and (kmeans.assign.shape[0] != E.shape[0] or kmeans.k != params.k):
        raise ValueError(f"shared kmeans has k={kmeans.k}, n={kmeans.assign.shape[0]}; expected k={params.k}, n={E.shape[0]}")
    with small_problem_threads(E.size):
        if name in KMEANS_METRICS and kmeans is None:  # no shared clustering: this metric's own
            kmeans = spherical_kmeans(E, params.k, iters=params.kmeans_iters, seed=seed, chunk=params.chunk)
        return spec.compute(E, params=params, seed=seed, kmeans=kmeans)


def select_by_metric(ms: MetricScores, policy: str, *, options: SelectOptions = SelectOptions(), **kwargs) -> Selection:
    """:func:`tasks.prune.select.select` on a metric's scores, honouring what the method prescribes.

    The metric's groups (clusters / classes) are used for balance, minimum shares and DBP quotas;
    a balance the method defines itself (DBP: weighted, Moderate: proportional) overrides
    ``options.balance``; balance "auto" becomes "proportional" over the metric's groups. ``ccs``
    and ``random`` ignore groups. ``kwargs`` go to ``select`` (fraction / count, dim, n_groups, seed).
    """
    use_groups = ms.groups is not None and policy not in ("ccs", "random")
    balance = options.balance
    if balance == "auto":
        balance = "proportional" if use_groups else "none"
    if policy == "auto" and ms.auto is not None:
        sel = select_by_metric(replace(ms, auto=None), ms.auto, options=options, **kwargs)
        return replace(sel, policy="auto", reason=f"auto -> keep-{ms.auto}: prescribed by {ms.metric} "
                       f"(the perceptron rule does not apply to it); {sel.reason}")
    return select(
        ms.scores,
        policy=policy,
        groups=ms.groups if use_groups else None,
        balance=(ms.balance or balance) if use_groups else "none",
        group_weights=ms.group_weights,
        min_group_share=options.min_group_share if use_groups else 0.0,
        auto_threshold=options.auto_threshold,
        ccs_beta=options.ccs_beta,
        ccs_strata=options.ccs_strata,
        **kwargs,
    )
