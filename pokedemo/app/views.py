"""Pure data for the app's charts and pictures: engine events → run state, plot frames, progress; reports →
pictures. No Gradio and no torch here, so all of it is unit-tested directly.

``RunView``/``CompareView`` follow a training (or a comparison) event by event (``pokedemo.events``);
``curve_frames``/``compare_frames`` turn their points into the frames a ``gr.LinePlot`` draws.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from pokedemo.app.text import format_duration, many_classes, percent
from pokedemo.events import (
    BatchProgress,
    Cancelled,
    CompareFinished,
    EpochEnd,
    Event,
    Failed,
    Finished,
    NewBest,
    RunStarted,
    Stage,
    Tagged,
)
from pokedemo.images import ImageLoadError, load_image
from pokedemo.metrics import classification_report
from pokedemo.report import confusion_image, errors_gallery_items

LOG_LINES = 12
RUN_LABELS = ("pretrained", "scratch")
PLOT_COLUMNS = ["epoch", "value", "series"]
THUMB_SIDE = 160  # conflict thumbnails in the doctor panel
CONFLICT_STRIPS = 24  # conflict groups shown as strips


# --------------------------------------------------------------------------------------- run state


@dataclass
class RunView:
    """What the app shows about one training run, updated event by event (pure: no Gradio, no torch).

    ``points`` feed the curves: one row per value with the run, a fractional epoch, the metric ("loss" or
    "accuracy") and the split ("batch" = training loss of single batches, "train", "val").
    """

    run: str = ""
    points: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    fraction: float = 0.0
    status: str = "Waiting for the trainer…"
    run_dir: str | None = None
    final: Event | None = None

    def update(self, event: Event) -> None:
        match event:
            case Stage():
                self._stage(event)
            case RunStarted():
                self._started(event)
            case BatchProgress():
                self._batch(event)
            case EpochEnd():
                self._epoch_end(event)
            case NewBest():
                self._new_best(event)
            case Finished():
                self._finished(event)
            case Cancelled():
                self._cancelled(event)
            case Failed():
                self._failed(event)

    def note(self, line: str) -> None:
        self.log = (self.log + [line])[-LOG_LINES:]

    def _stage(self, event: Stage) -> None:
        self.status = event.message + "…"
        self.note(event.message)

    def _started(self, event: RunStarted) -> None:
        self.run_dir = event.run_dir
        sizes = event.split_sizes
        self.status = f"Started on {event.device}"
        self.note(f"Training on {event.device}: {sizes['train']} train / {sizes['val']} val / "
                  f"{sizes['test']} test images, {event.total_steps} steps")

    def _batch(self, event: BatchProgress) -> None:
        self.fraction = event.step / max(event.total_steps, 1)
        self.status = (f"Epoch {event.epoch}/{event.epochs} · step {event.step}/{event.total_steps} · "
                       f"{event.images_per_sec:.0f} images/s · ETA {format_duration(event.eta_seconds)}")
        steps_per_epoch = event.total_steps / max(event.epochs, 1)
        self._point(event.step / steps_per_epoch, event.loss, "loss", "batch")
        self._point(event.step / steps_per_epoch, event.accuracy, "accuracy", "batch")

    def _epoch_end(self, event: EpochEnd) -> None:
        self.fraction = event.epoch / max(event.epochs, 1)
        for metric, split, value in (("loss", "train", event.train_loss), ("loss", "val", event.val_loss),
                                     ("accuracy", "train", event.train_acc), ("accuracy", "val", event.val_acc)):
            self._point(event.epoch, value, metric, split)
        self.note(f"epoch {event.epoch}/{event.epochs}: train loss {event.train_loss:.3f} acc "
                  f"{percent(event.train_acc)} · val loss {event.val_loss:.3f} acc {percent(event.val_acc)} · "
                  f"{event.images_per_sec:.0f} images/s · {format_duration(event.elapsed)}")

    def _new_best(self, event: NewBest) -> None:
        self.run_dir = event.run_dir
        self.note(f"  new best (val acc {percent(event.val_acc)}): checkpoint saved")

    def _finished(self, event: Finished) -> None:
        self.final, self.run_dir, self.fraction = event, event.run_dir, 1.0
        self.status = f"Done in {format_duration(event.seconds)} · test accuracy {percent(event.test_acc)}"
        self.note(f"Finished: best epoch {event.best_epoch}, test accuracy {percent(event.test_acc)}")

    def _cancelled(self, event: Cancelled) -> None:
        self.final, self.run_dir = event, event.run_dir
        self.status = "Stopped. " + event.message
        self.note(event.message)

    def _failed(self, event: Failed) -> None:
        self.final, self.run_dir = event, None
        self.status = "Failed: " + event.message
        self.note("Failed: " + event.message)

    def _point(self, epoch: float, value: float, metric: str, split: str) -> None:
        self.points.append({"run": self.run, "epoch": round(float(epoch), 3), "value": float(value),
                            "metric": metric, "split": split})


@dataclass
class CompareView:
    """Both runs of a pretrained-vs-scratch comparison, fed with the events of ``pokedemo.train.compare``."""

    runs: dict[str, RunView] = field(default_factory=lambda: {r: RunView(run=r) for r in RUN_LABELS})
    current: str = RUN_LABELS[0]
    final: Event | None = None

    def update(self, event: Event) -> None:
        match event:
            case Tagged(run=run, event=inner):
                self.current = run
                self.runs[run].update(inner)
            case CompareFinished() | Failed():
                self.final = event

    @property
    def points(self) -> list[dict[str, Any]]:
        return [p for view in self.runs.values() for p in view.points]

    @property
    def fraction(self) -> float:
        index = RUN_LABELS.index(self.current) if self.current in RUN_LABELS else 0
        return (index + self.runs[self.current].fraction) / len(RUN_LABELS)

    @property
    def status(self) -> str:
        match self.final:
            case CompareFinished():
                return "Both runs finished."
            case Failed(message=message):
                return "Failed: " + message
        index = RUN_LABELS.index(self.current) + 1
        return f"Run {index} of {len(RUN_LABELS)} ({self.current}): {self.runs[self.current].status}"

    @property
    def log(self) -> list[str]:
        lines = [f"[{run}] {line}" for run, view in self.runs.items() for line in view.log]
        if isinstance(self.final, Failed):
            lines.append("Failed: " + self.final.message)
        return lines[-LOG_LINES:]

    def message(self) -> str | None:
        """The message of a run that did not finish (failed or stopped), if any."""
        if isinstance(self.final, Failed):
            return self.final.message
        for view in self.runs.values():
            if isinstance(view.final, (Failed, Cancelled)):
                return view.final.message
        return None


# ------------------------------------------------------------------------------------------- curves


SERIES_NAMES = {  # short: the legend sits under a narrow chart whose title names the metric
    ("loss", "batch"): "train (each batch)", ("loss", "train"): "train (epoch)", ("loss", "val"): "validation",
    ("accuracy", "batch"): "train (each batch)", ("accuracy", "train"): "train (epoch)",
    ("accuracy", "val"): "validation",
}
LOSS_SERIES = [SERIES_NAMES[("loss", split)] for split in ("batch", "train", "val")]
ACCURACY_SERIES = [SERIES_NAMES[("accuracy", split)] for split in ("batch", "train", "val")]


def series_frame(rows: list[dict[str, Any]], series: list[str]) -> pd.DataFrame:
    """Plot rows plus an empty (NaN) row for every series without points yet.

    A LinePlot fixes its colours and legend from the series in the first data it draws (Gradio 6.31), so every
    series has to be there from the start; NaN points are not drawn.
    """
    present = {row["series"] for row in rows}
    missing = [{"epoch": 0.0, "value": float("nan"), "series": name} for name in series if name not in present]
    return pd.DataFrame(rows + missing, columns=PLOT_COLUMNS)


def curve_frames(points: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(loss, accuracy) frames for gr.LinePlot: columns epoch, value, series."""
    frames = []
    for metric, series in (("loss", LOSS_SERIES), ("accuracy", ACCURACY_SERIES)):
        rows = [{"epoch": p["epoch"], "value": p["value"], "series": SERIES_NAMES[(metric, p["split"])]}
                for p in points if p["metric"] == metric]
        frames.append(series_frame(rows, series))
    return frames[0], frames[1]


