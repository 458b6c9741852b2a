"""Inference on uint8 image tensors, shared by the training engine (head fitting, validation, test) and
``pokedemo.predict``: batched logits following the execution plan (``pokedemo.device_plan``: input conversion,
layout, autocast, batch shapes), and the model copy inference runs (``folded_for_inference``).

Kept out of ``pokedemo.train`` so that prediction does not import the training engine.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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


def folded_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is a fixed per-channel scale and shift, so folding it into the convolution's
    weights gives the same outputs (up to float rounding) without a separate pass over every activation map
    (figures in BENCHMARKS.md). The rule: among a module's children, a ``Conv2d`` registered directly before a
    ``BatchNorm2d`` feeds it; that holds for every backbone in ``pokedemo.models`` (tests compare the logits
    of each folded backbone with the original's). timm's ``BatchNormAct2d`` keeps its dropout/activation.
    The original model is not touched: training continues on it, Grad-CAM hooks its layers.
    """
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):
        for (conv_name, conv), (bn_name, bn) in itertools.pairwise(list(parent.named_children())):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or bn.running_mean is None:
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            after_norm = list(bn.children())  # BatchNormAct2d: drop, act (applied in this order)
            setattr(parent, bn_name, nn.Sequential(*after_norm) if after_norm else nn.Identity())
    return folded
