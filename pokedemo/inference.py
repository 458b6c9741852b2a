"""Inference on uint8 image tensors, shared by the training engine (validation, test) and ``pokedemo.predict``:
the one conversion to the model's input and batched, autocast logits.

Kept out of ``pokedemo.train`` so that prediction does not import the training engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pokedemo.config import amp_dtype

if TYPE_CHECKING:  # pragma: no cover - only for the annotation; building models is not this module's job
    from pokedemo.models import Classifier

EVAL_BATCH = 128


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW → float in [0, 1], channels_last (faster convolutions on CPU and GPU alike)."""
    return images.float().div_(255).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def infer_logits(
    model: "Classifier", images: torch.Tensor, device: torch.device, *, batch_size: int = EVAL_BATCH,
    flip_tta: bool = False,
) -> torch.Tensor:
    """Logits (float32, on ``device``) for uint8 images, in eval mode, batched."""
    model.eval()
    dtype = amp_dtype(device)
    outputs = []
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size].to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x).float()
            if flip_tta:
                logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
        outputs.append(logits)
    if not outputs:
        return torch.zeros((0, model.head.out_features), device=device)
    return torch.cat(outputs)
