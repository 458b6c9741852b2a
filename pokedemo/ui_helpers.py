"""The "seeing inside" and Hub panels of the app, as plain functions over the engine (no Gradio here).

Each turns what ``pokedemo.doctor``, ``pokedemo.report``, ``pokedemo.gradcam`` and ``pokedemo.hub`` return
into values the app's components show (Markdown, gallery items, PIL images, data frames), and every failure a
user can cause into one friendly line. ``pokedemo.ui`` wires them to components; the tests call them
through gradio_client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

TOP_CLASS = "top class"  # the Grad-CAM class picker's default entry: explain whatever the model predicted
DOCTOR_EMPTY = "Choose a dataset above: the doctor checks it for duplicates, label conflicts and odd files."
NO_ERRORS = "No mistakes on the test images: every one was classified correctly."


def doctor_panel(folder: str | None) -> tuple[str, list]:
    """(Markdown report, conflict strips for a gr.Gallery) for the dataset folder; a message when unusable."""
    from pokedemo.data import DatasetError
    from pokedemo.doctor import conflict_thumbnails, diagnose, doctor_markdown

    folder = (folder or "").strip()
    if not folder:
        return DOCTOR_EMPTY, []
    try:
        report = diagnose(folder)
    except (DatasetError, ValueError, OSError) as exc:
        return f"⚠️ {exc}", []
    text = doctor_markdown(report)
    if report["conflict_groups"]:
        text += ("\n\n**Label conflicts** (below): the same picture filed under two classes. Delete or move one "
                 "copy, or the model is taught two answers for one image.")
    return text, conflict_thumbnails(report, folder)


def data_root_for(predictor: Any, folder: str | None) -> str | None:
    """The folder the checkpoint was trained on, else the Train tab's folder (e.g. a checkpoint from the Hub)."""
    recorded = (predictor.checkpoint.config.get("dataset") or {}).get("root")
    if recorded and Path(recorded).is_dir():
        return recorded
    return (folder or "").strip() or None


def test_report(predictor: Any, folder: str | None) -> dict[str, Any]:
    """The checkpoint evaluated on the test images its run held out (with ``items`` and ``root``)."""
    from pokedemo.predict import evaluate_split

    return evaluate_split(predictor, data_root=data_root_for(predictor, folder))


def errors_caption(report: dict[str, Any]) -> str:
    wrong = sum(1 for item in report["items"] if item["true"] != item["pred"])
    if not wrong:
        return NO_ERRORS
    return (f"**{wrong} of {report['n']} test images misclassified**, the most confident mistakes first. "
            "Caption: true class → predicted class (how sure the model was of its wrong answer).")


def errors_items(report: dict[str, Any]) -> list:
    from pokedemo.report import errors_gallery

    return errors_gallery(report)


def per_class_rows(report: dict[str, Any]) -> pd.DataFrame:
    """Per-class precision / recall / F1 in percent, plus the macro average row."""
    from pokedemo.report import per_class_table

    rows = [[name, *(f"{v:.1%}" for v in (p, r, f1)), n] for name, p, r, f1, n in per_class_table(report)]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "F1", "test images"])


def cam_caption(result: Any) -> str:
    """What the overlay shows, in words a first-time user can follow."""
    sure = f"{result.prob:.0%}"
    if result.label == result.predicted:
        text = f"Where the model looked to answer **{result.label}** ({sure}): bright = the parts that pushed it "
    else:
        text = (f"Where the model sees evidence for **{result.label}** ({sure}; its answer was "
                f"{result.predicted}): bright = the parts that pushed it ")
    text += "towards that class, dark = ignored."
    if result.evidence <= 0:
        text += " Nothing in this image speaks for that class, so the map is empty."
    return text


def cam_target_value(choice: str | None, classes: list[str]) -> str | None:
    """The class the picker asks for, or None for the top class (also when the picked class is unknown)."""
    return choice if choice in classes and choice != TOP_CLASS else None


def cam_choices(classes: list[str]) -> list[str]:
    return [TOP_CLASS, *classes]


def hub_spec(text: str | None) -> bool:
    """True when ``text`` reads as a Hub repo id (NAMESPACE/NAME[@REVISION]) and is no local path."""
    from pokedemo.hub import HubError, parse_repo_ref

    text = (text or "").strip()
    if not text or os.path.exists(text) or text.startswith((".", "/", "~")):
        return False
    try:
        parse_repo_ref(text)
    except HubError:
        return False
    return True


def hub_choice(spec: str, path: Path) -> tuple[str, str]:
    """(label, value) of a model loaded from the Hub, for the checkpoint pickers."""
    from pokedemo.checkpoint import read_config

    try:
        test = ((read_config(path).get("metrics") or {}).get("test") or {}).get("accuracy")
    except Exception:  # noqa: BLE001 - the label is cosmetic; download_for_ui validated the files already
        test = None
    accuracy = f" · test {test:.1%}" if test is not None else ""
    return f"{spec.strip()} (from the Hub){accuracy}", str(path)
