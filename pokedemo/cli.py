"""Command line: ``python -m pokedemo train|evaluate|predict|compare|doctor|export|push|push-dataset|deploy-space``.

``--data`` takes a folder of class folders or a Hub dataset, ``hf://datasets/NAMESPACE/NAME[@REVISION]``.
``train`` also runs under ``torchrun`` (data-parallel, see pokedemo.distributed).

Every user error is one line on stderr and exit status 2, never a traceback. Progress bars go to stderr;
results to stdout (``train``'s last stdout line is one JSON object).

Only ``pokedemo.config`` and ``pokedemo.options`` are imported at the top: every other module is imported by
the command that uses it, so ``--help`` and argument errors answer without loading torch, numpy, PIL or the
engine's own modules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pokedemo.config import TrainConfig, default_data_dir, default_model, defaults_note
from pokedemo.options import add_training_arguments, config_from_args

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    _add_data_option(parser)
    add_training_arguments(parser)
    parser.add_argument("--out", metavar="DIR", default=None, help="Where run directories are written "
                        "(default: $POKEDEMO_CHECKPOINTS or ./checkpoints).")


def _add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, metavar="DIR", help="Folder of class subfolders with images, or a "
                        "Hub dataset hf://datasets/NAMESPACE/NAME[@REVISION] (default: $POKEDEMO_DATA, else the "
                        "bundled data/pokemon of this checkout).")


def data_dir_from(args: argparse.Namespace) -> str:
    return args.data or default_data_dir()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pokedemo", description="Transfer learning on image folders.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="Train a classifier on a folder of class subfolders.")
    _add_training_options(train)

    evaluate = sub.add_parser("evaluate", help="Evaluate a checkpoint on a folder (or on its own test split).")
    evaluate.add_argument("--checkpoint", required=True, metavar="CKPT", help="Run directory, run name under the "
                          "checkpoint root, or Hub repo id.")
    evaluate.add_argument("--data", metavar="DIR", default=None,
                          help="Evaluate every image in DIR (a Hub dataset with its own split: its test "
                          "part); without it, the run's recorded test split (fetched again from the Hub "
                          "when the run trained on a Hub dataset).")
    evaluate.add_argument("--json", action="store_true", help="Print one JSON object.")
    evaluate.add_argument("--report", metavar="DIR", default=None, help="Also write a report to DIR: confusion "
                          "matrix picture, per-class precision/recall/F1, misclassified images.")

    predict = sub.add_parser("predict", help="Classify images with a checkpoint.")
    predict.add_argument("--checkpoint", default=None, metavar="CKPT", help="Run directory, run name under the "
                         "checkpoint root, or Hub repo id (default: $POKEDEMO_MODEL, else the bundled starter "
                         "model checkpoints/pokemon-starter).")
    predict.add_argument("--top-k", type=int, default=5, help="How many classes to show per image.")
    predict.add_argument("--threshold", type=float, default=None, help="How sure the model must be: the open-set "
                         "score an image needs to count as one of the classes (default: the checkpoint's own; "
                         "below it the answer is 'unknown').")
    predict.add_argument("--json", action="store_true", help="Print a JSON list.")
    predict.add_argument("--cam", metavar="OUT_DIR", default=None,
                         help="Also write Grad-CAM overlays (where the model looked) to OUT_DIR.")
    predict.add_argument("--csv", metavar="FILE", default=None,
                         help="Also write one row per picture (file, label, probability, error) to FILE.")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="Picture files or folders (searched recursively).")

    compare = sub.add_parser("compare", help="Train pretrained and scratch on the same split and budget.")
    _add_training_options(compare)

    doctor = sub.add_parser("doctor", help="Check a dataset: counts, formats, unreadable files, duplicates.")
    _add_data_option(doctor)
    doctor.add_argument("--json", action="store_true", help="Print one JSON object.")

    export = sub.add_parser("export", help="Export a checkpoint to ONNX, checked against pokedemo's own "
                            "predictions, with a standalone prediction script.")
    export.add_argument("--checkpoint", required=True, metavar="CKPT", help="Run directory or Hub repo id.")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="Export format (default: onnx).")
    export.add_argument("--out", metavar="DIR", default=None, help="Folder to write (default: ./<run>-onnx; an "
                        "earlier export there is replaced, any other content is refused).")
    export.add_argument("--data", metavar="DIR", default=None, help="Check parity on every picture under DIR "
                        "(default: the run's recorded test pictures).")

    push = sub.add_parser("push", help="Upload a checkpoint with a model card to a Hugging Face Hub model repo.")
    push.add_argument("--checkpoint", required=True, metavar="DIR", help="Run directory to upload.")
    push.add_argument("--repo-id", required=True, metavar="NAMESPACE/NAME", help="Target model repo.")
    push.add_argument("--private", action="store_true", help="Create the repo as private.")
    push.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN, else your cached login).")
    push.add_argument("--commit-message", default=None, metavar="MSG", help="Commit message for the upload.")
    push.add_argument("--onnx", action="store_true", help="Also export the model to ONNX (checked against "
                      "pokedemo's predictions, as `export` does) and upload model.onnx and predict_onnx.py beside "
                      "the weights.")

    space = sub.add_parser("deploy-space", help="Upload the app with the bundled data and starter model to a "
                           "Hugging Face Space (created if needed) that works with no configuration.")
    space.add_argument("--repo-id", required=True, metavar="NAMESPACE/NAME", help="Target Space.")
    space.add_argument("--private", action="store_true", help="Create the Space as private.")
    space.add_argument("--hardware", default=None, metavar="FLAVOR",
                       help="Request Space hardware, e.g. cpu-basic (free, default), cpu-upgrade, t4-small.")
    space.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN, else your cached login).")

    push_data = sub.add_parser("push-dataset", help="Upload a folder of class folders as a Hub dataset repo "
                               "with a dataset card (classes, counts, duplicate report).")
    push_data.add_argument("--data", required=True, metavar="DIR", help="Folder of class subfolders with images.")
    push_data.add_argument("--repo-id", required=True, metavar="NAMESPACE/NAME", help="Target dataset repo.")
    push_data.add_argument("--private", action="store_true", help="Create the repo as private.")
    push_data.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN, else your cached login).")
    push_data.add_argument("--commit-message", default=None, metavar="MSG", help="Commit message for the upload.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "compare": cmd_compare,
        "doctor": cmd_doctor, "export": cmd_export, "push": cmd_push, "deploy-space": cmd_deploy_space,
        "push-dataset": cmd_push_dataset,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - known user errors become one line; see _user_error_types
        if isinstance(exc, _user_error_types()):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise


def _user_error_types() -> tuple[type[BaseException], ...]:
    from pokedemo.checkpoint import CheckpointError
    from pokedemo.data import DatasetError
    from pokedemo.distributed import PeerLost
    from pokedemo.export import ExportError
    from pokedemo.images import ImageLoadError
    from pokedemo.models import UnknownBackbone, WeightsUnavailable

    types: list[type[BaseException]] = [
        UserError, CheckpointError, DatasetError, ImageLoadError, UnknownBackbone, WeightsUnavailable, PeerLost,
        ExportError,
    ]
    try:
        from pokedemo.hub import HubError

        types.append(HubError)
    except ImportError:
        pass
    return tuple(types)


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C sets the engine's stop flag (it saves the best checkpoint and says so within one batch);
    a second one interrupts at once."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this batch (Ctrl-C again to abort at once)…", file=sys.stderr, flush=True)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner thread): no handler
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_training(events, progress: "ProgressPrinter", stop: threading.Event) -> Any:
    """Feed events to the printer until the engine's last event, which is returned."""
    final = None
    with stop_on_ctrl_c(stop):
        for event in events:
            progress.handle(event)
            final = event
    progress.close()
    return final


