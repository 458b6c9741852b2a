"""Every piece of text the app shows: Markdown, HTML, captions, tables and one-line messages.

Pure functions of the engine's results (reports, events, dataset scans, doctor reports): no Gradio, no torch, so
they are unit-tested directly and a wording change happens in one place. The handlers (``handlers.py``) decide
*what* to show; this module decides *how it reads*.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pokedemo.checkpoint import CheckpointError
from pokedemo.config import TrainConfig, defaults_note
from pokedemo.data import DatasetError
from pokedemo.doctor import format_counts, split_sentence
from pokedemo.events import Cancelled, Event, Failed, Finished
from pokedemo.hub import one_line, scrub
from pokedemo.images import ImageLoadError
from pokedemo.metrics import MATRIX_MAX_CLASSES, top_confusions
from pokedemo.report import per_class_table

_log = logging.getLogger(__name__)

INTRO = """# Pokédemo — teach a network to recognise Pokémon
**Transfer learning, hands-on.** ① **Train** a classifier on a folder of images (one sub-folder per class) and
watch it learn. ② **Predict**: show it any picture. ③ **Compare**: the same network starting from ImageNet
weights vs. from random weights."""

NO_DATASET = ("No dataset yet: type the path of a folder with one sub-folder per class (e.g. data/pokemon) or a "
              "Hub dataset (hf://datasets/namespace/name), or upload a .zip of such folders.")
NO_CHECKPOINT = "No trained model yet: train one in the **Train** tab (a 2-epoch run takes about a minute)."
MODEL_PICKER_INFO = ("The bundled starter model and your trained runs, newest first, with their test accuracy "
                     "(↻ re-reads the list).")
EXAMPLES_LABEL = "Examples from the starter model's test split (pictures it never trained on): one click each"
COMPARE_NOT_STARTED = "Not started."
COMPARE_RECORDED = "Showing a recorded comparison (below); ▶ Train both and compare runs it live."
NO_IMAGE = "Upload an image, use the webcam or paste one — or click an example."
DOCTOR_TITLE = "Dataset doctor: duplicates, label conflicts, odd files"  # no emoji: many fonts lack them
DOCTOR_EMPTY = "Choose a dataset above: the doctor checks it for duplicates, label conflicts and odd files."
NO_ERRORS = "No mistakes on the test images: every one was classified correctly."
HUB_BACKBONE_EXAMPLE = "timm/mobilenetv4_conv_small.e2400_r224_in1k"  # offered after the offline backbones
HUB_BACKBONE_LABEL = f"from the Hub (needs internet): type timm/<model>, e.g. {HUB_BACKBONE_EXAMPLE}"
BACKBONE_INFO = ("'bundled' weights work offline, 'needs download' ones need internet once. Any timm model on the "
                 "Hugging Face Hub works too: type its id, e.g. timm/convnext_atto.d2_in1k.")
TOP_CLASS = "top class"  # the Grad-CAM class picker's default entry: explain whatever the model predicted

PER_CLASS_COLUMNS = ["class", "precision", "recall", "F1", "test images"]
CHECKPOINT_TABLE_COLUMNS = ["", "checkpoint", "test accuracy", "macro F1", "test images"]
COMPARE_COLUMNS = ["run", "test accuracy", "val accuracy (kept epoch)", "wall time", "epochs to 90% val"]


# ------------------------------------------------------------------------------------------- numbers


def defaults_text(device: Any, continuing: bool = False) -> str:
    """The line under the training options: which image size and epochs the device's defaults set, and why
    (``continuing``: for a run that continues from a model)."""
    return f"<small>{html.escape(defaults_note(device, continuing=continuing))}</small>"


def format_duration(seconds: float | None) -> str:
    """0:42, 12:03, 1:02:03; an em dash when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([], columns=columns)


def progress_html(fraction: float, text: str) -> str:
    """A plain HTML progress bar (inline styles, so it looks the same in every theme) with a caption."""
    width = max(0.0, min(1.0, fraction)) * 100
    return (
        '<div class="pd-progress" style="margin:4px 0 8px 0">'
        '<div style="background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="width:{width:.1f}%;height:100%;background:#f97316;transition:width .3s"></div></div>'
        f'<div style="font-size:0.9em;margin-top:4px">{html.escape(text)}</div></div>'
    )


