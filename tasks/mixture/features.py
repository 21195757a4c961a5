"""Feature alignment for mixture estimation: one feature space for every pool and the target.

Image sources of different resolutions (MNIST 28×28, sklearn digits 8×8) are resized to a common
square size (bilinear via ``torch.nn.functional.interpolate``, antialiased when shrinking); then one
PCA is fitted on the union of all blocks and every block is projected to ``dim`` components, the
"reduced space" in which label distances (Bures–Wasserstein) stay cheap (mixture.md).
The PCA is ``tasks.embed.pca.fit_pca`` when that module is present, else an exact PCA here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tasks.errors import WinnowError


def resize_images(X: np.ndarray, shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Resize flattened images X (n, h·w) of ``shape`` (h, w) to ``size`` (H, W) → (n, H·W) float32."""
    h, w = shape
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != h * w:
        raise ValueError(f"images of shape {shape} need {h * w} columns, got array of shape {X.shape}")
    if tuple(shape) == tuple(size):
        return X
    t = torch.from_numpy(np.ascontiguousarray(X)).reshape(-1, 1, h, w)
    shrink = size[0] < h or size[1] < w
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(X.shape[0], -1).numpy()


@dataclass(frozen=True)
class PCAProjection:
    """x ↦ (x − mean) @ components.T. mean : (d,); components : (dim, d); explained : (dim,) variance ratios."""

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float32) - self.mean) @ self.components.T).astype(np.float32)


def _fit_pca_exact(X: np.ndarray, dim: int) -> PCAProjection:
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(0)
    cov = np.cov(X - mean, rowvar=False, bias=True)
    w, V = np.linalg.eigh(np.atleast_2d(cov))
    order = np.argsort(w)[::-1][:dim]
    comps = V[:, order].T
    # sign convention: the largest-|loading| entry of each component is positive (deterministic)
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    tot = max(float(w.clip(0).sum()), 1e-300)
    return PCAProjection(mean.astype(np.float32), comps.astype(np.float32), (w[order].clip(0) / tot))


def fit_projection(X: np.ndarray, dim: int, seed: int = 0) -> PCAProjection | object:
    """PCA to ``dim`` components on X (n, d); uses the encoder helper's ``fit_pca`` when available."""
    try:
        from tasks.embed.pca import fit_pca  # type: ignore[import-not-found]
    except ImportError:
        return _fit_pca_exact(X, dim)
    return fit_pca(X, dim, seed)


@dataclass(frozen=True)
class AlignedFeatures:
    """blocks : list of (n_i, dim) float32 arrays, in the order given; dim; image_size used (or None)."""

    blocks: list[np.ndarray]
    dim: int
    image_size: tuple[int, int] | None


def align_features(
    blocks: Sequence[np.ndarray],
    image_shapes: Sequence[tuple[int, int] | None],
    *,
    image_size: int | None = 16,
    dim: int = 64,
    names: Sequence[str] | None = None,
    seed: int = 0,
) -> AlignedFeatures:
    """Bring every block into one shared ``dim``-dimensional feature space.

    Parameters
    ----------
    blocks : arrays (n_i, d_i): pools and target.
    image_shapes : (h, w) per block, or None for non-image features (these must share d).
    image_size : common side for image blocks (None: the smallest side among them).
    dim : PCA components (≤ min(d, total rows)); 0 keeps the features as they are.
    """
    names = list(names) if names is not None else [f"block {i}" for i in range(len(blocks))]
    if len(blocks) != len(image_shapes):
        raise ValueError(f"{len(blocks)} blocks but {len(image_shapes)} image shapes")
    for nm, X in zip(names, blocks):
        if X is None or np.asarray(X).ndim != 2:
            raise ValueError(f"{nm}: needs a 2-d feature matrix (text sources must be embedded first)")
        if np.asarray(X).shape[0] == 0:
            raise ValueError(f"{nm}: is empty (0 examples)")
    is_img = [s is not None for s in image_shapes]
    if any(is_img) and not all(is_img):
        mixed = [nm for nm, s in zip(names, image_shapes) if s is None]
        raise WinnowError(f"cannot mix image and non-image sources in one mixture (non-image: {', '.join(mixed)})")
    size = None
    if all(is_img):
        side = image_size or min(min(s) for s in image_shapes)  # type: ignore[arg-type]
        size = (int(side), int(side))
        blocks = [resize_images(X, s, size) for X, s in zip(blocks, image_shapes)]  # type: ignore[arg-type]
    else:
        dims = {nm: np.asarray(X).shape[1] for nm, X in zip(names, blocks)}
        if len(set(dims.values())) > 1:
            raise WinnowError(f"feature dimensions differ between sources: {dims}; embed them with one encoder first")
        blocks = [np.asarray(X, dtype=np.float32) for X in blocks]
    if dim == 0:
        return AlignedFeatures(blocks=list(blocks), dim=blocks[0].shape[1], image_size=size)
    union = np.concatenate(blocks)
    dim_eff = min(dim, union.shape[1], union.shape[0])
    proj = fit_projection(union, dim_eff, seed)
    return AlignedFeatures(blocks=[np.asarray(proj.transform(X), dtype=np.float32) for X in blocks], dim=dim_eff, image_size=size)
