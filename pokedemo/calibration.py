"""Temperature scaling: probabilities that mean what they say.

A fine-tuned net trained with label smoothing is underconfident: its top probability averages well below its
accuracy (figures in BENCHMARKS.md). One scalar T, fitted on the validation split by minimising the negative
log-likelihood of softmax(logits / T) (Guo et al. 2017, "On Calibration of Modern Neural Networks"), corrects
that without changing any prediction: dividing every logit by the same T keeps their order.

T is folded into the linear head (weight / T, bias / T), so a calibrated checkpoint is an ordinary checkpoint:
predict, evaluate, the app, Grad-CAM and the Hub copy all read calibrated probabilities with no extra step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Bounds on T. A validation split with no mistakes pushes the fitted T towards 0 (ever sharper probabilities
# keep lowering its loss); the lower bound caps that sharpening at 10x the logits.
MIN_TEMPERATURE = 0.1
MAX_TEMPERATURE = 10.0
# Fewer validation images than this leave T at 1: a temperature fitted on a handful of images does not carry
# over to unseen images (BENCHMARKS.md, "calibration needs 10 validation images").
MIN_CALIBRATION_IMAGES = 10
HEAD_KEYS = ("head.weight", "head.bias")


@dataclass(frozen=True)
class Calibration:
    temperature: float
    val_nll_before: float  # on the validation split, without label smoothing
    val_nll_after: float
    skipped: str | None = None  # why T was left at 1 (too little validation data); None when it was fitted

    def record(self) -> dict[str, float | str]:
        how = {"skipped": self.skipped} if self.skipped else {"fitted_on": "val"}
        return {"temperature": round(self.temperature, 5), **how,
                "val_nll_before": round(self.val_nll_before, 5), "val_nll_after": round(self.val_nll_after, 5)}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] minimising NLL(softmax(logits / T), labels); T = 1 (with the
    reason in ``skipped``) for fewer than MIN_CALIBRATION_IMAGES labelled logits."""
    logits, labels = logits.detach().double().cpu(), labels.detach().cpu()
    nll = lambda t: F.cross_entropy(logits / t, labels)
    before = nll(1.0).item() if len(labels) else 0.0
    if len(labels) < MIN_CALIBRATION_IMAGES:
        why = f"only {len(labels)} validation images (fewer than {MIN_CALIBRATION_IMAGES})"
        return Calibration(1.0, before, before, skipped=why)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(log_t.exp())
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE))
    with torch.no_grad():
        return Calibration(temperature, before, nll(temperature).item())


def calibrated_state(state: dict[str, torch.Tensor], temperature: float) -> dict[str, torch.Tensor]:
    """A copy of a Classifier state dict whose head gives logits / temperature."""
    return {k: (v / temperature if k in HEAD_KEYS else v) for k, v in state.items()}
