"""Derive the mixture study's pools and target from ingested sources, in one shared feature space.

Label rule: the target defines the label space. Every label of every pool must be a label name of
the target (pilot models are trained on pools and scored on the target); a pool with a label the
target lacks, or a source without labels, is an error naming them. (The OT distance itself would
not need shared labels — label distances compare class distributions — but the pilots do.)

Pools drawn from the same source and split never share rows, and never share rows with the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from configs.mixture import MixtureConfig, PoolConfig
from tasks.data import SourceData
from tasks.errors import WinnowError
from tasks.mixture.features import align_features
from tasks.mixture.simplex import mixture_counts


@dataclass(frozen=True)
class MixtureData:
    """Aligned arrays for a mixture study (features (·, dim) float32, labels in the target's codes).

    pools_X/pools_y/pools_ids : per pool; target_ot_* : the target rows revealed for OT;
    target_eval_* : held-out target rows pilots are scored on; label_names : the target's labels.
    """

    names: list[str]
    pools_X: list[np.ndarray]
    pools_y: list[np.ndarray]
    pools_ids: list[np.ndarray]
    target_ot_X: np.ndarray
    target_ot_y: np.ndarray
    target_eval_X: np.ndarray
    target_eval_y: np.ndarray
    label_names: list[str]
    dim: int

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def pool_sizes(self) -> np.ndarray:
        return np.array([len(x) for x in self.pools_X], dtype=np.int64)


def _split_rows(src: SourceData, split: str) -> np.ndarray:
    if split == "all":
        return np.arange(src.n)
    return np.flatnonzero(src.split == split)


def class_targets(label_names: list[str], props: Mapping[str, float] | None, n: int) -> np.ndarray:
    """Rows wanted per class code (len(label_names),) summing to n; unlisted labels share the rest."""
    k = len(label_names)
    if props is None:
        return mixture_counts(np.full(k, 1.0 / k), n)
    unknown = sorted(set(props) - set(label_names))
    if unknown:
        raise WinnowError(f"class_proportions name labels {unknown} that the source lacks (labels: {label_names})")
    w = np.array([props.get(nm, np.nan) for nm in label_names], dtype=np.float64)
    rest = np.isnan(w)
    left = 1.0 - np.nansum(w)
    w[rest] = left / rest.sum() if rest.any() else 0.0
    if not rest.any() and abs(w.sum() - 1) > 1e-6:
        w = w / w.sum()
    return mixture_counts(w / w.sum(), n)


def draw_pool(src: SourceData, cfg: PoolConfig, taken: np.ndarray) -> np.ndarray:
    """Row indices of ``src`` for one pool: per-class counts from ``class_proportions``, rows not in ``taken``."""
    if src.y is None or src.label_names is None:
        raise WinnowError(f"pool {cfg.name!r}: source {cfg.source!r} has no labels; mixture estimation needs labelled sources")
    rows = np.setdiff1d(_split_rows(src, cfg.split), taken)
    if rows.size == 0:
        raise WinnowError(f"pool {cfg.name!r}: source {cfg.source!r} split {cfg.split!r} has no rows left (empty source?)")
    n = cfg.n or rows.size
    if cfg.class_proportions is None and cfg.n is None:
        return rows
    try:
        want = class_targets(src.label_names, cfg.class_proportions, n)
    except WinnowError as err:
        raise WinnowError(f"pool {cfg.name!r} (source {cfg.source!r}): {err}") from None
    rng = np.random.default_rng(cfg.seed)
    out = []
    for c, w in enumerate(want):
        have = rows[src.y[rows] == c]
        if w > have.size:
            raise WinnowError(
                f"pool {cfg.name!r} wants {w} rows of class {src.label_names[c]!r} but source {cfg.source!r} "
                f"split {cfg.split!r} has only {have.size} left: lower n or change class_proportions"
            )
        out.append(rng.choice(have, size=w, replace=False))
    return np.sort(np.concatenate(out))


def remap_labels(src: SourceData, rows: np.ndarray, target_names: list[str], what: str) -> np.ndarray:
    """Label codes of ``src`` rows translated into the target's codes (matched by label name)."""
    if src.y is None or src.label_names is None:
        raise WinnowError(f"{what}: source {src.name!r} has no labels; mixture estimation needs labelled sources")
    lut = {nm: i for i, nm in enumerate(target_names)}
    present = sorted({src.label_names[c] for c in np.unique(src.y[rows])})
    missing = [nm for nm in present if nm not in lut]
    if missing:
        raise WinnowError(
            f"{what}: source {src.name!r} has labels {missing} that the target's label space {target_names} lacks; "
            "every pool label must be a target label (drop those classes with class_proportions or choose another target)"
        )
    code = np.array([lut.get(nm, -1) for nm in src.label_names], dtype=np.int64)
    return code[src.y[rows]]


@dataclass(frozen=True)
class MixtureRows:
    """Which rows a mixture study takes, before any feature is touched: per pool the source rows and
    their labels in the target's codes, the target's OT and eval rows, and the target's label names."""

    pool_rows: list[np.ndarray]
    pool_y: list[np.ndarray]
    target_ot: np.ndarray
    target_eval: np.ndarray
    label_names: list[str]

    @property
    def pool_sizes(self) -> np.ndarray:
        return np.array([r.size for r in self.pool_rows], dtype=np.int64)


def draw_mixture_rows(sources: Mapping[str, SourceData], cfg: MixtureConfig) -> MixtureRows:
    """Draw the pools' and the target's rows and map pool labels to the target's (no features needed).

    Every check on sizes and labels lives here, so the mixture and plan preflights can run it on the
    pinned sources before any stage writes (and before text sources are embedded)."""
    for name in [p.source for p in cfg.pools] + [cfg.target.source]:
        if name not in sources:
            raise ValueError(f"mixture: source {name!r} is not loaded (sources: {sorted(sources)})")
        if sources[name].n == 0:
            raise WinnowError(f"mixture: source {name!r} is empty")
    taken: dict[tuple[str, str], np.ndarray] = {}

    def take(src: str, split: str) -> np.ndarray:
        keys = [(src, s) for s in ("train", "test", "all") if (src, s) in taken and (s == split or "all" in (s, split))]
        return np.concatenate([taken[k] for k in keys]) if keys else np.zeros(0, dtype=np.int64)

    tcfg = cfg.target
    tsrc = sources[tcfg.source]
    if tsrc.y is None or tsrc.label_names is None:
        raise WinnowError(f"target source {tcfg.source!r} has no labels")
    if len(tsrc.label_names) < 2:
        raise WinnowError(f"target source {tcfg.source!r} has one class ({tsrc.label_names[0] if tsrc.label_names else 'none'!r}): "
                          "the pilot models classify the target's labels, so it needs at least two; choose another target")
    trows = _split_rows(tsrc, tcfg.split)
    need = tcfg.n_ot + tcfg.n_eval
    if trows.size < need:
        raise WinnowError(f"target needs n_ot + n_eval = {need} rows but {tcfg.source!r} split {tcfg.split!r} has {trows.size}")
    perm = np.random.default_rng(tcfg.seed).permutation(trows)
    t_ot, t_eval = np.sort(perm[:tcfg.n_ot]), np.sort(perm[tcfg.n_ot:need])
    taken[(tcfg.source, tcfg.split)] = np.concatenate([t_ot, t_eval])
    names = list(tsrc.label_names)

    pool_rows, pool_y = [], []
    for pc in cfg.pools:
        src = sources[pc.source]
        rows = draw_pool(src, pc, take(pc.source, pc.split))
        if rows.size == 0:
            raise WinnowError(f"pool {pc.name!r} is empty")
        taken[(pc.source, pc.split)] = np.concatenate([taken.get((pc.source, pc.split), np.zeros(0, np.int64)), rows])
        pool_rows.append(rows)
        pool_y.append(remap_labels(src, rows, names, f"pool {pc.name!r}"))
    return MixtureRows(pool_rows, pool_y, t_ot, t_eval, names)


def prepare_mixture_data(sources: Mapping[str, SourceData], cfg: MixtureConfig) -> MixtureData:
    """Draw pools and target rows (:func:`draw_mixture_rows`), map labels to the target's, and align all
    features (resize + PCA)."""
    for name in [p.source for p in cfg.pools] + [cfg.target.source]:
        if name in sources and sources[name].X is None:
            raise ValueError(f"mixture: source {name!r} has no feature matrix (text sources must be embedded first)")
    rows = draw_mixture_rows(sources, cfg)
    tsrc = sources[cfg.target.source]
    t_ot, t_eval, names = rows.target_ot, rows.target_eval, rows.label_names
    blocks = [sources[pc.source].X[r] for pc, r in zip(cfg.pools, rows.pool_rows)] + [tsrc.X[t_ot], tsrc.X[t_eval]]
    shapes = [sources[pc.source].image_shape for pc in cfg.pools] + [tsrc.image_shape] * 2
    labels = [f"pool {pc.name!r}" for pc in cfg.pools] + ["target (OT)", "target (eval)"]
    al = align_features(blocks, shapes, image_size=cfg.features.image_size, dim=cfg.features.dim, names=labels, seed=cfg.features.seed)
    k = len(cfg.pools)
    return MixtureData(
        names=[pc.name for pc in cfg.pools],
        pools_X=al.blocks[:k],
        pools_y=rows.pool_y,
        pools_ids=[sources[pc.source].example_ids[r] for pc, r in zip(cfg.pools, rows.pool_rows)],
        target_ot_X=al.blocks[k],
        target_ot_y=np.arange(len(names))[tsrc.y[t_ot]],
        target_eval_X=al.blocks[k + 1],
        target_eval_y=np.arange(len(names))[tsrc.y[t_eval]],
        label_names=list(names),
        dim=al.dim,
    )


def reveal(data: MixtureData, n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The revealed sample of each pool for OT: at most n rows per pool (seeded subsample)."""
    rng = np.random.default_rng(seed)
    out = []
    for X, y in zip(data.pools_X, data.pools_y):
        idx = np.sort(rng.choice(len(X), size=min(n, len(X)), replace=False))
        out.append((X[idx], y[idx]))
    return out
