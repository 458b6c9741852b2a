"""The training engine: one generator that yields typed progress events.

``train()`` is the only training loop in pokedemo; the CLI, the app and the benchmarks all drive it. Speed on a
2-core CPU comes from decoding each image once into a uint8 tensor cache, batched augmentation from that cache,
fitting the new head on frozen features before fine-tuning, a small default resolution, and on a CPU small
forward passes and BatchNorm folded for inference (``pokedemo.device_plan``, ``pokedemo.inference``; figures in
BENCHMARKS.md).

The engine takes an opened dataset (``pokedemo.training_data``: scanned, split, its source recorded) and does
not know where the images came from. A run is decided once at its start (``_start_run``: the resolved config,
the ``Strategy``, the execution plan, the run folder) into one ``_Run``; its per-epoch steps take what they use
as arguments.
"""

from __future__ import annotations

import math
import random
import shutil
import threading
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pokedemo import checkpoint as ckpt
from pokedemo.augment import make_train_augment
from pokedemo.calibration import Calibration, calibrated_state, fit_temperature
from pokedemo.config import TrainConfig, default_checkpoint_root, project_relative, resolve_device
from pokedemo.data import Dataset, DatasetError, Split, cached_tensors
from pokedemo.device_plan import ExecutionPlan, execution_plan
from pokedemo.distributed import SINGLE, Parallel, PeerLost, is_peer_failure, lost_message
from pokedemo.inference import folded_for_inference, infer_logits
from pokedemo.events import (
    BatchProgress, Cancelled, CompareFinished, EpochEnd, Event, Failed, Finished, NewBest, RunStarted, Stage,
    Tagged,
)
from pokedemo.hub import HubError
from pokedemo.metrics import report_with_items
from pokedemo.model_ref import resolve_model
from pokedemo.training_data import TrainingData, continuing_from
from pokedemo.openset import OpenSet, fit_adopted_rule, logits_and_features
from pokedemo.models import (
    BACKBONE_NAMES, Classifier, UnknownBackbone, WeightsUnavailable, build_features, classifier_with, get_backbone,
    hub_backbone_config, is_hub_backbone,
)
from pokedemo.options import reproduce_record

PROGRESS_INTERVAL_S = 0.25  # BatchProgress at most this often: each one costs a host sync on GPUs


def before_batch(epoch: int, step: int) -> None:
    """Test hook, called before every training batch (1-based epoch, 0-based step); does nothing here.

    Tests replace it (monkeypatch, or tests/hold_at_batch.py for subprocesses) to hold a run at a chosen batch
    until they release it, so "a training is in progress" is a state a test controls rather than a guess about
    how slow the machine is. The stop flag is checked right after it, so a stop set while held takes effect
    before that batch runs.
    """


class _Stop(Exception):
    """Raised inside the loop when the stop flag is seen; turned into a Cancelled event."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class SplitTensors:
    """uint8 images and int64 labels of each split, already on the training device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @classmethod
    def build(cls, dataset: Dataset, split: Split, train_size: int, eval_size: int,
              device: torch.device) -> "SplitTensors":
        """Training images at the training size, validation/test images at the evaluation size."""
        labels = torch.tensor(dataset.labels(), dtype=torch.int64)
        parts = {}
        for name in ("train", "val", "test"):
            indices = getattr(split, name)
            size = train_size if name == "train" else eval_size
            parts[f"{name}_x"] = cached_tensors(dataset, indices, size).to(device)
            parts[f"{name}_y"] = labels[torch.tensor(indices, dtype=torch.int64)].to(device)
        return cls(**parts)


def evaluate_tensors(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, device: torch.device, label_smoothing: float = 0.0,
    plan: ExecutionPlan | None = None,
) -> tuple[float, float, torch.Tensor]:
    """(loss, accuracy, logits) of ``model`` on a split (run on a folded copy; ``model`` is untouched)."""
    logits = infer_logits(folded_for_inference(model), images, device, plan=plan)
    if len(labels) == 0:
        return 0.0, 0.0, logits
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing).item()
    return loss, (logits.argmax(1) == labels).float().mean().item(), logits


