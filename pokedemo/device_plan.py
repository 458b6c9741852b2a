"""How a model executes on a device: memory layout, autocast dtype and batch shapes, decided once per run.

The engine (training, head fitting, evaluation) and the Predictor ask an ``ExecutionPlan`` instead of deciding
these per call, so every forward pass of a run follows one rule. The device itself is still chosen once by
``pokedemo.config.resolve_device``; the device-dependent *defaults* (image size, epochs) live in config.py.

Why CUDA differs from the CPU: cuDNN does one-time work for every new batch shape, and for depthwise
convolutions in channels_last + bf16 that work dwarfs the epochs themselves (the GPU timeline in BENCHMARKS.md).
So on CUDA:

- depthwise-heavy nets run NCHW in fp32 (cuDNN may still use TF32 for the dense 1x1 convolutions,
  ``torch.backends.cudnn.allow_tf32``); dense nets keep channels_last + bf16/fp16 autocast, the layout and
  dtypes tensor cores are fastest in;
- every forward pass sees ONE batch size: training leaves the images that do not fill a last batch to the next
  epoch (carried over; a one-epoch run tops them up instead, see ``epoch_batches``), head fitting and
  evaluation pad their last batch with black images up to the training batch size and drop what the padding
  gives. Each new shape is new engine work (selection, and on cuDNN 9 possibly runtime-compiled kernels) for
  every layer.

The CPU plan: channels_last (faster oneDNN convolutions), fp32, natural batch sizes with a partial last
batch, and small passes: evaluation and head fitting in 16-image batches, and a training batch run as
16-image forward/backward passes whose gradients add up to the batch's when no layer mixes the images of a
batch (BatchNorm frozen). Small passes keep a pass's activations inside the CPU caches (figures in
BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from pokedemo.config import amp_dtype

CPU_EVAL_BATCH = 16  # images per evaluation/head-fitting pass on the CPU: their activations stay in the caches
CPU_MICRO_BATCH = 16  # images per forward/backward pass of a CPU training step (when a step may be split)
WHOLE_EVAL_BATCH = 128  # evaluation passes on devices other than CPUs and CUDA GPUs (what every device had before)


@dataclass(frozen=True)
class ExecutionPlan:
    """Layout, autocast dtype and batch shapes for one model on one device."""

    device: torch.device
    channels_last: bool
    autocast_dtype: torch.dtype | None
    batch_size: int        # training batch size (the config's, capped at the training split's size)
    fixed_shapes: bool     # True: every forward pass sees exactly ``batch_size`` images (CUDA)
    eval_batch: int        # images per evaluation/head-fitting forward pass
    micro_batch: int       # images per forward/backward pass of a training step that may be split

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def place_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device in the plan's layout."""
        return model.to(self.device).to(memory_format=self.memory_format)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW → float in [0, 1] on the plan's device, in the plan's layout."""
        x = images.to(self.device, non_blocking=True).float().div_(255)
        return x.contiguous(memory_format=self.memory_format)

    def autocast(self) -> AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def steps_per_epoch(self, n: int, run_epochs: int) -> int:
        """Optimisation steps per epoch over ``n`` training images in a run of ``run_epochs`` epochs."""
        if not self.fixed_shapes:
            return math.ceil(n / self.batch_size)
        full, left = divmod(n, self.batch_size)
        return full + int(run_epochs == 1 and left > 0)

    def epoch_batches(self, n: int, generator: torch.Generator, carried: torch.Tensor | None,
                      run_epochs: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Index batches of one epoch (reshuffled every epoch) of a run of ``run_epochs`` epochs, and the indices
        left for the next epoch.

        Natural shapes (CPU): one permutation, the last batch may be partial, nothing is carried.
        Fixed shapes (CUDA): every batch is full and holds training images only, never padding. The images
        that do not fill a last batch (fewer than one batch) are carried: they open the next epoch, so every
        training image is trained on at least once in any two consecutive epochs, each epoch has every image at
        most once, and the steps per epoch stay constant (the schedule does not change). In a run of two or
        more epochs every image is therefore trained on: what the final epoch leaves over, the epoch before
        trained. A one-epoch run has no next epoch, so its epoch tops the left-over images up to a full batch
        with images it trained first (those few are trained on twice). A split smaller than one batch leaves
        nothing over: the batch size is capped at the split (``execution_plan``).
        """
        order = torch.randperm(n, generator=generator).to(self.device)
        if not self.fixed_shapes:
            return list(order.split(self.batch_size)), order[:0]
        if carried is not None and len(carried):
            first = torch.isin(order, carried)
            order = torch.cat([order[first], order[~first]])
        full = (n // self.batch_size) * self.batch_size
        batches, left = list(order[:full].split(self.batch_size)), order[full:]
        if run_epochs == 1 and len(left):
            batches.append(torch.cat([left, order[:self.batch_size - len(left)]]))
            left = left[:0]
        return batches, left

    def forward_in_batches(self, fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                           check_stop: Callable[[], None] | None = None) -> torch.Tensor:
        """``fn`` over uint8 ``images`` in evaluation batches; results concatenated on the device.

        ``fn`` gets float input in the plan's layout. With fixed shapes the last batch is padded with black
        images up to ``eval_batch`` and the padding's outputs are dropped: in eval mode every image's output
        is independent of the others in its batch, so padding changes no result, only the shape cuDNN sees.
        """
        outputs = []
        for start in range(0, len(images), self.eval_batch):
            if check_stop is not None:
                check_stop()
            chunk = images[start:start + self.eval_batch]
            real = len(chunk)
            if not self.fixed_shapes or real == self.eval_batch:
                outputs.append(fn(self.to_input(chunk)))
                continue
            pad = chunk.new_zeros((self.eval_batch - real, *chunk.shape[1:]))
            outputs.append(fn(self.to_input(torch.cat([chunk, pad])))[:real])
        return torch.cat(outputs) if outputs else torch.zeros(0, device=self.device)


def has_depthwise_convs(model: nn.Module) -> bool:
    """True when the net uses depthwise convolutions (groups == input channels > 1), e.g. EfficientNet."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules())


def execution_plan(device: torch.device, model: nn.Module, batch_size: int,
                   n_train: int | None = None) -> ExecutionPlan:
    """The plan for ``model`` on ``device`` (see the module docstring for why CUDA differs).

    ``n_train`` caps the training batch at the split's size, so a tiny dataset still gets one full batch.
    """
    batch = max(1, min(batch_size, n_train)) if n_train else max(1, batch_size)
    if device.type != "cuda":
        # Small passes pay off on CPUs; other devices (Apple's MPS) run whole batches.
        cpu = device.type == "cpu"
        return ExecutionPlan(device, channels_last=True, autocast_dtype=amp_dtype(device), batch_size=batch,
                             fixed_shapes=False, eval_batch=CPU_EVAL_BATCH if cpu else WHOLE_EVAL_BATCH,
                             micro_batch=min(batch, CPU_MICRO_BATCH) if cpu else batch)
    depthwise = has_depthwise_convs(model)
    return ExecutionPlan(
        device,
        channels_last=not depthwise,
        autocast_dtype=None if depthwise else amp_dtype(device),
        batch_size=batch,
        fixed_shapes=True,
        eval_batch=batch,
        micro_batch=batch,  # a GPU runs the whole batch in one pass: one shape, and it is not cache-bound
    )
