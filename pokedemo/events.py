"""Typed progress events yielded by the training engine (``pokedemo.train.train``).

The CLI renders them as a progress bar and one line per epoch; the Gradio app turns them into plot and text
updates. Events are plain dataclasses of JSON-friendly values so either face can log or serialise them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass
class RunStarted(Event):
    run_dir: str
    device: str
    classes: list[str]
    class_counts: dict[str, int]
    split_sizes: dict[str, int]          # {"train": n, "val": n, "test": n}
    unreadable: list[tuple[str, str]]    # (relative path, reason)
    duplicate_groups: int                # near-duplicate groups (exact copies included)
    conflict_groups: int                 # groups whose images carry more than one label
    total_steps: int                     # optimisation steps the run will take
    config: dict[str, Any]


@dataclass
class Stage(Event):
    """A phase that is not a training batch (decoding, feature caching), so a UI can say what is happening."""

    name: str
    message: str


@dataclass
class BatchProgress(Event):
    epoch: int                           # 1-based
    epochs: int
    step: int                            # global optimisation step, 1-based
    total_steps: int
    loss: float
    accuracy: float                      # share of this batch's training images predicted right
    images_per_sec: float
    eta_seconds: float


@dataclass
class EpochEnd(Event):
    epoch: int
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    elapsed: float                       # seconds since the run started
    images_per_sec: float


@dataclass
class NewBest(Event):
    epoch: int
    val_acc: float
    run_dir: str


@dataclass
class Finished(Event):
    run_dir: str
    best_epoch: int
    best_val_acc: float
    test_acc: float
    test_metrics: dict[str, Any]
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Cancelled(Event):
    run_dir: str | None                  # best checkpoint so far, or None if no epoch finished
    epoch: int
    seconds: float
    message: str


@dataclass
class Failed(Event):
    message: str
    run_dir: str | None = None


TERMINAL_EVENTS = (Finished, Cancelled, Failed)


@dataclass
class Tagged(Event):
    """An event of one of the runs inside a comparison; ``run`` is "pretrained" or "scratch"."""

    run: str
    event: Event

    def to_dict(self) -> dict[str, Any]:
        return {"event": "Tagged", "run": self.run, "inner": self.event.to_dict()}


@dataclass
class CompareFinished(Event):
    results: dict[str, dict[str, Any]]   # run label -> summary (test_acc, best_val_acc, seconds, ...)
    table: list[dict[str, Any]]          # one row per run, for display
