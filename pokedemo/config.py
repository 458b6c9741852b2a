"""Typed training configuration and device resolution.

The config is saved beside every checkpoint (``config.json`` → ``"train_config"``), so every field must be a
plain JSON value. Help text lives in field metadata and feeds the CLI and the app.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("finetune", "linear")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything that decides how a run trains. Defaults are tuned for a 2-core CPU (see BENCHMARKS.md)."""

    backbone: str = _opt("resnet18", "Backbone architecture: resnet18 or efficientnet_lite0.")
    pretrained: bool = _opt(True, "Start from ImageNet weights (transfer learning); False trains from scratch.")
    strategy: str = _opt(
        "finetune", "finetune: train all layers; linear: freeze the backbone, train only the new head.",
        choices=STRATEGIES,
    )
    epochs: int = _opt(4, "Passes over the training split.")
    batch_size: int = _opt(32, "Images per optimisation step.")
    lr: float = _opt(2e-3, "Peak learning rate of the new head (AdamW, warm-up then cosine decay).")
    backbone_lr_scale: float = _opt(
        0.25, "Backbone learning rate as a fraction of the head's (pretrained fine-tuning only)."
    )
    weight_decay: float = _opt(0.01, "AdamW weight decay.")
    img_size: int = _opt(128, "Square training and inference resolution in pixels.")
    seed: int = _opt(0, "Seed for the split, initialisation, augmentation and shuffling.")
    label_smoothing: float = _opt(0.1, "Cross-entropy label smoothing.")
    augment: float = _opt(1.0, "Augmentation strength: 0 = none, 1 = default crop/flip/rotate/colour jitter.")
    warmup_epochs: float = _opt(0.5, "Linear learning-rate warm-up, in epochs.")
    head_warmup: bool = _opt(
        True,
        "Pretrained fine-tuning: first fit the new head on cached frozen features (seconds), then fine-tune all.",
    )
    freeze_bn: bool = _opt(
        True,
        "Pretrained fine-tuning: keep BatchNorm statistics from ImageNet (eval mode) instead of small-batch ones.",
    )
    val_ratio: float = _opt(0.2, "Share of images held out for validation (duplicate-aware).")
    test_ratio: float = _opt(0.2, "Share of images held out for the final test (duplicate-aware).")
    device: str = _opt("auto", "auto (cuda → mps → cpu), cpu, cuda or mps.", choices=DEVICES)
    weights_file: str | None = _opt(None, "Local file with backbone weights (for air-gapped machines).")

    def validate(self) -> None:
        """Raise ValueError with one clear line for values no run could use."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.strategy == "linear" and not self.pretrained:
            raise ValueError("strategy 'linear' needs a pretrained backbone (a frozen random net learns little)")
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "img_size": 16 <= self.img_size <= 1024,
            "val_ratio/test_ratio": 0 < self.val_ratio < 1 and 0 < self.test_ratio < 1
            and self.val_ratio + self.test_ratio < 1,
            "augment": 0 <= self.augment <= 2,
            "label_smoothing": 0 <= self.label_smoothing < 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training option(s): {', '.join(bad)}")

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (1.0 - self.val_ratio - self.test_ratio, self.val_ratio, self.test_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a saved dict, ignoring unknown keys (older/newer checkpoints)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def help_for(cls, name: str) -> str:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}[name]


def resolve_device(preference: str = "auto") -> "torch.device":  # noqa: F821 - torch imported lazily
    """Pick the device once: cuda → mps → cpu for "auto"; an explicit choice that is absent is an error."""
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple MPS is not available")
    return torch.device(preference)


def amp_dtype(device: "torch.device") -> "torch.dtype | None":  # noqa: F821
    """Autocast dtype for a device: bf16 on CUDA GPUs that support it, else fp16; none on CPU/MPS.

    CPU autocast to bf16 is slower than fp32 on most CPUs without AMX, and MPS autocast is still patchy.
    """
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def default_checkpoint_root() -> str:
    """Where runs are written unless --out says otherwise (POKEDEMO_CHECKPOINTS overrides)."""
    return os.environ.get("POKEDEMO_CHECKPOINTS", "checkpoints")
