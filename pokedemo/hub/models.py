"""Checkpoints on the Hugging Face Hub: push a run folder with its model card (``pokedemo.hub.card``), pull a
model back by repo id.

A pushed repo holds pokedemo's own files (``model.safetensors``, ``config.json``, ``history.json``) plus a
``README.md`` model card. Its ``config.json`` serves two readers at once: pokedemo (which checks
``"format": "pokedemo-checkpoint"`` and ignores other keys) and timm's Hub loader (which reads
``architecture``, ``num_classes``, ``label_names`` and ``pretrained_cfg`` and ignores the rest). timm expects
its own tensor names, so for backbones that timm can build (resnet18, efficientnet_lite0) the same weights are
also stored under timm's names in ``timm_model.safetensors``; ``pretrained_cfg.hf_hub_filename`` points timm
there, so ``timm.create_model("hf-hub:NAMESPACE/NAME", pretrained=True)`` works. (The Hub's Xet storage
chunks files by content, so the identical tensor bytes of the two files are largely stored and sent once.)

Settings, token and one-line errors are those of ``pokedemo.hub.client``. Functions return data or raise; the
CLI and the app word the outcome (``pokedemo.app.text``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pokedemo.checkpoint import (
    CONFIG_FILE,
    FORMAT,
    HISTORY_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
)
from pokedemo.hub.card import CARD_FILE, TIMM_WEIGHTS_FILE, build_model_card
from pokedemo.hub.limits import bounded_snapshot_download
from pokedemo.hub.client import (
    HubContext,
    HubError,
    RepoRef,
    check_can_write,
    hub_api,
    hub_errors,
    offline_mode,
    parse_repo_ref,
    read_context,
    write_context,
)

POKEDEMO_FILES = (CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE, CARD_FILE)  # what a pull downloads


@dataclass(frozen=True)
class OnnxExport:
    """An ONNX export to push with its checkpoint: its record (``pokedemo.export``'s export.json: checks,
    figures, metadata) and the files to upload beside the weights."""

    record: dict[str, Any]
    files: list[Path]


@dataclass(frozen=True)
class TimmLayout:
    """How a pokedemo backbone maps onto a timm model: its name and where the classifier lives."""

    architecture: str
    classifier: str
    first_conv: str


TIMM_LAYOUTS = {
    "resnet18": TimmLayout("resnet18", classifier="fc", first_conv="conv1"),  # torchvision names == timm's
    **{f"efficientnet_lite{n}": TimmLayout(f"tf_efficientnet_lite{n}", classifier="classifier", first_conv="conv_stem")
       for n in (0, 1, 2)},
}


def timm_layout(config: dict[str, Any]) -> TimmLayout | None:
    """The timm layout of a checkpoint's backbone: listed above, or read from the timm config a Hub backbone's
    checkpoint records (``backbone_config``); None when there is none."""
    if config["backbone"] in TIMM_LAYOUTS:
        return TIMM_LAYOUTS[config["backbone"]]
    hub = config.get("backbone_config") or {}
    pretrained = hub.get("pretrained_cfg") or {}
    classifier, first_conv = pretrained.get("classifier"), pretrained.get("first_conv")
    if isinstance(classifier, str) and isinstance(first_conv, str) and hub.get("architecture"):
        return TimmLayout(hub["architecture"], classifier=classifier, first_conv=first_conv)
    return None


@dataclass(frozen=True)
class PushResult:
    url: str
    repo_id: str
    commit_oid: str
    commit_url: str
    timm_compatible: bool
    private: bool  # the repo's visibility after the push (an existing repo keeps its own)


# --------------------------------------------------------------------------------------------- pull


def download_checkpoint(spec: str, *, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                        budget: int | None = None) -> Path:
    """``NAMESPACE/NAME[@REVISION]`` → the snapshot directory in ``cache_dir`` (None: the normal Hub cache),
    validated like a local checkpoint; within the model download limits and ``budget``, the bytes it may add
    there (``pokedemo.hub.limits``). Offline (HF_HUB_OFFLINE=1) a cached snapshot is used. ``token`` False:
    none at all, not HF_TOKEN. Raises HubError (one line)."""
    ref = parse_repo_ref(spec)
    ctx = read_context("download", ref, token, cache_dir)
    with hub_errors(ctx):
        folder = bounded_snapshot_download(ctx, repo_type="model", label=f"model repo {ref.label}",
                                           allow_patterns=list(POKEDEMO_FILES), local_files_only=offline_mode(),
                                           budget=budget)
    return _validated_snapshot(folder, ref)


def _validated_snapshot(folder: Path, ref: RepoRef) -> Path:
    """Refuse, in one line, a repo that is not a usable pokedemo model (weights are checked when loaded)."""
    not_ours = f"{ref.label} is not a pokedemo model"
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubError(f"{not_ours}: the repo has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise HubError(f"{not_ours}: its {CONFIG_FILE} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise HubError(f"{not_ours}: its {CONFIG_FILE} has no \"format\": \"{FORMAT}\"") from None
    try:
        read_config(folder)
    except CheckpointError as err:
        detail = str(err).replace(str(folder), ref.label)  # the cache path means nothing to the user
        raise HubError(f"{ref.label} has a broken pokedemo config: {detail}") from None
    if not (folder / WEIGHTS_FILE).is_file():
        raise HubError(f"{ref.label} is not a complete pokedemo model: the repo has no {WEIGHTS_FILE}")
    return folder


# --------------------------------------------------------------------------------------------- push


def push_checkpoint(checkpoint: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str | None = None, onnx: OnnxExport | None = None) -> str:
    """Upload a run directory with a model card to a Hub model repo (created if needed); returns its URL."""
    return push_checkpoint_details(checkpoint, repo_id, private=private, token=token,
                                   commit_message=commit_message, onnx=onnx).url


def push_checkpoint_details(checkpoint: str | os.PathLike, repo_id: str, *, private: bool = False,
                            token: str | None = None, commit_message: str | None = None,
                            onnx: OnnxExport | None = None) -> PushResult:
    """push_checkpoint, returning the commit too. Raises HubError / CheckpointError (one line each).

    ``onnx``: an export of this checkpoint (``pokedemo.export``); its files (``model.onnx``, ``predict_onnx.py``)
    are uploaded beside the weights and the card shows how to use them, with the export's checks and figures."""
    ref = parse_repo_ref(repo_id, allow_revision=False)
    loaded = load_checkpoint(_local_run_dir(checkpoint))
    if onnx is not None:
        _check_onnx_export(onnx, loaded.config)
    ctx = write_context("push", ref, token)
    with hub_errors(ctx), tempfile.TemporaryDirectory(prefix="pokedemo-push-") as staging:
        api = hub_api(ctx)
        check_can_write(api, ctx)
        url, is_private = _ensure_repo(api, ctx, private)
        timm_ok = write_hub_folder(loaded, Path(staging), ref.repo_id, onnx)
        message = commit_message or f"Upload {loaded.config['backbone']} checkpoint {Path(loaded.path).name}"
        info = api.upload_folder(repo_id=ref.repo_id, folder_path=staging, commit_message=message)
    return PushResult(url=url, repo_id=ref.repo_id, commit_oid=info.oid, commit_url=info.commit_url,
                      timm_compatible=timm_ok, private=is_private)


