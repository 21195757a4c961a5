"""The ``encoder`` section: how each source is turned into embedding vectors.

Kinds (see docs/embeddings.md):

- ``ssl_cnn`` — small CNN trained in the pipeline with SimCLR / NT-Xent on the source's own images
  (never its labels); default for images.
- ``minilm`` — pretrained all-MiniLM-L6-v2 sentence embeddings (384-d) for text sources.
- ``pca`` — PCA of the raw features to ``dim`` components.
- ``column`` — the source's feature matrix is a user-supplied embedding, used as-is (validated).
- ``raw`` — the raw features themselves (pixels, tabular columns).

:meth:`EncoderConfig.hash` keys the embedding cache: it covers only the fields that change the
vectors of the chosen kind (changing ``temperature`` does not invalidate a PCA cache; ``sources``
and ``progress``-like options never do), plus a per-kind code version bumped when the encoder's
code changes its output.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from configs._model import StrictModel

EncoderKind = Literal["ssl_cnn", "minilm", "pca", "column", "raw"]

# Bump when an encoder's code changes the vectors it produces (invalidates cached embeddings).
CODE_VERSIONS: dict[str, int] = {"ssl_cnn": 1, "minilm": 1, "pca": 1, "column": 1, "raw": 1}

# Fields that determine the vectors of each kind (the cache key).
_HASHED_FIELDS: dict[str, tuple[str, ...]] = {
    "ssl_cnn": (
        "dim", "epochs", "batch_size", "temperature", "lr", "weight_decay", "seed", "max_train",
        "width", "proj_dim", "min_image_size", "crop_scale", "max_rotation_deg", "noise_std",
        "fit_on", "normalize",
    ),
    "minilm": ("max_seq_length", "normalize"),
    "pca": ("dim", "seed", "max_train", "fit_on", "normalize"),
    "column": ("normalize",),
    "raw": ("normalize",),
}

MINILM_DIM = 384


class EncoderConfig(StrictModel):
    """How to embed sources. Only the fields of the chosen ``kind`` matter (and are hashed)."""

    kind: EncoderKind = "ssl_cnn"
    dim: int | None = Field(
        default=None, gt=0, le=4096,
        description="output width: ssl_cnn and pca (default 128); minilm is always 384; column/raw keep the source's",
    )
    sources: list[str] | None = Field(
        default=None, description="names of the sources to embed; default: every source the encoder fits"
    )
    normalize: bool | None = Field(
        default=None, description="L2-normalise the vectors; default true for ssl_cnn/minilm, false otherwise"
    )
    seed: int = 0
    fit_on: Literal["train", "all"] = Field(
        default="train", description="rows the ssl_cnn / pca encoder is fitted on (never labels)"
    )
    max_train: int | None = Field(
        default=None, gt=0, description="fit ssl_cnn / pca on a seeded subsample of at most this many rows"
    )
    # ssl_cnn (SimCLR)
    epochs: int = Field(default=2, gt=0, le=1000)
    batch_size: int = Field(default=256, ge=4, le=65536, description="SimCLR batch (also the text batch)")
    temperature: float = Field(default=0.2, gt=0.0, le=10.0, description="NT-Xent temperature")
    lr: float = Field(default=2e-3, gt=0.0, le=10.0, description="Adam learning rate")
    weight_decay: float = Field(default=1e-5, ge=0.0, le=1.0)
    width: int = Field(default=16, ge=4, le=512, description="channels of the first conv layer (then 2x, 4x)")
    proj_dim: int = Field(default=64, ge=2, le=4096, description="projection-head output (discarded after training)")
    min_image_size: int = Field(default=16, ge=8, le=512, description="smaller images are upsampled to this side")
    crop_scale: tuple[float, float] = Field(default=(0.5, 1.0), description="random resized crop area range")
    max_rotation_deg: float = Field(default=15.0, ge=0.0, le=180.0)
    noise_std: float = Field(default=0.05, ge=0.0, le=1.0, description="gaussian pixel noise of the augmentation")
    # minilm
    max_seq_length: int = Field(default=128, ge=8, le=512, description="tokens kept per document (longer are truncated)")

    @model_validator(mode="after")
    def _check(self) -> "EncoderConfig":
        lo, hi = self.crop_scale
        if not (0.0 < lo <= hi <= 1.0):
            raise ValueError(f"crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1")
        if self.kind == "minilm" and self.dim not in (None, MINILM_DIM):
            raise ValueError(f"dim={self.dim}: minilm embeddings are always {MINILM_DIM}-d (leave dim unset)")
        if self.kind == "minilm" and self.normalize is False:
            raise ValueError("normalize=false: the packaged all-MiniLM-L6-v2 model ends in a Normalize layer, so its "
                             "vectors are always unit length (leave normalize unset)")
        if self.kind in ("column", "raw") and self.dim is not None:
            raise ValueError(f"dim={self.dim}: kind {self.kind!r} keeps the source's width (leave dim unset)")
        if self.sources is not None and len(self.sources) == 0:
            raise ValueError("sources=[] embeds nothing; leave it unset to embed every source")
        return self

    @property
    def out_dim(self) -> int | None:
        """Output width, or None when it is the source's own width (column/raw)."""
        if self.kind == "minilm":
            return MINILM_DIM
        if self.kind in ("ssl_cnn", "pca"):
            return self.dim or 128
        return None

    @property
    def l2_normalize(self) -> bool:
        if self.normalize is not None:
            return self.normalize
        return self.kind in ("ssl_cnn", "minilm")

    def cache_json(self) -> str:
        """Canonical JSON of what determines the vectors (kind, code version, relevant fields)."""
        values = self.model_dump(mode="json")
        payload = {f: values[f] for f in _HASHED_FIELDS[self.kind]}
        payload["dim"] = self.out_dim
        payload["normalize"] = self.l2_normalize
        payload["kind"] = self.kind
        payload["code_version"] = CODE_VERSIONS[self.kind]
        return json.dumps(payload, sort_keys=True, separators=(",", ":"))

    def hash(self, n: int = 16, image_shape: "tuple[int, ...] | None" = None) -> str:
        """First ``n`` hex digits of sha256(:meth:`cache_json`) — the embedding cache key. ``image_shape``:
        the source's, for the kind that reads pixels as images (ssl_cnn): the same pixel bytes read as
        8 x 8 or 4 x 16 images give different vectors, and the source's content hash covers the bytes only."""
        key = self.cache_json()
        if self.kind == "ssl_cnn" and image_shape is not None:
            key += json.dumps({"image_shape": [int(v) for v in image_shape]}, separators=(",", ":"))
        return hashlib.sha256(key.encode()).hexdigest()[:n]

    def wants(self, source_name: str) -> bool:
        """Whether this encoder is asked to embed the source ``source_name``."""
        return self.sources is None or source_name in self.sources
