"""The model card (README.md) of a pushed checkpoint: YAML metadata with a model-index holding the test accuracy,
then the classes, metrics, confusion matrix, training configuration and history, and how to use the model.

Pure text from a checkpoint's config and history; ``pokedemo.hub.models`` writes it next to the weights it
uploads. The names of the files a pushed model repo holds besides the checkpoint's own live here, with the card
that describes them.
"""

from __future__ import annotations

import json
from typing import Any

from pokedemo.checkpoint import CONFIG_FILE, HISTORY_FILE, WEIGHTS_FILE
from pokedemo.hub.client import one_line

CARD_FILE = "README.md"
TIMM_WEIGHTS_FILE = "timm_model.safetensors"

# The Hub repos the ImageNet weights of each backbone correspond to (model card `base_model`).
BASE_MODELS = {"resnet18": "timm/resnet18.tv_in1k",
               **{f"efficientnet_lite{n}": f"timm/tf_efficientnet_lite{n}.in1k" for n in (0, 1, 2)}}


def build_model_card(config: dict[str, Any], history: list[dict[str, Any]], repo_id: str,
                     timm_architecture: str | None = None, onnx: dict[str, Any] | None = None) -> str:
    """README.md for the Hub: YAML metadata (with a model-index holding the test accuracy), then the classes,
    the training configuration, metrics, the confusion matrix, the training curve and how to use the model."""
    sections = [
        _card_intro(config, repo_id),
        _card_classes(config),
        _card_metrics(config),
        _card_confusion(config),
        _card_training(config, history),
        _card_usage(config, repo_id, timm_architecture),
        _card_onnx(onnx, repo_id) if onnx else "",
        _card_files(timm_architecture, onnx),
    ]
    from huggingface_hub import ModelCard

    body = "\n\n".join(section for section in sections if section)
    metadata = _card_data(config, repo_id, timm_architecture, onnx=bool(onnx)).to_yaml()
    return str(ModelCard(f"---\n{metadata}\n---\n\n{body}\n"))  # parsed once: the metadata must read back


def _test_metrics(config: dict[str, Any]) -> dict[str, Any]:
    test = (config.get("metrics") or {}).get("test")
    return test if isinstance(test, dict) else {}


def _card_data(config: dict[str, Any], repo_id: str, timm_architecture: str | None, onnx: bool = False):
    """The card's metadata as huggingface_hub's ModelCardData; the test accuracy (and macro F1) become the
    model-index through EvalResult, which is how the Hub shows them on the model page."""
    from huggingface_hub import EvalResult, ModelCardData

    backbone = config["backbone"]
    test = _test_metrics(config)
    recorded = config.get("dataset") or {}
    hub_source = (recorded.get("source") or {}).get("hub_dataset")  # trained on hf://datasets/...: link it
    results = None
    if "accuracy" in test:
        if hub_source:
            dataset = {"dataset_type": hub_source, "dataset_name": hub_source,
                       "dataset_revision": recorded["source"].get("revision")}
        else:
            dataset = {"dataset_type": "imagefolder", "dataset_name": str(recorded.get("root") or "image folder")}
        common = {"task_type": "image-classification", "task_name": "Image Classification", **dataset,
                  "dataset_split": "test"}
        results = [EvalResult(**common, metric_type="accuracy", metric_value=round(float(test["accuracy"]), 4),
                              metric_name="Test accuracy")]
        if "macro_f1" in test:
            results.append(EvalResult(**common, metric_type="f1", metric_value=round(float(test["macro_f1"]), 4),
                                      metric_name="Test macro F1"))
    return ModelCardData(
        library_name="timm" if timm_architecture else "pokedemo",
        pipeline_tag="image-classification",
        tags=["image-classification", "pokedemo", "transfer-learning", backbone, "pytorch", "safetensors"]
        + (["timm"] if timm_architecture else []) + (["onnx"] if onnx else []),
        metrics=["accuracy"],
        datasets=[hub_source] if hub_source else None,
        # A Hub backbone (its checkpoint records its timm config) is its own base model.
        base_model=(BASE_MODELS.get(backbone) or (backbone if config.get("backbone_config") else None))
        if config.get("pretrained") else None,
        model_name=repo_id.split("/")[-1] if results else None,
        eval_results=results,
    )


