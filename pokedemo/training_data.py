"""The data a run trains on: a folder or ``hf://datasets/...`` address opened, scanned and split, with its source.

``open_training_data`` (or ``run_on``, which also starts the run) is where the CLI, the app and the benchmarks
turn a data spec into a ``TrainingData`` before they start ``pokedemo.train.train``/``compare``; the engine itself never fetches, scans or splits, so
it does not know where images come from. Several runs (a comparison) share one ``TrainingData``: one scan,
one split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator, Mapping

from pokedemo.config import TrainConfig, resolve_device
from pokedemo.data import Dataset, DatasetError, Split, scan_dataset
from pokedemo.events import Event, Failed, Stage
from pokedemo.hub import DataSource, HubError, is_hub_dataset, open_data


@dataclass(frozen=True)
class TrainingData:
    """A scanned dataset, the split runs train on, and where its images came from (``source``: the folder, or a
    Hub dataset id at a commit and whether it brought its own split)."""

    dataset: Dataset
    split: Split
    source: DataSource

    def source_record(self) -> dict[str, Any] | None:
        """What a checkpoint records about a Hub source; None for a local folder (``dataset.root`` says it)."""
        return self.source.record()


def open_training_data(spec: str | os.PathLike | DataSource, config: TrainConfig,
                       hub: Mapping[str, Any] | None = None) -> Generator[Stage, None, TrainingData]:
    """Generator: fetch (a Hub dataset), scan and split ``spec`` for runs with ``config``, yielding a ``Stage``
    per step; returns the ``TrainingData``. Raises DatasetError, HubError or ValueError (one line). ``hub``:
    how a Hub dataset is fetched (``open_data``'s token, cache folder and budget; None: its defaults).

    The scan decodes the images at the size the run's last epoch trains at (``config`` resolved for the device
    it names), which fills the tensor cache training then reads.
    """
    config.validate()  # a wrong option is reported before a long download or scan
    if not isinstance(spec, DataSource) and is_hub_dataset(str(spec)):
        yield Stage("download", f"Fetching {spec} from the Hugging Face Hub")
    source = open_data(spec, **(hub or {}))
    yield Stage("scan", f"Reading and hashing images in {source.spec or source.root}")
    start_importing_backbone(config.backbone)  # found data: the run will build its backbone after the scan
    sizes = config.resolved(resolve_device(config.device))
    dataset = scan_dataset(source.root, image_size=sizes.last_epoch_size)
    if source.note:
        yield Stage("split", f"Note: {source.note}")
    split = source.split(dataset, config.ratios, config.seed)
    if not split.train or not split.val:
        raise DatasetError("the dataset is too small to hold out validation images; add more images")
    return TrainingData(dataset, split, source)


def continuing_from(data: TrainingData, start_config: Mapping[str, Any], config: TrainConfig) -> TrainingData:
    """``data`` for a run that continues from the model ``start_config`` describes: the split drawn again (same
    seed and ratios) with every picture that model trained on kept in training, so validation and test hold only
    pictures neither model has learnt. A dataset that brings its own split keeps it; so does a start model that
    recorded no split."""
    trained = {e["sha256"] for e in start_config.get("split") or [] if e.get("split") == "train"}
    if not trained or data.source.own_splits:
        return data
    split = data.source.split(data.dataset, config.ratios, config.seed, trained)
    return dataclasses.replace(data, split=split)


def start_importing_backbone(backbone: str) -> None:
    """Import the library that builds ``backbone`` in a background thread: timm or torchvision, with what they
    import (torch._dynamo, through torchvision.ops), takes seconds that would otherwise come after the scan,
    when the run builds its backbone. Started before the images are read, it overlaps the scan; the build then
    finds the modules imported. A failure is left to the build, which reports it."""

    def work() -> None:
        with contextlib.suppress(Exception):
            from pokedemo.models import get_backbone  # here, in the background: this is the slow import

            get_backbone(backbone)  # its mean and std come from the library's own config: imports the library

    threading.Thread(target=work, name="pokedemo-backbone-imports", daemon=True).start()


def run_on(spec: str | os.PathLike | DataSource, config: TrainConfig,
           start: Callable[[TrainingData], Iterator[Event]], hub: Mapping[str, Any] | None = None) -> Iterator[Event]:
    """The stages of opening ``spec`` for ``config`` (``hub``: as ``open_training_data``'s), then the events of
    ``start(data)`` (``train``/``compare`` on it): how the CLI and the app start a run. Data that cannot be
    opened ends the stream in one Failed."""
    try:
        data = yield from open_training_data(spec, config, hub)
    except (DatasetError, HubError, ValueError) as exc:
        yield Failed(message=str(exc))
        return
    yield from start(data)


def training_data(spec: str | os.PathLike | DataSource, config: TrainConfig) -> TrainingData:
    """``open_training_data`` for callers that show no progress: its value, its stages dropped."""
    steps = open_training_data(spec, config)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value

