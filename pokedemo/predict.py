"""Prediction and evaluation with a saved checkpoint.

A ``Predictor`` loads a checkpoint once and keeps it; ``get_predictor`` caches predictors per checkpoint (and
weights file version) so the app and the CLI never reload a model per image. Images go through the one loader
and the one preprocessing function of ``pokedemo.images``, exactly as in training.
"""

from __future__ import annotations

import contextlib
import csv
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import torch

from pokedemo.checkpoint import WEIGHTS_FILE, CheckpointError, LoadedCheckpoint, load_checkpoint, recorded_data_root
from pokedemo.config import TrainConfig, default_checkpoint_root, resolve_device
from pokedemo.data import DatasetError, cached_tensors, scan_dataset, split_from_record
from pokedemo.device_plan import execution_plan
from pokedemo.hub import is_hub_dataset, open_data, part_of
from pokedemo.images import IMAGE_EXTENSIONS, ImageLoadError, image_to_tensor, load_image
from pokedemo.inference import folded_for_inference, infer_logits
from pokedemo.metrics import report_with_items
from pokedemo.model_ref import resolve_model
from pokedemo.openset import logits_and_features

_CACHE_SIZE = 4
MAX_SIDE_FACTOR = 3  # pictures are decoded at most 3x the model's resolution (see image_tensor)


class Predictor:
    """A checkpoint loaded once, ready to classify images (thread-safe).

    Runs on ``device`` if given, else on the device ``resolve_device("auto")`` picks (a GPU when there is one),
    following that device's execution plan, as training does.
    """

    def __init__(self, checkpoint: LoadedCheckpoint, device: torch.device | None = None):
        self.checkpoint = checkpoint
        self.device = device or resolve_device("auto")
        batch_size = (checkpoint.config.get("train_config") or {}).get("batch_size") or TrainConfig.batch_size
        self.plan = execution_plan(self.device, checkpoint.model, int(batch_size))
        self.model = self.plan.place_model(checkpoint.model).eval()  # as saved: Grad-CAM hooks its layers
        self.inference_model = folded_for_inference(self.model)  # what classifies: BatchNorm folded away
        self.classes = checkpoint.classes
        self.image_size = checkpoint.image_size
        self.open_set = checkpoint.open_set  # pokedemo.openset.OpenSet: which pictures count as known classes
        self._lock = threading.Lock()  # torch modules are not safe for concurrent forward passes with hooks

    @classmethod
    def load(cls, reference: str | os.PathLike, device: torch.device | None = None) -> "Predictor":
        """The model ``reference`` names (a run folder, a run name under the checkpoint root or a Hub repo id)."""
        return cls(load_checkpoint(resolve_model(reference, root=default_checkpoint_root())), device)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities [N, C] (CPU, float32) for uint8 images [N, 3, S, S]."""
        with self._lock, torch.inference_mode():
            logits = infer_logits(self.inference_model, images, self.device, plan=self.plan)
        return torch.softmax(logits.float(), dim=1).cpu()

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities [N, C], open-set scores [N]) for uint8 images [N, 3, S, S], from one forward pass
        each (CPU, float32)."""
        with self._lock, torch.inference_mode():
            logits, features = logits_and_features(self.inference_model, images, self.device, self.plan)
            scores = self.open_set.scores(logits, features)
        return torch.softmax(logits.float(), dim=1).cpu(), scores.float().cpu()

    def warm_up(self) -> None:
        """Classify one blank image, so that torch's one-time set-up for this input size happens now."""
        self.outputs(torch.zeros(1, 3, self.image_size, self.image_size, dtype=torch.uint8))

    def classify(self, source: Any, threshold: float | None = None) -> Prediction:
        """Every class's probability and the open-set decision for one image (path, bytes, file object or PIL
        image), from one forward pass. ``threshold`` replaces the checkpoint's (every class's) when given.

        Raises ImageLoadError (one line) for anything that is not a usable image.
        """
        return self.classify_tensors(self.image_tensor(source), threshold)[0]

    def classify_tensors(self, images: torch.Tensor, threshold: float | None = None) -> list[Prediction]:
        """``classify`` for uint8 images [N, 3, S, S] already preprocessed, batched as the plan says."""
        probs, scores = self.outputs(images)
        return [self._prediction(row, float(score), threshold) for row, score in zip(probs, scores)]

    def _prediction(self, probs: torch.Tensor, score: float, threshold: float | None) -> Prediction:
        closest = int(probs.argmax())
        limit = float(self.open_set.thresholds[closest]) if threshold is None else float(threshold)
        return Prediction(tuple(self.classes), tuple(probs.tolist()), score, limit, self.open_set.score,
                          threshold is None)

    def preprocess(self, source: Any) -> "torch.Tensor | str":
        """uint8 [3, S, S] of one image (``image_tensor`` without the batch axis), or its one-line error: in a
        batch one bad file must not stop the others."""
        try:
            return self.image_tensor(source)[0]
        except ImageLoadError as exc:
            return str(exc)

    def predict(self, source: Any, top_k: int = 5) -> list[tuple[str, float]]:
        """Top-k (label, probability) for one image; see ``classify`` for the open-set decision."""
        return self.classify(source).top(top_k)

    def image_tensor(self, source: Any) -> torch.Tensor:
        """uint8 [1, 3, S, S] of one image, preprocessed as ``predict`` does (ImageLoadError otherwise)."""
        # Decoding at most MAX_SIDE_FACTOR x the model's resolution lets libjpeg skip most of a big JPEG's pixels
        # (draft mode) while image_to_tensor still downsamples with antialiasing, as in training.
        image = load_image(source, max_side=MAX_SIDE_FACTOR * self.image_size)
        return image_to_tensor(image, self.image_size).unsqueeze(0)

    def predict_dict(self, source: Any) -> dict[str, float]:
        """All classes → probability; the shape gr.Label wants."""
        return dict(self.predict(source, top_k=len(self.classes)))