def _local_run_dir(checkpoint: str | os.PathLike) -> Path:
    path = Path(checkpoint).expanduser()
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {checkpoint} is not a run directory")
    return path


def _ensure_repo(api: Any, ctx: HubContext, private: bool) -> tuple[str, bool]:
    """(URL, private) of the repo, created when it does not exist yet. An existing repo keeps its visibility,
    so never upload publicly what was meant to be private."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.model_info(ctx.ref.repo_id)
    except RepositoryNotFoundError:  # missing, or someone else's private repo: creating it says which
        return str(api.create_repo(ctx.ref.repo_id, private=private, exist_ok=True)), private
    if private and not info.private:
        raise HubError(f"{ctx.ref.repo_id} already exists and is public; nothing was uploaded because --private "
                       "was asked (make the repo private on the Hub, or push without --private)")
    return f"{ctx.endpoint}/{ctx.ref.repo_id}", bool(info.private)


def _check_onnx_export(onnx: OnnxExport, config: dict[str, Any]) -> None:
    exported_from = (onnx.record.get("metadata") or {}).get("weights_sha256")
    if exported_from != config["weights_sha256"]:
        raise CheckpointError("the ONNX export was made from other weights than this checkpoint's")
    missing = [path.name for path in onnx.files if not Path(path).is_file()]
    if missing:
        raise CheckpointError(f"the ONNX export lacks {', '.join(missing)}")


def write_hub_folder(loaded: Any, folder: Path, repo_id: str, onnx: OnnxExport | None = None) -> bool:
    """Write the files of a Hub repo for a loaded checkpoint into ``folder``; True when timm can load it."""
    run_dir = Path(loaded.path)
    shutil.copyfile(run_dir / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    for path in onnx.files if onnx else ():
        shutil.copyfile(path, folder / path.name)
    history = _read_history(run_dir)
    (folder / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    layout = timm_weights(loaded, folder / TIMM_WEIGHTS_FILE)
    config = hub_config(loaded.config, layout)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    card = build_model_card(config, history, repo_id, timm_architecture=layout.architecture if layout else None,
                            onnx=onnx.record if onnx else None)
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return layout is not None


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    try:
        history = json.loads((run_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return history if isinstance(history, list) else []


# --------------------------------------------------------------------------------------------- timm


def hub_config(config: dict[str, Any], layout: TimmLayout | None) -> dict[str, Any]:
    """The checkpoint's config as published: local absolute paths reduced to names, plus timm's keys."""
    out = dict(config)
    dataset = dict(out.get("dataset") or {})
    if dataset.get("root"):
        dataset["root"] = Path(str(dataset["root"])).name  # a local path says nothing useful and leaks a username
    out["dataset"] = dataset
    train_config = dict(out.get("train_config") or {})
    if train_config.get("weights_file"):
        train_config["weights_file"] = Path(str(train_config["weights_file"])).name
    out["train_config"] = train_config
    if layout is not None:
        out.update(timm_config(config, layout))
    return out


def timm_config(config: dict[str, Any], layout: TimmLayout) -> dict[str, Any]:
    """The keys timm's ``load_model_config_from_hf`` reads. The rest of config.json is ignored by timm."""
    size = int(config["image_size"])
    return {
        "pokedemo_architecture": config.get("architecture", "pokedemo.models.Classifier"),
        "architecture": layout.architecture,
        "num_classes": int(config["num_classes"]),
        "num_features": int(config.get("feature_dim") or 0) or None,
        "label_names": list(config["class_names"]),
        "pretrained_cfg": {
            "tag": "pokedemo",
            "custom_load": False,
            "hf_hub_filename": TIMM_WEIGHTS_FILE,  # timm's tensor names; model.safetensors keeps pokedemo's
            "input_size": [3, size, size],
            "fixed_input_size": False,
            "interpolation": "bilinear",  # pokedemo's preprocessing: shorter side to size, centre crop
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(config["mean"]),
            "std": list(config["std"]),
            "num_classes": int(config["num_classes"]),
            "first_conv": layout.first_conv,
            "classifier": layout.classifier,
        },
    }


def timm_state_dict(state: dict[str, Any], layout: TimmLayout) -> dict[str, Any]:
    """pokedemo's ``features.*`` + ``head.*`` tensors under timm's names."""
    out = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    out[f"{layout.classifier}.weight"] = state["head.weight"]
    out[f"{layout.classifier}.bias"] = state["head.bias"]
    return out


def timm_weights(loaded: Any, path: Path) -> TimmLayout | None:
    """Write the weights in timm's layout when timm builds this backbone with exactly these tensors."""
    layout = timm_layout(loaded.config)
    if layout is None:
        return None
    try:
        import timm
    except ImportError:
        return None
    state = timm_state_dict(loaded.model.state_dict(), layout)
    expected = timm.create_model(layout.architecture, pretrained=False, num_classes=int(loaded.config["num_classes"]))
    shapes = {key: tuple(value.shape) for key, value in expected.state_dict().items()}
    if shapes != {key: tuple(value.shape) for key, value in state.items()}:
        return None  # a timm version with other names: publish pokedemo's files only
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path),
              metadata={"format": "pt", "producer": "pokedemo"})
    return layout

