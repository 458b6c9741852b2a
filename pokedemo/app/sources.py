"""What the app reads from the engine: datasets, checkpoints, backbones, models from the Hub, widget values.

Gradio-free glue between the handlers (``handlers.py``) and the engine modules; torch-backed modules are
imported inside the functions that need them, so importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pokedemo.app import text
from pokedemo.app.views import conflict_fixable, conflict_thumbnails
from pokedemo.checkpoint import CheckpointError, checkpoint_info, list_checkpoints, read_config, recorded_data_root
from pokedemo.config import (
    STARTER_COMPARISON,
    TrainConfig,
    default_data_dir,
    default_model,
    resolve_device,
    starter_checkpoint,
)
from pokedemo.data import DatasetError, scan_dataset
from pokedemo.doctor import diagnose
from pokedemo.hub import HubError, download_checkpoint, hub_cache_dir, open_data, push_checkpoint_details
from pokedemo.model_ref import in_hub_cache, resolve_model

EXAMPLES_PER_CLASS = 2
_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- datasets


def prefilled_data_dir() -> str:
    """The Train tab's folder: ``$POKEDEMO_DATA``, else the bundled data/pokemon (found from the package, so it
    is there wherever the app is started from), else empty."""
    folder = default_data_dir()
    return folder if os.environ.get("POKEDEMO_DATA", "").strip() or Path(folder).is_dir() else ""


def summarise_dataset(folder: str | None, seed: float = 0, img_size: float | None = None,
                      hub: Mapping[str, Any] | None = None) -> str:
    """Scan ``folder`` (or a ``hf://datasets/...`` address, fetched as ``hub`` says: ``open_data``'s token, cache
    folder and budget) and describe it; a friendly line instead of an exception for anything wrong."""
    if not folder or not str(folder).strip():
        return text.NO_DATASET
    defaults = TrainConfig()
    try:
        source = open_data(str(folder).strip(), **(hub or {}))
        # Scanning at the size training decodes at fills the tensor cache, so Train starts without decoding again.
        dataset = scan_dataset(source.root, image_size=_decode_size(img_size))
        split = source.split(dataset, defaults.ratios, int(seed or 0))
    except (DatasetError, ValueError, OSError, HubError) as exc:
        return f"⚠️ {exc}"
    summary = text.dataset_summary_markdown(dataset, split)
    return f"{summary}\n\nℹ️ {source.note}" if source.note else summary


def _decode_size(img_size: float | None) -> int | None:
    """The size a training run at ``img_size`` keeps its images at on this machine (its last epoch's)."""
    if not img_size:
        return None

    return TrainConfig(img_size=int(img_size)).resolved(resolve_device("auto")).last_epoch_size


def doctor_panel(folder: str | None, hub: Mapping[str, Any] | None = None) -> tuple[str, list, dict[str, Any] | None]:
    """(Markdown report, conflict strips for a gr.Gallery, the strips' fix-panel state) for the dataset folder
    (a Hub dataset fetched as ``hub`` says); a message and no strips when it is unusable."""
    folder = (folder or "").strip()
    if not folder:
        return text.DOCTOR_EMPTY, [], None
    try:
        root = open_data(folder, **(hub or {})).root  # a Hub dataset comes from its cache folder once downloaded
        report = diagnose(root)
    except (DatasetError, ValueError, OSError, HubError) as exc:
        return f"⚠️ {exc}", [], None
    return text.doctor_panel_markdown(report), conflict_thumbnails(report, root), conflict_fixable(report, root)


# ------------------------------------------------------------------------------- editing a dataset


def class_names(folder: str | os.PathLike) -> list[str]:
    """The class folders of a local dataset folder (empty when it is not one)."""
    from pokedemo.curation import CurationError, Curator

    try:
        return Curator(folder).classes()
    except (CurationError, OSError):
        return []


def dataset_classes(folder: str | None, hub: Mapping[str, Any] | None = None) -> list[str]:
    """The class folders of the dataset box's folder or Hub dataset (empty when it is not usable)."""
    try:
        return class_names(_local_root(folder or "", hub))
    except (ValueError, OSError, HubError):
        return []


def edit_dataset(folder: str, workspace: str | os.PathLike, action: str, *args: Any,
                 hub: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Apply one ``Curator`` action (``move``, ``set_aside``, ``add_pictures``) to the dataset ``folder`` (a
    path or a Hub dataset), or to its working copy when ``folder`` is read-only (the bundled data, any Hub
    download); (message, edited folder). Raises CurationError (one line) for a change that cannot be made."""
    from pokedemo.curation import Curator, editable_root

    source = _local_root(folder, hub)
    root, made = editable_root(source, workspace)
    result = getattr(Curator(root), action)(*args)
    message = text.change_message(result)
    if root != source:
        message += "\n\n" + text.working_copy_note(source, root, made)
    return message, str(root)


def undo_last_change(folder: str, workspace: str | os.PathLike,
                     hub: Mapping[str, Any] | None = None) -> tuple[str, str | None]:
    """Undo the newest change of the dataset ``folder`` (or of its working copy); (message, edited folder or
    None when there was nothing to undo). Raises CurationError when the change cannot be reverted."""
    from pokedemo.curation import Curator, existing_copy, is_read_only

    source = _local_root(folder, hub)
    root = existing_copy(source, workspace) if is_read_only(source) else source
    change = Curator(root).undo() if root is not None else None
    if change is None:
        return text.NOTHING_TO_UNDO, None
    return text.undo_message(change), str(root)


def _local_root(folder: str, hub: Mapping[str, Any] | None = None) -> Path:
    """The local folder of a dataset path or ``hf://datasets/...`` address (its download, fetched as ``hub``
    says)."""
    from pokedemo.curation import CurationError

    if not (folder or "").strip():
        raise CurationError(text.NO_DATASET)
    return Path(open_data(folder.strip(), **(hub or {})).root).resolve()


def predict_uploads(predictor: Any, paths: list[str]) -> list[Any]:
    """``ImagePrediction`` per uploaded picture, named by its file name, in upload order: a zip is extracted
    safely and stands for the pictures inside it (named ``zip/path inside``); a zip that cannot be used is one
    row with the reason. Predictions run in chunks (``predict_files``)."""
    import dataclasses

    from pokedemo.predict import ImagePrediction, image_files, predict_files
    from pokedemo.uploads import UploadError, extract_dataset_zip, new_upload_dir

    entries: list[tuple[str, str | None, str | None]] = []  # (name, file to predict, why it cannot be)
    for path in paths:
        name = Path(path).name
        if Path(path).suffix.lower() != ".zip":
            entries.append((name, path, None))
            continue
        target = new_upload_dir()
        try:
            extract_dataset_zip(path, target)
        except UploadError as exc:
            entries.append((name, None, f"{name}: {exc}"))
            continue
        inside = image_files([target])
        entries += [(f"{name}/{Path(p).relative_to(target).as_posix()}", p, None) for p in inside]
        if not inside:
            entries.append((name, None, f"{name}: no pictures inside"))
    predicted = iter(predict_files(predictor, [file for _, file, _ in entries if file is not None]))
    return [dataclasses.replace(next(predicted), image=name) if file is not None
            else ImagePrediction(name, error=problem) for name, file, problem in entries]



def test_split_examples(run_dir: str | os.PathLike | None, per_class: int = EXAMPLES_PER_CLASS) -> list[str]:
    """A few distinct pictures per class from a model's recorded *test* split (images it never trained on),
    copied into a fresh temporary folder: Gradio serves example files only from the working directory or the
    temp directory, and the app may be started anywhere. Empty when the model or its images are not here."""
    try:
        config = read_config(run_dir) if run_dir else None
    except CheckpointError:
        config = None
    root = recorded_data_root(config) if config else None
    if root is None:
        return []
    picked: dict[str, list[Path]] = {}
    seen: set[str] = set()
    for entry in config.get("split") or []:
        label, path = str(entry.get("label")), (root / str(entry.get("path"))).resolve()
        chosen = picked.setdefault(label, [])
        if (entry.get("split") == "test" and len(chosen) < per_class and entry.get("sha256") not in seen
                and path.is_relative_to(root.resolve()) and path.is_file()):
            chosen.append(path)
            seen.add(entry.get("sha256"))
    if not any(picked.values()):
        return []
    folder = Path(tempfile.mkdtemp(prefix="pokedemo-examples-"))
    atexit.register(shutil.rmtree, folder, True)
    copies = []
    for label in sorted(picked):
        for path in picked[label]:
            copies.append(folder / f"{label}-{path.name}")
            shutil.copyfile(path, copies[-1])
    return [str(copy) for copy in copies]


# ------------------------------------------------------------------------------------------ options


def backbone_choices() -> list[tuple[str, str]]:
    """(label, name) per offline backbone, the label telling whether its pretrained weights are here, then one
    Hub model as the example of what can be typed in (the picker takes any ``timm/<model>``).

    Imports torch, torchvision and timm (seconds), so the app calls it on page load, not while starting.
    """
    from pokedemo.models import BACKBONE_NAMES, weights_status

    offline = [(f"{name} — pretrained weights: {weights_status(name)}", name) for name in BACKBONE_NAMES]
    return [*offline, (text.HUB_BACKBONE_LABEL, text.HUB_BACKBONE_EXAMPLE)]


def default_backbone(choices: list[tuple[str, str]]) -> str:
    """TrainConfig's backbone if its weights are here, else the first offline one whose weights are, else the
    default."""
    from pokedemo.models import is_hub_backbone

    available = [name for label, name in choices if not label.endswith("needs download") and not is_hub_backbone(name)]
    preferred = TrainConfig().backbone
    if preferred in available or not available:
        return preferred
    return available[0]


def training_defaults(continuing: bool = False) -> tuple[int, int, str]:
    """(epochs, image size, explanation) the Train tab offers on the device training will run on: the CPU's
    defaults on a CPU, larger ones on a CUDA GPU (``pokedemo.config.DEVICE_DEFAULTS``); fewer epochs when the run
    continues from a model. Imports torch."""
    device = resolve_device("auto")
    config = TrainConfig(init_from="a model" if continuing else None).resolved(device)
    return config.epochs, config.img_size, text.defaults_text(device, continuing)


def warm_up(model: str | os.PathLike | None = None) -> None:
    """Import the engine (torch, torchvision, timm) and get ``model`` (the default model) ready in the background,
    so the server answers at once and neither the first prediction nor the first page load or training waits for
    these imports."""
    try:
        import pokedemo.predict

        if model is not None:
            predictor = pokedemo.predict.get_predictor(model)  # cached: the first prediction reuses it
            # One forward pass on a blank image: torch prepares its kernels for this input size on the first
            # call, which would otherwise be the first user's wait.
            predictor.warm_up()
        import pokedemo.train  # the engine, imported now rather than at the first training

        backbone_choices()
    except Exception:  # noqa: BLE001 - a broken install shows up, with its message, where it is used
        pass


def cam_target_value(choice: str | None, classes: list[str]) -> str | None:
    """The class the Grad-CAM picker asks for, or None for the top class (also when the picked class is unknown)."""
    return choice if choice in classes and choice != text.TOP_CLASS else None


def cam_choices(classes: list[str]) -> list[str]:
    return [text.TOP_CLASS, *classes]


@dataclass(frozen=True)
class ThresholdControl:
    """The "how sure must it be" slider for one model: its score's range and the model's default threshold."""

    low: float
    high: float
    default: float
    info: str


def threshold_control(score: str, thresholds: list[float], how_fitted: str | None) -> ThresholdControl:
    """The control for a rule (``how_fitted`` None: the fallback of a model that records none). The range is the
    score's own bounds, else one wide enough around the default to accept or reject everything."""
    from pokedemo.openset import score_kind

    shared = thresholds[0] if len(set(thresholds)) == 1 else None
    default = round(shared if shared is not None else sum(thresholds) / len(thresholds), 4)
    bounds = score_kind(score).bounds
    spread = max(abs(default), 1.0)
    low, high = bounds if bounds is not None else (round(default - spread, 4), round(default + spread, 4))
    return ThresholdControl(low, high, default, text.threshold_info(score, shared, how_fitted))


def model_threshold_control(predictor) -> ThresholdControl:
    rule = predictor.open_set
    return threshold_control(rule.score, [float(t) for t in rule.thresholds], rule.how_fitted())


def recorded_threshold_control(run_dir: str | os.PathLike | None) -> ThresholdControl:
    """The control for a checkpoint from its config.json alone (no model load): the page's first one."""
    from pokedemo.checkpoint import CheckpointError, read_config
    from pokedemo.openset import DEFAULT_MAX_PROB_THRESHOLD, OpenSet

    try:
        record = read_config(run_dir).get("open_set") if run_dir else None
    except CheckpointError:
        record = None
    if not record:
        return threshold_control("max_prob", [DEFAULT_MAX_PROB_THRESHOLD], None)
    return threshold_control(record["score"], record["thresholds"], OpenSet.how_fitted_from_record(record))


def chosen_threshold(value: float | None, predictor) -> float | None:
    """The threshold the control asks for, or None when it shows the model's own default (its per-class
    thresholds, if it has them, then apply)."""
    if value is None:
        return None
    default = model_threshold_control(predictor).default
    return None if abs(float(value) - default) < 1e-4 else float(value)


# -------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class DefaultModel:
    """The model the app offers before anyone trains: the bundled starter, or ``$POKEDEMO_MODEL``."""

    path: Path  # resolved run directory (for a Hub model: its snapshot in the Hub cache)
    label: str
    created_at: str


def load_default_model() -> DefaultModel | None:
    """``$POKEDEMO_MODEL`` (a Hub repo id, downloaded now, or a run folder), else the bundled starter; None when
    neither is usable. A model that cannot be loaded is logged and replaced by the starter."""
    spec, starter = default_model(), starter_checkpoint()
    try:
        path = resolve_model(spec)
    except HubError as err:
        _log.warning("POKEDEMO_MODEL=%s cannot be loaded, using the starter model instead: %s", spec,
                     text.hub_load_failed(spec, err, None))
        path = starter
    except CheckpointError:
        path = None
    info = checkpoint_info(path) if path is not None else None
    if info is None and path != starter:
        _log.warning("POKEDEMO_MODEL=%s is not a usable checkpoint, using the starter model instead", spec)
        path, info = starter, checkpoint_info(starter)
    if info is None:
        return None
    label = hub_choice(spec, path)[0] if in_hub_cache(path) else info.label()
    return DefaultModel(path=Path(path).resolve(), label=label, created_at=info.created_at)


def checkpoint_choices(root: str | os.PathLike, default: DefaultModel | None = None) -> list[tuple[str, str]]:
    """(label, run directory) of every usable checkpoint under ``root`` and the default model, newest first:
    the default model comes first until someone trains a run."""
    entries = [(info.created_at, info.label(), str(info.path)) for info in list_checkpoints(root)]
    if default is not None and all(Path(value).resolve() != default.path for _, _, value in entries):
        entries.append((default.created_at, default.label, str(default.path)))
    entries.sort(key=lambda entry: entry[0], reverse=True)  # stable: equal times keep the listing's order
    return [(label, value) for _, label, value in entries]


def recorded_comparison() -> dict[str, Any] | None:
    """The pretrained-vs-scratch comparison recorded beside the starter (scripts/make_starter.py), if any."""
    try:
        record = json.loads((starter_checkpoint() / STARTER_COMPARISON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    usable = isinstance(record, dict) and record.get("recorded") is True and {"results", "history"} <= set(record)
    return record if usable else None


def model_folders(root: str | os.PathLike, default: DefaultModel | None,
                  own: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """Where the app loads models from: its checkpoint root, its default model and the models downloaded from the
    Hub: the Hub cache, or in public mode the visitor's ``own`` folders instead (their runs and their Hub
    downloads); never any other folder."""
    downloads = [Path(hub_cache_dir())] if own is None else [Path(folder) for folder in own]
    return [Path(root), *downloads, *([default.path] if default is not None else [])]


def app_model(reference: str, root: str | os.PathLike, default: DefaultModel | None,
              own: Sequence[str | os.PathLike] | None = None) -> Path:
    """The folder of a model the app may load: a run under ``root``, the default model, a Hub model (by repo id
    or its snapshot) or, in public mode, a model in the visitor's ``own`` folders (``model_folders``).
    HubLoadError, in the app's words, when a Hub model cannot be fetched."""
    folders = model_folders(root, default, own)
    try:
        return resolve_model(reference, root=root, only_inside=folders)
    except HubError as err:
        raise HubLoadError(text.hub_load_failed(str(reference), err, None)) from None


def run_of_this_app(reference: str, root: str | os.PathLike, own: str | os.PathLike | None = None) -> Path:
    """The folder of a run trained by this app (under ``root``, or ``own``: a public-mode visitor's runs);
    CheckpointError for anything else."""
    return resolve_model(reference, root=root, only_inside=[root, *([own] if own is not None else [])], hub=False)


def data_root_for(predictor: Any, folder: str | None) -> str | None:
    """The folder the checkpoint was trained on (also the bundled data in another clone), else the Train tab's
    folder (e.g. a checkpoint from the Hub trained elsewhere); None for a run on a Hub dataset no longer here
    (``evaluate_split`` fetches its recorded commit again)."""
    recorded = recorded_data_root(predictor.checkpoint.config)
    if recorded is not None:
        return str(recorded)
    if ((predictor.checkpoint.config.get("dataset") or {}).get("source") or {}).get("spec"):
        return None
    return (folder or "").strip() or None


def test_report(predictor: Any, folder: str | None, gate: Callable[[str], str] | None = None,
                hub: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint evaluated on the test images its run held out (with ``items`` and ``root``). ``gate``
    (public mode): the folder a checkpoint records must pass it (a model's config can name any path), else the
    Train tab's ``folder``, already gated, is used instead. A Hub dataset is fetched as ``hub`` says."""
    from pokedemo.predict import evaluate_split

    root = data_root_for(predictor, folder)
    if gate is not None and root is not None and root != folder:
        try:
            root = gate(root)
        except ValueError:
            root = (folder or "").strip() or None
    return evaluate_split(predictor, data_root=root, hub=hub)



# ------------------------------------------------------------------------------------------ the Hub


def hub_choice(spec: str, path: Path) -> tuple[str, str]:
    """(label, value) of a model loaded from the Hub, for the checkpoint pickers."""
    try:
        test = ((read_config(path).get("metrics") or {}).get("test") or {}).get("accuracy")
    except Exception:  # noqa: BLE001 - the label is cosmetic; the download validated the files already
        test = None
    return text.hub_choice_label(spec, test), str(path)


class HubLoadError(ValueError):
    """A Hub model the app cannot load; the message is the app's one token-free line."""


def fetch_hub_model(spec: str, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                    budget: int | None = None) -> Path:
    """Download a model by repo id (``NAMESPACE/NAME[@REVISION]``) into ``cache_dir`` (None: the Hub cache),
    within ``budget`` bytes (None: the download limits only); HubLoadError otherwise. No token (None or empty)
    falls back to HF_TOKEN, then the cached login; False sends none."""
    try:
        return download_checkpoint(spec.strip(), token=token if token is False else token or None,
                                   cache_dir=cache_dir, budget=budget)
    except (HubError, CheckpointError) as err:
        raise HubLoadError(text.hub_load_failed(spec, err, token)) from None
    except Exception as err:  # noqa: BLE001 - the app shows a line, never a traceback
        raise HubLoadError(text.hub_load_failed(spec, err, token, expected=False)) from None


def model_download(run_dir: str | os.PathLike) -> tuple[list[str], dict[str, Any]]:
    """([model.onnx, the run folder's zip], the export's record) of a run, exported and checked once per weights
    file into a folder under the system's temporary directory (served by Gradio from there)."""
    from pokedemo.export import model_download as export_download

    onnx_file, archive, record = export_download(run_dir, Path(tempfile.gettempdir()) / "pokedemo-downloads")
    return [str(onnx_file), str(archive)], record


def push_run(run_dir: str | os.PathLike, repo_id: str, private: bool, token: str | bool | None) -> str:
    """Push a local run to a Hub repo; the Markdown line the push panel shows (link, or what went wrong).
    No token (None or empty) falls back to HF_TOKEN, then the cached login; False sends none."""
    try:
        result = push_checkpoint_details(run_dir, repo_id.strip(), private=bool(private),
                                         token=token if token is False else token or None)
    except (HubError, CheckpointError) as err:
        return text.push_failed(err, token)
    except Exception as err:  # noqa: BLE001 - the app shows a line, never a traceback
        return text.push_failed(err, token, expected=False)
    return text.push_done(result)