@dataclass(frozen=True)
class Prediction:
    """One image's answer: every class's probability and whether it is one of the classes at all."""

    classes: tuple[str, ...]
    probs: tuple[float, ...]
    score: float  # the open-set score (higher: more like the known classes)
    threshold: float  # the closest class's threshold the decision used
    score_name: str
    default_threshold: bool  # the checkpoint's own threshold (not one chosen by the user)

    @property
    def closest(self) -> str:
        return self.classes[max(range(len(self.probs)), key=self.probs.__getitem__)]

    @property
    def known(self) -> bool:
        return self.score >= self.threshold

    @property
    def label(self) -> str | None:
        """The class, or None: the image is none of the classes this model knows."""
        return self.closest if self.known else None

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        ranked = sorted(zip(self.classes, self.probs), key=lambda pair: pair[1], reverse=True)
        return ranked[:max(1, min(k, len(ranked)))]

    def to_dict(self, top_k: int = 5) -> dict[str, Any]:
        """JSON for the CLI and the app's API: ``label`` is null for an unknown image, ``closest`` always set."""
        return {"label": self.label, "closest": self.closest, "prob": round(max(self.probs), 6),
                "known": self.known, "open_set": {"score": self.score_name, "value": round(self.score, 6),
                                                   "threshold": round(self.threshold, 6),
                                                   "default_threshold": self.default_threshold},
                "top_k": [{"label": name, "prob": round(p, 6)} for name, p in self.top(top_k)]}


# Not functools.lru_cache: it lets requests that miss together each load the model (seconds and memory apiece);
# the lock per checkpoint version below makes them wait for one load.
_predictors: "OrderedDict[tuple[str, float], Predictor]" = OrderedDict()
_predictors_lock = threading.Lock()
_loading: dict[tuple[str, float], threading.Lock] = {}  # per checkpoint version while it is being loaded


