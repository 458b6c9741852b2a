"""The Gradio app: Train, Predict and Compare tabs over the pokedemo engine.

The UI never re-implements data, training or prediction logic: it turns the engine's typed events
(``pokedemo.events``) into plot data frames, text and HTML with small pure functions (``RunView``,
``curve_frames``, ``confusion_html`` ... — unit-tested without Gradio), and wires them to components in
``build_demo()``. Nothing heavy happens at import or build time: no model is loaded, nothing is downloaded;
torch-backed modules are imported by the handlers that need them.

Concurrency: one training or comparison at a time for the whole server (``concurrency_id="train"``, limit 1;
later requests wait in the queue and see their position). Predictions have their own concurrency group, so
they stay fast while a job trains. Stop is a ``threading.Event`` per browser session that the engine checks
every batch; the engine then saves the best checkpoint so far and reports ``Cancelled``.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a teaching demo
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402 - after the environment switches above
import pandas as pd  # noqa: E402

from pokedemo.config import TrainConfig, default_checkpoint_root  # noqa: E402
from pokedemo.data import IMAGE_EXTENSIONS  # noqa: E402
from pokedemo import ui_helpers as helpers  # noqa: E402
from pokedemo.events import (  # noqa: E402
    BatchProgress, Cancelled, CompareFinished, EpochEnd, Event, Failed, Finished, NewBest, RunStarted, Stage,
    Tagged,
)

_log = logging.getLogger(__name__)

QUEUE_MAX_SIZE = 32                 # waiting requests of all kinds; more are refused with "queue full"
PREDICT_CONCURRENCY = 4             # predictions answered in parallel (each holds the Predictor lock briefly)
MAX_UPLOAD = "300mb"                # images and dataset zips
LOG_LINES = 12
INFO_SECONDS = 6                    # how long an info toast stays
UI_INTERVAL_S = 0.5                 # at most this often a batch-progress update is streamed to the browser
EXAMPLES_PER_CLASS = 1
RUN_LABELS = ("pretrained", "scratch")

NO_DATASET = ("No dataset yet: type the path of a folder with one sub-folder per class (e.g. data/pokemon), "
              "or upload a .zip of such folders.")
NO_CHECKPOINT = "No trained model yet: train one in the **Train** tab (a 2-epoch run takes about a minute)."
PLOT_COLUMNS = ["epoch", "value", "series"]


# ------------------------------------------------------------------------------------------- formatting


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


def progress_html(fraction: float, text: str) -> str:
    """A plain HTML progress bar (inline styles, so it looks the same in every theme) with a caption."""
    width = max(0.0, min(1.0, fraction)) * 100
    return (
        '<div class="pd-progress" style="margin:4px 0 8px 0">'
        '<div style="background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="width:{width:.1f}%;height:100%;background:#f97316;transition:width .3s"></div></div>'
        f'<div style="font-size:0.9em;margin-top:4px">{html.escape(text)}</div></div>'
    )


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
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def note(self, line: str) -> None:
        self.log = (self.log + [line])[-LOG_LINES:]

    def _on_Stage(self, event: Stage) -> None:
        self.status = event.message + "…"
        self.note(event.message)

    def _on_RunStarted(self, event: RunStarted) -> None:
        self.run_dir = event.run_dir
        sizes = event.split_sizes
        self.status = f"Started on {event.device}"
        self.note(f"Training on {event.device}: {sizes['train']} train / {sizes['val']} val / "
                  f"{sizes['test']} test images, {event.total_steps} steps")

    def _on_BatchProgress(self, event: BatchProgress) -> None:
        self.fraction = event.step / max(event.total_steps, 1)
        self.status = (f"Epoch {event.epoch}/{event.epochs} · step {event.step}/{event.total_steps} · "
                       f"{event.images_per_sec:.0f} images/s · ETA {format_duration(event.eta_seconds)}")
        steps_per_epoch = event.total_steps / max(event.epochs, 1)
        self._point(event.step / steps_per_epoch, event.loss, "loss", "batch")

    def _on_EpochEnd(self, event: EpochEnd) -> None:
        self.fraction = event.epoch / max(event.epochs, 1)
        for metric, split, value in (("loss", "train", event.train_loss), ("loss", "val", event.val_loss),
                                     ("accuracy", "train", event.train_acc), ("accuracy", "val", event.val_acc)):
            self._point(event.epoch, value, metric, split)
        self.note(f"epoch {event.epoch}/{event.epochs}: train loss {event.train_loss:.3f} acc "
                  f"{percent(event.train_acc)} · val loss {event.val_loss:.3f} acc {percent(event.val_acc)} · "
                  f"{event.images_per_sec:.0f} images/s · {format_duration(event.elapsed)}")

    def _on_NewBest(self, event: NewBest) -> None:
        self.run_dir = event.run_dir
        self.note(f"  new best (val acc {percent(event.val_acc)}): checkpoint saved")

    def _on_Finished(self, event: Finished) -> None:
        self.final, self.run_dir, self.fraction = event, event.run_dir, 1.0
        self.status = f"Done in {format_duration(event.seconds)} · test accuracy {percent(event.test_acc)}"
        self.note(f"Finished: best epoch {event.best_epoch}, test accuracy {percent(event.test_acc)}")

    def _on_Cancelled(self, event: Cancelled) -> None:
        self.final, self.run_dir = event, event.run_dir
        self.status = "Stopped. " + event.message
        self.note(event.message)

    def _on_Failed(self, event: Failed) -> None:
        self.final, self.run_dir = event, None
        self.status = "Failed: " + event.message
        self.note("Failed: " + event.message)

    def _point(self, epoch: float, value: float, metric: str, split: str) -> None:
        self.points.append({"run": self.run, "epoch": round(float(epoch), 3), "value": float(value),
                            "metric": metric, "split": split})


SERIES_NAMES = {  # short: the legend sits under a narrow chart whose title names the metric
    ("loss", "batch"): "train (each batch)", ("loss", "train"): "train (epoch)", ("loss", "val"): "validation",
    ("accuracy", "train"): "train", ("accuracy", "val"): "validation",
}


LOSS_SERIES = [SERIES_NAMES[("loss", split)] for split in ("batch", "train", "val")]
ACCURACY_SERIES = [SERIES_NAMES[("accuracy", split)] for split in ("train", "val")]


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


@dataclass
class CompareView:
    """Both runs of a pretrained-vs-scratch comparison, fed with the events of ``pokedemo.train.compare``."""

    runs: dict[str, RunView] = field(default_factory=lambda: {r: RunView(run=r) for r in RUN_LABELS})
    current: str = RUN_LABELS[0]
    final: Event | None = None

    def update(self, event: Event) -> None:
        if isinstance(event, Tagged):
            self.current = event.run
            self.runs[event.run].update(event.event)
        elif isinstance(event, (CompareFinished, Failed)):
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
        if isinstance(self.final, CompareFinished):
            return "Both runs finished."
        if isinstance(self.final, Failed):
            return "Failed: " + self.final.message
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


# ------------------------------------------------------------------------------------------ results


def per_class_frame(report: dict[str, Any]) -> pd.DataFrame:
    rows = [{"class": name, "precision": percent(m["precision"]), "recall": percent(m["recall"]),
             "F1": percent(m["f1"]), "test images": m["support"]} for name, m in report["per_class"].items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "F1", "test images"])


def confusion_html(report: dict[str, Any], title: str = "") -> str:
    """The confusion matrix as a small HTML table: rows = true class, columns = predicted; correct answers
    green, mistakes red, the stronger the larger their share of the row."""
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


def _confusion_cell(count: int, share: float, correct: bool) -> str:
    colour = (34, 197, 94) if correct else (239, 68, 68)
    alpha = 0.12 + 0.75 * share if count else 0.0
    return (f'<td style="padding:4px 10px;text-align:center;border:1px solid #d1d5db;'
            f'background:rgba({colour[0]},{colour[1]},{colour[2]},{alpha:.2f})">{count}</td>')


def results_markdown(final: Event | None) -> str:
    """The headline shown under the curves when a run ends."""
    if isinstance(final, Finished):
        name = Path(final.run_dir).name
        return (f"### Test accuracy: {percent(final.test_acc)}\n"
                f"on {final.test_metrics.get('n', '?')} held-out test images the model never saw while training · "
                f"best epoch {final.best_epoch} (validation {percent(final.best_val_acc)}) · "
                f"took {format_duration(final.seconds)}\n\n"
                f"Saved as `{name}` — now selected in the **Predict** tab.")
    if isinstance(final, Cancelled):
        extra = " It is selected in the **Predict** tab." if final.run_dir else ""
        return f"### Stopped\n{final.message}{extra}"
    if isinstance(final, Failed):
        return f"### Training failed\n{final.message}"
    return ""


def epochs_to_90_text(value: int | None, epochs: int | None = None) -> str:
    if value is None:
        return f"not within {epochs}" if epochs else "not reached"
    return str(value)


COMPARE_COLUMNS = ["run", "test accuracy", "best val accuracy", "wall time", "epochs to 90% val"]


def compare_table(results: dict[str, dict[str, Any]], epochs: int | None = None) -> pd.DataFrame:
    rows = []
    for run, summary in results.items():
        if summary.get("status") != "finished":
            rows.append({"run": run, "test accuracy": summary.get("status", "—"), "best val accuracy": "—",
                         "wall time": "—", "epochs to 90% val": "—"})
            continue
        rows.append({"run": run, "test accuracy": percent(summary["test_acc"]),
                     "best val accuracy": percent(summary["best_val_acc"]),
                     "wall time": format_duration(summary["seconds"]),
                     "epochs to 90% val": epochs_to_90_text(summary.get("epochs_to_90"), epochs)})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def compare_takeaway(results: dict[str, dict[str, Any]], epochs: int) -> str:
    """One sentence a first-time user can take home."""
    pre, scratch = results.get("pretrained", {}), results.get("scratch", {})
    if pre.get("status") != "finished" or scratch.get("status") != "finished":
        return ""
    gap = pre["test_acc"] - scratch["test_acc"]
    return (f"### Pretrained {percent(pre['test_acc'])} vs scratch {percent(scratch['test_acc'])} test accuracy\n"
            f"Same network, same images, same {epochs} epoch(s): starting from ImageNet weights is "
            f"{abs(gap) * 100:.1f} points {'better' if gap >= 0 else 'worse'}.")


def compare_confusions(results: dict[str, dict[str, Any]]) -> str:
    parts = [confusion_html({"classes": s["classes"], "confusion": s["confusion"]}, title=f"{run}: test set")
             for run, s in results.items() if s.get("status") == "finished"]
    return ('<div style="display:flex;gap:24px;flex-wrap:wrap">'
            + "".join(f"<div>{p}</div>" for p in parts) + "</div>")


def report_on_items(items: list[dict[str, Any]], classes: list[str], keep: set[str]) -> dict[str, Any]:
    """Classification report restricted to the evaluated images whose path is in ``keep``."""
    from pokedemo.metrics import classification_report

    chosen = [it for it in items if it["path"] in keep]
    index = {name: i for i, name in enumerate(classes)}
    return classification_report([index[it["true"]] for it in chosen], [index[it["pred"]] for it in chosen],
                                 classes)


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


def summarise_dataset(folder: str | None, seed: float = 0, img_size: float | None = None) -> str:
    """Scan ``folder`` and describe it; a friendly line instead of an exception for anything wrong."""
    from pokedemo.data import DatasetError, scan_dataset, split_dataset

    if not folder or not str(folder).strip():
        return NO_DATASET
    defaults = TrainConfig()
    try:
        # Scanning at the training size fills the tensor cache, so Train starts without decoding again.
        dataset = scan_dataset(str(folder).strip(), image_size=int(img_size) if img_size else None)
        split = split_dataset(dataset, defaults.ratios, int(seed or 0))
    except (DatasetError, ValueError, OSError) as exc:
        return f"⚠️ {exc}"
    return dataset_summary_markdown(dataset, split)


def default_data_dir() -> str:
    """``$POKEDEMO_DATA``, else ``data/pokemon`` when it exists, else empty."""
    env = os.environ.get("POKEDEMO_DATA", "").strip()
    if env:
        return env
    return "data/pokemon" if Path("data/pokemon").is_dir() else ""


def example_images(data_dir: str, per_class: int = EXAMPLES_PER_CLASS) -> list[str]:
    """A few dataset images copied into the temp dir (Gradio serves files from there, not from anywhere)."""
    root = Path(data_dir) if data_dir else None
    if root is None or not root.is_dir():
        return []
    target = Path(tempfile.gettempdir()) / "pokedemo-examples"
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        for image in images[:per_class]:
            copy = target / f"{folder.name}-{image.name}"
            if not copy.exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, copy)
            found.append(str(copy))
    return found


# ------------------------------------------------------------------------------------------ options


def backbone_choices() -> list[tuple[str, str]]:
    """(label, name) per backbone, the label telling whether its pretrained weights are here.

    Imports torch, torchvision and timm (seconds), so the app calls it on page load, not while starting.
    """
    from pokedemo.models import BACKBONE_NAMES, weights_status

    return [(f"{name} — pretrained weights: {weights_status(name)}", name) for name in BACKBONE_NAMES]


def default_backbone(choices: list[tuple[str, str]]) -> str:
    """TrainConfig's backbone if its weights are here, else the first whose weights are, else the default."""
    available = [name for label, name in choices if not label.endswith("needs download")]
    preferred = TrainConfig().backbone
    if preferred in available or not available:
        return preferred
    return available[0]