# ------------------------------------------------------------------------------------------ results


def per_class_frame(report: dict[str, Any]) -> pd.DataFrame:
    """THE per-class table of a test report (Train tab and the "where does it go wrong" panel alike):
    precision / recall / F1 in percent per class, plus the macro-average row."""
    rows = [[name, *(percent(v) for v in (p, r, f1)), n] for name, p, r, f1, n in per_class_table(report)]
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def many_classes(report: dict[str, Any] | None) -> bool:
    """Too many classes for a readable confusion matrix (picture or table): show the top confusions instead."""
    return bool(report) and len(report["classes"]) > MATRIX_MAX_CLASSES


def top_confusions_markdown(report: dict[str, Any], limit: int = 15) -> str:
    """The most frequent mistakes as a Markdown table, for reports with too many classes for a matrix."""
    items = top_confusions(report, limit)
    head = f"**Most frequent mistakes** ({len(report['classes'])} classes are too many for a confusion matrix)"
    if not items:
        return f"{head}: none, every test image was classified correctly."
    rows = [f"| {_md_cell(i['true'])} | {_md_cell(i['predicted'])} | {i['count']} | {percent(i['share'])} |"
            for i in items]
    return "\n".join([head, "", "| true class | predicted as | images | share of the class |",
                      "|---|---|---:|---:|", *rows])


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|")


def confusion_html(report: dict[str, Any], title: str = "") -> str:
    """The confusion matrix as a small HTML table: rows = true class, columns = predicted; correct answers
    green, mistakes red, the stronger the larger their share of the row. Above MATRIX_MAX_CLASSES classes:
    the most frequent mistakes as a list instead."""
    if many_classes(report):
        return _top_confusions_html(report, title)
    classes, matrix = report["classes"], report["confusion"]
    head = "".join(f'<th style="padding:4px 8px">{html.escape(c)}</th>' for c in classes)
    rows = []
    for i, (name, row) in enumerate(zip(classes, matrix)):
        total = max(sum(row), 1)
        cells = "".join(_confusion_cell(count, count / total, i == j) for j, count in enumerate(row))
        rows.append(f'<tr><th style="padding:4px 8px;text-align:right">{html.escape(name)}</th>{cells}</tr>')
    caption = f"<div style='font-weight:600;margin-bottom:4px'>{html.escape(title)}</div>" if title else ""
    return (
        f'<div class="pd-confusion" style="overflow-x:auto">{caption}'
        '<table style="border-collapse:collapse;font-size:0.9em">'
        '<tr><th style="padding:4px 8px;text-align:right">true ↓ · predicted →</th>' + head + "</tr>"
        + "".join(rows) + "</table></div>"
    )


def _top_confusions_html(report: dict[str, Any], title: str, limit: int = 15) -> str:
    caption = f"<div style='font-weight:600;margin-bottom:4px'>{html.escape(title)}</div>" if title else ""
    rows = "".join(f"<tr><td>{html.escape(i['true'])}</td><td>{html.escape(i['predicted'])}</td>"
                   f"<td style='text-align:right'>{i['count']}</td><td style='text-align:right'>{percent(i['share'])}"
                   "</td></tr>" for i in top_confusions(report, limit))
    return (f'<div class="pd-confusion">{caption}<div>Most frequent mistakes ({len(report["classes"])} classes)'
            "</div><table><tr><th>true class</th><th>predicted as</th><th>images</th><th>share</th></tr>"
            f"{rows}</table></div>")


def _confusion_cell(count: int, share: float, correct: bool) -> str:
    colour = (34, 197, 94) if correct else (239, 68, 68)
    alpha = 0.12 + 0.75 * share if count else 0.0
    return (f'<td style="padding:4px 10px;text-align:center;border:1px solid #d1d5db;'
            f'background:rgba({colour[0]},{colour[1]},{colour[2]},{alpha:.2f})">{count}</td>')