def get_predictor(reference: str | os.PathLike, *, root: str | os.PathLike | None = None,
                  only_inside: Sequence[str | os.PathLike] = ()) -> Predictor:
    """Cached Predictor for the model ``reference`` names (``resolve_model``, with its ``root`` and
    ``only_inside``); reloaded only when its weights file changes."""
    path = resolve_model(reference, root=root, only_inside=only_inside).resolve()
    weights = path / WEIGHTS_FILE
    key = (str(path), weights.stat().st_mtime if weights.exists() else 0.0)
    with _predictors_lock:
        loading = _loading.setdefault(key, threading.Lock())
    # One load per checkpoint version: a request that arrives while another (or the app's warm-up) is loading
    # the same model waits for that load instead of doing it a second time.
    with loading:
        with _predictors_lock:
            if key in _predictors:
                _predictors.move_to_end(key)
                return _predictors[key]
        predictor = Predictor(load_checkpoint(path))
        with _predictors_lock:
            _predictors[key] = predictor
            _loading.pop(key, None)
            while len(_predictors) > _CACHE_SIZE:
                _predictors.popitem(last=False)
    return predictor


@dataclass
class ImagePrediction:
    image: str
    prediction: Prediction | None = None
    top_k: list[dict[str, float]] | None = None  # [{"label", "prob"}] of the top k classes
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, **self.prediction.to_dict(len(self.top_k))}


PREDICT_CHUNK = 32  # pictures per forward pass of a batch prediction
UNKNOWN_LABEL = "unknown"  # a picture that is none of the model's classes, in text and CSV


def predict_files(predictor: Predictor, paths: Sequence[str], top_k: int = 5, threshold: float | None = None,
                  chunk: int = PREDICT_CHUNK) -> list[ImagePrediction]:
    """Classify each file, ``chunk`` pictures per forward pass; a bad file gets an error entry (one line) and the
    others are still classified. Pictures decode on a few threads (PIL releases the GIL while decoding)."""
    results: list[ImagePrediction] = []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), chunk):
            part = list(paths[start:start + chunk])
            decoded = list(pool.map(predictor.preprocess, part))
            results.extend(_classify_chunk(predictor, part, decoded, top_k, threshold))
    return results


def _classify_chunk(predictor: Predictor, paths: list[str], decoded: list, top_k: int,
                    threshold: float | None) -> list[ImagePrediction]:
    good = [t for t in decoded if not isinstance(t, str)]
    predictions = iter(predictor.classify_tensors(torch.stack(good), threshold) if good else [])
    results = []
    for path, tensor in zip(paths, decoded):
        if isinstance(tensor, str):
            results.append(ImagePrediction(path, error=tensor))
            continue
        prediction = next(predictions)
        top = [{"label": name, "prob": round(p, 6)} for name, p in prediction.top(top_k)]
        results.append(ImagePrediction(path, prediction, top))
    return results


