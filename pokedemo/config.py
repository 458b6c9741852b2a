"""Typed training configuration and device resolution.

The config is saved beside every checkpoint (``config.json`` → ``"train_config"``), so every field must be a
plain JSON value. Help text lives in field metadata and feeds the CLI and the app.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("finetune", "linear")
EPOCH_SELECTIONS = ("val_loss", "val_acc")
DEVICES = ("auto", "cpu", "cuda", "mps")

# Fields added after checkpoints were already saved: the value that reproduces an older run without them.
_ABSENT_MEANS: dict[str, Any] = {"eval_scale": 1.0, "select_epoch_by": "val_acc", "last_epoch_scale": 1.0,
                                 "calibrate": False}


# How to add a training option: add a field to TrainConfig below with ``_opt(default, help, ...)``. The CLI's
# ``train``/``compare`` flag, the parsing of its value, the ``reproduce`` command recorded in every checkpoint and
# the app's conversion of widget values all follow from the field (pokedemo.options). To show it in the app, pass
# ``app=True`` and add its one widget line to ``pokedemo/app/layout.py`` (``_options_panel``, key = field name).
# A field that older checkpoints lack also gets, in _ABSENT_MEANS, the value that reproduces their runs.
def _opt(default: Any, help: str, *, flag: str | None = None, flag_help: str | None = None,
         choices: tuple[str, ...] | None = None, metavar: str | None = None, app: bool = False,
         tuning: bool = False) -> Any:
    """A TrainConfig field with the metadata its command-line option and the app read.

    ``flag``: the option's name when it is not ``--field-name``; on a boolean it is a flag that sets the opposite
    of the default (``--scratch`` sets ``pretrained`` False), described by ``flag_help``. Other booleans get
    ``--name``/``--no-name``. ``app``: the Train tab has a widget for it. ``tuning``: a recipe detail whose
    default the benchmarks chose; listed apart in ``--help``.
    """
    given = {"flag": flag, "flag_help": flag_help, "choices": choices, "metavar": metavar}
    metadata = {"help": help, "app": app, "tuning": tuning, **{k: v for k, v in given.items() if v is not None}}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DeviceDefaults:
    """Image size and epochs a run uses when the user leaves them unset, and why, for one kind of device."""

    img_size: int
    epochs: int
    why: str
    # Epochs of a run that continues from a model (``init_from``): the model already knows its classes, so about
    # a quarter of a fresh run's epochs adapts it (BENCHMARKS.md, "Fixing labels, then continuing").
    warm_start_epochs: int
    # The last epoch trains at img_size x last_epoch_scale, and evaluation runs at that size (see TrainConfig).
    last_epoch_scale: float = 1.0

    def epochs_for(self, continuing: bool) -> int:
        """Default epochs of a fresh run (False) or of one that continues from a model (True)."""
        return self.warm_start_epochs if continuing else self.epochs


# Fields a TrainConfig leaves as None ("device default") until ``TrainConfig.resolved`` sees the device.
DEVICE_DEFAULT_FIELDS = ("img_size", "epochs")
DEVICE_DEFAULTS = {
    "cpu": DeviceDefaults(128, 4, "the fastest setting that still reaches high accuracy on a small CPU "
                                  "(see BENCHMARKS.md)", warm_start_epochs=1, last_epoch_scale=1.25),
    # On a GPU 224 px and 10 epochs generalise better than the CPU's 128 px and 4 epochs and cost seconds
    # (BENCHMARKS.md). Devices without their own entry (Apple MPS) take the CPU defaults.
    "cuda": DeviceDefaults(224, 10, "a GPU trains at the backbones' native 224 px for 10 epochs in seconds, "
                                    "and that generalises better than the small CPU setting", warm_start_epochs=3),
}
_DEVICE_WORDS = {"cpu": "the CPU", "cuda": "a CUDA GPU", "mps": "an Apple GPU (MPS)"}


def _device_type(device: Any) -> str:
    """"cuda" for torch.device("cuda:1") or "cuda:1", etc."""
    return str(getattr(device, "type", device)).split(":")[0]


def device_defaults(device: Any) -> DeviceDefaults:
    """The defaults for a device (a torch.device or its type name); devices without their own use the CPU's."""
    return DEVICE_DEFAULTS.get(_device_type(device), DEVICE_DEFAULTS["cpu"])


