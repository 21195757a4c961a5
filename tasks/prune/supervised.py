"""Supervised pruning baselines — they read labels, and most read a short proxy training.

Proxy model (documented choice): a **linear softmax probe on the embeddings**, trained with
minibatch Adam by :func:`tasks.probe.train_probe_with_dynamics`, which records the softmax of every
training example after each epoch. Scores, all "higher = harder":

* EL2N (Paul et al. 2021): :math:`\\lVert p_i^{(e)} - \\mathrm{onehot}(y_i) \\rVert_2` read after
  ``read_epoch`` epochs (early), averaged over seeds.
* GraNd (Paul et al. 2021): the last-layer gradient norm; for the linear probe
  :math:`\\lVert (p_i - e_{y_i}) \\otimes [\\tilde x_i, 1] \\rVert = \\mathrm{EL2N}_i\\,\\lVert[\\tilde x_i, 1]\\rVert`,
  averaged over seeds.
* Forgetting (Toneva et al. 2019): number of correct -> incorrect transitions between epochs;
  examples never classified correctly get ``epochs`` (more than any learned example can have).
* AUM (Pleiss et al. 2020): minus the mean over epochs of :math:`p_{y_i} - \\max_{k \\ne y_i} p_k`
  (a low margin is hard, so the score is negated).
* Supervised prototypes (Sorscher et al. 2022): cosine distance to the normalised mean of the
  example's own class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tasks.prune.kmeans import DEFAULT_CHUNK, check_embeddings, normalise_rows

__all__ = [
    "DynamicsConfig",
    "check_labels",
    "el2n_scores",
    "grand_scores",
    "forgetting_scores",
    "aum_scores",
    "supervised_prototype_scores",
]


@dataclass(frozen=True)
class DynamicsConfig:
    """Proxy training: ``epochs`` of minibatch Adam (``batch_size``, ``lr``), EL2N/GraNd read
    after ``read_epoch`` epochs, averaged over ``seeds``."""

    epochs: int = 10
    read_epoch: int = 3
    batch_size: int = 256
    lr: float = 1e-2
    seeds: tuple[int, ...] = (0, 1, 2)


def check_labels(y: np.ndarray | None, n: int, metric: str) -> np.ndarray:
    """Labels as (n,) int64 codes; missing or malformed labels are a ValueError (the stage's option check
    refuses a label-needing metric on an unlabelled source before it gets here)."""
    if y is None:
        raise ValueError(
            f"metric {metric!r} needs labels but the source has none; use a label-free metric "
            "(ssp, semdedup, dbp, moderate, random)"
        )
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels have shape {y.shape}; expected ({n},) to match the embeddings")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class codes; got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0; got {int(y.min())}")
    return y.astype(np.int64)


def _dynamics(E: np.ndarray, y: np.ndarray, cfg: DynamicsConfig, seed_offset: int, epochs: int):
    from tasks.probe import train_probe_with_dynamics

    if not cfg.seeds:
        raise ValueError("DynamicsConfig.seeds is empty; give at least one seed")
    for s in cfg.seeds:
        yield train_probe_with_dynamics(
            E,
            y,
            n_classes=int(y.max()) + 1,
            epochs=epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=int(s) + seed_offset,
        )


def _check_read_epoch(cfg: DynamicsConfig) -> None:
    if not (1 <= cfg.read_epoch <= cfg.epochs):
        raise ValueError(f"read_epoch={cfg.read_epoch} must be in [1, epochs={cfg.epochs}]")


def _el2n_one(dyn, read_epoch: int) -> np.ndarray:
    p = dyn.probs_per_epoch[read_epoch - 1].astype(np.float64)
    p[np.arange(p.shape[0]), dyn.y] -= 1.0
    return np.sqrt((p * p).sum(axis=1))


def el2n_scores(E: np.ndarray, y: np.ndarray, *, cfg: DynamicsConfig = DynamicsConfig(), seed: int = 0) -> np.ndarray:
    """EL2N, (n,) float32, mean over ``cfg.seeds`` (each shifted by ``seed``)."""
    E = check_embeddings(E)
    y = check_labels(y, E.shape[0], "el2n")
    _check_read_epoch(cfg)
    acc = [_el2n_one(d, cfg.read_epoch) for d in _dynamics(E, y, cfg, seed, cfg.read_epoch)]
    return np.mean(acc, axis=0).astype(np.float32)


def grand_scores(E: np.ndarray, y: np.ndarray, *, cfg: DynamicsConfig = DynamicsConfig(), seed: int = 0) -> np.ndarray:
    """GraNd (last-layer gradient norm of the linear probe), (n,) float32, mean over seeds."""
    E = check_embeddings(E)
    y = check_labels(y, E.shape[0], "grand")
    _check_read_epoch(cfg)
    acc = [_el2n_one(d, cfg.read_epoch) * d.feature_norms for d in _dynamics(E, y, cfg, seed, cfg.read_epoch)]
    return np.mean(acc, axis=0).astype(np.float32)


def forgetting_scores(
    E: np.ndarray, y: np.ndarray, *, cfg: DynamicsConfig = DynamicsConfig(), seed: int = 0
) -> np.ndarray:
    """Forgetting events over ``cfg.epochs`` (never-learned -> ``epochs``), (n,) float32, mean over seeds."""
    E = check_embeddings(E)
    y = check_labels(y, E.shape[0], "forgetting")
    acc = []
    for d in _dynamics(E, y, cfg, seed, cfg.epochs):
        correct = d.correct_per_epoch()
        forgets = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
        forgets[~correct.any(axis=0)] = cfg.epochs
        acc.append(forgets)
    return np.mean(acc, axis=0).astype(np.float32)


def aum_scores(E: np.ndarray, y: np.ndarray, *, cfg: DynamicsConfig = DynamicsConfig(), seed: int = 0) -> np.ndarray:
    """Minus the area under the margin, (n,) float32, mean over seeds (higher = harder)."""
    E = check_embeddings(E)
    y = check_labels(y, E.shape[0], "aum")
    acc = []
    for d in _dynamics(E, y, cfg, seed, cfg.epochs):
        P = d.probs_per_epoch  # (E, n, C)
        idx = np.arange(P.shape[1])
        p_y = P[:, idx, d.y]
        other = P.copy()
        other[:, idx, d.y] = -np.inf
        margin = p_y - other.max(axis=2)
        acc.append(-margin.mean(axis=0))
    return np.mean(acc, axis=0).astype(np.float32)


def supervised_prototype_scores(
    E: np.ndarray, y: np.ndarray, *, chunk: int = DEFAULT_CHUNK, seed: int = 0
) -> np.ndarray:
    """Cosine distance to the normalised mean of the own class's normalised embeddings, (n,) float32."""
    del seed  # deterministic
    E = check_embeddings(E, chunk=chunk)
    n = E.shape[0]
    y = check_labels(y, n, "supervised_prototypes")
    C = int(y.max()) + 1
    sums = torch.zeros(C, E.shape[1], dtype=torch.float32)
    for s in range(0, n, chunk):
        X = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[s : s + chunk])))
        sums.index_add_(0, torch.from_numpy(y[s : s + chunk]), X)
    proto = normalise_rows(sums)
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        X = normalise_rows(torch.from_numpy(np.ascontiguousarray(E[s : s + chunk])))
        out[s : s + chunk] = (1.0 - (X * proto[torch.from_numpy(y[s : s + chunk])]).sum(dim=1)).numpy()
    return out


def supervised_metric_names() -> Sequence[str]:
    return ("el2n", "grand", "forgetting", "aum", "supervised_prototypes")