def image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files given, with folders replaced by the picture files under them (recursively, sorted, hidden skipped)."""
    found: list[str] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(str(path))
            continue
        found.extend(str(p) for p in sorted(path.rglob("*"))
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                     and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return found


def write_predictions_csv(results: Sequence[ImagePrediction], out: str | os.PathLike | IO[str]) -> None:
    """One row per picture: file, label (the class, or "unknown": none of the model's classes), closest class,
    its probability, error (empty when classified)."""
    with contextlib.ExitStack() as stack:
        handle = out if hasattr(out, "write") else stack.enter_context(open(out, "w", newline="", encoding="utf-8"))
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "closest", "probability", "error"])
        for r in results:
            if r.prediction is None:
                writer.writerow([r.image, "", "", "", r.error or ""])
                continue
            p = r.prediction
            writer.writerow([r.image, p.label or UNKNOWN_LABEL, p.closest, round(max(p.probs), 6), ""])


def evaluate_folder(predictor: Predictor, data_root: str | os.PathLike) -> dict[str, Any]:
    """Evaluate every image under DATA_ROOT/<class>/ (no split). Folder names must be checkpoint classes.

    DATA_ROOT may be a Hub dataset (``hf://datasets/...``); when it brings its own split, only its test part
    is evaluated (its training images say nothing about accuracy)."""
    source = open_data(data_root)
    dataset = scan_dataset(source.root, image_size=predictor.image_size, require_splittable=False)
    unknown = [c for c in dataset.classes if c not in predictor.classes]
    if unknown:
        raise DatasetError(
            f"class folder(s) {', '.join(unknown)} are not among the checkpoint's classes "
            f"({', '.join(predictor.classes)})"
        )
    mapping = [predictor.classes.index(c) for c in dataset.classes]
    indices = [i for i, r in enumerate(dataset.records) if not source.own_splits or part_of(r.rel_path) == "test"]
    targets = [mapping[dataset.records[i].label] for i in indices]
    report = _report(predictor, dataset, indices, targets)
    report["unreadable"] = [u.rel_path for u in dataset.unreadable]
    return report


def evaluate_split(predictor: Predictor, data_root: str | os.PathLike | None = None, part: str = "test",
                   hub: Mapping[str, Any] | None = None) -> dict:
    """Evaluate a checkpoint on the split it recorded (by default its test images), reproducibly; ``hub``: how a
    Hub dataset is fetched (``open_data``'s token, cache folder and budget)."""
    dataset, indices = recorded_split(predictor, data_root, part, hub)
    return _report(predictor, dataset, indices, [dataset.records[i].label for i in indices])


def recorded_split(predictor: Predictor, data_root: str | os.PathLike | None = None,
                   part: str = "test", hub: Mapping[str, Any] | None = None) -> tuple[Any, list[int]]:
    """(dataset, indices of its ``part`` images) of the split the checkpoint recorded, found again on this machine
    (or in ``data_root``; a Hub dataset fetched as ``hub`` says); DatasetError / CheckpointError (one line) when
    they are not all here."""
    config = predictor.checkpoint.config
    root = data_root or _recorded_root(config, hub)
    if root and is_hub_dataset(str(root)):
        root = str(open_data(str(root), **(hub or {})).root)
    if not root or not Path(root).is_dir():
        recorded = (config.get("dataset") or {}).get("root")
        raise DatasetError(f"the training data folder {str(root or recorded)!r} is not here; pass --data DIR")
    if "split" not in config:
        raise CheckpointError("this checkpoint has no recorded split; pass --data DIR to evaluate a folder")
    dataset = scan_dataset(root, image_size=predictor.image_size, require_splittable=False)
    split = split_from_record(dataset, config["split"])
    indices = getattr(split, part)
    if list(dataset.classes) != predictor.classes:
        raise DatasetError(f"classes in {root} ({', '.join(dataset.classes)}) differ from the checkpoint's")
    recorded_n = sum(1 for entry in config["split"] if entry.get("split") == part)
    if len(indices) < recorded_n:  # a different or changed folder: the score would not be the recorded one
        raise DatasetError(f"only {len(indices)} of the {recorded_n} recorded {part} images are in {root}")
    return dataset, list(indices)


def _recorded_root(config: dict[str, Any], hub: Mapping[str, Any] | None = None) -> Path | None:
    """The folder a run trained on, found on this machine, else fetched again from the Hub at the recorded commit
    (a run trained on ``hf://datasets/...``)."""
    found = recorded_data_root(config)
    source = (config.get("dataset") or {}).get("source") or {}
    if found is None and source.get("spec"):
        return open_data(source["spec"], **(hub or {})).root
    return found


def _report(predictor: Predictor, dataset, indices, targets) -> dict[str, Any]:
    indices = list(indices)
    if not indices:
        raise DatasetError("no readable images to evaluate")
    probs, scores = predictor.outputs(cached_tensors(dataset, indices, predictor.image_size))
    paths = [dataset.records[i].rel_path for i in indices]
    report = report_with_items(probs.numpy(), targets, predictor.classes, paths, str(dataset.root))
    report["open_set"] = predictor.open_set.report(probs.argmax(dim=1), scores, torch.tensor(targets))
    return report