def defaults_note(device: Any, fields: tuple[str, ...] = DEVICE_DEFAULT_FIELDS, continuing: bool = False) -> str:
    """One line for the CLI and the app: which device defaults apply (of ``fields``) and why; ``continuing``: the
    run continues from a model (``init_from``), so its default epochs are ``warm_start_epochs``."""
    kind = _device_type(device)
    defaults = device_defaults(kind)
    size = f"{defaults.img_size} px"
    last = TrainConfig(img_size=defaults.img_size, last_epoch_scale=defaults.last_epoch_scale).last_epoch_size
    if last != defaults.img_size:
        size += f" (the last epoch and evaluation at {last} px)"
    epochs = defaults.epochs_for(continuing)
    shown = {"img_size": size, "epochs": f"{epochs} epoch{'s' if epochs != 1 else ''}"
                                         + (" (a run that continues from a model)" if continuing else "")}
    chosen = " and ".join(shown[f] for f in DEVICE_DEFAULT_FIELDS if f in fields)
    if not chosen:
        return ""
    why = defaults.why if kind in DEVICE_DEFAULTS else "not measured on this device, so the CPU defaults apply"
    return f"Defaults on {_DEVICE_WORDS.get(kind, kind)}: {chosen}, because {why}."


def _per_device(what: str, unit: str) -> str:
    cpu, cuda = DEVICE_DEFAULTS["cpu"], DEVICE_DEFAULTS["cuda"]
    return f"(default: {getattr(cpu, what)}{unit} on a CPU, {getattr(cuda, what)}{unit} on a CUDA GPU)"