def train(
    config: TrainConfig,
    data: TrainingData,
    out_root: str | Path | None = None,
    *,
    stop: threading.Event | None = None,
    parallel: Parallel = SINGLE,
    run_name: str | None = None,
) -> Iterator[Event]:
    """Train one model on ``data``, yielding events; the last event is always Finished, Cancelled or Failed.

    ``data`` is opened before the run (``pokedemo.training_data``), so several runs (a comparison) share one scan
    and one split. The run folder goes under ``out_root`` (default: the checkpoint root), named ``run_name`` or
    after the time and backbone. ``stop`` is checked before every batch; ``parallel`` is this process's place in
    a torchrun data-parallel run (``pokedemo.distributed``).
    """
    stop = stop or threading.Event()
    started = time.perf_counter()
    cfg, run = config, None
    try:
        cfg, device = _resolved(config, parallel)
        run = yield from _start_run(cfg, device, data, out_root, run_name, stop, parallel, started)
        yield from run.execute()
    except _Stop:
        yield run.cancelled() if run else Cancelled(
            run_dir=None, epoch=0, seconds=round(time.perf_counter() - started, 3), message=NOTHING_SAVED)
    except Exception as exc:  # noqa: BLE001 - every fault ends this run with a message, never a crash
        message = _failure_message(exc, cfg, parallel)
        yield run.failed(message) if run else Failed(message=message, run_dir=None)


NOTHING_SAVED = "Training stopped before the first epoch ended; nothing was saved."
_USER_ERRORS = (DatasetError, WeightsUnavailable, UnknownBackbone, ckpt.CheckpointError, ValueError, HubError)


def _failure_message(exc: Exception, cfg: TrainConfig, parallel: Parallel) -> str:
    """The one line a failed run reports."""
    if isinstance(exc, _USER_ERRORS):
        return str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        return (f"out of memory with batch size {cfg.batch_size} at {cfg.img_size}px; "
                "try a smaller batch size or image size")
    if parallel.enabled and is_peer_failure(exc):  # e.g. inside DDP's gradient all-reduce
        return str(exc) if isinstance(exc, PeerLost) else lost_message("training", exc)
    return f"training failed: {type(exc).__name__}: {exc}"


def _resolved(config: TrainConfig, parallel: Parallel) -> tuple[TrainConfig, torch.device]:
    """The checked config with concrete device-default values (what the checkpoint records) and its device."""
    config.validate()
    parallel.check_batch(config.batch_size)
    if config.backbone not in BACKBONE_NAMES:
        get_backbone(config.backbone)  # raises UnknownBackbone before any work starts
    device = parallel.device(config.device)
    return config.resolved(device), device


@dataclass(frozen=True)
class Strategy:
    """What a run trains, decided once from its config (the one home of these rules)."""

    linear: bool            # only the new head learns; the backbone is a fixed feature extractor
    head_first: bool        # the head is fitted on frozen features before the first epoch
    frozen_batchnorm: bool  # BatchNorm keeps its pretrained running statistics while training
    refines: bool = False   # continues a model that knows every class: small steps from its weights

    @classmethod
    def of(cls, cfg: TrainConfig, warm: ckpt.WarmStart | None = None) -> "Strategy":
        linear = cfg.strategy == "linear"
        # A continued run whose classes the start model all knows has a fitted head already: refitting it on
        # features of pictures the model trained on undoes part of what it learnt, and full-size steps drift
        # away from it (BENCHMARKS.md, "Fixing labels, then continuing"). Added classes need the head fit.
        refines = warm is not None and not warm.added
        # Batch statistics of 32 images are noisy and differ from the ones the head was fitted on, which costs
        # accuracy early in a short fine-tune; a linear probe's backbone must not drift through them either.
        return cls(linear=linear, head_first=cfg.pretrained and (cfg.head_warmup or linear) and not refines,
                   frozen_batchnorm=linear or (cfg.pretrained and cfg.freeze_bn), refines=refines)

    def learning_rate(self, cfg: TrainConfig) -> float:
        """The head's peak learning rate in this run."""
        return cfg.lr * (cfg.warm_start_lr_scale if self.refines else 1.0)