def side_by_side(parts: list[str]) -> str:
    return '<div style="display:flex;gap:24px;flex-wrap:wrap">' + "".join(f"<div>{p}</div>" for p in parts) + "</div>"


def results_markdown(final: Event | None) -> str:
    """The headline shown under the curves when a run ends."""
    if isinstance(final, Finished):
        name = Path(final.run_dir).name
        return (f"### Test accuracy: {percent(final.test_acc)}\n"
                f"on {final.test_metrics.get('n', '?')} held-out test images the model never saw while training · "
                f"kept epoch {final.best_epoch} (validation {percent(final.best_val_acc)}) · "
                f"took {format_duration(final.seconds)}\n\n"
                f"Saved as `{name}` — now selected in the **Predict** tab."
                + (f"\n\n{top_confusions_markdown(final.test_metrics)}" if many_classes(final.test_metrics) else ""))
    if isinstance(final, Cancelled):
        extra = " It is selected in the **Predict** tab." if final.run_dir else ""
        return f"### Stopped\n{final.message}{extra}"
    if isinstance(final, Failed):
        return f"### Training failed\n{final.message}"
    return ""


def finished_toast(final: Finished) -> str:
    return f"Training finished: test accuracy {percent(final.test_acc)}. The model is ready in Predict."


def errors_caption(report: dict[str, Any]) -> str:
    wrong = sum(1 for item in report["items"] if item["true"] != item["pred"])
    if not wrong:
        return NO_ERRORS
    caption = (f"**{wrong} of {report['n']} test images misclassified**, the most confident mistakes first. "
               "Caption: true class → predicted class (how sure the model was of its wrong answer).")
    return f"{caption}\n\n{top_confusions_markdown(report)}" if many_classes(report) else caption


# ------------------------------------------------------------------------------------------ comparisons


def epochs_to_90_text(value: int | None, epochs: int | None = None) -> str:
    if value is None:
        return f"not within {epochs}" if epochs else "not reached"
    return str(value)


def compare_table(results: dict[str, dict[str, Any]], epochs: int | None = None) -> pd.DataFrame:
    rows = []
    for run, summary in results.items():
        if summary.get("status") != "finished":
            rows.append({"run": run, "test accuracy": summary.get("status", "—"), "val accuracy (kept epoch)": "—",
                         "wall time": "—", "epochs to 90% val": "—"})
            continue
        rows.append({"run": run, "test accuracy": percent(summary["test_acc"]),
                     "val accuracy (kept epoch)": percent(summary["best_val_acc"]),
                     "wall time": format_duration(summary["seconds"]),
                     "epochs to 90% val": epochs_to_90_text(summary.get("epochs_to_90"), epochs)})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def compare_takeaway(results: dict[str, dict[str, Any]], epochs: int, recorded: bool = False) -> str:
    """One sentence a first-time user can take home (titled as a recorded result when it is one)."""
    pre, scratch = results.get("pretrained", {}), results.get("scratch", {})
    if pre.get("status") != "finished" or scratch.get("status") != "finished":
        return ""
    gap = pre["test_acc"] - scratch["test_acc"]
    title = "Recorded result: pretrained" if recorded else "Pretrained"
    return (f"### {title} {percent(pre['test_acc'])} vs scratch {percent(scratch['test_acc'])} test accuracy\n"
            f"Same network, same images, same {epochs} epoch(s): starting from ImageNet weights is "
            f"{abs(gap) * 100:.1f} points {'better' if gap >= 0 else 'worse'}.")


def recorded_compare_markdown(record: dict[str, Any]) -> str:
    """The recorded comparison's takeaway, clearly marked as recorded (where, when, how it was made)."""
    config = record.get("train_config") or {}
    epochs = int(record.get("epochs") or config.get("epochs") or 0)
    made = str(record.get("created_at", ""))[:10]
    size = f"{config.get('img_size', '?')}px"
    if config.get("img_size"):
        last = TrainConfig.from_dict(config).last_epoch_size  # recorded before the field existed: img_size
        size += f" (the last at {last}px)" if last != config["img_size"] else ""
    return (f"{compare_takeaway(record['results'], epochs, recorded=True)}\n\n"
            f"_Recorded, not run now_: {config.get('backbone', 'the default backbone')}, {epochs} epochs at "
            f"{size} on the bundled Pokémon images, made on {made} with "
            f"`{record.get('command', 'scripts/make_starter.py')}` ({record.get('machine', 'machine not recorded')}; "
            "wall times are that machine's). Press **▶ Train both and compare** to run it live with the options "
            "of the **Train** tab.")


