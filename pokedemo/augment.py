"""Batched training augmentation on uint8 tensors: per-sample random crop, flip, small rotation and colour
jitter, as one affine warp and one colour matrix per batch (``make_train_augment``).

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Not per-sample torchvision v2 transforms: a Python loop over the batch is several times slower on a small CPU
# (figures in BENCHMARKS.md). The batched version below does crop + flip + rotation as ONE per-sample affine warp
# (affine_grid + grid_sample over the whole batch) and the colour jitter as one per-sample 3x3 colour matrix.
AUGMENT_CROP_SCALE = 0.55      # RandomResizedCrop scale lower bound at strength 1 (area fraction)
AUGMENT_RATIO = 4 / 3          # RandomResizedCrop aspect ratio range (1/r, r) at strength 1
AUGMENT_DEGREES = 12.0         # RandomRotation range (+-) at strength 1
AUGMENT_JITTER = 0.25          # ColorJitter brightness/contrast/saturation at strength 1 (no hue: colour is
                               # what tells charmander from squirtle, shifting it would teach the wrong thing)


def make_train_augment(size: int, strength: float = 1.0, *,
                       generator: "torch.Generator | None" = None) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """uint8 [N,3,H,W] -> uint8 [N,3,size,size]: per-sample RandomResizedCrop, horizontal flip, small
    rotation and colour jitter, all scaled by `strength` (0 = identity, 1 = the defaults above)."""
    st = max(0.0, float(strength))
    if st == 0.0:
        return _identity_augment(size)

    def augment(batch: "torch.Tensor") -> "torch.Tensor":
        import torch

        x = batch.float()
        # Random parameters are drawn on the CPU (a handful of numbers per image, reproducible with a CPU
        # generator) and moved to the batch's device, so a CUDA tensor cache is augmented on the GPU.
        x = _warp(x, _affine_params(x.shape[0], st, generator).to(x.device), size)
        x = _jitter(x, st, generator)
        return x.clamp_(0, 255).round_().to(torch.uint8)

    return augment


def _identity_augment(size: int) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    def identity(batch: "torch.Tensor") -> "torch.Tensor":
        if batch.shape[-2:] == (size, size):
            return batch
        import torch.nn.functional as F  # only if the cache size differs from the training size

        x = F.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.clamp_(0, 255).round_().to(batch.dtype)

    return identity


def _uniform(n: int, lo: float, hi: float, generator) -> "torch.Tensor":
    import torch

    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _affine_params(n: int, st: float, generator) -> "torch.Tensor":
    """[n, 2, 3] affine matrices (output -> input, normalised coordinates) for crop + flip + rotation."""
    import torch

    area = _uniform(n, max(0.08, 1.0 - (1.0 - AUGMENT_CROP_SCALE) * st), 1.0, generator)
    log_r = math.log(AUGMENT_RATIO) * st
    ratio = torch.exp(_uniform(n, -log_r, log_r, generator))
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width/height as fractions of the input
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - w) * _uniform(n, -1.0, 1.0, generator)  # crop centre, kept inside the image
    cy = (1.0 - h) * _uniform(n, -1.0, 1.0, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5 * min(st, 1.0), -1.0, 1.0)
    angle = torch.deg2rad(_uniform(n, -AUGMENT_DEGREES * st, AUGMENT_DEGREES * st, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos * w * flip, -sin * h, cx], dim=1),
        torch.stack([sin * w * flip, cos * h, cy], dim=1),
    ], dim=1)
    return theta


def _warp(x: "torch.Tensor", theta: "torch.Tensor", size: int) -> "torch.Tensor":
    import torch.nn.functional as F

    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    # reflection: rotated corners show mirrored picture instead of black wedges the model could latch on to
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


def _jitter(x: "torch.Tensor", st: float, generator) -> "torch.Tensor":
    """Brightness, contrast, saturation (ColorJitter semantics) folded into one per-sample affine colour map."""
    import torch

    n, j = x.shape[0], AUGMENT_JITTER * st
    lo = max(0.0, 1.0 - j)
    b, c, s = (_uniform(n, lo, 1.0 + j, generator).to(x.device) for _ in range(3))
    luma = torch.tensor(_LUMA, device=x.device)
    gray_rows = luma.expand(3, 3)  # each output channel = luma of the input
    eye = torch.eye(3, device=x.device)
    # saturation: s*I + (1-s)*G ; brightness: *b ; contrast: c*x + (1-c)*mean(gray(x))
    m = (s[:, None, None] * eye + (1 - s)[:, None, None] * gray_rows) * (b * c)[:, None, None]
    mean_gray = torch.einsum("c,nc->n", luma, x.mean(dim=(2, 3))) * b
    offset = ((1 - c) * mean_gray)[:, None].expand(n, 3)
    return torch.einsum("nij,njhw->nihw", m, x) + offset[:, :, None, None]