def _start_run(cfg: TrainConfig, device: torch.device, data: TrainingData, out_root, run_name, stop, parallel,
               started: float) -> Iterator[Event]:
    """Generator: build the model and the image tensors and make the run folder; returns the ``_Run``.

    The backbone is built in the background while the images are decoded; the run folder is made last, so a
    failure before it leaves nothing behind.
    """
    seed_everything(cfg.seed)
    start = load_start(cfg.init_from, out_root) if cfg.init_from else None
    if start is not None:  # the checkpoint's backbone, whatever the option said
        cfg = dataclasses.replace(cfg, backbone=start.config["backbone"])
    features = start_building_features(cfg, device, random_init=start is not None)
    if start is not None and (redrawn := continuing_from(data, start.config, cfg)) is not data:
        data = redrawn
        yield Stage("split", f"Split drawn again: the pictures {Path(start.path).name} trained on stay in training, "
                             "so validation and test pictures are new to both models")
    dataset, split = data.dataset, data.split
    yield Stage("cache", f"Decoding {len(dataset.records)} images at {_sizes_text(cfg)}")
    # The training images are kept at the last epoch's (largest) size; earlier epochs crop them smaller.
    tensors = SplitTensors.build(dataset, split, cfg.last_epoch_size, cfg.eval_size, device)
    model = classifier_with(features.result(), cfg.backbone, len(dataset.classes))
    warm = ckpt.warm_start(model, dataset.classes, start) if start is not None else None
    strategy = Strategy.of(cfg, warm)
    if warm is not None:
        yield Stage("warm-start", _warm_start_text(warm, strategy.learning_rate(cfg) if strategy.refines else None))
    model.keeps_batchnorm_statistics = strategy.frozen_batchnorm
    if parallel.any_stop(stop.is_set(), device):
        raise _Stop
    plan = execution_plan(device, model, cfg.batch_size, len(split.train))
    plan.place_model(model)
    root = out_root or default_checkpoint_root()
    # One run folder, made by rank 0 alone and named to the others.
    run_dir = parallel.broadcast(
        ckpt.new_run_dir(root, cfg.backbone, cfg.pretrained, run_name) if parallel.is_main else None)
    meta = {**_checkpoint_meta(cfg, data, model, parallel), "execution": plan_record(plan),
            **({"init_from": warm.record()} if warm is not None else {})}
    return _Run(cfg=cfg, device=device, par=parallel, stop=stop, strategy=strategy, model=model, tensors=tensors,
                data=data, plan=plan, run_dir=run_dir, meta=meta,
                steps_per_epoch=plan.steps_per_epoch(len(tensors.train_y), cfg.epochs), started=started)


@dataclass
class _Best:
    """The kept epoch: its weights (with the head calibrated when ``cfg.calibrate``) and validation scores."""

    epoch: int = 0
    val: tuple[float, float] = (-1.0, math.inf)  # (accuracy, loss); ``improves`` says which wins
    state: dict[str, torch.Tensor] | None = None
    calibration: Calibration | None = None


@dataclass(frozen=True)
class _Steps:
    """What every training step of a run uses, made once before the first epoch."""

    net: torch.nn.Module  # what the optimiser trains (the head or the model), in DDP under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # the batch order
    micro_batch: int | None  # a step runs as passes of this many images, or as one pass (None)