def _md(text: Any) -> str:
    """A value made safe for a markdown table cell."""
    return one_line(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _card_intro(config: dict[str, Any], repo_id: str) -> str:
    backbone, size = config["backbone"], config["image_size"]
    trained = (config.get("train_config") or {}).get("img_size", size)  # image_size is the inference size
    at = f"at {size}×{size} px" if trained == size else f"at {trained}×{trained} px (predicting at {size}×{size})"
    start = "fine-tuned from ImageNet weights" if config.get("pretrained") else "trained from scratch"
    counts = (config.get("dataset") or {}).get("class_counts") or {}
    images = f" on {sum(counts.values())} images" if counts else ""
    test = _test_metrics(config)
    accuracy = f" It reaches **{test['accuracy']:.1%} accuracy** on its held-out test split." if test else ""
    status = "" if config.get("status") == "complete" else f"\n\n> Note: this run is `{config.get('status')}`."
    return (f"# {repo_id.split('/')[-1]}\n\nAn image classifier for {config['num_classes']} classes: a {backbone} "
            f"{start}{images} {at} with pokedemo, a demo of transfer learning."
            f"{accuracy}{status}")


def _card_classes(config: dict[str, Any]) -> str:
    counts = (config.get("dataset") or {}).get("class_counts") or {}
    rows = [[i, name, counts.get(name, "")] for i, name in enumerate(config["class_names"])]
    return "## Classes\n\n" + _table(["index", "class", "images"], rows)


def _card_metrics(config: dict[str, Any]) -> str:
    metrics, test = config.get("metrics") or {}, _test_metrics(config)
    rows = []
    if "accuracy" in test:
        rows.append(["test accuracy", f"{test['accuracy']:.4f}", f"{test.get('n', '')} test images"])
    if "macro_f1" in test:
        rows.append(["test macro F1", f"{test['macro_f1']:.4f}", ""])
    if metrics.get("best_val_acc") is not None:
        best = f"epoch {metrics.get('best_epoch')}"
        rows.append(["best validation accuracy", f"{metrics['best_val_acc']:.4f}", best])
    calibration = metrics.get("calibration")
    if calibration and calibration.get("skipped"):
        rows.append(["probability temperature", "1 (not fitted)", f"{calibration['skipped']}: uncalibrated"])
    elif calibration:
        rows.append(["probability temperature", f"{calibration['temperature']:.3f}",
                     "fitted on the validation split, folded into the head: the probabilities are calibrated"])
    rows += _open_set_rows(config, test)
    if metrics.get("seconds") is not None:
        rows.append(["training time", f"{metrics['seconds']:.1f} s", ""])
    if not rows:
        return "## Results\n\nThis run has no test metrics."
    text = "## Results\n\n" + _table(["metric", "value", "note"], rows)
    per_class = test.get("per_class") or {}
    if per_class:
        rows = [[name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]]
                for name, m in per_class.items()]
        text += "\n\nPer class on the test split:\n\n" + _table(["class", "precision", "recall", "F1", "images"], rows)
    return text


def _open_set_rows(config: dict[str, Any], test: dict[str, Any]) -> list[list[Any]]:
    """The "none of these" rule: which score, which threshold, fitted on what; or the default of older runs."""
    from pokedemo.openset import DEFAULT_MAX_PROB_THRESHOLD, OpenSet

    record = config.get("open_set")
    if not record:
        return [["\"none of these\" rule", f"max_prob >= {DEFAULT_MAX_PROB_THRESHOLD}",
                 "not recorded (trained before such rules existed): the top probability with a default threshold"]]
    thresholds = sorted(set(record["thresholds"]))
    limit = f"{thresholds[0]:.4f}" if len(thresholds) == 1 else "one per class"
    rows = [["\"none of these\" rule", f"{record['score']} >= {limit}",
             f"{record.get('description', '')}; threshold {OpenSet.how_fitted_from_record(record) or 'not fitted'}; "
             "statistics in model.safetensors (open_set.*)"]]
    accepted = (test.get("open_set") or {}).get("accepted")
    if accepted is not None:
        rows.append(["known-class test images accepted", f"{accepted:.4f}", "the rest are answered \"none of these\""])
    return rows


def _card_confusion(config: dict[str, Any]) -> str:
    test = _test_metrics(config)
    matrix, classes = test.get("confusion"), test.get("classes") or config["class_names"]
    if not matrix:
        return ""
    rows = [[f"**{name}**", *row] for name, row in zip(classes, matrix)]
    return ("## Confusion matrix\n\nRows are the true classes, columns the predicted ones (test split).\n\n"
            + _table(["true \\ predicted", *classes], rows))