@dataclass
class TrainConfig:
    """Everything that decides how a run trains. Defaults are tuned for a 2-core CPU (see BENCHMARKS.md),
    except image size and epochs: None means "the device's default", filled in by ``resolved`` once the device
    is known; the engine records the resolved values in the checkpoint."""

    backbone: str = _opt("efficientnet_lite0", "Backbone: efficientnet_lite0 (default), efficientnet_lite1 or "
                         "efficientnet_lite2 (ImageNet weights offline from their pip packages), resnet18 (ImageNet "
                         "weights through torchvision's download), or any timm model on the Hugging Face Hub as "
                         "timm/<model> (needs internet once).", app=True)
    pretrained: bool = _opt(True, "Start from ImageNet weights (transfer learning); False trains from scratch.",
                            flag="--scratch", flag_help="Train from random initialisation (no ImageNet).", app=True)
    strategy: str = _opt(
        "finetune", "finetune: train all layers; linear: freeze the backbone, train only the new head.",
        choices=STRATEGIES, app=True,
    )
    epochs: int | None = _opt(None, f"Passes over the training split {_per_device('epochs', '')}.", app=True)
    batch_size: int = _opt(32, "Images per optimisation step.", app=True)
    lr: float = _opt(2e-3, "Peak learning rate of the new head (AdamW, warm-up then cosine decay).", app=True)
    backbone_lr_scale: float = _opt(
        0.25, "Backbone learning rate as a fraction of the head's (pretrained fine-tuning only).", tuning=True
    )
    warm_start_lr_scale: float = _opt(
        0.1, "Continued runs whose classes the start model all knows: learning rates as a fraction of the usual "
        "ones. Such a run keeps the start model's head (no head fit first) and takes small steps from its weights, "
        "which keeps what it learnt (BENCHMARKS.md).", tuning=True
    )
    weight_decay: float = _opt(0.01, "AdamW weight decay.", tuning=True)
    img_size: int | None = _opt(
        None, f"Square training resolution in pixels {_per_device('img_size', ' px')}.", app=True
    )
    last_epoch_scale: float | None = _opt(
        None,
        "The last epoch trains at img_size x last_epoch_scale pixels and validation, test and prediction run at "
        "that size: the earlier epochs learn fast at the small size, the last one adapts the net to the larger "
        "images it is evaluated on (FixRes) (default: 1.25 on a CPU, 1.0 on a CUDA GPU; BENCHMARKS.md).",
    )
    eval_scale: float = _opt(
        1.0,
        "Validation, test and prediction run at eval_scale times the last epoch's training size. Random-crop "
        "training shows objects larger than a centre crop does, so a somewhat larger evaluation size can match "
        "them (FixRes); 1.0 because the accuracy benchmark showed no gain beyond that (BENCHMARKS.md).",
    )
    select_epoch_by: str = _opt(
        "val_loss",
        "Which epoch's weights a run keeps: val_loss = the lowest validation loss; val_acc = the highest "
        "validation accuracy (ties: lower loss). Accuracy on a few hundred validation images moves in steps of "
        "one image, so it often picks an earlier epoch by chance; the loss does not (BENCHMARKS.md).",
        choices=EPOCH_SELECTIONS,
    )
    seed: int = _opt(0, "Seed for the split, initialisation, augmentation and shuffling.", app=True)
    label_smoothing: float = _opt(0.1, "Cross-entropy label smoothing.", tuning=True)
    augment: float = _opt(1.0, "Augmentation strength: 0 = none, 1 = default crop/flip/rotate/colour jitter.")
    warmup_epochs: float = _opt(0.5, "Linear learning-rate warm-up, in epochs.", tuning=True)
    head_warmup: bool = _opt(
        True,
        "Pretrained fine-tuning: first fit the new head on cached frozen features (seconds), then fine-tune all.",
        tuning=True,
    )
    freeze_bn: bool = _opt(
        True,
        "Pretrained fine-tuning: keep BatchNorm statistics from ImageNet (eval mode) instead of small-batch ones.",
        tuning=True,
    )
    calibrate: bool = _opt(
        True,
        "Fit a temperature on the validation split and fold it into the head, so the probabilities shown match "
        "how often the model is right (label smoothing alone leaves them far too low); predictions do not change.",
        tuning=True,
    )
    val_ratio: float = _opt(0.2, "Share of images held out for validation (duplicate-aware).", tuning=True)
    test_ratio: float = _opt(0.2, "Share of images held out for the final test (duplicate-aware).", tuning=True)
    device: str = _opt("auto", "auto (cuda → mps → cpu), cpu, cuda or mps.", choices=DEVICES)
    weights_file: str | None = _opt(None, "Local file with backbone weights (for air-gapped machines).",
                                     flag="--weights", metavar="FILE")
    init_from: str | None = _opt(
        None,
        "Continue from a trained model (run folder, run name in the checkpoint folder or Hub repo id): its backbone "
        "and weights are the start; the head keeps the rows of the classes it knows and gets new ones for added "
        "classes. The split is drawn again from the current data. Without --epochs it trains a quarter of a fresh run's "
        f"epochs {_per_device('warm_start_epochs', '')}.",
        metavar="CKPT",
    )

    def validate(self) -> None:
        """Raise ValueError with one clear line for values no run could use."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.select_epoch_by not in EPOCH_SELECTIONS:
            raise ValueError(f"unknown select_epoch_by {self.select_epoch_by!r}; "
                             f"choose one of {', '.join(EPOCH_SELECTIONS)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.strategy == "linear" and not self.pretrained:
            raise ValueError("strategy 'linear' needs a pretrained backbone (a frozen random net learns little)")
        checks = {
            "epochs": self.epochs is None or self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "warm_start_lr_scale": 0 < self.warm_start_lr_scale <= 1,
            "img_size": self.img_size is None or 16 <= self.img_size <= 1024,
            "eval_scale": 0.5 <= self.eval_scale <= 2
            and (self.img_size is None or 16 <= self.eval_size <= 1024),
            "last_epoch_scale": self.last_epoch_scale is None or 1 <= self.last_epoch_scale <= 2,
            "val_ratio/test_ratio": 0 < self.val_ratio < 1 and 0 < self.test_ratio < 1
            and self.val_ratio + self.test_ratio < 1,
            "augment": 0 <= self.augment <= 2,
            "label_smoothing": 0 <= self.label_smoothing < 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training option(s): {', '.join(bad)}")

    def resolved(self, device: Any) -> TrainConfig:
        """This config with every unset device-default field filled in for ``device`` (torch.device or type)."""
        defaults = device_defaults(device)
        names = (*DEVICE_DEFAULT_FIELDS, "last_epoch_scale")
        unset = {name: getattr(defaults, name) for name in names if getattr(self, name) is None}
        if "epochs" in unset:
            unset["epochs"] = defaults.epochs_for(bool(self.init_from))
        return dataclasses.replace(self, **unset) if unset else self

    def unset_device_defaults(self) -> tuple[str, ...]:
        """Names of the fields left to the device's defaults."""
        return tuple(name for name in DEVICE_DEFAULT_FIELDS if getattr(self, name) is None)

    @property
    def last_epoch_size(self) -> int:
        """The training size of the last epoch (img_size for every other epoch)."""
        return round(self.img_size * (self.last_epoch_scale or 1.0))

    @property
    def eval_size(self) -> int:
        """The one inference resolution: training-time validation/test, evaluate, predict, app, Grad-CAM.

        A checkpoint records it as its top-level ``image_size``; checkpoints from before ``eval_scale`` existed
        have img_size there, which is what they were evaluated at.
        """
        return round(self.last_epoch_size * self.eval_scale)

    def epoch_size(self, epoch: int) -> int:
        """Training size of ``epoch`` (1-based): img_size, and last_epoch_size for the last one."""
        return self.last_epoch_size if epoch == self.epochs else self.img_size

    @property
    def ratios(self) -> tuple[float, float, float]:
        return (1.0 - self.val_ratio - self.test_ratio, self.val_ratio, self.test_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a saved dict, ignoring unknown keys (older/newer checkpoints); fields a saved dict predates
        take the value that reproduces how its run behaved, not today's default."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**_ABSENT_MEANS, **{k: v for k, v in data.items() if k in names}})

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


def default_workspace_root() -> str:
    """Where the app puts editable working copies of read-only datasets (POKEDEMO_WORKSPACE overrides)."""
    return os.environ.get("POKEDEMO_WORKSPACE", "").strip() or "datasets"


# The folder that holds the pokedemo package: the repository checkout, or the folder a Space was made from.
# Bundled files are found from here, never from the current directory, so every command works from any cwd.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DATA = "data/pokemon"  # relative to PROJECT_ROOT
STARTER_CHECKPOINT = "checkpoints/pokemon-starter"  # relative to PROJECT_ROOT
STARTER_COMPARISON = "comparison.json"  # in the starter's folder: the recorded pretrained-vs-scratch comparison


def bundled_data_dir() -> Path:
    """The dataset that ships with pokedemo (may be absent in a bare install of the package)."""
    return PROJECT_ROOT / BUNDLED_DATA


def default_data_dir() -> str:
    """The dataset used when none is given: $POKEDEMO_DATA, else the bundled data/pokemon."""
    return os.environ.get("POKEDEMO_DATA", "").strip() or str(bundled_data_dir())


def starter_checkpoint() -> Path:
    """The starter model that ships with pokedemo, trained on the bundled data (scripts/make_starter.py)."""
    return PROJECT_ROOT / STARTER_CHECKPOINT


def default_model() -> str:
    """The model used when none is chosen: $POKEDEMO_MODEL (a run folder or a Hub repo id), else the starter."""
    return os.environ.get("POKEDEMO_MODEL", "").strip() or str(starter_checkpoint())


def project_relative(path: str | os.PathLike) -> str | None:
    """``path`` relative to PROJECT_ROOT (posix) when it lies inside it, else None; recorded in checkpoints so
    that a run on the bundled data finds its images again in another clone."""
    try:
        return Path(path).resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return None