@dataclass
class _Run:
    """One training run: everything decided at its start, then how far it got (``epoch``, ``best``,
    ``history``, the only fields that change); ``execute`` trains it."""

    cfg: TrainConfig  # resolved: the values the checkpoint records
    device: torch.device
    par: Parallel
    stop: threading.Event
    strategy: Strategy
    model: Classifier
    tensors: SplitTensors
    data: TrainingData
    plan: ExecutionPlan
    run_dir: Path | None  # None on ranks other than 0 until broadcast, and once discarded
    meta: dict[str, Any]
    steps_per_epoch: int
    started: float
    epoch: int = 0
    best: _Best = dataclasses.field(default_factory=_Best)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    open_set: OpenSet | None = None  # fitted on the kept (calibrated) weights when the run finishes

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def check_stop(self) -> None:
        # Distributed: the flag is all-reduced, so every rank stops at the same step (a collective call).
        if self.par.any_stop(self.stop.is_set(), self.device):
            raise _Stop

    def execute(self) -> Iterator[Event]:
        cfg, dataset, split = self.cfg, self.data.dataset, self.data.split
        yield _run_started(self.run_dir, self.device, dataset, split, cfg, self.steps_per_epoch * cfg.epochs)
        if self.par.enabled:
            yield Stage("distributed", self.par.describe(cfg.batch_size, self.strategy.learning_rate(cfg), self.device))
        if self.strategy.head_first:
            yield Stage("head", "Fitting the new head on frozen pretrained features")
            fit_head_on_features(self.model, self.tensors, cfg, self.plan, self.check_stop)
        yield from self.fit()
        yield self.finish()

    def steps(self) -> _Steps:
        cfg, model = self.cfg, self.model
        optimizer = make_optimizer(model, cfg, self.strategy)
        # Split a step into the plan's smaller passes only where that gives the same gradient: no layer may mix
        # the images of a batch (frozen BatchNorm), and not under torchrun, whose all-reduce runs per backward.
        in_passes = self.strategy.frozen_batchnorm and not self.par.enabled
        return _Steps(
            net=self.par.wrap(model.head if self.strategy.linear else model, self.device),
            optimizer=optimizer, scheduler=make_scheduler(optimizer, cfg, self.steps_per_epoch),
            scaler=torch.amp.GradScaler(self.device.type, enabled=self.plan.autocast_dtype == torch.float16),
            generator=torch.Generator().manual_seed(cfg.seed),
            micro_batch=self.plan.micro_batch if in_passes else None,
        )

    def fit(self) -> Iterator[Event]:
        cfg = self.cfg
        steps = self.steps()
        augments = {size: make_train_augment(size, cfg.augment) for size in {cfg.img_size, cfg.last_epoch_size}}
        self.par.vary_augmentation(cfg.seed)
        carried = None  # training images dropped from the last epoch's batches (fixed batch shapes)
        for epoch in range(1, cfg.epochs + 1):
            self.epoch = epoch
            stats, carried = yield from self.train_epoch(epoch, steps, augments[cfg.epoch_size(epoch)], carried)
            val_loss, val_acc, val_logits = evaluate_tensors(
                self.model, self.tensors.val_x, self.tensors.val_y, self.device, cfg.label_smoothing,
                plan=self.plan)
            record = {
                "epoch": epoch, **stats, "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5),
                "lr": steps.optimizer.param_groups[-1]["lr"], "elapsed": round(self.elapsed(), 3),
            }
            self.history.append(record)
            yield EpochEnd(epochs=cfg.epochs, **record)
            if self.improves(val_acc, val_loss):
                self.save_best(epoch, val_acc, val_loss, val_logits)
                yield NewBest(epoch=epoch, val_acc=val_acc, run_dir=str(self.run_dir))

    def train_epoch(self, epoch: int, steps: _Steps, augment, carried: torch.Tensor | None):
        """Generator: one pass over the training split, yielding BatchProgress; returns (epoch statistics,
        the images this epoch's batches left out, carried into the next epoch)."""
        model, plan, data, device = self.model, self.plan, self.tensors, self.device
        model.train()  # BatchNorm stays in eval mode where the strategy keeps its statistics
        batches, carried = plan.epoch_batches(len(data.train_y), steps.generator, carried, self.cfg.epochs)
        batches = self.par.even_batches(batches)  # torchrun: every batch splits evenly over the ranks
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        epoch_start, last_emit, seen = time.perf_counter(), 0.0, 0
        for step, idx in enumerate(batches):
            before_batch(epoch, step)
            self.check_stop()
            self.par.fault_hook((epoch - 1) * self.steps_per_epoch + step + 1)
            idx = self.par.shard(idx)  # torchrun: this rank's share of the global batch
            x = plan.to_input(augment(data.train_x[idx]))
            y = data.train_y[idx]
            steps.optimizer.zero_grad(set_to_none=True)
            loss, logits = backward(model, steps.net, x, y, plan=plan, scaler=steps.scaler,
                                    linear=self.strategy.linear, micro_batch=steps.micro_batch,
                                    label_smoothing=self.cfg.label_smoothing)
            steps.scaler.step(steps.optimizer)
            steps.scaler.update()
            steps.scheduler.step()
            hits = logits.detach().argmax(1) == y
            loss_sum += loss.detach() * len(y)
            correct += hits.sum()
            seen += len(y)
            now = time.perf_counter()
            if now - last_emit >= PROGRESS_INTERVAL_S or step == self.steps_per_epoch - 1:
                last_emit = now
                rate = seen * self.par.world_size / (now - epoch_start)
                yield self.progress(epoch, step, loss.item(), hits.float().mean().item(), rate)
        seconds = time.perf_counter() - epoch_start
        loss_sum, correct, seen = self.par.sum_epoch(loss_sum, correct, seen)
        stats = {
            "train_loss": round(loss_sum.item() / max(seen, 1), 5),
            "train_acc": round(correct.item() / max(seen, 1), 5),
            "images_per_sec": round(seen / seconds, 2),
        }
        return stats, carried

    def progress(self, epoch: int, step: int, loss: float, accuracy: float, images_per_sec: float) -> BatchProgress:
        cfg = self.cfg
        done = (epoch - 1) * self.steps_per_epoch + step + 1
        total = self.steps_per_epoch * cfg.epochs
        rate = max(images_per_sec / cfg.batch_size, 1e-9)  # steps per second
        return BatchProgress(
            epoch=epoch, epochs=cfg.epochs, step=done, total_steps=total, loss=round(loss, 5),
            accuracy=round(accuracy, 5),
            images_per_sec=round(images_per_sec, 2), eta_seconds=round((total - done) / rate, 1),
        )

    def improves(self, val_acc: float, val_loss: float) -> bool:
        """Whether this epoch's weights replace the kept ones (``select_epoch_by``)."""
        best_acc, best_loss = self.best.val
        if self.cfg.select_epoch_by == "val_acc":
            return (val_acc, -val_loss) > (best_acc, -best_loss)
        return (-val_loss, val_acc) > (-best_loss, best_acc)

    def save_best(self, epoch: int, val_acc: float, val_loss: float, val_logits: torch.Tensor) -> None:
        """Keep this epoch's weights (with the head calibrated on its validation logits) and write them."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        calibration = fit_temperature(val_logits, self.tensors.val_y) if self.cfg.calibrate else None
        if calibration is not None:
            state = calibrated_state(state, calibration.temperature)
        self.best = _Best(epoch=epoch, val=(val_acc, val_loss), state=state, calibration=calibration)
        self.write_checkpoint("training", test=None)

    def write_checkpoint(self, status: str, test: dict[str, Any] | None) -> None:
        if not self.par.is_main:  # rank 0 alone writes; the other ranks hold the same weights
            return
        best = self.best
        open_set = self.open_set.tensors() if self.open_set is not None else {}
        digest = ckpt.save_weights(self.run_dir, {**best.state, **open_set})
        metrics = {"best_epoch": best.epoch, "best_val_acc": best.val[0],
                   "best_val_loss": best.val[1], "seconds": round(self.elapsed(), 3)}
        if best.calibration is not None:
            metrics["calibration"] = best.calibration.record()
        if test is not None:  # the data folder is recorded once, under "dataset" (and reduced when published)
            metrics["test"] = {k: v for k, v in test.items() if k != "root"}
        recorded = {"open_set": self.open_set.record()} if self.open_set is not None else {}
        ckpt.write_config(self.run_dir, {**self.meta, "status": status, "weights_sha256": digest, **recorded,
                                         "metrics": metrics})
        ckpt.write_history(self.run_dir, self.history)

    def finish(self) -> Finished:
        model, dataset, split, tensors = self.model, self.data.dataset, self.data.split, self.tensors
        model.load_state_dict(self.best.state)
        folded = folded_for_inference(model)
        self.open_set = self.fit_open_set(folded)
        logits, features = logits_and_features(folded, tensors.test_x, self.device, self.plan)
        probs = torch.softmax(logits, dim=1).cpu()
        paths = [dataset.records[i].rel_path for i in split.test]
        # With per-image items, the app's errors gallery needs no second evaluation of the test split.
        report = report_with_items(probs.numpy(), tensors.test_y.cpu().tolist(), dataset.classes, paths,
                                   str(dataset.root))
        scores = self.open_set.scores(logits, features).cpu()
        report["open_set"] = self.open_set.report(probs.argmax(dim=1), scores, tensors.test_y.cpu())
        self.write_checkpoint("complete", test=report)
        return Finished(
            run_dir=str(self.run_dir), best_epoch=self.best.epoch, best_val_acc=self.best.val[0],
            test_acc=report["accuracy"], test_metrics=report, seconds=round(self.elapsed(), 3),
            history=list(self.history),
        )

    def fit_open_set(self, folded: Classifier) -> OpenSet:
        """The open-set rule of the kept weights: statistics of the training images' features (unaugmented, at
        the inference size), thresholds on the validation split (``pokedemo.openset``)."""
        cfg, device, data = self.cfg, self.device, self.tensors
        train_x = data.train_x if cfg.eval_size == cfg.last_epoch_size else \
            cached_tensors(self.data.dataset, self.data.split.train, cfg.eval_size).to(device)
        return fit_adopted_rule(folded, train_x, data.train_y, data.val_x, device, self.plan)

    def cancelled(self) -> Cancelled:
        seconds = round(self.elapsed(), 3)
        if self.best.state is None:
            self.discard_run_dir()
            return Cancelled(run_dir=None, epoch=self.epoch, seconds=seconds, message=NOTHING_SAVED)
        self.write_checkpoint("cancelled", test=None)
        return Cancelled(
            run_dir=str(self.run_dir), epoch=self.epoch, seconds=seconds,
            message=f"Training stopped in epoch {self.epoch}; the best checkpoint so far "
                    f"(epoch {self.best.epoch}, val acc {self.best.val[0]:.1%}) is saved.",
        )

    def failed(self, message: str) -> Failed:
        # A failed run keeps status "training" (hidden, refused by load) unless it saved nothing at all.
        if self.best.state is None:
            self.discard_run_dir()
        return Failed(message=message, run_dir=str(self.run_dir) if self.run_dir else None)

    def discard_run_dir(self) -> None:
        if self.run_dir is not None and self.par.is_main:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None


def backward(model: Classifier, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, plan: ExecutionPlan,
             scaler: torch.amp.GradScaler, linear: bool, micro_batch: int | None,
             label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one training batch; returns its mean loss and logits (both detached).

    With ``micro_batch``, the batch runs as passes of that many images, each loss weighted by its share of the
    batch, so the gradients add up to those of the whole batch's mean loss. ``linear``: the frozen backbone
    runs without gradients and ``net`` is the head.
    """
    step = micro_batch or len(y)
    losses, all_logits = [], []
    for start in range(0, len(y), step):
        part_x, part_y = x[start:start + step], y[start:start + step]
        with plan.autocast():
            if linear:
                with torch.no_grad():
                    feats = model.forward_features(part_x)
                logits = net(feats.float())
            else:
                logits = net(part_x)
            loss = F.cross_entropy(logits.float(), part_y, label_smoothing=label_smoothing)
        scaler.scale(loss * (len(part_y) / len(y))).backward()
        losses.append(loss.detach() * len(part_y))
        all_logits.append(logits.detach())
    return torch.stack(losses).sum() / len(y), torch.cat(all_logits)


