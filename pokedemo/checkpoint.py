"""Self-describing checkpoints: ``model.safetensors`` + ``config.json`` + ``history.json`` in a run directory.

Every file is written atomically (temporary file in the same directory, fsync, rename), weights before the
config, and the config records the SHA-256 of the weights it describes. A run killed at any moment therefore
leaves either the previous consistent pair or a pair whose hash check fails, never a checkpoint that looks
valid but is not. While a run trains its status is ``"training"``; such runs are hidden from listings and
refused by ``load_checkpoint`` unless explicitly allowed. No pickle is ever loaded.

torch, safetensors and the model builders are imported by the functions that read or write weights: listing
runs and reading ``config.json`` (the CLI, the app's menus) does not load torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pokedemo import __version__
from pokedemo.config import PROJECT_ROOT

FORMAT = "pokedemo-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
STATUSES = ("training", "complete", "cancelled")
REQUIRED_KEYS = {
    "format": str, "backbone": str, "num_classes": int, "class_names": list, "image_size": int,
    "mean": list, "std": list, "weights_sha256": str, "status": str,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line that says why."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def new_run_dir(root: str | os.PathLike, backbone: str, pretrained: bool, name: str | None = None) -> Path:
    """Create a fresh, uniquely named run directory under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = name or f"{stamp}-{backbone}-{'pretrained' if pretrained else 'scratch'}"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "run"
    for suffix in [""] + [f"-{i}" for i in range(2, 1000)]:
        candidate = root / f"{base}{suffix}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CheckpointError(f"could not create a run directory under {root}")


def save_weights(run_dir: Path, state_dict: dict[str, Any]) -> str:
    """Write ``model.safetensors`` atomically; returns its SHA-256."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    data = save(tensors, metadata={"format": "pt", "producer": "pokedemo"})
    atomic_write_bytes(Path(run_dir) / WEIGHTS_FILE, data)
    return hashlib.sha256(data).hexdigest()


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **config, "updated_at": utc_now()}
    atomic_write_json(Path(run_dir) / CONFIG_FILE, config)


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_json(Path(run_dir) / HISTORY_FILE, history)


def library_versions() -> dict[str, str]:
    import torch
    import torchvision


    versions = {"pokedemo": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:  # timm is optional for resnet18-only installs
        pass
    return versions


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json``; raises CheckpointError with one clear line."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"checkpoint not found: {run_dir} is not a directory")
    if not path.is_file():
        raise CheckpointError(f"not a pokedemo checkpoint: {path} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"malformed {path}: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"not a pokedemo checkpoint: {path} lacks \"format\": \"{FORMAT}\"")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise CheckpointError(f"malformed {path}: field {key!r} missing or not a {kind.__name__}")
    names = config["class_names"]
    if len(names) != config["num_classes"] or not all(isinstance(n, str) for n in names) or len(names) < 2:
        raise CheckpointError(f"malformed {path}: class_names must list num_classes (>= 2) names")
    if len(config["mean"]) != 3 or len(config["std"]) != 3:
        raise CheckpointError(f"malformed {path}: mean and std need 3 values each")
    if config["status"] not in STATUSES:
        raise CheckpointError(f"malformed {path}: unknown status {config['status']!r}")
    return config


def recorded_data_root(config: dict[str, Any]) -> Path | None:
    """The folder a run was trained on, found on this machine: the recorded absolute path when it is here, else
    the same folder inside this project (a run on the bundled data/pokemon, from any clone and any cwd)."""
    dataset = config.get("dataset") or {}
    root, project_path = dataset.get("root"), dataset.get("project_path")
    candidates = [Path(root)] if root and Path(root).is_absolute() else []
    candidates += [PROJECT_ROOT / project_path] if project_path else []
    candidates += [Path(root)] if root and not Path(root).is_absolute() else []
    return next((path for path in candidates if path.is_dir()), None)


@dataclass
class LoadedCheckpoint:
    path: Path
    config: dict[str, Any]
    model: Any  # pokedemo.models.Classifier, in eval mode
    open_set: Any = None  # pokedemo.openset.OpenSet: the recorded rule, or the fallback of older checkpoints

    @property
    def classes(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])


def load_checkpoint(run_dir: str | os.PathLike, *, allow_incomplete: bool = False) -> LoadedCheckpoint:
    """Validate and load a checkpoint onto the CPU. Raises CheckpointError (one line) on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pokedemo.models import (
        UnknownBackbone, WeightsUnavailable, build_classifier, is_hub_backbone, remember_hub_backbone,
    )
    from pokedemo.openset import TENSOR_PREFIX as OPEN_SET_PREFIX, OpenSet

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config["status"] == "training" and not allow_incomplete:
        raise CheckpointError(f"{run_dir} is an unfinished run (status 'training'); it was interrupted or is still running")
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"incomplete checkpoint: {weights} is missing")
    if sha256_file(weights) != config["weights_sha256"]:
        raise CheckpointError(f"incomplete or altered checkpoint: {weights} does not match its config.json")
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable weights in {weights}: {str(exc).splitlines()[0]}") from None
    try:
        if is_hub_backbone(config["backbone"]) and "backbone_config" in config:
            remember_hub_backbone(config["backbone"], config["backbone_config"])  # no Hub needed to rebuild it
        model = build_classifier(config["backbone"], config["num_classes"], pretrained=False)
    except (UnknownBackbone, WeightsUnavailable) as exc:
        raise CheckpointError(f"{run_dir}: {exc}") from None
    statistics = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith(OPEN_SET_PREFIX)]}
    try:
        open_set = OpenSet.from_checkpoint(config.get("open_set"), statistics, config["num_classes"])
    except ValueError as exc:
        raise CheckpointError(f"{run_dir}: {exc}") from None
    expected = model.state_dict()
    _check_shapes(expected, tensors, weights)
    # Weights may be stored in half precision to stay small (the committed starter is); compute in the model's own
    # dtype so predictions do not depend on how the file was stored.
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    model.eval()
    return LoadedCheckpoint(path=run_dir, config=config, model=model, open_set=open_set)