def backbone_dropdown(current: str | None) -> gr.Dropdown:
    """The backbone picker with fresh weight statuses; keeps the user's choice, else picks a usable default."""
    choices = backbone_choices()
    names = [name for _, name in choices]
    return gr.Dropdown(choices=choices, value=current if current in names else default_backbone(choices))


def warm_up() -> None:
    """Import the engine (torch, torchvision, timm) in the background, so the server answers at once and the
    first page load or training does not wait for these imports."""
    try:
        import pokedemo.predict  # noqa: F401
        import pokedemo.train  # noqa: F401

        backbone_choices()
    except Exception:  # noqa: BLE001 - a broken install shows up, with its message, where it is used
        pass


def make_config(backbone: str, pretrained: bool, strategy: str, epochs: float, lr: float, batch_size: float,
                img_size: float, seed: float) -> TrainConfig:
    """A TrainConfig from widget values (sliders send floats; API callers may send strings)."""
    return TrainConfig(backbone=str(backbone), pretrained=bool(pretrained), strategy=str(strategy),
                       epochs=int(epochs), lr=float(lr), batch_size=int(batch_size), img_size=int(img_size),
                       seed=int(seed))


# -------------------------------------------------------------------------------------- checkpoints


def checkpoint_choices(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(label, run directory) of every usable checkpoint, newest first."""
    from pokedemo.checkpoint import list_checkpoints

    return [(info.label(), str(info.path)) for info in list_checkpoints(root)]


def checkpoint_inside(root: str | os.PathLike, spec: str) -> Path:
    """The run directory ``spec`` (absolute, relative to the working directory, or a run name under ``root``)
    if it lies inside ``root``; the app never loads files from elsewhere."""
    from pokedemo.checkpoint import CheckpointError

    root_dir = Path(root).resolve()
    path = Path(spec).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, root_dir / path]
    inside = [c.resolve() for c in candidates if c.resolve().is_relative_to(root_dir)]
    if not inside:
        raise CheckpointError(f"{spec} is not one of this app's checkpoints")
    return next((c for c in inside if c.exists()), inside[-1])


# ---------------------------------------------------------------------------------------- job control


class JobRegistry:
    """Stop flags of the training jobs in flight, one per browser session, and the session now training."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}
        self.running: str | None = None

    def reserve(self, session: str) -> bool:
        """Register a job for ``session`` before it is queued; False if that session already has one."""
        with self._lock:
            if session in self._flags:
                return False
            self._flags[session] = threading.Event()
            return True

    def request_stop(self, session: str) -> bool:
        with self._lock:
            flag = self._flags.get(session)
        if flag is None:
            return False
        flag.set()
        return True

    def busy_elsewhere(self, session: str) -> bool:
        return self.running is not None and self.running != session

    @contextmanager
    def running_job(self, session: str) -> Iterator[threading.Event]:
        """The session's stop flag while its job runs (API callers that skipped ``reserve`` get a fresh one)."""
        with self._lock:
            flag = self._flags.setdefault(session, threading.Event())
            self.running = session
        try:
            yield flag
        finally:
            with self._lock:
                self._flags.pop(session, None)
                if self.running == session:
                    self.running = None


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


# ------------------------------------------------------------------------------------------ handlers


def _empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([], columns=columns)


PER_CLASS_COLUMNS = ["class", "precision", "recall", "F1", "test images"]
CHECKPOINT_TABLE_COLUMNS = ["", "checkpoint", "test accuracy", "macro F1", "test images"]


class DemoApp:
    """Event handlers; one instance per ``build_demo`` (its checkpoint root, default dataset and jobs)."""

    def __init__(self, checkpoint_root: str | os.PathLike, data_dir: str):
        self.checkpoint_root = str(checkpoint_root)
        self.data_dir = data_dir
        self.jobs = JobRegistry()
        self.hub_choices: list[tuple[str, str]] = []  # models loaded from the Hub, listed after local runs
        self.finished_runs: dict[str, str] = {}  # session → run dir of its last finished training (auto-push)

    def choices(self) -> list[tuple[str, str]]:
        return checkpoint_choices(self.checkpoint_root) + self.hub_choices

    # ---- dataset

    def scan(self, folder: str, seed: float, img_size: float) -> str:
        return summarise_dataset(folder, seed, img_size)

    def upload_zip(self, zip_path: str | None, seed: float, img_size: float):
        """Extract an uploaded zip safely; returns (dataset folder, summary)."""
        from pokedemo.uploads import UploadError, extract_dataset_zip, new_upload_dir

        if not zip_path:
            return gr.skip(), gr.skip()
        try:
            root = extract_dataset_zip(zip_path, new_upload_dir())
        except UploadError as exc:
            gr.Warning(f"That zip cannot be used: {exc}")
            return gr.skip(), f"⚠️ That zip cannot be used: {exc}"
        return str(root), summarise_dataset(str(root), seed, img_size)

    # ---- training

    def reserve(self, request: gr.Request = None) -> str:
        """Runs before a training request is queued: registers its stop flag, says whether it has to wait."""
        session = session_of(request)
        if not self.jobs.reserve(session):
            raise gr.Error("A training from this tab is already running or waiting; press Stop first.",
                           title="Busy")
        if self.jobs.busy_elsewhere(session):
            _info("Someone else is training right now; yours starts when that finishes (queue position shown).")
            return progress_html(0, "Waiting: another training is running; yours starts when it finishes.")
        return progress_html(0, "Starting…")

    def stop(self, request: gr.Request = None) -> None:
        if self.jobs.request_stop(session_of(request)):
            _info("Stopping after the current batch; the best checkpoint so far is kept.")
        else:
            _info("Nothing to stop: no training is running from this tab.")

    def train(self, data_dir: str, backbone: str, pretrained: bool, strategy: str, epochs: float, lr: float,
              batch_size: float, img_size: float, seed: float, request: gr.Request = None):
        """Stream one training run: progress, curves and log; results and the new checkpoint at the end."""
        from pokedemo.train import train

        view = RunView()
        with self.jobs.running_job(session_of(request)) as stop:
            events = self._start(data_dir, stop, train, backbone, pretrained, strategy, epochs, lr, batch_size,
                                 img_size, seed)
            for _ in _drive(events, view, stop):
                yield self._train_outputs(view)
        if isinstance(view.final, Finished):
            self.finished_runs[session_of(request)] = view.final.run_dir
        _notify(view.final)
        yield self._train_outputs(view, done=True)

    def compare(self, data_dir: str, backbone: str, pretrained: bool, strategy: str, epochs: float, lr: float,
                batch_size: float, img_size: float, seed: float, request: gr.Request = None):
        """Stream a pretrained-vs-scratch comparison; the table and both confusion matrices at the end."""
        from pokedemo.train import compare

        view = CompareView()
        with self.jobs.running_job(session_of(request)) as stop:
            events = self._start(data_dir, stop, compare, backbone, True, strategy, epochs, lr, batch_size,
                                 img_size, seed)
            for _ in _drive(events, view, stop):
                yield self._compare_outputs(view, int(epochs))
        message = view.message()
        if message:
            gr.Warning(message)
        yield self._compare_outputs(view, int(epochs), done=True)

    def _start(self, data_dir, stop, engine, *options) -> Iterator[Event]:
        """The engine's event stream, or a single Failed/Cancelled event when it cannot start."""
        folder = (data_dir or "").strip()
        if not folder:
            return iter([Failed(message=NO_DATASET)])
        if stop.is_set():
            return iter([Cancelled(run_dir=None, epoch=0, seconds=0.0, message="Stopped before training began.")])
        try:
            config = make_config(*options)
        except (TypeError, ValueError) as exc:
            return iter([Failed(message=f"invalid training option: {exc}")])
        return engine(config, folder, self.checkpoint_root, stop=stop)

    def _train_outputs(self, view: RunView, done: bool = False) -> tuple:
        loss, accuracy = map(plot_value, curve_frames(view.points))
        report = view.final.test_metrics if done and isinstance(view.final, Finished) else None
        return (
            progress_html(view.fraction, view.status), loss, accuracy, "\n".join(view.log),
            results_markdown(view.final) if done else "",
            per_class_frame(report) if report else _empty_frame(PER_CLASS_COLUMNS),
            confusion_picture(report),
            *(self._errors_of(report) if report else ("", [])),
            *(self._select_checkpoints(view.run_dir) if done else (gr.skip(),) * 3),
        )

    def _errors_of(self, report: dict[str, Any]) -> tuple[str, list]:
        """(caption, gallery) of the test images a finished run gets wrong (from its own test report)."""
        try:
            return helpers.errors_caption(report), helpers.errors_items(report)
        except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say why the gallery is missing
            return f"⚠️ Could not list the mistakes: {friendly_error(exc)}", []

    def _compare_outputs(self, view: CompareView, epochs: int, done: bool = False) -> tuple:
        accuracy, loss = map(plot_value, compare_frames(view.points))
        results = view.final.results if done and isinstance(view.final, CompareFinished) else None
        runs = [view.runs[r].run_dir for r in RUN_LABELS]
        problem = view.message() if done else None
        summary = compare_takeaway(results, epochs) if results else (f"⚠️ {problem}" if problem else "")
        return (
            progress_html(view.fraction, view.status), accuracy, loss, "\n".join(view.log), summary,
            compare_table(results, epochs) if results else _empty_frame(COMPARE_COLUMNS),
            compare_confusions(results) if results else "",
            *(self._select_checkpoints(*runs) if done else (gr.skip(),) * 3),
        )

    def _select_checkpoints(self, first: str | None, second: str | None = None) -> tuple:
        """Dropdown updates after a run: the new run selected in Predict (and in Compare A/B)."""
        choices = self.choices()
        known = {value for _, value in choices}

        def dropdown(run: str | None) -> gr.Dropdown:
            return gr.Dropdown(choices=choices, value=run) if run in known else gr.Dropdown(choices=choices)

        return dropdown(first), dropdown(first if second else None), dropdown(second)

    # ---- checkpoints and prediction

    def refresh(self, *current: str | None) -> tuple:
        """Re-list checkpoints for each dropdown, keeping its selection when it still exists."""
        choices = self.choices()
        known = [value for _, value in choices]
        return tuple(gr.Dropdown(choices=choices, value=value if value in known else (known[0] if known else None))
                     for value in current)

    def predict(self, image: dict | str | None, checkpoint: str | None):
        """(label confidences, caption) for gr.Label; a friendly caption instead of any error.

        ``image`` is gr.Image's raw value (the event does not preprocess, see ``_wire_checkpoints``).
        """
        if not checkpoint:
            return None, NO_CHECKPOINT
        if not image:
            return None, "Upload an image, use the webcam or paste one — or click an example."
        try:
            predictor = self._predictor(checkpoint)
            return predictor.predict_dict(image_source(image)), model_caption(predictor)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never an error page
            message = friendly_error(exc)
            gr.Warning(message)
            return None, f"⚠️ {message}"

    def _predictor(self, checkpoint: str):
        from pokedemo.hub import download_for_ui, hub_cache_dir
        from pokedemo.predict import get_predictor

        if helpers.hub_spec(checkpoint):  # a repo id typed into the picker
            path, message = download_for_ui(checkpoint)
            if path is None:
                raise ValueError(message.removeprefix("❌ "))
            return get_predictor(path)
        # Only this app's runs and models downloaded from the Hub are loaded, never any other folder.
        hub_cache = Path(hub_cache_dir()).resolve()
        if Path(checkpoint).is_absolute() and Path(checkpoint).resolve().is_relative_to(hub_cache):
            return get_predictor(Path(checkpoint).resolve())
        return get_predictor(checkpoint_inside(self.checkpoint_root, checkpoint))

    def compare_checkpoints(self, first: str | None, second: str | None, folder: str | None):
        """Evaluate two saved checkpoints on the test images both held out; (caption, table, confusions)."""
        if not first or not second:
            return "Pick two checkpoints above.", _empty_frame(CHECKPOINT_TABLE_COLUMNS), ""
        try:
            return self._compare_checkpoints(first, second, folder)
        except Exception as exc:  # noqa: BLE001 - shown as a message (missing data, other classes, ...)
            return f"⚠️ {friendly_error(exc)}", _empty_frame(CHECKPOINT_TABLE_COLUMNS), ""

    def _compare_checkpoints(self, first: str, second: str, folder: str | None):
        from pokedemo.predict import evaluate_split

        predictors = [self._predictor(first), self._predictor(second)]
        if predictors[0].classes != predictors[1].classes:
            raise ValueError("these checkpoints were trained on different classes, so their test sets differ")
        reports = [evaluate_split(p, data_root=helpers.data_root_for(p, folder)) for p in predictors]
        held_out = [{it["path"] for it in r["items"]} for r in reports]
        common = held_out[0] & held_out[1]
        if not common:
            raise ValueError("these checkpoints share no held-out test images (different data or split)")
        restricted = [report_on_items(r["items"], p.classes, common) for r, p in zip(reports, predictors)]
        names = [Path(p.checkpoint.path).name for p in predictors]
        caption = f"Both evaluated on the same **{len(common)} test images**, held out by both runs."
        if held_out[0] != held_out[1]:
            caption += " (Their splits differ — other seed or data — so only the images both held out are used.)"
        rows = [{"": tag, "checkpoint": name, "test accuracy": percent(r["accuracy"]),
                 "macro F1": percent(r["macro_f1"]), "test images": r["n"]}
                for tag, name, r in zip("AB", names, restricted)]
        confusions = "".join(f"<div>{confusion_html(r, f'{tag}: {name}')}</div>"
                             for tag, name, r in zip("AB", names, restricted))
        return (caption, pd.DataFrame(rows, columns=CHECKPOINT_TABLE_COLUMNS),
                f'<div style="display:flex;gap:24px;flex-wrap:wrap">{confusions}</div>')

    # ---- seeing inside: doctor, mistakes, Grad-CAM

    def doctor(self, folder: str | None):
        """(report, conflict strips, accordion) of the Train tab's dataset doctor."""
        text, strips = helpers.doctor_panel(folder)
        warnings = text.count("⚠️")
        title = DOCTOR_TITLE + (f" — ⚠️ {warnings} warning(s)" if warnings else "")
        return text, gr.Gallery(value=strips, visible=bool(strips)), gr.Accordion(label=title)

    def inspect(self, checkpoint: str | None, folder: str | None):
        """(caption, confusion picture, per-class table, errors gallery) of a model on its test images."""
        empty = (None, _empty_frame(PER_CLASS_COLUMNS), [])
        if not checkpoint:
            return (NO_CHECKPOINT, *empty)
        try:
            predictor = self._predictor(checkpoint)
            report = helpers.test_report(predictor, folder)
        except Exception as exc:  # noqa: BLE001 - missing data folder, other classes, ...: a message
            return (f"⚠️ {friendly_error(exc)}", *empty)
        return (helpers.errors_caption(report), confusion_picture(report), helpers.per_class_rows(report),
                helpers.errors_items(report))

    def explain(self, image: dict | str | None, checkpoint: str | None, target: str | None):
        """(Grad-CAM overlay, caption, class picker) for the Predict tab; runs after the top-5 label."""
        from pokedemo.gradcam import grad_cam

        if not checkpoint or not image:
            return None, "", gr.skip()
        try:
            predictor = self._predictor(checkpoint)
            result = grad_cam(predictor, image_source(image), helpers.cam_target_value(target, predictor.classes))
        except Exception as exc:  # noqa: BLE001 - the label's caption already explains unusable images
            return None, f"⚠️ No heatmap: {friendly_error(exc)}", gr.skip()
        choices = helpers.cam_choices(predictor.classes)
        picker = gr.Dropdown(choices=choices, value=target if target in choices else helpers.TOP_CLASS)
        return result.overlay, helpers.cam_caption(result), picker

    # ---- the Hugging Face Hub

    def load_from_hub(self, spec: str | None, token: str | None = None):
        """Download a model by repo id and select it in the Predict picker; (message, picker)."""
        from pokedemo.hub import download_for_ui

        path, message = download_for_ui(spec, token or None)
        if path is None:
            return message, gr.skip()
        choice = helpers.hub_choice(spec, path)
        self.hub_choices = [c for c in self.hub_choices if c[1] != choice[1]] + [choice]
        return message + " It is selected as the model above.", gr.Dropdown(choices=self.choices(), value=choice[1])

    def push(self, checkpoint: str | None, repo_id: str | None, private: bool, token: str | None):
        """Push the selected local run to a Hub repo; a Markdown line with the link or the problem."""
        from pokedemo.hub import push_for_ui

        if checkpoint:
            try:
                checkpoint = str(checkpoint_inside(self.checkpoint_root, checkpoint))
            except Exception as exc:  # noqa: BLE001 - e.g. a model that came from the Hub itself
                return f"❌ Only runs trained here can be pushed: {friendly_error(exc)}"
        return push_for_ui(checkpoint, repo_id, bool(private), token or None)

    def auto_push(self, repo_id: str | None, private: bool, token: str | None, enabled: bool,
                  request: gr.Request = None):
        """After a training from this tab finishes: push its run when the Hub panel's auto-push box is ticked."""
        run = self.finished_runs.pop(session_of(request), None)
        if not enabled or run is None:
            return gr.skip()
        if not (repo_id or "").strip():
            return "❌ Automatic push is on but no repo id is set in the Hub panel; nothing was pushed."
        return self.push(run, repo_id, private, token)

    def on_load(self, folder: str, seed: float, img_size: float, *current: str | None) -> tuple:
        """Each page visit: describe the prefilled dataset and list checkpoints made since the app started."""
        summary = summarise_dataset(folder, seed, img_size) if (folder or "").strip() else NO_DATASET
        return (summary, *self.refresh(*current))


def confusion_picture(report: dict[str, Any] | None):
    """The confusion matrix as a PIL image (class names on both axes, counts, colour), None without a report."""
    if not report:
        return None
    from pokedemo.report import confusion_image

    return confusion_image(report)


def image_source(value: dict | str | None) -> str | bytes | None:
    """The file path (or, for a data: URL, the bytes) inside gr.Image's raw value; uploads were already moved
    into Gradio's cache and checked by Gradio before the handler runs."""
    if not isinstance(value, dict):
        return value or None
    url = value.get("url") or ""
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[-1])  # binascii.Error is a ValueError: a friendly message
    return value.get("path")


