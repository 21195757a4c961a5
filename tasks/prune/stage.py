"""The prune stage's compute for one source: scores -> selections -> de-duplication -> pruning curve.

Pure (arrays in, a frozen :class:`~tasks.prune.outcome.SourcePruneResult` out); :mod:`flows.prune`
calls it per source and hands the results to :mod:`storage.prune`. The options are checked against
the pool first (:meth:`~tasks.prune.options.PruneOptions.check_against`, the same check the
preflight runs), so nothing is computed for input that cannot work.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from tasks.device import resolve_device
from tasks.prune.evaluate import (AutoOverride, GuardNote, PruningCurve, auto_override, losses_to_random, pruning_curve,
                                  validation_split)
from tasks.prune.exact import content_keys, exact_duplicates
from tasks.prune.kmeans import KMeansResult, check_embeddings, small_problem_threads, spherical_kmeans
from tasks.prune.options import PoolInfo, PruneOptions
from tasks.prune.outcome import DedupSelection, RankedSelection, SourcePruneResult
from tasks.prune.registry import KMEANS_METRICS, MetricParams, MetricScores, compute_metric, metric_spec, select_by_metric
from tasks.prune.select import Selection, effective_dim, select
from tasks.prune.semdedup import nn_distance_scale, resolve_thresholds, semdedup

__all__ = ["curve_fractions", "prune_source"]


def prune_source(
    E: np.ndarray,
    y: np.ndarray | None,
    opts: PruneOptions,
    *,
    n_classes: int | None = None,
    E_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    content: np.ndarray | Sequence[str] | None = None,
    name: str = "",
    progress: bool = False,
) -> SourcePruneResult:
    """Score the pool ``E`` with every metric, make every selection, de-duplicate, evaluate.

    Parameters
    ----------
    E : (n, d) embeddings of the rows to prune (a source's train split).
    y : (n,) labels or None; handed only to metrics that need labels (and to the evaluation probe).
    opts : the stage options (:meth:`PruneOptions.from_config`).
    n_classes : number of classes: the default k and the ``auto`` rule's group count.
    E_test, y_test : held-out rows for the pruning curve (needed when ``opts.evaluate`` is set).
    content : the pool's raw rows, (n, p) features or n texts — needed by ``exact_dedup``.
    name : the source's name, for messages.
    """
    E = check_embeddings(E, chunk=opts.chunk)
    n_test = 0 if y_test is None or E_test is None else len(y_test)
    opts.check_against(PoolInfo(name=name, n_pool=E.shape[0], n_test=n_test, has_labels=y is not None,
                                n_classes=n_classes))
    if "exact_dedup" in opts.metrics and content is None:
        raise ValueError("metric exact_dedup needs the pool's content (features or texts)")
    with small_problem_threads(E.size):
        return _prune_source(E, y, opts, n_classes, E_test, y_test, content, progress)


def _prune_source(E, y, opts: PruneOptions, n_classes, E_test, y_test, content, progress) -> SourcePruneResult:
    n, d = E.shape
    k = opts.k_for(PoolInfo("", n, 0, y is not None, n_classes))
    params = opts.params(k)
    metrics = opts.ranking_metrics
    km = None
    if any(m in KMEANS_METRICS for m in metrics):
        km = spherical_kmeans(E, k, iters=opts.kmeans_iters, seed=opts.seed, chunk=opts.chunk,
                              device=resolve_device(opts.device))
    scores: dict[str, MetricScores] = {}
    for m in metrics:
        needs = metric_spec(m).needs_labels
        scores[m] = compute_metric(m, E, y=y if needs else None, params=params, seed=opts.seed,
                                   kmeans=km if m in KMEANS_METRICS else None)
    groups_for_auto = n_classes or k
    d_eff = effective_dim(E, seed=opts.seed)  # the auto rule's dimension (see select.effective_dim)
    selections = []
    for m, ms in scores.items():
        for pol in ("random",) if m == "random" else opts.policies:
            for spec, budget in opts.budgets(n):
                sel = select_by_metric(ms, pol, options=opts.select, **budget, dim=d_eff, n_groups=groups_for_auto,
                                       seed=opts.seed)
                selections.append(RankedSelection(m, pol, spec, sel))

    dedup: list[DedupSelection] = []
    if "exact_dedup" in opts.metrics:
        keys = content_keys(X=content) if isinstance(content, np.ndarray) else content_keys(texts=content)
        ex = exact_duplicates(keys)
        scores["exact_dedup"] = MetricScores("exact_dedup", ex.scores)
        dedup.append(DedupSelection("exact_dedup", "exact", None, ex.keep,
                                    "identical content (feature bytes or text): first occurrence kept"))
    if "semdedup" in metrics and opts.dedup.any:
        dedup += _semdedup_selections(E, km, params, opts, scores["semdedup"].scores)
    warnings = [f"{d_.method} {d_.spec} removes {d_.n_removed / d_.n:.0%} of the pool (> {opts.dedup.warn_share:.0%}): "
                "the threshold is probably too loose for this encoder; try semdedup_rel_eps or semdedup_remove"
                for d_ in dedup if d_.method == "semdedup" and d_.n_removed > opts.dedup.warn_share * d_.n]

    curve, guard = None, []
    if opts.evaluate is not None and metrics:  # a de-duplication-only config has no ranking to evaluate
        ev = opts.evaluate
        measure = dict(metrics=metrics, policies=ev.policies or opts.policies, seeds=ev.seeds, params=params,
                       select=opts.select, probe_max_iter=ev.probe_max_iter, probe_weight_decay=ev.probe_weight_decay,
                       progress=progress)
        curve = pruning_curve(E, y, E_test, y_test, fractions=curve_fractions(ev.fractions, opts.fractions), **measure)
        guard = losses_to_random(curve)
        decide = _decision_curve(E, y, opts, selections, measure)
        if decide is not None:
            selections = _act_on_curve(selections, decide[0], scores, opts, y, d_eff, groups_for_auto, basis=decide[1])
        selections = _with_guard(selections, guard, decided=decide is not None)
    return SourcePruneResult(n_pool=n, k=k, dim=d, effective_dim=d_eff, scores=scores, selections=selections,
                             dedup=dedup, curve=curve, guard=guard, warnings=warnings)


def _semdedup_selections(E: np.ndarray, km: KMeansResult, params: MetricParams, opts: PruneOptions,
                         uniqueness: np.ndarray) -> list[DedupSelection]:
    """One SemDeDup keep-mask per threshold, each threshold resolved to a raw eps on this encoder."""
    o = opts.dedup
    scale = nn_distance_scale(E, km, seed=opts.seed) if o.rel_eps else None
    thresholds = resolve_thresholds(eps=o.eps, rel_eps=o.rel_eps, remove=o.remove, nn_scale=scale, scores=uniqueness)
    r = semdedup(E, eps=sorted({t.eps for t in thresholds}), k=params.k, keep=o.keep, block=o.block,
                 max_pairs=o.max_pairs, chunk=params.chunk, kmeans=km)
    out = []
    for t in thresholds:
        keep = r.keep[t.eps]
        out.append(DedupSelection("semdedup", t.spec, t.eps, keep,
                                  f"semdedup {t.spec}: eps={t.eps:.4g} ({t.how}); kept the "
                                  f"{o.keep} member of each near-duplicate group"))
    return out


def curve_fractions(eval_fractions: Sequence[float], select_fractions: Sequence[float]) -> tuple[float, ...]:
    """The pruning curve's fractions: the evaluate section's plus every fraction the stage selects at,
    so ``auto`` acts on a measurement at its own budget (never on an interpolation). Count budgets
    (``n=500``) are not added: ``auto`` keeps its rule there."""
    out = list(eval_fractions)
    for f in select_fractions:
        if not any(abs(f - g) < 1e-9 for g in out):
            out.append(f)
    return tuple(sorted(out, reverse=True))


def _decision_curve(E: np.ndarray, y: np.ndarray, opts: PruneOptions, selections: list[RankedSelection],
                    measure: dict) -> tuple[PruningCurve, str] | None:
    """The curve ``auto``'s switch is decided on, and what to call it: the same series as the reported
    curve at the selected fractions, measured on a class-stratified split of the pool — selections on
    ``1 - evaluate.validation`` of it, probes validated on the rest — so the test rows, which report the
    result, never choose it. None when nothing can switch (no ``auto`` at a fraction budget, no auto
    policy measured, ``validation: 0``) or the split leaves fewer than two classes on either side."""
    ev = opts.evaluate
    n = E.shape[0]
    fractions = sorted({b["fraction"] for spec, b in opts.budgets(n) if "fraction" in b
                        and any(s.policy == "auto" and s.spec == spec for s in selections)}, reverse=True)
    if not fractions or ev.validation <= 0 or "auto" not in measure["policies"]:
        return None
    fit, held = validation_split(y, ev.validation, seed=opts.seed)
    if np.unique(y[held]).size < 2 or np.unique(y[fit]).size < 2:
        return None
    curve = pruning_curve(E[fit], y[fit], E[held], y[held], fractions=fractions, **measure)
    return curve, f"a validation curve ({held.size} of {n} pool rows held out; test rows unused)"


def _act_on_curve(selections: list[RankedSelection], curve: PruningCurve, scores: dict[str, MetricScores],
                  opts: PruneOptions, y: np.ndarray | None, d_eff: int, n_groups: int,
                  basis: str = "the pruning curve") -> list[RankedSelection]:
    """Every ``auto`` selection at a fraction budget whose series the curve found beaten beyond noise
    (:func:`~tasks.prune.evaluate.auto_override`) is remade with the best-measured option at that
    fraction; its reason names the numbers, what measured them (``basis``) and what it switched from."""
    n = next(iter(scores.values())).scores.size
    fraction_of = {spec: b["fraction"] for spec, b in opts.budgets(n) if "fraction" in b}
    out = []
    for s in selections:
        f = fraction_of.get(s.spec)
        o = auto_override(curve, s.metric, f, basis=basis) if s.policy == "auto" and f is not None else None
        if o is not None:
            sel = _remake(o, scores, opts, y, d_eff, n_groups, f)
            s = replace(s, selection=replace(sel, policy="auto", reason=f"{o.reason()}; {sel.reason}"))
        out.append(s)
    return out


def _remake(o: AutoOverride, scores: dict[str, MetricScores], opts: PruneOptions, y: np.ndarray | None,
            d_eff: int, n_groups: int, f: float) -> Selection:
    if o.to_metric == "random" or o.to_policy == "random":
        # the floor: a random subset, stratified by class when labels are there (same expected class
        # shares as the measured uniform-random series, less variance)
        n = next(iter(scores.values())).scores.size
        if y is None:
            return select(np.zeros(n), fraction=f, policy="random", seed=opts.seed)
        sel = select(np.zeros(n), fraction=f, policy="random", groups=np.asarray(y, dtype=np.int64),
                     balance="proportional", seed=opts.seed)
        return replace(sel, reason="class-balanced random (proportional)")
    return select_by_metric(scores[o.to_metric], o.to_policy, options=opts.select, fraction=f, dim=d_eff,
                            n_groups=n_groups, seed=opts.seed)


def _with_guard(selections: list[RankedSelection], guard: list[GuardNote], decided: bool = False) -> list[RankedSelection]:
    """Append the guard's verdict to the reason of every selection the curve found losing to random."""
    by = {(g.metric, g.policy, f"f={g.fraction:g}"): g for g in guard}
    out = []
    for s in selections:
        g = by.get((s.metric, s.policy, s.spec))
        if g is not None and "switched from" not in s.selection.reason:  # a switched auto already says why
            kept = (" (auto kept its choice: the validation split of the pool, which decides, showed no loss)"
                    if s.policy == "auto" and decided else "")
            s = replace(s, selection=replace(s.selection, reason=s.selection.reason + f"; GUARD: the pruning curve "
                        f"on the test rows measured {g.measured()} here; better: {g.best}{kept}"))
        out.append(s)
    return out