def _check_shapes(expected: dict[str, Any], found: dict[str, Any], where: Path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"weights in {where} do not fit the architecture in config.json: {detail}")
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"weights in {where} do not fit config.json: {key} has shape {tuple(found[key].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )


def weights_look_complete(path: Path) -> bool:
    """Cheap check for listings: safetensors validates the header (a real safetensors file whose tensors cover it
    exactly) without reading any tensor. Catches truncated files and other formats renamed; full validation
    (shapes against config.json) happens on load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):  # the framework is only used to read tensors; none is read
            return True
    except (OSError, SafetensorError):
        return False


@dataclass
class CheckpointInfo:
    path: Path
    name: str
    backbone: str
    pretrained: bool
    status: str
    test_acc: float | None
    created_at: str

    def label(self) -> str:
        acc = f"test {self.test_acc:.1%}" if self.test_acc is not None else self.status
        kind = "pretrained" if self.pretrained else "scratch"
        return f"{self.name} · {self.backbone} {kind} · {acc}"


def checkpoint_info(run_dir: str | os.PathLike) -> CheckpointInfo | None:
    """What a listing shows of one run directory; None when it is unfinished or malformed."""
    run_dir = Path(run_dir)
    try:
        config = read_config(run_dir)
    except CheckpointError:
        return None
    if config["status"] == "training" or not weights_look_complete(run_dir / WEIGHTS_FILE):
        return None
    test = (config.get("metrics") or {}).get("test") or {}
    return CheckpointInfo(
        path=run_dir, name=run_dir.name, backbone=config["backbone"],
        pretrained=bool(config.get("pretrained", True)), status=config["status"],
        test_acc=test.get("accuracy"), created_at=str(config.get("created_at", "")),
    )


def newest_first(infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
    return sorted(infos, key=lambda info: (info.created_at, info.name), reverse=True)


def list_checkpoints(root: str | os.PathLike) -> list[CheckpointInfo]:
    """Usable runs under ``root``, newest first; unfinished or malformed runs are left out."""
    root = Path(root)
    found = [checkpoint_info(run_dir) for run_dir in (root.iterdir() if root.is_dir() else [])]
    return newest_first([info for info in found if info is not None])


@dataclass(frozen=True)
class WarmStart:
    """Where a run's starting weights came from and what its head kept (recorded as ``init_from``)."""

    source: str                 # the run folder the weights were read from
    kept: list[str]             # classes whose head rows come from the checkpoint
    added: list[str]            # classes the checkpoint does not know: freshly initialised rows
    dropped: list[str]          # classes of the checkpoint the data no longer has

    def record(self) -> dict[str, Any]:
        return {"checkpoint": self.source, "kept_classes": self.kept, "added_classes": self.added,
                "dropped_classes": self.dropped}


def warm_start(model: Any, classes: list[str], checkpoint: LoadedCheckpoint) -> WarmStart:
    """Load ``checkpoint``'s backbone into ``model`` (a Classifier for ``classes``) and, row by class name, its
    head: a class the checkpoint knows keeps its row, a new class keeps the fresh row ``model`` was built with.

    A calibrated checkpoint's head has its temperature folded in (``pokedemo.calibration``); it is taken out
    again, so training continues from the head as it was trained."""
    import torch

    if checkpoint.config["backbone"] != model.backbone:
        raise CheckpointError(f"{checkpoint.path} is a {checkpoint.config['backbone']} model, not {model.backbone}")
    state = checkpoint.model.state_dict()
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    missing, _ = model.load_state_dict(features, strict=False)
    if set(missing) - {"head.weight", "head.bias"}:
        raise CheckpointError(f"{checkpoint.path}: backbone weights do not fit ({', '.join(sorted(missing)[:3])})")
    temperature = float((checkpoint.config.get("metrics") or {}).get("calibration", {}).get("temperature") or 1.0)
    old = checkpoint.classes
    with torch.no_grad():
        for row, name in enumerate(classes):
            if name in old:
                model.head.weight[row] = state["head.weight"][old.index(name)] * temperature
                model.head.bias[row] = state["head.bias"][old.index(name)] * temperature
    return WarmStart(source=str(checkpoint.path), kept=[c for c in classes if c in old],
                     added=[c for c in classes if c not in old], dropped=[c for c in old if c not in classes])
