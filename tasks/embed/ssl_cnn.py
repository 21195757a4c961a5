"""In-pipeline self-supervised image encoder: a 3-conv-layer CNN trained with SimCLR (NT-Xent).

No pretrained self-supervised image model can be downloaded here, so the default image encoder is
trained on the ingested images themselves — never on their labels (pruning.md, "Embeddings").

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"): every image of a batch of B is augmented twice; the encoder f and a projection
head g map the 2B views to unit vectors :math:`z = g(f(x)) / \\lVert g(f(x)) \\rVert`; the NT-Xent
loss of the positive pair (i, j) is (their eq. 1)

.. math::

    \\ell_{i,j} = -\\log \\frac{\\exp(z_i^\\top z_j / \\tau)}
                               {\\sum_{k=1}^{2B} \\mathbb{1}_{[k \\ne i]} \\exp(z_i^\\top z_k / \\tau)}

averaged over all 2B ordered positive pairs. The head g is discarded after training and the
representation h = f(x) is the embedding (L2-normalised by the caller when configured).

Augmentations run in torch on whole batches (no torchvision): a random resized crop and a small
rotation folded into one affine grid per image (``F.affine_grid`` + ``F.grid_sample``), a random
contrast/brightness jitter and gaussian pixel noise. No flips (digits are not flip-invariant).

The trained weights are a plain ``state_dict`` of tensors (architecture sizes are recovered from
the tensor shapes and the ``input_hw`` buffer), so ``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.embed._common import check_embeddings, l2_normalize
from tasks.progress import progress_bar
from tasks.errors import WinnowError

__all__ = [
    "SSLEncoder",
    "SSLTrainResult",
    "augment_batch",
    "embed_images",
    "nt_xent",
    "train_ssl_cnn",
]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class SSLEncoder(nn.Module):
    """f: (B, 1, h, w) images in [0, 1] -> (B, dim) representation.

    Three stride-2 3x3 conv-BN-ReLU layers (width w, 2w, 4w; 28x28 -> 14 -> 7 -> 4), adaptive
    average pooling to a 2x2 grid (so any image size works), and a linear layer to ``dim``.
    Strided convolutions instead of conv + max-pool cost ~3x fewer FLOPs on 2 CPU cores.
    Images smaller than ``input_hw`` are bilinearly resized to it first.
    """

    def __init__(self, width: int = 16, dim: int = 128, input_hw: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
        )
        self.fc = nn.Linear(16 * w, dim)
        self.register_buffer("input_hw", torch.tensor(input_hw, dtype=torch.int64))

    @property
    def dim(self) -> int:
        return int(self.fc.out_features)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize a (B, 1, h, w) batch to ``input_hw`` when its size differs."""
        hw = tuple(int(v) for v in self.input_hw)
        if tuple(x.shape[-2:]) != hw:
            x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> "SSLEncoder":
        """Rebuild the encoder from its weights (sizes read from tensor shapes); eval mode."""
        try:
            width = int(state_dict["features.0.weight"].shape[0])
            dim = int(state_dict["fc.weight"].shape[0])
            hw = tuple(int(v) for v in state_dict["input_hw"].tolist())
        except (KeyError, AttributeError) as err:
            raise ValueError(f"not an ssl_cnn encoder state_dict (missing {err})") from None
        model = cls(width=width, dim=dim, input_hw=hw)  # type: ignore[arg-type]
        model.load_state_dict(state_dict)
        return model.eval()


def _projection_head(dim: int, proj_dim: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))