def _sizes_text(cfg: TrainConfig) -> str:
    text = f"{cfg.img_size}px"
    if cfg.last_epoch_size != cfg.img_size:
        text += f", the last epoch at {cfg.last_epoch_size}px"
    if cfg.eval_size != cfg.img_size:
        text += f", validation/test at {cfg.eval_size}px"
    return text


def load_start(reference: str, out_root) -> ckpt.LoadedCheckpoint:
    """The checkpoint a run continues from (``TrainConfig.init_from``): a run folder, a run name under the
    checkpoint root, or a Hub repo id."""
    return ckpt.load_checkpoint(resolve_model(reference, root=out_root or default_checkpoint_root()))


def _warm_start_text(warm: ckpt.WarmStart, refine_lr: float | None) -> str:
    text = f"Starting from the weights of {Path(warm.source).name}"
    if warm.added:
        text += f"; new classes get a fresh head row: {', '.join(warm.added)}"
    if refine_lr is not None:
        text += f"; it knows every class, so its head is kept and the run refines it at lr {refine_lr:g}"
    return text


def start_building_features(cfg: TrainConfig, device: torch.device, random_init: bool = False) -> Future:
    """Build the backbone in a background thread while the image tensors are built.

    Imports, reading the pretrained weights and, on a GPU, the CUDA start-up (moving the weights there) then do
    not come before the decoding. Scratch initialisation draws the same numbers from the seeded global
    generator either way: building the tensors draws no torch random numbers, and the head (which needs the
    class count) is initialised after this finishes. A failure (e.g. missing weights) is raised by ``result()``.
    ``random_init``: the weights come from a checkpoint afterwards, so ImageNet's are neither needed nor read.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="pokedemo-backbone")
    pretrained, weights = (False, None) if random_init else (cfg.pretrained, cfg.weights_file)
    future = pool.submit(lambda: build_features(cfg.backbone, pretrained, weights).to(device))
    pool.shutdown(wait=False)  # the thread ends with the build; nobody waits for it if the decoding fails
    return future


def make_optimizer(model: Classifier, cfg: TrainConfig, strategy: Strategy) -> torch.optim.Optimizer:
    """AdamW; a pretrained backbone learns slower than the new head so ImageNet features are not wrecked."""
    head, lr = list(model.head.parameters()), strategy.learning_rate(cfg)
    if strategy.linear:
        for p in model.features.parameters():
            p.requires_grad_(False)
        groups = [{"params": head, "lr": lr}]
    else:
        scale = cfg.backbone_lr_scale if cfg.pretrained else 1.0
        groups = [
            {"params": list(model.features.parameters()), "lr": lr * scale},
            {"params": head, "lr": lr},
        ]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay to zero, stepped every batch.

    Step s of the warm-up trains at (s + 1) / (warmup + 1) of each group's lr (never at 0), then a half cosine
    over the remaining steps reaches 0 after the last batch.
    """
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    cosine = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=0.0)
    if warmup == 0:
        return cosine
    ramp = LinearLR(optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def fit_head_on_features(model: Classifier, data: SplitTensors, cfg: TrainConfig, plan: ExecutionPlan,
                         check_stop) -> None:
    """Fit the new head as a logistic regression on frozen features of the (unaugmented) training images.

    Starting fine-tuning from a fitted head instead of a random one lets the backbone learn at a higher rate
    without large early gradients wrecking the pretrained features; it costs one forward pass over the data.
    """
    features, labels = head_features(model, data, plan, check_stop)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-2, weight_decay=cfg.weight_decay)
    with torch.enable_grad():
        for _ in range(150):
            loss = F.cross_entropy(model.head(features), labels, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def head_features(
    model: Classifier, data: SplitTensors, plan: ExecutionPlan, check_stop
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (float32) of the training images and of their mirror images, with matching labels."""
    model = folded_for_inference(model)  # the backbone is frozen here: eval-mode BatchNorm folds away
    flip = lambda x: torch.flip(x, dims=[3])

    def features_of(view):
        def run(x: torch.Tensor) -> torch.Tensor:
            with plan.autocast():
                return model.forward_features(view(x)).float()
        return run

    if plan.fixed_shapes:  # originals and mirrors in separate passes: the model sees one batch shape
        parts = [plan.forward_in_batches(features_of(view), data.train_x, check_stop) for view in (lambda x: x, flip)]
        return torch.cat(parts), torch.cat([data.train_y, data.train_y])
    # Natural shapes (CPU): each batch with its mirrors in one pass.
    both = features_of(lambda x: torch.cat([x, flip(x)]))
    features = plan.forward_in_batches(both, data.train_x, check_stop)
    step, n = plan.eval_batch, len(data.train_x)
    labels = torch.cat([torch.cat([data.train_y[s:s + step]] * 2) for s in range(0, n, step)])
    return features, labels


def plan_record(plan: ExecutionPlan) -> dict[str, Any]:
    """The execution plan as recorded in the checkpoint (how the run executed, for comparing timings)."""
    return {
        "device": str(plan.device), "channels_last": plan.channels_last,
        "autocast": str(plan.autocast_dtype).replace("torch.", "") if plan.autocast_dtype else None,
        "fixed_batch_shapes": plan.fixed_shapes, "train_batch": plan.batch_size, "eval_batch": plan.eval_batch,
        "micro_batch": plan.micro_batch,
    }


def _checkpoint_meta(cfg: TrainConfig, data: TrainingData, model: Classifier, parallel: Parallel) -> dict[str, Any]:
    spec, dataset, source = get_backbone(cfg.backbone), data.dataset, data.source_record()
    meta = {
        "architecture": "pokedemo.models.Classifier",
        "backbone": cfg.backbone,
        "pretrained": cfg.pretrained,
        "num_classes": len(dataset.classes),
        "class_names": list(dataset.classes),
        "image_size": cfg.eval_size,  # what evaluate/predict/Grad-CAM feed the model (img_size is in train_config)
        "mean": list(spec.mean),
        "std": list(spec.std),
        "feature_dim": spec.feature_dim,
        # A Hub backbone's timm config: the checkpoint rebuilds its architecture without the Hub.
        **({"backbone_config": hub_backbone_config(cfg.backbone)} if is_hub_backbone(cfg.backbone) else {}),
        "train_config": cfg.to_dict(),
        "dataset": {
            "root": str(dataset.root),
            "project_path": project_relative(dataset.root),  # finds the bundled data again in another clone
            "class_counts": dataset.class_counts(),
            "unreadable": [u.rel_path for u in dataset.unreadable],
            "duplicate_groups": len(dataset.near_groups),
            "conflict_groups": len(dataset.conflict_groups),
            **({"source": source} if source is not None else {}),
        },
        "split": data.split.to_record(dataset),
        "versions": ckpt.library_versions(),
        "created_at": ckpt.utc_now(),
    }
    meta["reproduce"] = reproduce_record(cfg, meta["dataset"])
    if parallel.enabled:
        meta["parallel"] = {"world_size": parallel.world_size, "backend": parallel.backend}
    return meta


def _run_started(run_dir, device, dataset: Dataset, split: Split, cfg: TrainConfig, total_steps: int) -> RunStarted:
    return RunStarted(
        run_dir=str(run_dir), device=str(device), classes=list(dataset.classes),
        class_counts=dataset.class_counts(),
        split_sizes={"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        unreadable=[(u.rel_path, u.reason) for u in dataset.unreadable],
        duplicate_groups=len(dataset.near_groups), conflict_groups=len(dataset.conflict_groups),
        total_steps=total_steps, config=cfg.to_dict(),
    )


def compare(
    config: TrainConfig,
    data: TrainingData,
    out_root: str | Path | None = None,
    *,
    stop: threading.Event | None = None,
) -> Iterator[Event]:
    """Train pretrained then scratch on the same data, split and budget; events come wrapped in ``Tagged``.

    The scratch run trains every layer (a frozen random backbone learns little) from random weights, so a
    ``linear`` strategy and an ``init_from`` in ``config`` apply to the pretrained run only.
    """
    stop = stop or threading.Event()
    try:
        config.validate()
        config = config.resolved(resolve_device(config.device))  # both runs get the same concrete values
    except ValueError as exc:
        yield Failed(message=str(exc))
        return
    if config.init_from:  # the scratch run tests on the pictures the continued run does
        try:
            data = continuing_from(data, ckpt.read_config(resolve_model(
                config.init_from, root=out_root or default_checkpoint_root())), config)
        except (ckpt.CheckpointError, HubError) as exc:
            yield Failed(message=str(exc))
            return
    runs = {
        "pretrained": dataclasses.replace(config, pretrained=True),
        "scratch": dataclasses.replace(config, pretrained=False, strategy="finetune", init_from=None),
    }
    results: dict[str, dict[str, Any]] = {}
    for label, run_config in runs.items():
        final = None
        for event in train(run_config, data, out_root, stop=stop):
            final = event
            yield Tagged(run=label, event=event)
        results[label] = _compare_summary(final)
        if not isinstance(final, Finished):
            return
    yield CompareFinished(results=results, table=[{"run": k, **v} for k, v in results.items()])


def epochs_to_reach(history: list[dict[str, Any]], threshold: float) -> int | None:
    """First epoch whose validation accuracy reaches ``threshold``, or None."""
    return next((h["epoch"] for h in history if h["val_acc"] >= threshold), None)


def _compare_summary(final: Event | None) -> dict[str, Any]:
    if not isinstance(final, Finished):
        message = getattr(final, "message", "no result")
        return {"status": type(final).__name__.lower() if final else "failed", "message": message}
    return {
        "status": "finished",
        "test_acc": final.test_acc,
        "best_val_acc": final.best_val_acc,
        "seconds": final.seconds,
        "epochs_to_90": epochs_to_reach(final.history, 0.9),
        "run_dir": final.run_dir,
        "confusion": final.test_metrics["confusion"],
        "classes": final.test_metrics["classes"],
    }