def compare_confusions(results: dict[str, dict[str, Any]]) -> str:
    parts = [confusion_html({"classes": s["classes"], "confusion": s["confusion"]}, title=f"{run}: test set")
             for run, s in results.items() if s.get("status") == "finished"]
    return side_by_side(parts)


def checkpoints_caption(common: int, same_split: bool) -> str:
    caption = f"Both evaluated on the same **{common} test images**, held out by both runs."
    if not same_split:
        caption += " (Their splits differ — other seed or data — so only the images both held out are used.)"
    return caption


def checkpoints_table(names: list[str], reports: list[dict[str, Any]]) -> pd.DataFrame:
    """Checkpoints A and B side by side: test accuracy, macro F1, number of test images."""
    rows = [{"": tag, "checkpoint": name, "test accuracy": percent(r["accuracy"]),
             "macro F1": percent(r["macro_f1"]), "test images": r["n"]}
            for tag, name, r in zip("AB", names, reports)]
    return pd.DataFrame(rows, columns=CHECKPOINT_TABLE_COLUMNS)


def checkpoints_confusions(names: list[str], reports: list[dict[str, Any]]) -> str:
    return side_by_side([confusion_html(r, f"{tag}: {name}") for tag, name, r in zip("AB", names, reports)])


# ----------------------------------------------------------------------------------------- datasets