def compare_frames(points: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(validation accuracy, training loss) frames with one series per run (colour = pretrained / scratch)."""
    acc = [{"epoch": p["epoch"], "value": p["value"], "series": p["run"]}
           for p in points if p["metric"] == "accuracy" and p["split"] == "val"]
    loss = [{"epoch": p["epoch"], "value": p["value"], "series": p["run"]}
            for p in points if p["metric"] == "loss" and p["split"] == "train"]
    return series_frame(acc, list(RUN_LABELS)), series_frame(loss, list(RUN_LABELS))


_HISTORY_KEYS = (("loss", "train", "train_loss"), ("loss", "val", "val_loss"), ("accuracy", "train", "train_acc"),
                 ("accuracy", "val", "val_acc"))


def history_points(run: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-epoch points a RunView would have collected, from a finished run's history.json records."""
    return [{"run": run, "epoch": float(h["epoch"]), "value": float(h[key]), "metric": metric, "split": split}
            for h in history for metric, split, key in _HISTORY_KEYS if key in h]


def recorded_compare_frames(record: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(validation accuracy, training loss) frames of a recorded comparison (scripts/make_starter.py)."""
    points = [p for run in RUN_LABELS for p in history_points(run, record["history"].get(run, []))]
    return compare_frames(points)


def plot_value(frame: pd.DataFrame) -> pd.DataFrame | None:
    """What a LinePlot is sent: None until there is a real point (an empty first frame never redraws, see
    ``layout._plot``)."""
    return frame if frame["value"].notna().any() else None


# ------------------------------------------------------------------------------------------ reports


def report_on_items(items: list[dict[str, Any]], classes: list[str], keep: set[str]) -> dict[str, Any]:
    """Classification report restricted to the evaluated images whose path is in ``keep``."""
    chosen = [it for it in items if it["path"] in keep]
    index = {name: i for i, name in enumerate(classes)}
    return classification_report([index[it["true"]] for it in chosen], [index[it["pred"]] for it in chosen],
                                 classes)


def confusion_picture(report: dict[str, Any] | None):
    """The confusion matrix as a PIL image (class names on both axes, counts, colour), None without a report
    and above MATRIX_MAX_CLASSES classes (unreadable; the captions list the top confusions instead)."""
    if not report or many_classes(report):
        return None

    return confusion_image(report)


def errors_items(report: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """(picture, caption) of each misclassified test image, for a gr.Gallery, and what each tile shows for the
    fix panel under it (``fixable``: the picture, and its predicted class as the suggested one)."""
    tiles = errors_gallery_items(report)
    return ([(img, caption) for img, caption, _ in tiles],
            fixable(report["root"], [([item["path"]], item["pred"]) for _, _, item in tiles]))


def fixable(root: str | os.PathLike, tiles: list[tuple[list[str], str | None]]) -> dict[str, Any]:
    """What the fix panel of a gallery keeps (in a gr.State): the dataset folder and, per tile, its pictures
    (paths relative to the folder) and the class suggested for them (None: no suggestion)."""
    return {"root": str(root), "tiles": [{"paths": list(paths), "suggest": suggest} for paths, suggest in tiles]}


# ------------------------------------------------------------------------------------ doctor pictures


def conflict_thumbnails(report: dict[str, Any], root: str | os.PathLike | None = None,
                        limit: int = CONFLICT_STRIPS) -> list[tuple[Any, str]]:
    """One side-by-side strip per label-conflict group of a doctor report (for a gr.Gallery): each picture
    with its class folder written under it; the caption lists the paths."""
    base = Path(root or report["root"])
    out = []
    for group in report["conflict_groups"][:limit]:  # conflict_fixable lists the same groups
        tiles = [(_thumbnail(base / p), p.split("/", 1)[0]) for p in group]
        out.append((_strip(tiles), " | ".join(group)))
    return out


def conflict_fixable(report: dict[str, Any], root: str | os.PathLike | None = None,
                     limit: int = CONFLICT_STRIPS) -> dict[str, Any]:
    """The fix panel's state for the conflict strips of ``conflict_thumbnails`` (same order): each strip's
    pictures, no suggested class (which copy is right is the user's call)."""
    return fixable(root or report["root"], [(group, None) for group in report["conflict_groups"][:limit]])


def _thumbnail(path: Path):


    try:
        img = load_image(path, max_side=THUMB_SIDE * 2)
    except ImageLoadError:  # deleted or changed since the scan: a grey tile keeps the strip readable
        return Image.new("RGB", (THUMB_SIDE, THUMB_SIDE), (200, 200, 200))
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    return img


def _strip(tiles: list[tuple[Any, str]], gap: int = 8, label_height: int = 24):
    """Tiles side by side on white, bottom-aligned, each with its label centred underneath."""
    font = ImageFont.load_default(size=15)
    height = max(im.height for im, _ in tiles)
    width = sum(max(im.width, 60) for im, _ in tiles) + gap * (len(tiles) - 1)
    strip = Image.new("RGB", (width, height + label_height), "white")
    draw = ImageDraw.Draw(strip)
    x = 0
    for im, label in tiles:
        cell = max(im.width, 60)
        strip.paste(im, (x + (cell - im.width) // 2, height - im.height))
        draw.text((x + cell / 2, height + label_height / 2), label, fill=(20, 20, 20), font=font, anchor="mm")
        x += cell + gap
    return strip
