"""Inference on uint8 image tensors, shared by the training engine (validation, test) and ``pokedemo.predict``:
batched logits following the execution plan (``pokedemo.device_plan``: input conversion, layout, autocast,
batch shapes).

Kept out of ``pokedemo.train`` so that prediction does not import the training engine.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from pokedemo.device_plan import CPU_EVAL_BATCH, ExecutionPlan, execution_plan

if TYPE_CHECKING:  # pragma: no cover - only for the annotation; building models is not this module's job
    from pokedemo.models import Classifier

EVAL_BATCH = CPU_EVAL_BATCH  # without a plan; a run's (or a Predictor's) plan decides its own


@torch.no_grad()
def infer_logits(
    model: "Classifier", images: torch.Tensor, device: torch.device, *, batch_size: int | None = None,
    flip_tta: bool = False, plan: ExecutionPlan | None = None,
) -> torch.Tensor:
    """Logits (float32, on ``device``) for uint8 images, in eval mode, batched as ``plan`` says.

    Without a plan, the device's plan for this model with ``batch_size`` (default EVAL_BATCH) is used.
    """
    model.eval()
    plan = plan or execution_plan(device, model, batch_size or EVAL_BATCH)
    if batch_size is not None:
        plan = dataclasses.replace(plan, eval_batch=batch_size)
    if len(images) == 0:
        return torch.zeros((0, model.head.out_features), device=device)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        with plan.autocast():
            logits = model(x).float()
            if flip_tta:
                logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
        return logits

    return plan.forward_in_batches(logits_of, images)