def _exit_for(final: Any) -> int:
    """Cancelled (Ctrl-C) → 130 like an interrupted program; any other unfinished run → 2 with its message."""
    from pokedemo.events import Cancelled
    from pokedemo.hub import one_line

    if isinstance(final, Cancelled):
        return 130
    print(f"error: {one_line(getattr(final, 'message', 'training did not finish'))}", file=sys.stderr)
    return EXIT_USER_ERROR


@contextlib.contextmanager
def parallel_session(config: TrainConfig) -> Iterator[Any]:
    """Under torchrun: join the process group (other ranks print nothing to stdout); else one plain process."""
    from pokedemo import distributed

    env = distributed.from_env()
    if env is None:
        yield distributed.SINGLE
        return
    with distributed.process_group(env, config.device) as parallel:
        distributed.quiet_other_ranks(parallel)
        yield parallel


def cmd_train(args: argparse.Namespace) -> int:
    from pokedemo.events import Finished
    from pokedemo.train import train
    from pokedemo.training_data import run_on

    config = config_from_args(args)
    stop = threading.Event()
    with parallel_session(config) as parallel:
        events = run_on(data_dir_from(args), config,
                        lambda data: train(config, data, args.out, stop=stop, parallel=parallel))
        printer = (ProgressPrinter(config.unset_device_defaults(), bool(config.init_from)) if parallel.is_main
                   else QuietPrinter())
        final = run_training(events, printer, stop)
    if not isinstance(final, Finished):
        return _exit_for(final)
    if not parallel.is_main:
        return 0
    print(json.dumps({
        "checkpoint": final.run_dir, "best_val_acc": round(final.best_val_acc, 5),
        "test_acc": round(final.test_acc, 5), "best_epoch": final.best_epoch, "seconds": final.seconds,
    }))
    return 0