def _card_training(config: dict[str, Any], history: list[dict[str, Any]]) -> str:
    train_config = config.get("train_config") or {}
    rows = [[key, value] for key, value in train_config.items() if value is not None]
    text = "## Training configuration\n\n" + _table(["option", "value"], rows) if rows else ""
    split = config.get("split") or []
    if split:
        parts = {name: sum(1 for item in split if item.get("split") == name) for name in ("train", "val", "test")}
        text += (f"\n\nSplit (duplicate-aware, near-duplicates kept in one part): {parts['train']} train, "
                 f"{parts['val']} validation, {parts['test']} test images.")
    keys = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    epochs = [[_fmt(h.get(k)) for k in keys] for h in history if isinstance(h, dict)]
    if epochs:
        text += "\n\n### Training history\n\n" + _table(keys, epochs)
    versions = config.get("versions") or {}
    if versions:
        text += "\n\nLibraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    return text


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _card_usage(config: dict[str, Any], repo_id: str, timm_architecture: str | None) -> str:
    size, mean, std = config["image_size"], config["mean"], config["std"]
    text = f"""## How to use

With the pokedemo command line (files are cached in the normal Hugging Face cache; add `@REVISION` to pin a
branch, tag or commit):

```bash
python -m pokedemo predict --checkpoint {repo_id} my_image.jpg
python -m pokedemo evaluate --checkpoint {repo_id} --data path/to/class_folders
```

In Python:

```python
from pokedemo.predict import Predictor

predictor = Predictor.load("{repo_id}")
print(predictor.predict("my_image.jpg", top_k=5))  # [(class, probability), ...]
```

Preprocessing: RGB, shorter side resized to {size} px (bilinear, antialiased), centre crop {size}×{size},
scaled to [0, 1], normalised with mean {mean} and std {std} (pokedemo's `Predictor` does all of this)."""
    if timm_architecture:
        text += f"""

With [timm](https://github.com/huggingface/pytorch-image-models) alone (architecture `{timm_architecture}`):

```python
import timm, torch
from PIL import Image

model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
with torch.no_grad():
    probs = model(transform(Image.open("my_image.jpg").convert("RGB")).unsqueeze(0)).softmax(-1)[0]
print(dict(zip(model.pretrained_cfg["label_names"], probs.tolist())))
```"""
    return text


def _card_onnx(record: dict[str, Any], repo_id: str) -> str:
    """How to use model.onnx without pokedemo, with the export's own parity check, size and latency."""
    meta, parity, latency = record["metadata"], record["parity"], record.get("latency")
    name, size, max_side = record["onnx_file"], meta["image_size"], meta["max_side"]
    if parity.get("skipped"):
        checked = f"Parity with pokedemo was not checked at export: {parity['skipped']}."
    else:
        checked = (f"Checked at export against pokedemo's own predictions on {parity['pictures']} pictures "
                   f"({parity['source']}): probabilities within {parity['max_abs_diff']:.1e}, same top-1 class on "
                   f"{parity['top1_agree']} of {parity['pictures']}.")
    rows = [["size", f"{record['size_bytes'] / 1e6:.1f} MB (float32, ONNX opset {record['opset']})"]]
    if latency:
        rows.append(["CPU time per picture (p50, one picture per call)",
                     f"onnxruntime {latency['onnxruntime_p50_ms']:.1f} ms, PyTorch (pokedemo) "
                     f"{latency['torch_p50_ms']:.1f} ms — {latency['threads']} thread(s), {_md(latency['machine'])}"])
    return f"""## Without pokedemo: ONNX

`{name}` takes uint8 RGB pictures `[N, 3, {size}, {size}]` (pixel values 0-255) and returns calibrated
probabilities `[N, {len(json.loads(meta["class_names"]))}]`; normalisation, BatchNorm and the temperature are inside the
graph. Its metadata (`metadata_props`) holds the class names, the size, the resize rule, mean and std.
`predict_onnx.py` (Pillow, numpy and onnxruntime only) reads pictures exactly as pokedemo does: the resize is
the part that must match ({_md(meta["resize"])}; S = {size}, max_side = {max_side}).

```bash
pip install onnxruntime pillow numpy huggingface_hub
hf download {repo_id} {name} predict_onnx.py --local-dir {repo_id.split("/")[-1]}
python {repo_id.split("/")[-1]}/predict_onnx.py my_image.jpg
```

In Python, from that folder:

```python
{record["python_usage"]}
```

{checked}

{_table(["", "ONNX export"], rows)}"""


def _card_files(timm_architecture: str | None, onnx: dict[str, Any] | None = None) -> str:
    rows = [
        [WEIGHTS_FILE, "weights, pokedemo layout (`features.*`, `head.*`); its SHA-256 is recorded in config.json"],
        [CONFIG_FILE, "pokedemo checkpoint config (classes, preprocessing, training options, metrics, split)"
         + (" plus the keys timm reads (`architecture`, `num_classes`, `label_names`, `pretrained_cfg`)"
            if timm_architecture else "")],
        [HISTORY_FILE, "loss and accuracy per epoch"],
    ]
    if timm_architecture:
        rows.append([TIMM_WEIGHTS_FILE, "the same weights under timm's tensor names"])
    if onnx:
        rows.append([onnx["onnx_file"], "the model as ONNX: uint8 pictures in, calibrated probabilities out"])
        rows += [[name, "classifies pictures with the ONNX model (Pillow, numpy, onnxruntime)"]
                 for name in onnx["runtime_files"] if name != onnx["onnx_file"]]
    return "## Files\n\n" + _table(["file", "content"], rows)