def _drive(events: Iterator[Event], view: RunView | CompareView, stop: threading.Event) -> Iterator[None]:
    """Feed engine events into ``view``; yield whenever the browser should be updated (throttled)."""
    last = 0.0
    try:
        for event in events:
            view.update(event)
            inner = event.event if isinstance(event, Tagged) else event
            now = time.monotonic()
            if isinstance(inner, BatchProgress) and now - last < UI_INTERVAL_S:
                continue
            last = now
            yield
    finally:
        if view.final is None:  # closed early (browser gone): let the engine stop and save the best so far
            stop.set()
            for event in events:
                view.update(event)


def _info(message: str) -> None:
    gr.Info(message, duration=INFO_SECONDS)


def _notify(final: Event | None) -> None:
    if isinstance(final, Failed):
        gr.Warning(final.message)
    elif isinstance(final, Cancelled):
        _info(final.message)
    elif isinstance(final, Finished):
        _info(f"Training finished: test accuracy {percent(final.test_acc)}. The model is ready in Predict.")


def model_caption(predictor) -> str:
    config = predictor.checkpoint.config
    kind = "pretrained" if config.get("pretrained", True) else "from scratch"
    test = ((config.get("metrics") or {}).get("test") or {}).get("accuracy")
    accuracy = f" · test accuracy {percent(test)}" if test is not None else ""
    return (f"Model `{Path(predictor.checkpoint.path).name}`: {config['backbone']} {kind}, "
            f"{predictor.image_size}px{accuracy} · classes: {', '.join(predictor.classes)}")