def compare_with_progress(config: TrainConfig, data_dir, out, printer: "ProgressPrinter"):
    """pokedemo's compare with the data's opening and each run's progress on the terminal (Ctrl-C stops after
    the batch); returns the last event (CompareFinished, or what ended the comparison)."""
    from pokedemo.events import Tagged
    from pokedemo.train import compare
    from pokedemo.training_data import run_on

    final, stop = None, threading.Event()
    with stop_on_ctrl_c(stop):
        for event in run_on(data_dir, config, lambda data: compare(config, data, out, stop=stop)):
            final = event
            if isinstance(event, Tagged):
                printer.prefix = f"[{event.run}] "
                printer.handle(event.event)
            else:
                printer.handle(event)  # the data's opening
    printer.close()
    return final


def cmd_compare(args: argparse.Namespace) -> int:
    from pokedemo.distributed import from_env
    from pokedemo.events import CompareFinished, Tagged

    if from_env() is not None:
        raise UserError("compare runs in one process; under torchrun use `train` (once with --scratch)")
    config = config_from_args(args)
    printer = ProgressPrinter(config.unset_device_defaults(), bool(config.init_from))
    final = compare_with_progress(config, data_dir_from(args), args.out, printer)
    if not isinstance(final, CompareFinished):
        return _exit_for(final.event if isinstance(final, Tagged) else final)
    print(format_compare_table(final.table))
    for row in final.table:
        print(f"{row['run']}: {row['run_dir']}")
    return 0


def format_compare_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'run':<11}{'test acc':>10}{'best val':>10}{'seconds':>10}{'epochs to 90% val':>19}"
    lines = [header, "-" * len(header)]
    for row in rows:
        reach = row["epochs_to_90"] if row["epochs_to_90"] is not None else "never"
        lines.append(
            f"{row['run']:<11}{row['test_acc']:>10.1%}{row['best_val_acc']:>10.1%}"
            f"{row['seconds']:>10.1f}{reach!s:>19}"
        )
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pokedemo.metrics import format_confusion
    from pokedemo.predict import Predictor, evaluate_folder, evaluate_split

    predictor = Predictor.load(args.checkpoint)
    report = evaluate_folder(predictor, args.data) if args.data else evaluate_split(predictor)
    if args.report:
        from pokedemo.report import write_report

        write_report(report, args.report, data_root=report.get("root"))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"accuracy {report['accuracy']:.2%} on {report['n']} images (macro F1 {report['macro_f1']:.3f})")
    print(_acceptance_line(report["open_set"]))
    print(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>8}{'n':>6}")
    for name, m in report["per_class"].items():
        print(f"{name:<14}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>8.3f}{m['support']:>6}")
    print(format_confusion(report))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pokedemo.hub import one_line
    from pokedemo.predict import Predictor, image_files, predict_files, write_predictions_csv

    if args.top_k < 1:
        raise UserError("--top-k must be at least 1")
    files = image_files(args.images)
    if not files:
        raise UserError(f"no picture files in {', '.join(args.images)}")
    predictor = Predictor.load(args.checkpoint or default_model())
    results = predict_files(predictor, files, top_k=args.top_k, threshold=args.threshold)
    if predictor.open_set.fitted is None and args.threshold is None:
        print(f"note: {_fallback_note(predictor)}", file=sys.stderr)
    if args.csv:
        write_predictions_csv(results, args.csv)
    if args.cam:
        from pokedemo.gradcam import write_cam_overlays

        write_cam_overlays(predictor, [r.image for r in results if r.error is None], args.cam)
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
    for result in results:
        if result.error is not None:
            print(f"error: {one_line(result.error)}", file=sys.stderr)
        elif not args.json:
            print(_prediction_line(result.image, result.prediction, args.top_k))
    return 1 if any(r.error for r in results) else 0


def _prediction_line(image: str, prediction, top_k: int) -> str:
    """``IMAGE: pikachu 99.1%, ...``, or ``IMAGE: unknown (closest: mewtwo 80.0%, ...)`` for an image that is none
    of the classes."""
    shown = ", ".join(f"{name} {prob:.1%}" for name, prob in prediction.top(top_k))
    return f"{image}: {shown}" if prediction.known else f"{image}: unknown (closest: {shown})"


def _fallback_note(predictor) -> str:
    from pokedemo.openset import DEFAULT_MAX_PROB_THRESHOLD

    return (f"this checkpoint records no open-set threshold (trained before they existed): an image counts as "
            f"unknown when its top probability is below {DEFAULT_MAX_PROB_THRESHOLD:.0%}")


