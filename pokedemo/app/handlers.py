"""The app's event handlers (``DemoApp``), job control (``JobRegistry``) and the streaming of engine events.

Concurrency: one training or comparison at a time for the whole server (``concurrency_id="train"``, limit 1;
later requests wait in the queue and see their position). Predictions have their own concurrency group, so
they stay fast while a job trains. Stop is a ``threading.Event`` per browser session that the engine checks
every batch; the engine then saves the best checkpoint so far and reports ``Cancelled``.

Handlers return what the components show; the words come from ``text.py``, the plot data and pictures from
``views.py``, engine access from ``sources.py``. torch-backed modules are imported by the handlers that need them.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from gradio.utils import get_upload_folder

from pokedemo.app import sources, text, views
from pokedemo.app.public import PublicPolicy, PublicRefusal, time_limit
from pokedemo.app.text import (
    CHECKPOINT_TABLE_COLUMNS, COMPARE_COLUMNS, NO_CHECKPOINT, NO_DATASET, PER_CLASS_COLUMNS, empty_frame,
    friendly_error, progress_html,
)
from pokedemo.app.views import CompareView, RunView
from pokedemo.events import BatchProgress, Cancelled, CompareFinished, Event, Failed, Finished, Tagged
from pokedemo.gradcam import grad_cam
from pokedemo.options import config_from_values
from pokedemo.training_data import run_on
from pokedemo.uploads import UploadError, ZipLimits, extract_dataset_zip, new_upload_dir

INFO_SECONDS = 6                    # how long an info toast stays
UI_INTERVAL_S = 0.5                 # at most this often a batch-progress update is streamed to the browser


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


class DemoApp:
    """Event handlers; one instance per ``build_demo`` (its checkpoint root, default dataset, jobs and the
    public-mode policy every visitor's folder, picture, run and Hub action goes through)."""

    def __init__(self, checkpoint_root: str | os.PathLike, data_dir: str,
                 default_model: sources.DefaultModel | None = None, policy: PublicPolicy | None = None,
                 workspace_root: str | os.PathLike = "datasets"):
        self.checkpoint_root = str(checkpoint_root)
        self.policy = policy or PublicPolicy.create(False, data_dir)
        self.data_dir = self.policy.shown_data_dir(data_dir)  # the dataset box's first value
        self.workspace_root = str(workspace_root)  # working copies of read-only datasets are made here (locally)
        self.default_model = default_model  # the starter (or $POKEDEMO_MODEL): listed until newer runs exist
        self.jobs = JobRegistry()
        self.finished_runs: dict[str, str] = {}  # session → run dir of its last finished training (auto-push)
        self.example_folders: list[str] = []  # where the Predict tab's example pictures are (set by the layout)

    def choices(self, loaded: list[tuple[str, str]] | None = None, session: str | None = None) -> list[tuple[str, str]]:
        """The pickers' entries: this app's runs (and the default model), in public mode this visitor's own runs,
        then the Hub models ``loaded`` in this browser session (a ``gr.State``: one user's Hub models never
        appear in another user's picker)."""
        own = (sources.checkpoint_choices(self.policy.runs_root(session, self.checkpoint_root))
               if self.policy.public and session else [])
        return own + sources.checkpoint_choices(self.checkpoint_root, self.default_model) + list(loaded or [])

    def capped(self, config: Any) -> Any:
        """``config`` (a TrainConfig) with epochs and image size lowered to the public-mode caps."""
        if not self.policy.public:
            return config
        limits = self.policy.limits
        return replace(config, epochs=min(config.epochs, limits.max_epochs),
                       img_size=min(config.img_size, limits.max_img_size))

    def training_defaults(self) -> tuple[int, int, str]:
        """(epochs, image size, explanation) for this device (``sources.training_defaults``), within the caps."""
        epochs, size, note = sources.training_defaults()
        if self.policy.public:
            epochs, size = min(epochs, self.policy.limits.max_epochs), min(size, self.policy.limits.max_img_size)
        return epochs, size, note

    def epochs_for_start(self, continuing: bool) -> tuple[int, str]:
        """(epochs, the defaults line) a run offers when it starts from ImageNet (False) or continues from a model
        (True)."""
        epochs, _, note = sources.training_defaults(continuing)
        return (min(epochs, self.policy.limits.max_epochs) if self.policy.public else epochs), note

    def gate(self, folder: str | None, request: gr.Request | None) -> str:
        """THE gate of every folder a visitor gives (public mode: the shared data, their uploads and Hub downloads,
        Hub datasets); PublicRefusal otherwise."""
        return self.policy.data_spec(folder, session_of(request))

    def downloads(self, request: gr.Request | None, token: str | None = None) -> dict[str, Any]:
        """How this visitor's Hub downloads are made (public mode: their token only, into their own folder, within
        their disk share); the keyword arguments of ``open_data`` and ``fetch_hub_model``."""
        return self.policy.download_options(token, session_of(request))

    def recorded_compare(self) -> dict[str, Any] | None:
        """What the Compare tab shows before anyone runs it: the comparison recorded beside the starter."""
        record = sources.recorded_comparison()
        if record is None:
            return None
        accuracy, loss = map(views.plot_value, views.recorded_compare_frames(record))
        epochs = int(record.get("epochs") or 0) or None
        return {"compare_progress": progress_html(1.0, text.COMPARE_RECORDED), "compare_acc_plot": accuracy,
                "compare_loss_plot": loss, "compare_summary": text.recorded_compare_markdown(record),
                "compare_table": text.compare_table(record["results"], epochs),
                "compare_confusions": text.compare_confusions(record["results"])}

    # ---- dataset

    def scan(self, folder: str, seed: float, img_size: float, request: gr.Request = None) -> str:
        try:
            folder = self.gate(folder, request)
        except PublicRefusal as refusal:
            return f"⚠️ {refusal}"
        summary = sources.summarise_dataset(folder, seed, img_size, self.downloads(request))
        return self.policy.words(summary, session_of(request))

    def upload_zip(self, zip_path: str | None, seed: float, img_size: float, request: gr.Request = None):
        """Extract an uploaded zip safely (public mode: into the visitor's own folder, within their disk share);
        returns (dataset box value, summary)."""
        if not zip_path:
            return gr.skip(), gr.skip()
        session = session_of(request)
        try:
            budget = self.policy.upload_budget(session)
            limits = ZipLimits(max_total_bytes=min(budget, ZipLimits.max_total_bytes)) if budget else ZipLimits()
            root = extract_dataset_zip(zip_path, new_upload_dir(self.policy.upload_dir(session)), limits)
        except (UploadError, PublicRefusal) as exc:
            gr.Warning(f"That zip cannot be used: {exc}")
            return gr.skip(), f"⚠️ That zip cannot be used: {exc}"
        shown = self.policy.shown_upload(root, session)
        return shown, self.scan(shown, seed, img_size, request)

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

    def train(self, data_dir: str, loaded: list | None = None, request: gr.Request = None, **options: Any):
        """Stream one training run: progress, curves and log; results and the new checkpoint at the end.

        ``options``: TrainConfig field name → widget value (``layout.option_widgets``), plus ``continue_from``
        (the "continue from the selected model" box) and ``model`` (the Predict tab's model picker)."""
        from pokedemo.train import train

        if options.pop("continue_from", False):
            options["init_from"] = options.get("model") or ""
        options.pop("model", None)
        view = RunView()
        yield from self._stream(view, request, lambda: self._train_outputs(view, loaded=loaded, request=request),
                                data_dir, train, options)
        if isinstance(view.final, Finished):
            self.finished_runs[session_of(request)] = view.final.run_dir
        _notify(view.final)
        yield self._train_outputs(view, done=True, loaded=loaded, request=request)

    def compare(self, data_dir: str, loaded: list | None = None, request: gr.Request = None, **options: Any):
        """Stream a pretrained-vs-scratch comparison; the table and both confusion matrices at the end."""
        from pokedemo.train import compare

        view = CompareView()
        for name in ("continue_from", "model"):  # a comparison starts both runs afresh
            options.pop(name, None)
        epochs = int(float(options.get("epochs") or 0))
        # A comparison trains both: the options describe its pretrained run whatever the checkbox says.
        yield from self._stream(view, request,
                                lambda: self._compare_outputs(view, epochs, loaded=loaded, request=request),
                                data_dir, compare, {**options, "pretrained": True})
        message = view.message()
        if message:
            gr.Warning(message)
        yield self._compare_outputs(view, epochs, done=True, loaded=loaded, request=request)

    def _stream(self, view: RunView | CompareView, request, outputs, data_dir, engine,
                options: dict[str, Any]) -> Iterator[tuple]:
        """Run the engine as this session's one job, yielding ``outputs()`` as its events update ``view``; in public
        mode the job is stopped at the time limit (the engine keeps its best epoch)."""
        session = session_of(request)
        with self.jobs.running_job(session) as stop, time_limit(stop, self.policy.run_seconds) as expired:
            events = self._start(data_dir, stop, engine, options, request)
            reason = text.public_time_limit(self.policy.limits)
            words = lambda message: self.policy.words(message, session)  # noqa: E731
            for _ in _drive(_for_visitor(events, expired, reason, words), view, stop):
                yield outputs()

    def _start(self, data_dir, stop, engine, options: dict[str, Any], request: gr.Request | None) -> Iterator[Event]:
        """The engine's event stream, or a single Failed/Cancelled event when it cannot start."""
        session = session_of(request)
        try:
            folder = self.policy.data_spec(data_dir, session)
        except PublicRefusal as refusal:
            return iter([Failed(message=str(refusal))])
        if not folder:
            return iter([Failed(message=NO_DATASET)])
        if stop.is_set():
            return iter([Cancelled(run_dir=None, epoch=0, seconds=0.0, message="Stopped before training began.")])
        try:
            config = config_from_values(options)
            self.policy.check_training(config.epochs, config.img_size, session)
        except (TypeError, ValueError) as exc:  # PublicRefusal is a ValueError: its words as they are
            return iter([Failed(message=str(exc) if isinstance(exc, PublicRefusal)
                                else f"invalid training option: {exc}")])
        if config.init_from is not None:
            try:
                config = dataclasses.replace(config, init_from=str(self._model_path(config.init_from, request)))
            except Exception as exc:  # noqa: BLE001 - not one of this app's models, Hub download failed, ...
                return iter([Failed(message=f"cannot continue from the selected model: {friendly_error(exc)}")])
        runs = str(self.policy.runs_root(session, self.checkpoint_root))
        return run_on(folder, config, lambda data: engine(config, data, runs, stop=stop), self.downloads(request))

    def _train_outputs(self, view: RunView, done: bool = False, loaded: list | None = None,
                       request: gr.Request = None) -> tuple:
        loss, accuracy = map(views.plot_value, views.curve_frames(view.points))
        report = view.final.test_metrics if done and isinstance(view.final, Finished) else None
        return (
            progress_html(view.fraction, view.status), loss, accuracy, "\n".join(view.log),
            text.results_markdown(view.final) if done else "",
            text.per_class_frame(report) if report else empty_frame(PER_CLASS_COLUMNS),
            views.confusion_picture(report),
            *(self._errors_of(report) if report else ("", [], None)),
            *(self._select_checkpoints(loaded, request, view.run_dir) if done else (gr.skip(),) * 3),
        )

    def _errors_of(self, report: dict[str, Any]) -> tuple[str, list, dict | None]:
        """(caption, gallery, the gallery's fix-panel state) of the test images a finished run gets wrong (from
        its own test report)."""
        try:
            return (text.errors_caption(report), *views.errors_items(report))
        except Exception as exc:  # noqa: BLE001 - the run itself succeeded; say why the gallery is missing
            return f"⚠️ Could not list the mistakes: {friendly_error(exc)}", [], None

    def _compare_outputs(self, view: CompareView, epochs: int, done: bool = False,
                         loaded: list | None = None, request: gr.Request = None) -> tuple:
        accuracy, loss = map(views.plot_value, views.compare_frames(view.points))
        results = view.final.results if done and isinstance(view.final, CompareFinished) else None
        runs = [view.runs[r].run_dir for r in views.RUN_LABELS]
        problem = view.message() if done else None
        summary = text.compare_takeaway(results, epochs) if results else (f"⚠️ {problem}" if problem else "")
        return (
            progress_html(view.fraction, view.status), accuracy, loss, "\n".join(view.log), summary,
            text.compare_table(results, epochs) if results else empty_frame(COMPARE_COLUMNS),
            text.compare_confusions(results) if results else "",
            *(self._select_checkpoints(loaded, request, *runs) if done else (gr.skip(),) * 3),
        )

    def _select_checkpoints(self, loaded: list | None, request: gr.Request | None, first: str | None,
                            second: str | None = None) -> tuple:
        """Dropdown updates after a run: the new run selected in Predict (and in Compare A/B)."""
        choices = self.choices(loaded, session_of(request))
        known = {value for _, value in choices}

        def dropdown(run: str | None) -> gr.Dropdown:
            return gr.Dropdown(choices=choices, value=run) if run in known else gr.Dropdown(choices=choices)

        return dropdown(first), dropdown(first if second else None), dropdown(second)

    # ---- checkpoints and prediction

    def refresh(self, loaded: list | None, checkpoint: str | None, ckpt_a: str | None, ckpt_b: str | None,
                request: gr.Request = None) -> tuple:
        """Re-list checkpoints (and this session's Hub models) for each dropdown, keeping its selection when it
        still exists."""
        choices = self.choices(loaded, session_of(request))
        known = [value for _, value in choices]
        return tuple(gr.Dropdown(choices=choices, value=value if value in known else (known[0] if known else None))
                     for value in (checkpoint, ckpt_a, ckpt_b))

    def image(self, value: dict | str | None) -> str | bytes | None:
        """The picture in gr.Image's raw value; in public mode a path only inside Gradio's upload folder or the
        examples' folder (a visitor may send any path in the payload), PublicRefusal otherwise."""
        source = image_source(value)
        if isinstance(source, bytes) or not source:
            return source
        return self.policy.image_path(source, [get_upload_folder(), *self.example_folders])

    def predict(self, image: dict | str | None, checkpoint: str | None, threshold: float | None = None,
                request: gr.Request = None):
        """(top-5 label, caption, prediction JSON) from one forward pass; a friendly caption instead of any error.

        The caption says whether the picture is one of the model's classes ("not one of the N classes" with the
        closest one otherwise); the JSON (``Prediction.to_dict``: ``label`` null for an unknown picture,
        ``closest``, the open-set score and threshold, every class's probability) feeds the Grad-CAM caption and
        the API. ``threshold`` None or the model's own: the checkpoint's thresholds. ``image`` is gr.Image's raw
        value (the event does not preprocess, see ``layout._wire_checkpoints``).
        """
        if not checkpoint:
            return None, NO_CHECKPOINT, None
        if not image:
            return None, text.NO_IMAGE, None
        try:
            source = self.image(image)
            predictor = self._predictor(checkpoint, request)
            prediction = predictor.classify(source, sources.chosen_threshold(threshold, predictor))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never an error page
            message = friendly_error(exc)
            gr.Warning(message)
            return None, f"⚠️ {message}", None
        every = len(predictor.classes)
        return (dict(prediction.top(every)), text.prediction_caption(prediction, predictor),
                prediction.to_dict(top_k=every))

    def threshold_control(self, checkpoint: str | None, request: gr.Request = None):
        """The "how sure must it be" slider for the picked model: its score's range, its default threshold."""
        try:
            predictor = self._predictor(checkpoint, request) if checkpoint else None
        except Exception:  # noqa: BLE001 - the prediction that follows says what is wrong with the model
            predictor = None
        if predictor is None:
            return gr.skip()
        control = sources.model_threshold_control(predictor)
        return gr.Slider(minimum=control.low, maximum=control.high, value=control.default, info=control.info)

    def _predictor(self, checkpoint: str, request: gr.Request | None):
        """The cached Predictor of the model a visitor picked (``_model_path``)."""
        from pokedemo.predict import get_predictor  # the engine loads on first use, as in sources

        return get_predictor(self._model_path(checkpoint, request))

    def _model_path(self, checkpoint: str, request: gr.Request | None) -> Path:
        """The folder of the model a visitor picked: this app's runs, its default model, Hub models; in public mode
        not the shared Hub cache but the visitor's own runs and Hub downloads (named through the policy's gate), a
        Hub model fetched with the visitor's token only into their own folder."""
        if not self.policy.public:
            return sources.app_model(checkpoint, self.checkpoint_root, self.default_model)
        own = self.policy.own_model_folders(session_of(request))
        folders = sources.model_folders(self.checkpoint_root, self.default_model, own)
        checkpoint, from_hub = self.policy.model_reference(checkpoint, folders, self.checkpoint_root)
        if from_hub:  # never resolved against the server's folders, never with the server's token
            checkpoint = str(sources.fetch_hub_model(checkpoint, **self.downloads(request)))
        return sources.app_model(checkpoint, self.checkpoint_root, self.default_model, own)

    def _own_run(self, checkpoint: str, request: gr.Request | None) -> Path:
        """A run of this app's checkpoint folder or, in public mode, of this visitor's own runs."""
        if self.policy.public:
            own = self.policy.runs_root(session_of(request), self.checkpoint_root)
            checkpoint, _ = self.policy.model_reference(checkpoint, [self.checkpoint_root, own], self.checkpoint_root)
            return sources.run_of_this_app(checkpoint, self.checkpoint_root, own)
        return sources.run_of_this_app(checkpoint, self.checkpoint_root)

    def predict_batch(self, files: list[str] | None, checkpoint: str | None, request: gr.Request = None):
        """(caption, table, CSV file) for many uploaded pictures (or zips of pictures); a bad file is a row with
        its one-line error, never the end of the batch."""
        from pokedemo.predict import write_predictions_csv

        if not checkpoint:
            return NO_CHECKPOINT, empty_frame(text.BATCH_COLUMNS), None
        if not files:
            return text.BATCH_EMPTY, empty_frame(text.BATCH_COLUMNS), None
        try:
            uploads = [self.image(f) for f in files]  # public mode: only files this visitor uploaded
            results = sources.predict_uploads(self._predictor(checkpoint, request), uploads)
        except Exception as exc:  # noqa: BLE001 - e.g. the model cannot be loaded: a message
            return f"⚠️ {friendly_error(exc)}", empty_frame(text.BATCH_COLUMNS), None
        csv_path = Path(tempfile.mkdtemp(prefix="pokedemo-predictions-")) / "predictions.csv"
        write_predictions_csv(results, csv_path)
        return text.batch_caption(results), text.batch_frame(results), str(csv_path)

    def compare_checkpoints(self, first: str | None, second: str | None, folder: str | None,
                            request: gr.Request = None):
        """Evaluate two saved checkpoints on the test images both held out; (caption, table, confusions)."""
        if not first or not second:
            return "Pick two checkpoints above.", empty_frame(CHECKPOINT_TABLE_COLUMNS), ""
        try:
            return self._compare_checkpoints(first, second, self.gate(folder, request), request)
        except Exception as exc:  # noqa: BLE001 - shown as a message (missing data, other classes, ...)
            message = self.policy.words(friendly_error(exc), session_of(request))
            return f"⚠️ {message}", empty_frame(CHECKPOINT_TABLE_COLUMNS), ""

    def _compare_checkpoints(self, first: str, second: str, folder: str, request: gr.Request | None):
        predictors = [self._predictor(first, request), self._predictor(second, request)]
        if predictors[0].classes != predictors[1].classes:
            raise ValueError("these checkpoints were trained on different classes, so their test sets differ")
        reports = [self._test_report(p, folder, request) for p in predictors]
        held_out = [{it["path"] for it in r["items"]} for r in reports]
        common = held_out[0] & held_out[1]
        if not common:
            raise ValueError("these checkpoints share no held-out test images (different data or split)")
        restricted = [views.report_on_items(r["items"], p.classes, common) for r, p in zip(reports, predictors)]
        names = [Path(p.checkpoint.path).name for p in predictors]
        return (text.checkpoints_caption(len(common), held_out[0] == held_out[1]),
                text.checkpoints_table(names, restricted), text.checkpoints_confusions(names, restricted))

    # ---- seeing inside: doctor, mistakes, Grad-CAM

    def _test_report(self, predictor: Any, folder: str, request: gr.Request | None) -> dict[str, Any]:
        """A model on its test images; in public mode the folder its config records passes the gate too."""
        gate = (lambda root: self.gate(root, request)) if self.policy.public else None
        return sources.test_report(predictor, folder, gate, self.downloads(request))

    def doctor(self, folder: str | None, request: gr.Request = None):
        """(report, conflict strips, accordion, the strips' fix-panel state) of the Train tab's dataset doctor."""
        try:
            report, strips, fixable = sources.doctor_panel(self.gate(folder, request), self.downloads(request))
        except PublicRefusal as refusal:
            report, strips, fixable = f"⚠️ {refusal}", [], None
        report = self.policy.words(report, session_of(request))
        return (report, gr.Gallery(value=strips, visible=bool(strips)),
                gr.Accordion(label=text.doctor_title(report)), fixable)

    def class_choices(self, folder: str | None, current: str | None, request: gr.Request = None):
        """The add panel's class picker, read from the dataset when it is opened (keeps a typed new name)."""
        try:
            folder = self.gate(folder, request)
        except PublicRefusal:
            folder = None
        return gr.Dropdown(choices=sources.dataset_classes(folder, self.downloads(request)), value=current)

    # ---- fixing the dataset: move, set aside, add, undo

    def pick_picture(self, fixable: dict | None, evt: gr.SelectData):
        """A click on a gallery tile: its pictures in the fix panel's picture picker, the dataset's classes (the
        tile's suggested class selected) in its class picker."""
        tiles = (fixable or {}).get("tiles") or []
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(tiles):
            return gr.skip(), gr.skip(), text.FIX_HINT
        tile = tiles[index]
        classes = sources.class_names(fixable["root"])
        suggest = tile["suggest"] if tile["suggest"] in classes else None
        return (gr.Dropdown(choices=tile["paths"], value=tile["paths"][0]), gr.Dropdown(choices=classes, value=suggest),
                text.FIX_HINT)

    def move_picture(self, fixable: dict | None, picture: str | None, to_class: str | None, folder: str | None,
                     request: gr.Request = None):
        """Move the picked picture to ``to_class``; (message, dataset folder: the working copy when one is used)."""
        if not picture:
            return text.NO_PICTURE, gr.skip()
        if not to_class:
            return text.NO_TARGET_CLASS, gr.skip()
        return self._edit(self._fix_root(fixable, folder), request, "move", picture, to_class)

    def set_aside_picture(self, fixable: dict | None, picture: str | None, folder: str | None,
                          request: gr.Request = None):
        """Set the picked picture aside; (message, dataset folder)."""
        if not picture:
            return text.NO_PICTURE, gr.skip()
        return self._edit(self._fix_root(fixable, folder), request, "set_aside", picture)

    def add_pictures(self, class_name: str | None, files: list[str] | None, webcam: str | None, folder: str | None,
                     request: gr.Request = None):
        """Copy uploaded pictures (and a webcam capture) into a class of the dataset, made if new; (message,
        dataset folder, cleared uploads, cleared webcam)."""
        pictures = list(files or []) + ([webcam] if webcam else [])
        if not pictures:
            return text.ADD_NOTHING, gr.skip(), gr.skip(), gr.skip()
        try:
            pictures = [self.image(p) for p in pictures]  # public mode: only files this visitor uploaded
        except PublicRefusal as refusal:
            return f"⚠️ {refusal}", gr.skip(), gr.skip(), gr.skip()
        message, edited = self._edit(folder or "", request, "add_pictures", class_name or "", pictures)
        clear = None if isinstance(edited, str) else gr.skip()  # a refused addition keeps the uploads
        return message, edited, clear, clear

    def undo(self, folder: str | None, request: gr.Request = None):
        """Undo the newest change of the dataset in the dataset box (or its working copy); (message, folder)."""
        words = lambda value: self.policy.words(value, session_of(request))  # noqa: E731
        try:
            message, root = sources.undo_last_change(self.gate(folder, request), self._workspace(request),
                                                     self.downloads(request))
        except Exception as exc:  # noqa: BLE001 - changed outside pokedemo, Hub unreachable, ...: a message
            return f"⚠️ {words(friendly_error(exc))}", gr.skip()
        return words(message), words(root) if root is not None else gr.skip()

    def _fix_root(self, fixable: dict | None, folder: str | None) -> str:
        """The dataset a gallery's pictures belong to (the one its report was made on), else the dataset box's."""
        return (fixable or {}).get("root") or (folder or "")

    def _workspace(self, request: gr.Request | None) -> str:
        """Where working copies of read-only datasets go: in public mode inside the visitor's own uploads."""
        if self.policy.public:
            return str(self.policy.sessions.uploads(session_of(request)) / "datasets")
        return self.workspace_root

    def _edit(self, folder: str, request: gr.Request | None, action: str, *args: Any):
        """One change of the dataset ``folder`` (through the gate; a read-only one, such as a Hub download, through
        its working copy); (message, the folder edited) or a message."""
        words = lambda message: self.policy.words(message, session_of(request))  # noqa: E731
        try:
            message, edited = sources.edit_dataset(self.gate(folder, request), self._workspace(request), action,
                                                   *args, hub=self.downloads(request))
        except Exception as exc:  # noqa: BLE001 - a refused change (CurationError), PublicRefusal, ...: a message
            return f"⚠️ {words(friendly_error(exc))}", gr.skip()
        return words(message), words(edited)  # public mode: the dataset box shows uploads/..., not a server path

    def inspect(self, checkpoint: str | None, folder: str | None, request: gr.Request = None):
        """(caption, confusion picture, per-class table, errors gallery, its fix-panel state) of a model on its
        test images."""
        empty = (None, empty_frame(PER_CLASS_COLUMNS), [], None)
        if not checkpoint:
            return (NO_CHECKPOINT, *empty)
        try:
            folder = self.gate(folder, request)
            predictor = self._predictor(checkpoint, request)
            report = self._test_report(predictor, folder, request)
        except Exception as exc:  # noqa: BLE001 - missing data folder, other classes, ...: a message
            return (f"⚠️ {self.policy.words(friendly_error(exc), session_of(request))}", *empty)
        return (text.errors_caption(report), views.confusion_picture(report), text.per_class_frame(report),
                *views.errors_items(report))

    def explain(self, image: dict | str | None, checkpoint: str | None, target: str | None,
                prediction: dict | None = None, request: gr.Request = None):
        """(Grad-CAM overlay, caption, class picker) for the Predict tab; runs after the top-5 label, whose
        ``prediction`` (its JSON) gives the class explained by default (the closest) and the caption's numbers."""
        if not checkpoint or not image:
            return None, "", gr.skip()
        try:
            source = self.image(image)
            predictor = self._predictor(checkpoint, request)
            wanted = sources.cam_target_value(target, predictor.classes) or (prediction or {}).get("closest")
            result = grad_cam(predictor, source, wanted)
        except Exception as exc:  # noqa: BLE001 - the label's caption already explains unusable images
            return None, f"⚠️ No heatmap: {friendly_error(exc)}", gr.skip()
        choices = sources.cam_choices(predictor.classes)
        picker = gr.Dropdown(choices=choices, value=target if target in choices else text.TOP_CLASS)
        return result.overlay, text.cam_caption(result, prediction), picker

    # ---- taking the model out

    def download(self, checkpoint: str | None, request: gr.Request = None):
        """(files, message): the selected model as model.onnx and its run folder as a zip."""
        if not checkpoint:
            return None, text.DOWNLOAD_NO_CHECKPOINT
        try:
            # The same models the Predict tab may load (in public mode: through the same gate).
            run_dir = self._predictor(checkpoint, request).checkpoint.path
            files, record = sources.model_download(run_dir)
        except Exception as exc:  # noqa: BLE001 - a failed export or missing test pictures: a message
            return None, self.policy.words(text.download_failed(exc), session_of(request))
        return files, text.download_ready(record)

    # ---- the Hugging Face Hub

    def load_from_hub(self, spec: str | None, loaded: list | None = None, token: str | None = None,
                      request: gr.Request = None):
        """Download a model by repo id and select it in the Predict picker; (message, picker, this session's
        Hub models: the ``gr.State`` the pickers list after the local runs). The panel's token, else locally
        the server's login; in public mode no token at all, and the model goes to the visitor's own folder."""
        if not (spec or "").strip():
            return text.LOAD_NO_REPO, gr.skip(), gr.skip()
        try:
            path = sources.fetch_hub_model(spec, **self.downloads(request, token))
        except sources.HubLoadError as err:
            return f"❌ {err}", gr.skip(), gr.skip()
        choice = sources.hub_choice(spec, path)
        loaded = [c for c in (loaded or []) if c[1] != choice[1]] + [choice]
        choices = self.choices(loaded, session_of(request))
        return text.hub_loaded(spec), gr.Dropdown(choices=choices, value=choice[1]), loaded

    def push(self, checkpoint: str | None, repo_id: str | None, private: bool, token: str | None,
             request: gr.Request = None):
        """Push the selected local run to a Hub repo; a Markdown line with the link or the problem. In public
        mode only with the visitor's own token."""
        refusal = self.policy.push_refusal(token)
        if refusal:
            return refusal
        if checkpoint:
            try:
                checkpoint = str(self._own_run(checkpoint, request))
            except Exception as exc:  # noqa: BLE001 - e.g. a model that came from the Hub itself
                return f"❌ Only runs trained here can be pushed: {friendly_error(exc)}"
        if not checkpoint:
            return text.PUSH_NO_CHECKPOINT
        if not (repo_id or "").strip():
            return text.PUSH_NO_REPO
        return sources.push_run(checkpoint, repo_id, private, self.policy.hub_token(token))

    def auto_push(self, repo_id: str | None, private: bool, token: str | None, enabled: bool,
                  request: gr.Request = None):
        """After a training from this tab finishes: push its run when the Hub panel's auto-push box is ticked."""
        run = self.finished_runs.pop(session_of(request), None)
        if not enabled or run is None:
            return gr.skip()
        if not (repo_id or "").strip():
            return text.AUTO_PUSH_NO_REPO
        return self.push(run, repo_id, private, token, request)

    def on_load(self, folder: str, seed: float, img_size: float, checkpoint: str | None, ckpt_a: str | None,
                ckpt_b: str | None, request: gr.Request = None) -> tuple:
        """Each page visit: describe the prefilled dataset and list checkpoints made since the app started."""
        summary = self.scan(folder, seed, img_size, request) if (folder or "").strip() else NO_DATASET
        # A new page is a new session: no Hub models yet.
        return (summary, *self.refresh(None, checkpoint, ckpt_a, ckpt_b, request))


def backbone_dropdown(current: str | None) -> gr.Dropdown:
    """The backbone picker with fresh weight statuses; keeps the user's choice (a listed one or a typed-in Hub
    model), else picks a usable default."""
    from pokedemo.models import is_hub_backbone

    choices = sources.backbone_choices()
    kept = current in [name for _, name in choices] or is_hub_backbone(current)
    return gr.Dropdown(choices=choices, value=current if kept else sources.default_backbone(choices),
                       allow_custom_value=True)


def image_source(value: dict | str | None) -> str | bytes | None:
    """The file path (or, for a data: URL, the bytes) inside gr.Image's raw value. Gradio checks a path sent
    as an uploaded file (``meta``: FileData); a bare path in the payload is not checked (``DemoApp.image``)."""
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


def _for_visitor(events: Iterator[Event], expired: threading.Event, reason: str,
                 words: Callable[[str], str]) -> Iterator[Event]:
    """The engine's events with the messages of Failed and Cancelled ones (also inside Tagged) in the visitor's
    ``words``; a Cancelled one says ``reason`` first when ``expired`` is set (the time limit stopped the run,
    not the visitor)."""
    for event in events:
        inner = event.event if isinstance(event, Tagged) else event
        if isinstance(inner, (Failed, Cancelled)):
            message = words(inner.message)
            if isinstance(inner, Cancelled) and expired.is_set():
                message = f"{reason} {message}"
            worded = replace(inner, message=message)
            event = replace(event, event=worded) if isinstance(event, Tagged) else worded
        yield event


def _info(message: str) -> None:
    gr.Info(message, duration=INFO_SECONDS)


def _notify(final: Event | None) -> None:
    match final:
        case Failed(message=message):
            gr.Warning(message)
        case Cancelled(message=message):
            _info(message)
        case Finished():
            _info(text.finished_toast(final))