def friendly_error(exc: BaseException) -> str:
    """One line for the user: the engine's own messages as they are, anything else with its type."""
    from pokedemo.checkpoint import CheckpointError
    from pokedemo.data import DatasetError, ImageLoadError

    if isinstance(exc, ImageLoadError):
        return f"This file cannot be used as an image: {exc}"
    if isinstance(exc, (CheckpointError, DatasetError, ValueError, OSError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    _log.error("unexpected error in the app", exc_info=exc)  # a bug: keep the traceback for the server log
    return f"unexpected error ({type(exc).__name__}: {exc})"


# -------------------------------------------------------------------------------------------- layout


INTRO = """# Pokédemo — teach a network to recognise Pokémon
**Transfer learning, hands-on.** ① **Train** a classifier on a folder of images (one sub-folder per class) and
watch it learn. ② **Predict**: show it any picture. ③ **Compare**: the same network starting from ImageNet
weights vs. from random weights."""

LOSS_COLOURS = {"train (each batch)": "#fdba74", "train (epoch)": "#ea580c", "validation": "#2563eb"}
ACCURACY_COLOURS = {"train": "#ea580c", "validation": "#2563eb"}
RUN_COLOURS = {"pretrained": "#ea580c", "scratch": "#6b7280"}
# Conflict strips are wide and short: without this the gallery gives each one a square cell of white space.
CSS = (".pd-confusion table th { font-weight: 600; }\n"
       "#doctor-conflicts .thumbnail-item { aspect-ratio: 3 / 1.2 !important; height: auto !important; }")
DOCTOR_TITLE = "Dataset doctor: duplicates, label conflicts, odd files"  # no emoji: many fonts lack them


def _plot(title: str, y_title: str, colours: dict[str, str], y_lim: list[float] | None = None) -> gr.LinePlot:
    # Starts as None: a plot whose first value is an empty DataFrame never draws its later data (Gradio 6.31).
    return gr.LinePlot(None, x="epoch", y="value", color="series", title=title, x_title="epoch",
                       y_title=y_title, color_title="", color_map=colours, y_lim=y_lim)


def plot_value(frame: pd.DataFrame) -> pd.DataFrame | None:
    """What a LinePlot is sent: None until there is a real point (see ``_plot``)."""
    return frame if frame["value"].notna().any() else None


def _dataset_panel(app: DemoApp, ui: dict[str, Any]) -> None:
    gr.Markdown("### 1 · Dataset")
    ui["data_dir"] = gr.Textbox(label="Dataset folder on this machine (one sub-folder per class)",
                                value=app.data_dir, placeholder="data/pokemon")
    ui["scan"] = gr.Button("Scan folder", size="sm")
    ui["zip"] = gr.File(label="… or upload a .zip of class folders", file_types=[".zip"], type="filepath")
    ui["summary"] = gr.Markdown(NO_DATASET if not app.data_dir else "Scanning the dataset…")
    with gr.Accordion(DOCTOR_TITLE, open=False, elem_id="doctor") as ui["doctor_box"]:
        ui["doctor"] = gr.Markdown(helpers.DOCTOR_EMPTY, elem_id="doctor-report")
        ui["conflicts"] = gr.Gallery(label="Label conflicts: one picture filed under two classes (folder under "
                                           "each copy)", columns=1, height="auto", object_fit="contain",
                                     visible=False, elem_id="doctor-conflicts")


def _options_panel(ui: dict[str, Any]) -> None:
    cfg, help_for = TrainConfig(), TrainConfig.help_for
    gr.Markdown("### 2 · How to train")
    # Choices and default come on page load (backbone_dropdown): reading weight statuses imports torch.
    ui["backbone"] = gr.Dropdown([], value=None, label="Backbone (the network)", allow_custom_value=True,
                                 info="Weights 'needs download' only work with internet; 'bundled' works offline.")
    ui["pretrained"] = gr.Checkbox(value=cfg.pretrained, label="Start from ImageNet weights (transfer learning)",
                                   info="Untick to start from random weights (training from scratch).")
    ui["strategy"] = gr.Radio([("fine-tune all layers", "finetune"), ("train only the new last layer", "linear")],
                              value=cfg.strategy, label="What to train", info=help_for("strategy"))
    ui["epochs"] = gr.Slider(1, 30, value=cfg.epochs, step=1, label="Epochs", info=help_for("epochs"),
                             elem_id="epochs")
    with gr.Accordion("More options", open=False):
        ui["lr"] = gr.Number(value=cfg.lr, label="Learning rate", info=help_for("lr"))
        ui["batch_size"] = gr.Slider(4, 128, value=cfg.batch_size, step=4, label="Batch size",
                                     info=help_for("batch_size"))
        ui["img_size"] = gr.Slider(32, 320, value=cfg.img_size, step=16, label="Image size (px)",
                                   info=help_for("img_size"))
        ui["seed"] = gr.Number(value=cfg.seed, precision=0, label="Seed", info=help_for("seed"))
    with gr.Row():
        ui["train"] = gr.Button("▶ Train", variant="primary")
        ui["stop"] = gr.Button("■ Stop", variant="stop")


def _train_tab(app: DemoApp, ui: dict[str, Any]) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            _dataset_panel(app, ui)
            _options_panel(ui)
        with gr.Column(scale=2):  # wide, so both charts and their legends fit side by side
            gr.Markdown("### 3 · Watch it learn")
            ui["progress"] = gr.HTML(progress_html(0, "Not started: choose a dataset, then press ▶ Train."))
            with gr.Row():
                ui["loss_plot"] = _plot("Loss (lower is better)", "loss", LOSS_COLOURS)
                ui["acc_plot"] = _plot("Accuracy (higher is better)", "accuracy", ACCURACY_COLOURS, [0, 1])
            ui["results"] = gr.Markdown(elem_id="train-results")
            ui["per_class"] = gr.Dataframe(_empty_frame(PER_CLASS_COLUMNS), label="Per-class metrics (test set)",
                                           interactive=False)
            ui["confusion"] = gr.Image(label="Confusion matrix (test set): rows = true class, columns = predicted",
                                       type="pil", interactive=False, height=380, show_label=True,
                                       elem_id="train-confusion")
            gr.Markdown("### 4 · Where does it go wrong?")
            ui["errors_caption"] = gr.Markdown("After training, the test images the model got wrong appear here.",
                                               elem_id="errors-caption")
            ui["errors"] = _errors_gallery("errors")
            ui["log"] = gr.Textbox(label="Log", lines=5, max_lines=LOG_LINES, interactive=False, autoscroll=True)


def _predict_tab(app: DemoApp, ui: dict[str, Any]) -> None:
    choices = checkpoint_choices(app.checkpoint_root)
    with gr.Row():
        with gr.Column():
            ui["image"] = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Your image",
                                   height=340, elem_id="predict-image")
            examples = example_images(app.data_dir)
            if examples:
                gr.Examples([[p] for p in examples], inputs=[ui["image"]], elem_id="predict-examples",
                            label="Examples from the dataset (probably seen in training — try your own pictures "
                                  "too)")
        with gr.Column():
            with gr.Row(equal_height=True):
                ui["checkpoint"] = gr.Dropdown(choices, value=choices[0][1] if choices else None, scale=5,
                                               label="Model", allow_custom_value=True,
                                               info="Your trained runs, newest first, with their test accuracy "
                                                    "(↻ re-reads the list).")
                ui["refresh"] = gr.Button("↻", size="sm", scale=0, min_width=48)
            _hub_panel(ui)
            ui["label"] = gr.Label(num_top_classes=5, label="Prediction (top 5)", elem_id="predict-label")
            ui["caption"] = gr.Markdown(NO_CHECKPOINT if not choices else "", elem_id="predict-caption")
            _cam_panel(ui)
    with gr.Accordion("Where does this model go wrong? Its mistakes on the test images", open=False,
                      elem_id="inspect"):
        ui["inspect"] = gr.Button("Show the mistakes of the selected model", size="sm")
        ui["inspect_caption"] = gr.Markdown(elem_id="inspect-caption")
        with gr.Row():
            ui["inspect_confusion"] = gr.Image(label="Confusion matrix (test set)", type="pil", interactive=False,
                                               height=360, scale=1)
            ui["inspect_table"] = gr.Dataframe(_empty_frame(PER_CLASS_COLUMNS), label="Per-class metrics",
                                               interactive=False, scale=1)
        ui["inspect_errors"] = _errors_gallery("inspect-errors")


def _errors_gallery(elem_id: str) -> gr.Gallery:
    return gr.Gallery(label="Misclassified test images: true → predicted (confidence in the wrong answer)",
                      columns=3, height="auto", object_fit="contain", elem_id=elem_id)


def _cam_panel(ui: dict[str, Any]) -> None:
    gr.Markdown("#### Where did it look? (Grad-CAM)")
    ui["cam_target"] = gr.Dropdown([helpers.TOP_CLASS], value=helpers.TOP_CLASS, label="Explain which class",
                                   info="The heatmap shows which parts of the image speak for this class.",
                                   elem_id="cam-target")
    ui["cam_image"] = gr.Image(label="Heatmap over your image", type="pil", interactive=False, height=300,
                               elem_id="cam-image")
    ui["cam_caption"] = gr.Markdown(elem_id="cam-caption")


def _hub_panel(ui: dict[str, Any]) -> None:
    with gr.Accordion("Hugging Face Hub: load a model, or share the selected one", open=False, elem_id="hub"):
        with gr.Row(equal_height=True):
            ui["hub_repo"] = gr.Textbox(label="Load from the Hub", placeholder="namespace/name or namespace/name@v1",
                                        scale=4)
            ui["hub_load"] = gr.Button("Load from Hub", size="sm", scale=1)
        ui["hub_load_msg"] = gr.Markdown(elem_id="hub-load-msg")
        gr.Markdown("**Push the selected model** (a run trained here) to a model repo with a generated model card.")
        with gr.Row(equal_height=True):
            ui["push_repo"] = gr.Textbox(label="Repo id", placeholder="your-name/pokemon-classifier", scale=3)
            ui["push_private"] = gr.Checkbox(label="Private", value=False, scale=1)
        ui["push_token"] = gr.Textbox(label="Access token (write)", type="password", placeholder="hf_…",
                                      info="Leave empty to use HF_TOKEN or your saved `hf auth login`. It is "
                                           "used for this push only, never shown or saved.")
        ui["push_auto"] = gr.Checkbox(label="Also push each run from the Train tab when it finishes", value=False,
                                      info="Uses the repo id, privacy and token above.")
        ui["push"] = gr.Button("Push to Hub", variant="secondary", size="sm")
        ui["push_msg"] = gr.Markdown(elem_id="push-msg")


def _compare_tab(app: DemoApp, ui: dict[str, Any]) -> None:
    choices = checkpoint_choices(app.checkpoint_root)
    gr.Markdown("### Pretrained vs. from scratch\nTrains the same backbone twice, one after the other, on the same "
                "images, split and number of epochs: once starting from ImageNet weights, once from random weights. "
                "It uses the dataset and options of the **Train** tab.")
    with gr.Row():
        ui["compare"] = gr.Button("▶ Train both and compare", variant="primary")
        ui["compare_stop"] = gr.Button("■ Stop", variant="stop")
    ui["compare_progress"] = gr.HTML(progress_html(0, "Not started."))
    with gr.Row():
        ui["compare_acc_plot"] = _plot("Validation accuracy", "accuracy", RUN_COLOURS, [0, 1])
        ui["compare_loss_plot"] = _plot("Training loss", "loss", RUN_COLOURS)
    ui["compare_summary"] = gr.Markdown(elem_id="compare-summary")
    ui["compare_table"] = gr.Dataframe(compare_table({}), label="Side by side", interactive=False)
    ui["compare_confusions"] = gr.HTML()
    ui["compare_log"] = gr.Textbox(label="Log", lines=4, max_lines=LOG_LINES, interactive=False, autoscroll=True)
    gr.Markdown("### Compare two saved checkpoints (no training)\nBoth are evaluated on the same held-out test "
                "images.")
    with gr.Row(equal_height=True):
        first = choices[0][1] if choices else None
        second = choices[1][1] if len(choices) > 1 else None
        ui["ckpt_a"] = gr.Dropdown(choices, value=first, label="Checkpoint A", scale=3, allow_custom_value=True)
        ui["ckpt_b"] = gr.Dropdown(choices, value=second, label="Checkpoint B", scale=3, allow_custom_value=True)
        ui["evaluate"] = gr.Button("Evaluate both", scale=1)
    ui["eval_caption"] = gr.Markdown(elem_id="eval-caption")
    ui["eval_table"] = gr.Dataframe(_empty_frame(CHECKPOINT_TABLE_COLUMNS), interactive=False, label="Results")
    ui["eval_confusions"] = gr.HTML()


TRAINING_OPTIONS = ("data_dir", "backbone", "pretrained", "strategy", "epochs", "lr", "batch_size", "img_size", "seed")
TRAIN_OUTPUTS = ("progress", "loss_plot", "acc_plot", "log", "results", "per_class", "confusion", "errors_caption",
                 "errors")
COMPARE_OUTPUTS = ("compare_progress", "compare_acc_plot", "compare_loss_plot", "compare_log", "compare_summary",
                   "compare_table", "compare_confusions")
CHECKPOINT_PICKERS = ("checkpoint", "ckpt_a", "ckpt_b")


def _pick(ui: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    return [ui[name] for name in names]


def _wire_dataset(app: DemoApp, ui: dict[str, Any]) -> dict[str, Any]:
    scan_inputs = _pick(ui, ("data_dir", "seed", "img_size"))
    doctor = dict(fn=app.doctor, inputs=ui["data_dir"], outputs=_pick(ui, ("doctor", "conflicts", "doctor_box")),
                  concurrency_limit=2, concurrency_id="scan")
    gr.on([ui["scan"].click, ui["data_dir"].submit], app.scan, scan_inputs, ui["summary"], api_name="scan",
          concurrency_limit=2, concurrency_id="scan").then(**doctor, api_name="doctor")
    ui["zip"].upload(app.upload_zip, [ui["zip"], ui["seed"], ui["img_size"]], [ui["data_dir"], ui["summary"]],
                     api_name="upload_zip", concurrency_limit=2, concurrency_id="scan").then(
        **doctor, api_visibility="private")
    return doctor


def _wire_insight(app: DemoApp, ui: dict[str, Any]) -> None:
    """Grad-CAM after each prediction (its own queue slot, so the top-5 label never waits for it), the
    mistakes of a model, and the Hub panel."""
    cam = dict(fn=app.explain, inputs=_pick(ui, ("image", "checkpoint", "cam_target")),
               outputs=_pick(ui, ("cam_image", "cam_caption", "cam_target")), concurrency_limit=2,
               concurrency_id="cam", show_progress="minimal", preprocess=False)
    ui["cam_target"].input(**cam, api_name="explain")  # first: the public endpoint gets the plain name
    ui["predict_event"].then(**cam, api_visibility="private")
    ui["inspect"].click(app.inspect, [ui["checkpoint"], ui["data_dir"]],
                        _pick(ui, ("inspect_caption", "inspect_confusion", "inspect_table", "inspect_errors")),
                        api_name="inspect", concurrency_limit=1, concurrency_id="evaluate")
    gr.on([ui["hub_load"].click, ui["hub_repo"].submit], app.load_from_hub, [ui["hub_repo"]],
          [ui["hub_load_msg"], ui["checkpoint"]], api_name="load_from_hub", concurrency_limit=2,
          concurrency_id="hub")
    ui["push"].click(app.push, _pick(ui, ("checkpoint", "push_repo", "push_private", "push_token")), ui["push_msg"],
                     api_name="push_to_hub", concurrency_limit=1, concurrency_id="hub")


def _wire_jobs(app: DemoApp, ui: dict[str, Any]) -> None:
    """Train and Compare share one concurrency slot: one training at a time, others queue."""
    options = _pick(ui, TRAINING_OPTIONS)
    pickers = _pick(ui, CHECKPOINT_PICKERS)
    for button, stop, fn, outputs, name in (
        ("train", "stop", app.train, TRAIN_OUTPUTS, "train"),
        ("compare", "compare_stop", app.compare, COMPARE_OUTPUTS, "compare"),
    ):
        progress = ui[outputs[0]]
        event = ui[button].click(app.reserve, None, progress, api_visibility="private", concurrency_limit=None,
                                 show_progress="hidden").success(
            fn, options, _pick(ui, outputs) + pickers, api_name=name, concurrency_limit=1, concurrency_id="train",
            show_progress_on=progress)
        if name == "train":
            event.then(app.auto_push, _pick(ui, ("push_repo", "push_private", "push_token", "push_auto")),
                       ui["push_msg"], api_visibility="private", concurrency_limit=1, concurrency_id="hub")
        ui[stop].click(app.stop, None, None, api_name=f"stop_{name}" if name != "train" else "stop",
                       concurrency_limit=None)


def _wire_checkpoints(app: DemoApp, ui: dict[str, Any]) -> None:
    pickers = _pick(ui, CHECKPOINT_PICKERS)
    ui["refresh"].click(app.refresh, pickers, pickers, api_name="refresh_checkpoints", concurrency_limit=None)
    # preprocess=False: gr.Image would open every upload with PIL first, so an empty or non-image file or a
    # decompression bomb would fail inside Gradio with a generic error; the handler gets the raw upload and the
    # one loader of pokedemo.data answers with a clear message instead.
    ui["predict_event"] = gr.on(
          [ui["image"].change, ui["checkpoint"].change], app.predict, [ui["image"], ui["checkpoint"]],
          [ui["label"], ui["caption"]], api_name="predict", concurrency_limit=PREDICT_CONCURRENCY,
          concurrency_id="predict", show_progress="minimal", preprocess=False)
    ui["evaluate"].click(app.compare_checkpoints, [ui["ckpt_a"], ui["ckpt_b"], ui["data_dir"]],
                         _pick(ui, ("eval_caption", "eval_table", "eval_confusions")),
                         api_name="compare_checkpoints", concurrency_limit=1, concurrency_id="evaluate")


def build_demo(checkpoint_root: str | os.PathLike | None = None, data_dir: str | None = None) -> gr.Blocks:
    """The whole app. Nothing is trained, loaded or downloaded here; only checkpoints are listed."""
    app = DemoApp(checkpoint_root or default_checkpoint_root(), default_data_dir() if data_dir is None else data_dir)
    ui: dict[str, Any] = {}
    with gr.Blocks(title="Pokédemo — transfer learning") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("① Train", id="train"):
                _train_tab(app, ui)
            with gr.Tab("② Predict", id="predict"):
                _predict_tab(app, ui)
            with gr.Tab("③ Compare", id="compare"):
                _compare_tab(app, ui)
        doctor = _wire_dataset(app, ui)
        _wire_jobs(app, ui)
        _wire_checkpoints(app, ui)
        _wire_insight(app, ui)
        load_inputs = _pick(ui, ("data_dir", "seed", "img_size") + CHECKPOINT_PICKERS)
        demo.load(backbone_dropdown, ui["backbone"], ui["backbone"], api_visibility="private",
                  concurrency_limit=None)
        demo.load(app.on_load, load_inputs, [ui["summary"], *_pick(ui, CHECKPOINT_PICKERS)],
                  api_visibility="private", concurrency_limit=2, concurrency_id="scan").then(
            **doctor, api_visibility="private")
    demo.queue(max_size=QUEUE_MAX_SIZE)
    threading.Thread(target=warm_up, name="pokedemo-warm-up", daemon=True).start()
    demo.pokedemo = app  # for tests and later panels: the handlers and their job registry
    return demo


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` shared by app.py and the tests (theme and CSS live there in 6.x)."""
    return {"theme": gr.themes.Soft(primary_hue="orange"), "css": CSS, "max_file_size": MAX_UPLOAD,
            "footer_links": ["api"]}