def _acceptance_line(open_set: dict) -> str:
    rule = f"open-set score {open_set['score']}" + ("" if open_set["fitted"] else
                                                      " with the default threshold (none recorded)")
    return (f"known-class images accepted {open_set['accepted']:.2%} ({rule}); accuracy counting images "
            f"rejected as unknown as wrong {open_set['accuracy_when_rejections_count_as_wrong']:.2%}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from pokedemo.doctor import diagnose, format_doctor
    from pokedemo.hub import open_data

    data = data_dir_from(args)
    source = open_data(data)
    report = diagnose(source.root)
    if source.is_hub:
        report["source"] = source.record()
    if args.json:
        print(json.dumps(report))
        return 0
    if source.is_hub:
        print(f"{data} (commit {source.revision}, {source.layout})")
    print(format_doctor(report))
    if source.note:
        print(f"note: {source.note} (the split line above is what pokedemo would do without it)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pokedemo.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, data=args.data, fmt=args.format)
    print("\n".join(result.summary_lines()))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from pokedemo.hub import OnnxExport, push_checkpoint

    with tempfile.TemporaryDirectory(prefix="pokedemo-push-onnx-") as scratch:
        onnx = None
        if args.onnx:
            from pokedemo.export import export_checkpoint

            exported = export_checkpoint(args.checkpoint, Path(scratch) / "onnx")
            print("\n".join(exported.summary_lines()), file=sys.stderr)  # stdout stays the repo URL
            onnx = OnnxExport(exported.record, exported.runtime_files)
        url = push_checkpoint(args.checkpoint, args.repo_id, private=args.private, token=args.token,
                              commit_message=args.commit_message, onnx=onnx)
    print(url)
    return 0


def cmd_deploy_space(args: argparse.Namespace) -> int:
    from pokedemo.hub import deploy_space

    print(deploy_space(args.repo_id, private=args.private, hardware=args.hardware, token=args.token))
    return 0


def cmd_push_dataset(args: argparse.Namespace) -> int:
    from pokedemo.hub import push_dataset

    print(push_dataset(args.data, args.repo_id, private=args.private, token=args.token,
                       commit_message=args.commit_message))
    return 0


class QuietPrinter:
    """Ranks other than 0 of a torchrun run: rank 0 reports progress for all of them."""

    def handle(self, event: Any) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressPrinter:
    """Renders engine events: a tqdm bar on stderr, one line per epoch and messages on stdout.

    ``device_defaults``: the config fields the user left to the device's defaults; the first RunStarted says
    which values that gave and why (the device is known from then on). ``continuing``: the run continues from a
    model, whose default epochs differ."""

    def __init__(self, device_defaults: tuple[str, ...] = (), continuing: bool = False) -> None:
        self.bar = None
        self.prefix = ""
        self.device_defaults = device_defaults
        self.continuing = continuing

    def handle(self, event: Any) -> None:
        from pokedemo import events as ev

        match event:
            case ev.RunStarted():
                self._start(event)
            case ev.Stage(message=message):
                self._write(f"{self.prefix}{message}…")
            case ev.BatchProgress() if self.bar is not None:
                self.bar.update(event.step - self.bar.n)
                self.bar.set_postfix(loss=f"{event.loss:.3f}", img_s=f"{event.images_per_sec:.0f}", refresh=False)
            case ev.EpochEnd():
                self._write(
                    f"{self.prefix}epoch {event.epoch}/{event.epochs}  train loss {event.train_loss:.3f} "
                    f"acc {event.train_acc:.1%}  val loss {event.val_loss:.3f} acc {event.val_acc:.1%}  "
                    f"{event.images_per_sec:.0f} img/s  {event.elapsed:.1f}s"
                )
            case ev.Finished():
                self._write(f"{self.prefix}test accuracy {event.test_acc:.1%} (best epoch {event.best_epoch}, "
                            f"{event.seconds:.1f}s) → {event.run_dir}")
                self.close()
            case ev.Cancelled(message=message):
                self._write(f"{self.prefix}{message}")
                self.close()

    def _start(self, event: Any) -> None:
        from tqdm import tqdm

        self.close()
        sizes = event.split_sizes
        self._write(
            f"{self.prefix}{len(event.classes)} classes, {sum(event.class_counts.values())} images "
            f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']}), device {event.device}"
        )
        if self.device_defaults:
            self._write(defaults_note(event.device, self.device_defaults, self.continuing))
            self.device_defaults = ()  # once: a comparison's second run uses the same values
        if event.unreadable:
            shown = ", ".join(path for path, _ in event.unreadable[:5])
            self._write(f"{self.prefix}skipped {len(event.unreadable)} unreadable file(s): {shown}")
        if event.conflict_groups:
            self._write(f"{self.prefix}note: {event.conflict_groups} duplicate group(s) carry more than one label")
        self.bar = tqdm(total=event.total_steps, desc=f"{self.prefix}training", unit="step", file=sys.stderr,
                        dynamic_ncols=True, leave=False)

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