def dataset_summary_markdown(dataset, split) -> str:
    """Classes with counts, unreadable files, duplicates and conflicts, split sizes."""
    counts = dataset.class_counts()
    lines = [f"**{len(counts)} classes · {sum(counts.values())} images** → split "
             f"train {len(split.train)} · validation {len(split.val)} · test {len(split.test)}", "",
             "| class | images |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in counts.items()]
    lines.append("")
    if dataset.unreadable:
        shown = ", ".join(f"`{u.rel_path}` ({u.reason})" for u in dataset.unreadable[:3])
        more = f" and {len(dataset.unreadable) - 3} more" if len(dataset.unreadable) > 3 else ""
        lines.append(f"- ⚠️ {len(dataset.unreadable)} unreadable file(s) skipped: {shown}{more}")
    else:
        lines.append("- ✓ every image file is readable")
    lines.append(f"- {len(dataset.near_groups)} group(s) of duplicate or near-duplicate images "
                 f"({len(dataset.exact_groups)} with byte-identical copies); each group stays inside one split, "
                 "so no test image has a copy in training")
    if dataset.conflict_groups:
        examples = "; ".join(" ↔ ".join(f"`{dataset.records[i].rel_path}`" for i in _differently_labelled(dataset, g))
                             for g in dataset.conflict_groups[:3])
        lines.append(f"- ⚠️ {len(dataset.conflict_groups)} group(s) look alike but sit in different class "
                     f"folders (worth checking): {examples}")
    return "\n".join(lines)


def _differently_labelled(dataset, group: list[int]) -> tuple[int, int]:
    """Two members of a conflict group that carry different labels (the pair worth showing)."""
    first = group[0]
    other = next(i for i in group if dataset.records[i].label != dataset.records[first].label)
    return first, other


def doctor_markdown(report: dict[str, Any]) -> str:
    """The dataset doctor's report (``pokedemo.doctor.diagnose``) as Markdown for the Train tab's panel."""
    lines = [(f"**{report['n_images']} images in {len(report['classes'])} classes** "
              f"(checked in {report['seconds']:.1f}s)"), ""]
    lines += ["| class | images |", "|---|---:|"]
    lines += [f"| {name} | {n} |" for name, n in report["classes"].items()]
    sizes = report["sizes"]
    lines += [
        "",
        f"- formats: {format_counts(report['formats'])}; modes: {format_counts(report['modes'])}",
        "- sizes: width {min}–{max} (median {median:g}), ".format(**sizes["width"])
        + "height {min}–{max} (median {median:g})".format(**sizes["height"]),
        (f"- exact duplicate groups: {len(report['exact_duplicate_groups'])}; near-duplicate groups: "
         f"{len(report['near_duplicate_groups'])}; label conflicts: {len(report['conflict_groups'])}"),
        f"- {split_sentence(report['split'])}",
    ]
    if report["unreadable"]:
        lines += ["", "**Unreadable files (skipped):**"]
        lines += [f"- `{p}`: {report['unreadable_reasons'][p]}" for p in report["unreadable"][:20]]
    if report["warnings"]:
        lines += ["", *[f"⚠️ {w}  " for w in report["warnings"]]]
    return "\n".join(lines)


def doctor_panel_markdown(report: dict[str, Any]) -> str:
    """The doctor's Markdown plus, when there are label conflicts, what to do about the strips below it."""
    text = doctor_markdown(report)
    if report["conflict_groups"]:
        text += ("\n\n**Label conflicts** (below): the same picture filed under two classes, or the model is "
                 "taught two answers for one image. Click a strip, pick the copy, then move it to the right class "
                 "or set it aside.")
    return text


# ------------------------------------------------------------------------------- fixing the dataset

FIX_HINT = "Click a picture above, then move it to its right class or set it aside. Every change can be undone."
FIX_PICTURE_LABEL = "Picture (click one above)"
FIX_CLASS_LABEL = "Move to class"
FIX_MOVE = "Move to class"
FIX_ASIDE = "Set aside"
FIX_UNDO = "↩ Undo last change"
NOTHING_TO_UNDO = "Nothing to undo: this dataset has no changes made here."
NO_PICTURE = "⚠️ Click a picture above first."
NO_TARGET_CLASS = "⚠️ Pick the class to move the picture to."
ADD_TITLE = "Add pictures or a new class"
ADD_HINT = ("Upload pictures (or take them with the webcam) into a class of this dataset: pick one, or type a new "
            "name to make a new class. Then train again, or continue from a model (2 · How to train).")
ADD_CLASS_LABEL = "Class (pick one, or type a new name)"
ADD_FILES_LABEL = "Pictures"
ADD_WEBCAM_LABEL = "… or take one with the webcam"
ADD_BUTTON = "Add to the class"
ADD_NOTHING = "⚠️ Upload pictures or take one with the webcam first."
CONTINUE_LABEL = "Continue from the model selected in Predict"
CONTINUE_INFO = ("Start from that model's weights instead of ImageNet's: its backbone is used, its classes keep "
                 "what they learned and new classes are added. Ticking it sets the epochs to a continued run's default "
                 "(1 on a CPU): the model already knows its classes.")
BATCH_TITLE = "Predict many pictures at once (files or a .zip)"
BATCH_FILES_LABEL = "Pictures or .zip files of pictures"
BATCH_BUTTON = "Predict all"
BATCH_CSV_LABEL = "Download the table as CSV"
BATCH_EMPTY = "Upload pictures or a .zip of pictures, then press **Predict all**."
BATCH_COLUMNS = ["file", "label", "probability", "error"]


def change_message(result: Any) -> str:
    """What a change (``pokedemo.curation.Change``, or the list an addition returns) did, in one line."""
    if isinstance(result, list):
        folder = result[0].class_to if result else "?"
        return f"✅ Added {len(result)} picture(s) to class **{folder}**. **Undo** removes the last one."
    if result.action == "move":
        return (f"✅ Moved `{result.source}` to class **{result.class_to}** (now `{result.target}`). "
                "**Undo** puts it back.")
    return f"✅ Set aside `{result.source}` (kept in `{result.target}`, out of training). **Undo** puts it back."


def undo_message(change: Any) -> str:
    return f"↩️ Undone: `{change.source}` is back at `{change.target}`."


def working_copy_note(source: Path, copy: Path, made: bool) -> str:
    """Why an edit went somewhere else than the dataset box said: the folder is read-only."""
    if made:
        return (f"ℹ️ `{source}` is read-only (bundled data, a Hub dataset or an unwritable folder), so a working "
                f"copy was made at `{copy}` and the change went there. The dataset box now points to the copy.")
    return f"ℹ️ Changed in the working copy `{copy}` (the original `{source}` is read-only)."


def batch_caption(results: list[Any]) -> str:
    bad = sum(1 for r in results if r.error is not None)
    line = f"**{len(results)} picture(s)**: {len(results) - bad} predicted"
    return line + (f", {bad} could not be used (see the error column)." if bad else ".")


def batch_frame(results: list[Any]) -> pd.DataFrame:
    """One row per picture (``pokedemo.predict.ImagePrediction``): file, top label, its probability, error."""
    rows = [[r.image, r.top_k[0]["label"], percent(r.top_k[0]["prob"]), ""] if r.error is None
            else [r.image, "", "", r.error] for r in results]
    return pd.DataFrame(rows, columns=BATCH_COLUMNS)


def doctor_title(panel_text: str) -> str:
    """The doctor accordion's label: its warning count is visible while it is closed."""
    warnings = panel_text.count("⚠️")
    return DOCTOR_TITLE + (f" — ⚠️ {warnings} warning(s)" if warnings else "")


# ------------------------------------------------------------------------------------------ models


def model_caption(predictor) -> str:
    config = predictor.checkpoint.config
    kind = "pretrained" if config.get("pretrained", True) else "from scratch"
    test = ((config.get("metrics") or {}).get("test") or {}).get("accuracy")
    accuracy = f" · test accuracy {percent(test)}" if test is not None else ""
    return (f"Model `{Path(predictor.checkpoint.path).name}`: {config['backbone']} {kind}, "
            f"{predictor.image_size}px{accuracy} · classes: {', '.join(predictor.classes)}")


def unknown_verdict(n_classes: int) -> str:
    return f"Not one of the {n_classes} classes this model knows"


PREDICTION_TITLE = "Top 5 classes (the closest first)"
THRESHOLD_LABEL = "How sure must it be?"


def prediction_caption(prediction: Any, predictor: Any) -> str:
    """The verdict above the model's caption: the class, or "not one of the N classes" with the closest one."""
    prob = f"{max(prediction.probs):.0%}"
    if prediction.known:
        verdict = f"**{prediction.label}** ({prob})"
    else:
        verdict = (f"**{unknown_verdict(len(prediction.classes))}.** Closest: {prediction.closest} ({prob}), "
                   f"but the picture is too unlike the pictures it was trained on "
                   f"({_score_words(prediction)}).")
    return f"{verdict}\n\n{model_caption(predictor)}"


def _score_words(prediction: Any) -> str:
    which = "the model's own threshold" if prediction.default_threshold else "the threshold you chose"
    return f"{prediction.score_name} score {prediction.score:.2f}, {which} {prediction.threshold:.2f}"


def threshold_info(score: str, default: float | None, how_fitted: str | None) -> str:
    """What the threshold control means for a model, with its default marked; ``how_fitted`` (the rule in words)
    None: the model records no fitted threshold."""
    from pokedemo.openset import score_kind

    what = f"The least {score_kind(score).description} a picture needs to count as one of the classes"
    if how_fitted is None:
        return (f"{what}. Default {default:.2f}: this model records no fitted threshold (it was trained before "
                "they existed), so the default is a fixed one.")
    mark = f"Default {default:.2f}" if default is not None else "Default: one threshold per class"
    return f"{what}. {mark}, {how_fitted}; higher = stricter."


def cam_caption(result: Any, prediction: dict | None = None) -> str:
    """What the Grad-CAM overlay shows, in words a first-time user can follow. ``prediction`` (the Predict tab's
    answer, ``Prediction.to_dict``) supplies the probabilities, so the caption repeats the numbers of the label."""
    probs = {item["label"]: item["prob"] for item in (prediction or {}).get("top_k", [])}
    sure = f"{probs.get(result.label, result.prob):.0%}"
    closest = (prediction or {}).get("closest", result.predicted)
    if prediction is not None and prediction.get("label") is None and result.label == closest:
        text = (f"Where the model looked for **{result.label}**, the closest class ({sure}; the picture is none of "
                "its classes): bright = the parts that pushed it ")
    elif result.label == closest:
        text = f"Where the model looked to answer **{result.label}** ({sure}): bright = the parts that pushed it "
    else:
        text = (f"Where the model sees evidence for **{result.label}** ({sure}; its answer was "
                f"{closest}): bright = the parts that pushed it ")
    text += "towards that class, dark = ignored."
    if result.evidence <= 0:
        text += " Nothing in this image speaks for that class, so the map is empty."
    return text


def hub_choice_label(spec: str, test_accuracy: float | None) -> str:
    """The checkpoint pickers' label of a model loaded from the Hub."""
    accuracy = f" · test {test_accuracy:.1%}" if test_accuracy is not None else ""
    return f"{spec.strip()} (from the Hub){accuracy}"


# ------------------------------------------------------------------------------------------ download

DOWNLOAD_TITLE = "Download this model: ONNX, and the run folder as a zip"
DOWNLOAD_INTRO = (
    "The model selected above as **`model.onnx`**, for your own program, phone or browser (onnxruntime; no "
    "pokedemo, PyTorch or timm needed), and its **run folder as a zip** (weights, config, history, and the "
    "ONNX export with `predict_onnx.py`, which reads pictures exactly as this app does). The first download of "
    "a model exports it and checks the export against this app's own answers on its test pictures, which can "
    "take a minute or two."
)
DOWNLOAD_BUTTON = "Prepare the download"
DOWNLOAD_FILES_LABEL = "model.onnx and the run folder (.zip)"
DOWNLOAD_NO_CHECKPOINT = "❌ Pick a model above first."


def download_ready(record: dict[str, Any]) -> str:
    """What the download holds and how closely the ONNX model gives this app's answers."""
    parity, latency = record.get("parity") or {}, record.get("latency")
    size = f"`model.onnx` ({record.get('size_bytes', 0) / 1e6:.1f} MB)"
    if parity.get("skipped"):
        checked = f" Not checked against this app: {parity['skipped']}."
    else:
        checked = (f" It gives this app's answers: probabilities within {parity['max_abs_diff']:.0e} and the same "
                   f"top class on {parity['top1_agree']} of {parity['pictures']} test pictures.")
    timing = (f" One picture on this server's CPU: {latency['onnxruntime_p50_ms']:.0f} ms with onnxruntime, "
              f"{latency['torch_p50_ms']:.0f} ms with PyTorch." if latency else "")
    return f"✅ {size} and the run folder are ready below.{checked}{timing}"


def download_failed(exc: BaseException) -> str:
    return f"❌ No download: {friendly_error(exc)}"


# ------------------------------------------------------------------------------------------ the Hub

PUSH_NO_CHECKPOINT = "❌ Pick a checkpoint to push first."
PUSH_NO_REPO = "❌ Enter a repo id such as `your-name/pokemon-classifier`."
AUTO_PUSH_NO_REPO = "❌ Automatic push is on but no repo id is set in the Hub panel; nothing was pushed."
LOAD_NO_REPO = "❌ Enter a Hub repo id such as `namespace/name` or `namespace/name@revision`."


def push_done(result: Any) -> str:
    """A successful push (``pokedemo.hub.PushResult``): the link, the commit, and how to load it."""
    timm_line = (f" It also loads in timm: `timm.create_model(\"hf-hub:{result.repo_id}\", pretrained=True)`."
                 if result.timm_compatible else "")
    return (f"✅ Pushed to [{result.repo_id}]({result.url}) (commit `{result.commit_oid[:7]}`, "
            f"{'private' if result.private else 'public'}). Load it with `python -m pokedemo predict --checkpoint "
            f"{result.repo_id} IMAGE`.{timm_line}")


def push_failed(err: BaseException, token: str | None, expected: bool = True) -> str:
    """A failed push in one token-free line; ``expected`` = a HubError/CheckpointError (else a bug's type too)."""
    if expected:
        return f"❌ Push failed: {scrub(str(err), token)}"
    return f"❌ Push failed unexpectedly ({scrub(one_line(err, first=True, typed=True), token)})"


def hub_load_failed(spec: str, err: BaseException, token: str | None, expected: bool = True) -> str:
    """Why a Hub model could not be loaded, one token-free line (without the ❌, which the panel adds)."""
    if expected:
        return f"Could not load {spec.strip()} from the Hub: {scrub(str(err), token)}"
    return f"Could not load {spec.strip()}: {scrub(one_line(err, first=True, typed=True), token)}"


def hub_loaded(spec: str) -> str:
    return f"✅ Loaded {spec.strip()} from the Hub. It is selected as the model above."


def friendly_error(exc: BaseException) -> str:
    """One line for the user: the engine's own messages as they are, anything else with its type."""
    if isinstance(exc, ImageLoadError):
        return f"This file cannot be used as an image: {exc}"
    if isinstance(exc, (CheckpointError, DatasetError, ValueError, OSError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    _log.error("unexpected error in the app", exc_info=exc)  # a bug: keep the traceback for the server log
    return f"unexpected error ({type(exc).__name__}: {exc})"


# ------------------------------------------------------------------------------------------ public mode
# What a visitor reads when the app is open to others (pokedemo.app.public). The refusals say what is allowed
# and nothing about what was asked: the same words whether a server path exists or not.

PUBLIC_DATA_REFUSED = ("In this public demo a dataset is the bundled data (data/pokemon), a .zip you upload, or a "
                       "Hub dataset (hf://datasets/NAMESPACE/NAME); folders on the server are not available.")
PUBLIC_IMAGE_REFUSED = ("In this public demo a picture is one you upload, take with the webcam or paste, or one "
                        "of the examples; files on the server are not available.")
PUBLIC_MODEL_REFUSED = ("This is not one of this app's checkpoints: in this public demo a model is one in the "
                        "list, one of your runs or a Hub repo id (namespace/name).")
PUBLIC_DATA_LABEL = ("Dataset: data/pokemon (bundled), a .zip you upload below, or hf://datasets/NAMESPACE/NAME "
                     "(public demo: folders on the server are not available)")
PUBLIC_PUSH_TOKEN_NEEDED = ("❌ Enter your own Hugging Face access token (write) to push: this public demo never "
                            "uses the server's token.")
PUBLIC_TOKEN_INFO = ("Needed to push (a 'write' token), and to load your private models or datasets: this public "
                     "demo never uses the server's token. Used for this action only, never shown or saved.")


def public_caps(limits: Any) -> str:
    """The fair-use limits of a run in public mode, as one clause."""
    return (f"at most {limits.max_epochs} epochs at {limits.max_img_size} px, stopped after "
            f"{limits.max_run_minutes:g} minutes (the best epoch so far is kept)")


def public_banner(limits: Any) -> str:
    """The line the page shows when public mode is on (``limits``: ``pokedemo.app.public.PublicLimits``)."""
    return (f"🌐 **Public demo.** Datasets: the bundled data, a .zip you upload or a Hub dataset. Your runs and "
            f"uploads are yours alone (other visitors never see them), up to {limits.session_mb} MB, and are "
            f"deleted {format_hours(limits.session_hours)} after your last action. One training at a time for "
            f"everyone ({public_caps(limits)}); yours waits in the queue with its position shown. Pushing to "
            "the Hub needs your own token.")


def public_caps_refused(limits: Any) -> str:
    return f"In this public demo a run is limited to {public_caps(limits)}; lower the epochs or the image size."


def public_time_limit(limits: Any) -> str:
    return (f"Stopped after {limits.max_run_minutes:g} minutes, the time limit of a run in this public demo; the best "
            "epoch so far is kept.")


def public_space_full(used: int, limit: int) -> str:
    from pokedemo.hub import human_size

    return (f"Your files in this public demo take {human_size(used)} of the {human_size(limit)} each visitor may "
            "use; nothing more can be saved for you now (they are deleted a while after your last action).")


def format_hours(hours: float) -> str:
    """1 hour, 2 hours, 30 minutes."""
    if hours < 1:
        return f"{round(hours * 60)} minutes"
    return f"{hours:g} hour" + ("" if hours == 1 else "s")