# --------------------------------------------------------------------------------------------
# Augmentation and loss
# --------------------------------------------------------------------------------------------
def augment_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    max_rotation_deg: float = 15.0,
    noise_std: float = 0.05,
) -> torch.Tensor:
    """One random view of each image of a (B, 1, h, w) batch in [0, 1].

    Random resized crop (area fraction ~ U(crop_scale), aspect ratio log-uniform in [3/4, 4/3],
    random position inside the image) composed with a rotation ~ U(±max_rotation_deg) as one
    affine map per image; bilinear resampling with zero padding; contrast x U(0.8, 1.2),
    brightness + U(-0.1, 0.1), gaussian noise N(0, noise_std²).
    """
    B = x.shape[0]
    lo, hi = crop_scale
    area = lo + (hi - lo) * torch.rand(B, generator=gen)
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(B, generator=gen)
    ratio = torch.exp(log_r)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # half-width of the crop in [-1, 1] coordinates
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (1 - sx) * (2 * torch.rand(B, generator=gen) - 1)
    ty = (1 - sy) * (2 * torch.rand(B, generator=gen) - 1)
    ang = math.radians(max_rotation_deg) * (2 * torch.rand(B, generator=gen) - 1)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack(
        [torch.stack([sx * cos, -sy * sin, tx], 1), torch.stack([sx * sin, sy * cos, ty], 1)], 1
    )  # (B, 2, 3): output grid -> input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = 0.8 + 0.4 * torch.rand(B, 1, 1, 1, generator=gen)
    bright = 0.2 * torch.rand(B, 1, 1, 1, generator=gen) - 0.1
    out = out * contrast + bright
    if noise_std > 0:
        out = out + noise_std * torch.randn(out.shape, generator=gen)
    return out


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss (SimCLR eq. 1) of two (B, p) batches of projections; positives are rows i <-> i."""
    B = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)])
    return F.cross_entropy(sim, target)


# --------------------------------------------------------------------------------------------
# Training and embedding
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSLTrainResult:
    """A trained SimCLR encoder.

    Attributes
    ----------
    state_dict : encoder weights only (projection head discarded), CPU tensors.
    loss_per_epoch : (epochs,) float32 mean NT-Xent loss.
    seconds : training wall time.
    n_train : number of images trained on.
    input_hw : (h, w) the encoder resizes its input to.
    """

    state_dict: dict[str, torch.Tensor]
    loss_per_epoch: np.ndarray
    seconds: float
    n_train: int
    input_hw: tuple[int, int]

    @property
    def dim(self) -> int:
        return int(self.state_dict["fc.weight"].shape[0])


def _as_images(X: np.ndarray, image_shape: tuple[int, int] | None, what: str) -> torch.Tensor:
    """(n, h*w) or (n, h, w) array -> (n, 1, h, w) float32 tensor (validated)."""
    X = np.asarray(X)
    if X.ndim == 2:
        if image_shape is None:
            raise ValueError(f"{what}: flattened images need image_shape=(h, w)")
        h, w = (int(v) for v in image_shape)
        if h * w != X.shape[1]:
            raise ValueError(f"{what}: image_shape={image_shape} does not match {X.shape[1]} pixels per row")
        X = X.reshape(X.shape[0], h, w)
    elif X.ndim != 3:
        raise ValueError(f"{what}: images must be (n, h*w) or (n, h, w); got shape {X.shape}")
    X = np.require(X, dtype=np.float32, requirements=["C", "W"])  # torch wants writable memory
    if not np.isfinite(X).all():
        raise ValueError(f"{what}: pixel values contain NaN or inf")
    return torch.from_numpy(X).unsqueeze(1)


def _target_hw(h: int, w: int, min_image_size: int) -> tuple[int, int]:
    s = max(1.0, min_image_size / min(h, w))
    return int(round(h * s)), int(round(w * s))


def train_ssl_cnn(
    images: np.ndarray,
    image_shape: tuple[int, int] | None = None,
    *,
    dim: int = 128,
    epochs: int = 2,
    batch_size: int = 256,
    temperature: float = 0.2,
    lr: float = 2e-3,
    weight_decay: float = 1e-5,
    width: int = 16,
    proj_dim: int = 64,
    min_image_size: int = 16,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    max_rotation_deg: float = 15.0,
    noise_std: float = 0.05,
    max_train: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SSLTrainResult:
    """Train the SimCLR encoder on ``images`` (labels are never seen).

    Parameters
    ----------
    images : (n, h*w) float in [0, 1] (with ``image_shape``) or (n, h, w).
    dim : representation width; width : channels of the first conv layer.
    epochs, batch_size, lr, weight_decay : Adam with linear warm-up then cosine decay per step.
    temperature : τ of NT-Xent (0.1–0.5 is the usual range).
    proj_dim : output of the discarded projection head g.
    min_image_size : images with a smaller side are upsampled (8x8 digits -> 16x16).
    crop_scale, max_rotation_deg, noise_std : augmentation strength (:func:`augment_batch`).
    max_train : train on a seeded random subsample of at most this many images.
    seed : seeds weight init, subsample, batch order and augmentations; same seed -> same weights.

    Returns
    -------
    SSLTrainResult
    """
    t0 = time.perf_counter()
    x = _as_images(images, image_shape, "ssl_cnn training images")
    n = x.shape[0]
    if batch_size < 4:
        raise ValueError(f"batch_size={batch_size} must be >= 4 for contrastive training")
    if n < 4:
        raise WinnowError(f"ssl_cnn needs at least 4 images to train; got n={n}")
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    hw = _target_hw(int(x.shape[2]), int(x.shape[3]), min_image_size)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if max_train is not None and max_train < n:
            x = x[torch.randperm(n, generator=gen)[:max_train]]
            n = max_train
        bs = min(batch_size, n)
        model = SSLEncoder(width=width, dim=dim, input_hw=hw)
        head = _projection_head(dim, proj_dim)
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        steps_per_epoch = n // bs  # drop the ragged last batch (BN and NT-Xent want full batches)
        total = steps_per_epoch * epochs
        warm = max(1, int(0.05 * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))),
        )
        aug = {"crop_scale": crop_scale, "max_rotation_deg": max_rotation_deg, "noise_std": noise_std}
        losses = np.zeros(epochs, dtype=np.float32)
        model.train()
        head.train()
        bar = progress_bar(progress)
        with bar:
            task = bar.add_task(f"ssl_cnn SimCLR ({n} images)", total=total)
            for ep in range(epochs):
                order = torch.randperm(n, generator=gen)
                running = 0.0
                for s in range(steps_per_epoch):
                    xb = model.prepare(x[order[s * bs : (s + 1) * bs]])
                    v1 = augment_batch(xb, gen, **aug)
                    v2 = augment_batch(xb, gen, **aug)
                    h = model(torch.cat([v1, v2], dim=0))  # one BN pass over both views
                    z = head(h)
                    loss = nt_xent(z[: xb.shape[0]], z[xb.shape[0] :], temperature)
                    if not torch.isfinite(loss):
                        raise RuntimeError(
                            f"ssl_cnn training diverged (loss {float(loss)}) at epoch {ep}; lower lr={lr}"
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_v = float(loss.detach())
                    running += loss_v
                    bar.update(task, advance=1, description=f"ssl_cnn epoch {ep + 1}/{epochs} loss {loss_v:.3f}")
                losses[ep] = running / steps_per_epoch
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return SSLTrainResult(
        state_dict=state,
        loss_per_epoch=losses,
        seconds=time.perf_counter() - t0,
        n_train=int(n),
        input_hw=hw,
    )


def embed_images(
    state_dict: dict[str, torch.Tensor],
    images: np.ndarray,
    image_shape: tuple[int, int] | None = None,
    *,
    batch_size: int = 1024,
    normalize: bool = True,
    progress: bool = True,
) -> np.ndarray:
    """Embed images with a trained encoder, in batches. Returns (n, dim) float32.

    Parameters
    ----------
    state_dict : from :attr:`SSLTrainResult.state_dict` or ``torch.load(path, weights_only=True)``.
    images : (n, h*w) with ``image_shape`` or (n, h, w), values in [0, 1].
    normalize : L2-normalise each row (for cosine methods and probes).
    """
    model = SSLEncoder.from_state_dict(state_dict)
    x = _as_images(images, image_shape, "ssl_cnn images to embed")
    n = x.shape[0]
    out = np.empty((n, model.dim), dtype=np.float32)
    bar = progress_bar(progress)
    with torch.inference_mode(), bar:
        task = bar.add_task(f"ssl_cnn embed ({n} images)", total=n)
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            out[s:e] = model(model.prepare(x[s:e])).numpy()
            bar.update(task, advance=e - s)
    out = check_embeddings(out, "ssl_cnn embeddings", n)
    return l2_normalize(out) if normalize else out
