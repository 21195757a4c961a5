"""Encoders: turn one source's rows into embedding vectors (pure compute; no storage, no Prefect).

Registry ``ENCODERS`` maps an ``EncoderConfig.kind`` to a function
``(source: SourceData, config: EncoderConfig, progress: bool) -> EncodeResult``:

============ ============================== ===============================================
kind         needs                          output
============ ============================== ===============================================
``ssl_cnn``  images (``image_shape`` set)   SimCLR CNN trained on the source's images, dim
``minilm``   texts                          pretrained MiniLM, 384
``pca``      a feature matrix               PCA of the raw features, dim
``column``   a feature matrix               the user-supplied embedding, as-is
``raw``      a feature matrix               the raw features, as-is
============ ============================== ===============================================

Fitted encoders (ssl_cnn, pca) fit on the rows of split ``config.fit_on`` ("train" by default,
so the held-out rows never shape the embedding), subsampled to ``config.max_train``; they never
see labels. Every output is checked (2-D, finite) and L2-normalised when the config says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tasks.embed._common import check_embeddings, l2_normalize
from tasks.errors import WinnowError

if TYPE_CHECKING:
    from configs.encoder import EncoderConfig
    from tasks.data import SourceData

__all__ = ["ENCODERS", "EncodeResult", "check_fits", "encode_source"]


@dataclass(frozen=True)
class EncodeResult:
    """Vectors of one source plus what is needed to reproduce them.

    Attributes
    ----------
    vectors : (n, dim) float32, rows aligned with the source's rows.
    weights : fitted encoder state as a dict of CPU tensors (ssl_cnn state_dict; PCA mean and
        components), saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``;
        None for encoders with nothing fitted.
    info : small JSON-able facts (seconds, n_fit, loss_per_epoch, explained variance, ...).
    """

    vectors: np.ndarray
    weights: dict[str, torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _fit_rows(source: "SourceData", config: "EncoderConfig") -> np.ndarray:
    """Indices of the rows a fitted encoder learns from (split filter + seeded subsample)."""
    idx = np.arange(source.n)
    if config.fit_on == "train":
        train = np.flatnonzero(np.asarray(source.split) == "train")
        if train.size:
            idx = train
    if config.max_train is not None and idx.size > config.max_train:
        rng = np.random.default_rng(config.seed)
        idx = np.sort(rng.choice(idx, size=config.max_train, replace=False))
    return idx


def check_fits(source: "SourceData", config: "EncoderConfig") -> None:
    """Raise WinnowError when ``config.kind`` cannot embed this source (e.g. minilm on images)."""
    kind, name = config.kind, source.name
    if kind == "minilm" and source.texts is None:
        raise WinnowError(f"encoder kind 'minilm' needs text, but source {name!r} has no text column")
    if kind == "ssl_cnn" and source.image_shape is None:
        raise WinnowError(
            f"encoder kind 'ssl_cnn' needs images, but source {name!r} is not an image source "
            "(use kind 'pca' or 'raw' for tabular features, 'minilm' for text)"
        )
    if kind in ("pca", "column", "raw") and source.X is None:
        raise WinnowError(f"encoder kind {kind!r} needs a feature matrix, but source {name!r} has none (text? use 'minilm')")
    if source.n == 0:
        raise WinnowError(f"source {name!r} has no rows to embed")


def _encode_ssl_cnn(source: "SourceData", config: "EncoderConfig", progress: bool) -> EncodeResult:
    from tasks.embed.ssl_cnn import embed_images, train_ssl_cnn

    rows = _fit_rows(source, config)
    res = train_ssl_cnn(
        source.X[rows], source.image_shape, dim=config.out_dim, epochs=config.epochs,
        batch_size=config.batch_size, temperature=config.temperature, lr=config.lr,
        weight_decay=config.weight_decay, width=config.width, proj_dim=config.proj_dim,
        min_image_size=config.min_image_size, crop_scale=tuple(config.crop_scale),
        max_rotation_deg=config.max_rotation_deg, noise_std=config.noise_std,
        seed=config.seed, progress=progress,
    )
    t0 = time.perf_counter()
    vecs = embed_images(res.state_dict, source.X, source.image_shape, normalize=config.l2_normalize, progress=progress)
    return EncodeResult(
        vecs, res.state_dict,
        {"n_fit": res.n_train, "train_seconds": round(res.seconds, 2),
         "embed_seconds": round(time.perf_counter() - t0, 2),
         "loss_per_epoch": [round(float(v), 4) for v in res.loss_per_epoch],
         "input_hw": list(res.input_hw)},
    )


def _encode_pca(source: "SourceData", config: "EncoderConfig", progress: bool) -> EncodeResult:
    from tasks.embed.pca import fit_pca

    rows = _fit_rows(source, config)
    d = source.X.shape[1]
    dim = config.out_dim
    if dim > min(d, rows.size):
        raise WinnowError(
            f"encoder dim={dim} is larger than source {source.name!r} allows for PCA "
            f"(features={d}, fitting rows={rows.size}); lower encoder.dim"
        )
    t0 = time.perf_counter()
    model = fit_pca(source.X[rows], dim, seed=config.seed)
    vecs = model.transform(source.X)
    if config.l2_normalize:
        vecs = l2_normalize(vecs)
    weights = {
        "mean": torch.from_numpy(model.mean),
        "components": torch.from_numpy(model.components),
        "explained_variance": torch.from_numpy(model.explained_variance),
    }
    return EncodeResult(
        vecs, weights,
        {"n_fit": int(rows.size), "seconds": round(time.perf_counter() - t0, 2),
         "explained_variance_ratio": round(float(model.explained_variance_ratio.sum()), 4)},
    )


def _encode_minilm(source: "SourceData", config: "EncoderConfig", progress: bool) -> EncodeResult:
    from tasks.embed.minilm import embed_texts

    t0 = time.perf_counter()
    vecs = embed_texts(
        source.texts, max_seq_length=config.max_seq_length, batch_size=min(config.batch_size, 256),
        normalize=config.l2_normalize, progress=progress,
    )
    return EncodeResult(vecs, None, {"seconds": round(time.perf_counter() - t0, 2)})


def _encode_as_is(kind: str) -> Callable[["SourceData", "EncoderConfig", bool], EncodeResult]:
    def encode(source: "SourceData", config: "EncoderConfig", progress: bool) -> EncodeResult:
        from tasks.embed.column import column_embeddings

        what = f"{kind} embeddings of source {source.name!r}"
        return EncodeResult(column_embeddings(source.X, what=what, normalize=config.l2_normalize))

    return encode


ENCODERS: dict[str, Callable[["SourceData", "EncoderConfig", bool], EncodeResult]] = {
    "ssl_cnn": _encode_ssl_cnn,
    "minilm": _encode_minilm,
    "pca": _encode_pca,
    "column": _encode_as_is("column"),
    "raw": _encode_as_is("raw"),
}


def encode_source(source: "SourceData", config: "EncoderConfig", *, progress: bool = True) -> EncodeResult:
    """Embed every row of ``source`` with the encoder ``config`` describes (no caching here)."""
    check_fits(source, config)
    try:
        fn = ENCODERS[config.kind]
    except KeyError:
        raise ValueError(f"unknown encoder kind {config.kind!r} (have: {', '.join(ENCODERS)})") from None
    res = fn(source, config, progress)
    vecs = check_embeddings(res.vectors, f"{config.kind} embeddings of source {source.name!r}", source.n)
    return EncodeResult(vecs, res.weights, res.info)
