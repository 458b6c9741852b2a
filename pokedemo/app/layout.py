"""The app's layout: tabs, panels, their wiring to the handlers, ``build_demo`` and the launch options.

Nothing heavy happens at import or build time: no model is loaded and only checkpoints are listed; the one
download is a Hub model named by ``$POKEDEMO_MODEL`` (the model a Space serves instead of the starter). The
handlers live in ``handlers.py``; every text in ``text.py``; plot data in ``views.py``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from pokedemo.app import text
from pokedemo.app.handlers import DemoApp, backbone_dropdown
from pokedemo.app.public import PublicPolicy, public_mode
from pokedemo.app.sources import (
    load_default_model, prefilled_data_dir, recorded_threshold_control, test_split_examples, warm_up,
)
from pokedemo.app.text import (
    BACKBONE_INFO, CHECKPOINT_TABLE_COLUMNS, COMPARE_NOT_STARTED, DOCTOR_EMPTY, DOCTOR_TITLE, DOWNLOAD_BUTTON,
    DOWNLOAD_FILES_LABEL, DOWNLOAD_INTRO, DOWNLOAD_TITLE, EXAMPLES_LABEL, INTRO, MODEL_PICKER_INFO, NO_CHECKPOINT,
    NO_DATASET, PER_CLASS_COLUMNS, PUBLIC_DATA_LABEL, PUBLIC_TOKEN_INFO, TOP_CLASS, compare_table, defaults_text,
    empty_frame, progress_html, public_banner,
)
from pokedemo.app.views import LOG_LINES
from pokedemo.config import TrainConfig, default_checkpoint_root, default_workspace_root
from pokedemo.options import app_option_names

QUEUE_MAX_SIZE = 32                 # waiting requests of all kinds; more are refused with "queue full"
PREDICT_CONCURRENCY = 4             # predictions answered in parallel (each holds the Predictor lock briefly)
MAX_UPLOAD = "300mb"                # images and dataset zips

LOSS_COLOURS = {"train (each batch)": "#fdba74", "train (epoch)": "#ea580c", "validation": "#2563eb"}
ACCURACY_COLOURS = LOSS_COLOURS  # the same three series: each batch, each epoch's training mean, validation
RUN_COLOURS = {"pretrained": "#ea580c", "scratch": "#6b7280"}
# Conflict strips are wide and short: without this the gallery gives each one a square cell of white space.
CSS = (".pd-confusion table th { font-weight: 600; }\n"
       "#doctor-conflicts .thumbnail-item { aspect-ratio: 3 / 1.2 !important; height: auto !important; }")


def _plot(title: str, y_title: str, colours: dict[str, str], y_lim: list[float] | None = None,
          value: Any = None) -> gr.LinePlot:
    # Starts as None (or real points): a plot whose first value is an empty DataFrame never draws its later data
    # (Gradio 6.31).
    return gr.LinePlot(value, x="epoch", y="value", color="series", title=title, x_title="epoch",
                       y_title=y_title, color_title="", color_map=colours, y_lim=y_lim)


def _dataset_panel(app: DemoApp, ui: dict[str, Any]) -> None:
    gr.Markdown("### 1 · Dataset")
    label = (PUBLIC_DATA_LABEL if app.policy.public
             else "Dataset folder on this machine (one sub-folder per class), or hf://datasets/NAMESPACE/NAME")
    ui["data_dir"] = gr.Textbox(label=label, value=app.data_dir, placeholder="data/pokemon", elem_id="data-dir")
    ui["scan"] = gr.Button("Scan folder", size="sm")
    ui["zip"] = gr.File(label="… or upload a .zip of class folders", file_types=[".zip"], type="filepath")
    ui["summary"] = gr.Markdown(NO_DATASET if not app.data_dir else "Scanning the dataset…",
                                elem_id="dataset-summary")
    with gr.Accordion(DOCTOR_TITLE, open=False, elem_id="doctor") as ui["doctor_box"]:
        ui["doctor"] = gr.Markdown(DOCTOR_EMPTY, elem_id="doctor-report")
        ui["conflicts"] = gr.Gallery(label="Label conflicts: one picture filed under two classes (folder under "
                                           "each copy)", columns=1, height="auto", object_fit="contain",
                                     visible=False, elem_id="doctor-conflicts")
        _fix_panel(ui, "doctor")
    _add_panel(ui)


def _fix_panel(ui: dict[str, Any], prefix: str) -> None:
    """Under a gallery of pictures: pick one (by clicking it), move it to another class or set it aside, undo.
    ``{prefix}_fixable`` (a gr.State: per session) holds the gallery's dataset folder and each tile's pictures."""
    ui[f"{prefix}_fixable"] = gr.State(None)
    with gr.Row(equal_height=True):
        ui[f"{prefix}_picture"] = gr.Dropdown([], label=text.FIX_PICTURE_LABEL, scale=3, allow_custom_value=True,
                                              elem_id=f"{prefix}-picture")
        ui[f"{prefix}_to_class"] = gr.Dropdown([], label=text.FIX_CLASS_LABEL, scale=2, allow_custom_value=True,
                                               elem_id=f"{prefix}-to-class")
    with gr.Row():
        ui[f"{prefix}_move"] = gr.Button(text.FIX_MOVE, size="sm", elem_id=f"{prefix}-move")
        ui[f"{prefix}_aside"] = gr.Button(text.FIX_ASIDE, size="sm", elem_id=f"{prefix}-aside")
        ui[f"{prefix}_undo"] = gr.Button(text.FIX_UNDO, size="sm", elem_id=f"{prefix}-undo")
    ui[f"{prefix}_msg"] = gr.Markdown(text.FIX_HINT, elem_id=f"{prefix}-fix-msg")


def _add_panel(ui: dict[str, Any]) -> None:
    with gr.Accordion(text.ADD_TITLE, open=False, elem_id="add-pictures"):
        gr.Markdown(text.ADD_HINT)
        ui["add_class"] = gr.Dropdown([], value=None, allow_custom_value=True, label=text.ADD_CLASS_LABEL,
                                      elem_id="add-class")
        with gr.Row():
            ui["add_files"] = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                      label=text.ADD_FILES_LABEL, elem_id="add-files")
            ui["add_webcam"] = gr.Image(sources=["webcam", "upload"], type="filepath", label=text.ADD_WEBCAM_LABEL,
                                        height=220, elem_id="add-webcam")
        with gr.Row():
            ui["add"] = gr.Button(text.ADD_BUTTON, size="sm", elem_id="add-button")
            ui["add_undo"] = gr.Button(text.FIX_UNDO, size="sm")
        ui["add_msg"] = gr.Markdown(elem_id="add-msg")


def _options_panel(app: DemoApp, ui: dict[str, Any]) -> None:
    # Image size and epochs are device defaults: the page shows the CPU's until page load (training_defaults)
    # sets the ones of the device training runs on, without importing torch while the page is built.
    # A widget keyed by a TrainConfig field marked app=True is that option's input (``option_widgets``).
    # In public mode the sliders end at the caps (the handlers refuse API calls above them).
    cfg, help_for = app.capped(TrainConfig().resolved("cpu")), TrainConfig.help_for
    max_epochs, max_size = (app.policy.limits.max_epochs, app.policy.limits.max_img_size) if app.policy.public \
        else (30, 320)
    gr.Markdown("### 2 · How to train")
    # Choices and default come on page load (backbone_dropdown): reading weight statuses imports torch.
    ui["backbone"] = gr.Dropdown([], value=None, label="Backbone (the network)", allow_custom_value=True,
                                 info=BACKBONE_INFO)
    ui["pretrained"] = gr.Checkbox(value=cfg.pretrained, label="Start from ImageNet weights (transfer learning)",
                                   info="Untick to start from random weights (training from scratch).")
    ui["strategy"] = gr.Radio([("fine-tune all layers", "finetune"), ("train only the new last layer", "linear")],
                              value=cfg.strategy, label="What to train", info=help_for("strategy"))
    ui["epochs"] = gr.Slider(1, max_epochs, value=cfg.epochs, step=1, label="Epochs", info=help_for("epochs"),
                             elem_id="epochs")
    ui["defaults_note"] = gr.Markdown(defaults_text("cpu"), elem_id="defaults-note")
    with gr.Accordion("More options", open=False):
        ui["lr"] = gr.Number(value=cfg.lr, label="Learning rate", info=help_for("lr"))
        ui["batch_size"] = gr.Slider(4, 128, value=cfg.batch_size, step=4, label="Batch size",
                                     info=help_for("batch_size"))
        ui["img_size"] = gr.Slider(32, max_size, value=cfg.img_size, step=16, label="Image size (px)",
                                   info=help_for("img_size"))
        ui["seed"] = gr.Number(value=cfg.seed, precision=0, label="Seed", info=help_for("seed"))
    ui["continue_from"] = gr.Checkbox(False, label=text.CONTINUE_LABEL, info=text.CONTINUE_INFO,
                                      elem_id="continue-from")
    with gr.Row():
        ui["train"] = gr.Button("▶ Train", variant="primary")
        ui["stop"] = gr.Button("■ Stop", variant="stop")


def _train_tab(app: DemoApp, ui: dict[str, Any]) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            _dataset_panel(app, ui)
            _options_panel(app, ui)
        with gr.Column(scale=2):  # wide, so both charts and their legends fit side by side
            gr.Markdown("### 3 · Watch it learn")
            ui["progress"] = gr.HTML(progress_html(0, "Not started: choose a dataset, then press ▶ Train."))
            with gr.Row():
                ui["loss_plot"] = _plot("Loss (lower is better)", "loss", LOSS_COLOURS)
                ui["acc_plot"] = _plot("Accuracy (higher is better)", "accuracy", ACCURACY_COLOURS, [0, 1])
            ui["results"] = gr.Markdown(elem_id="train-results")
            ui["per_class"] = gr.Dataframe(empty_frame(PER_CLASS_COLUMNS), label="Per-class metrics (test set)",
                                           interactive=False)
            ui["confusion"] = gr.Image(label="Confusion matrix (test set): rows = true class, columns = predicted",
                                       type="pil", interactive=False, height=380, show_label=True,
                                       elem_id="train-confusion")
            gr.Markdown("### 4 · Where does it go wrong?")
            ui["errors_caption"] = gr.Markdown("After training, the test images the model got wrong appear here.",
                                               elem_id="errors-caption")
            ui["errors"] = _errors_gallery("errors")
            _fix_panel(ui, "errors")
            ui["log"] = gr.Textbox(label="Log", lines=5, max_lines=LOG_LINES, interactive=False, autoscroll=True)


def _predict_tab(app: DemoApp, ui: dict[str, Any]) -> None:
    choices = app.choices()
    with gr.Row():
        with gr.Column():
            ui["image"] = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Your image",
                                   height=340, elem_id="predict-image")
            examples = test_split_examples(app.default_model.path if app.default_model else None)
            app.example_folders = sorted({str(Path(example).parent) for example in examples})
            if examples:
                gr.Examples([[p] for p in examples], inputs=[ui["image"]], elem_id="predict-examples",
                            label=EXAMPLES_LABEL, examples_per_page=len(examples))
        with gr.Column():
            with gr.Row(equal_height=True):
                ui["checkpoint"] = gr.Dropdown(choices, value=choices[0][1] if choices else None, scale=5,
                                               label="Model", allow_custom_value=True, info=MODEL_PICKER_INFO)
                ui["refresh"] = gr.Button("↻", size="sm", scale=0, min_width=48)
            _hub_panel(app, ui)
            _download_panel(ui)
            # The verdict (the class, or "not one of the N classes") first, the top 5 below it.
            ui["caption"] = gr.Markdown(NO_CHECKPOINT if not choices else "", elem_id="predict-caption")
            ui["label"] = gr.Label(num_top_classes=5, label=text.PREDICTION_TITLE, elem_id="predict-label")
            control = recorded_threshold_control(choices[0][1] if choices else None)
            ui["threshold"] = gr.Slider(control.low, control.high, value=control.default, step=0.01,
                                        label=text.THRESHOLD_LABEL, info=control.info, elem_id="predict-threshold")
            ui["prediction"] = gr.JSON(visible=False)  # the answer as data: the API's, and Grad-CAM's caption's
            _cam_panel(ui)
    with gr.Accordion("Where does this model go wrong? Its mistakes on the test images", open=False,
                      elem_id="inspect"):
        ui["inspect"] = gr.Button("Show the mistakes of the selected model", size="sm")
        ui["inspect_caption"] = gr.Markdown(elem_id="inspect-caption")
        with gr.Row():
            ui["inspect_confusion"] = gr.Image(label="Confusion matrix (test set)", type="pil", interactive=False,
                                               height=360, scale=1)
            ui["inspect_table"] = gr.Dataframe(empty_frame(PER_CLASS_COLUMNS), label="Per-class metrics",
                                               interactive=False, scale=1)
        ui["inspect_errors"] = _errors_gallery("inspect-errors")
        _fix_panel(ui, "inspect")
    with gr.Accordion(text.BATCH_TITLE, open=False, elem_id="batch"):
        # No file_types: a file that is not a picture becomes a row with its error instead of refusing the batch.
        ui["batch_files"] = gr.File(file_count="multiple", type="filepath", label=text.BATCH_FILES_LABEL,
                                    elem_id="batch-files")
        ui["batch_run"] = gr.Button(text.BATCH_BUTTON, size="sm", elem_id="batch-run")
        ui["batch_caption"] = gr.Markdown(text.BATCH_EMPTY, elem_id="batch-caption")
        ui["batch_table"] = gr.Dataframe(empty_frame(text.BATCH_COLUMNS), interactive=False, elem_id="batch-table")
        ui["batch_csv"] = gr.File(label=text.BATCH_CSV_LABEL, interactive=False, elem_id="batch-csv")


def _errors_gallery(elem_id: str) -> gr.Gallery:
    return gr.Gallery(label="Misclassified test images: true → predicted (confidence in the wrong answer)",
                      columns=3, height="auto", object_fit="contain", elem_id=elem_id)


def _cam_panel(ui: dict[str, Any]) -> None:
    gr.Markdown("#### Where did it look? (Grad-CAM)")
    ui["cam_target"] = gr.Dropdown([TOP_CLASS], value=TOP_CLASS, label="Explain which class",
                                   info="The heatmap shows which parts of the image speak for this class.",
                                   elem_id="cam-target")
    ui["cam_image"] = gr.Image(label="Heatmap over your image", type="pil", interactive=False, height=300,
                               elem_id="cam-image")
    ui["cam_caption"] = gr.Markdown(elem_id="cam-caption")


def _hub_panel(app: DemoApp, ui: dict[str, Any]) -> None:
    with gr.Accordion("Hugging Face Hub: load a model, or share the selected one", open=False, elem_id="hub"):
        with gr.Row(equal_height=True):
            ui["hub_repo"] = gr.Textbox(label="Load from the Hub", placeholder="namespace/name or namespace/name@v1",
                                        scale=4)
            ui["hub_load"] = gr.Button("Load from Hub", size="sm", scale=1)
        ui["hub_load_msg"] = gr.Markdown(elem_id="hub-load-msg")
        # Per browser session (Gradio gives each its own copy): one user's Hub models stay out of others' pickers.
        ui["hub_loaded"] = gr.State([])
        gr.Markdown("**Push the selected model** (a run trained here) to a model repo with a generated model card.")
        with gr.Row(equal_height=True):
            ui["push_repo"] = gr.Textbox(label="Repo id", placeholder="your-name/pokemon-classifier", scale=3)
            ui["push_private"] = gr.Checkbox(label="Private", value=False, scale=1)
        token_info = PUBLIC_TOKEN_INFO if app.policy.public else (
            "Leave empty to use HF_TOKEN or your saved `hf auth login`. Also used to load a private model above; "
            "used for that action only, never shown or saved.")
        ui["push_token"] = gr.Textbox(label="Access token (write)", type="password", placeholder="hf_…",
                                      info=token_info, elem_id="push-token")
        ui["push_auto"] = gr.Checkbox(label="Also push each run from the Train tab when it finishes", value=False,
                                      info="Uses the repo id, privacy and token above.")
        ui["push"] = gr.Button("Push to Hub", variant="secondary", size="sm")
        ui["push_msg"] = gr.Markdown(elem_id="push-msg")


def _download_panel(ui: dict[str, Any]) -> None:
    with gr.Accordion(DOWNLOAD_TITLE, open=False, elem_id="download"):
        gr.Markdown(DOWNLOAD_INTRO)
        ui["download"] = gr.Button(DOWNLOAD_BUTTON, variant="secondary", size="sm")
        ui["download_files"] = gr.File(label=DOWNLOAD_FILES_LABEL, file_count="multiple", interactive=False,
                                       elem_id="download-files")
        ui["download_msg"] = gr.Markdown(elem_id="download-msg")


def _compare_tab(app: DemoApp, ui: dict[str, Any]) -> None:
    choices = app.choices()
    recorded = app.recorded_compare() or {}  # shown until someone runs a comparison
    gr.Markdown("### Pretrained vs. from scratch\nTrains the same backbone twice, one after the other, on the same "
                "images, split and number of epochs: once starting from ImageNet weights, once from random weights. "
                "It uses the dataset and options of the **Train** tab.")
    with gr.Row():
        ui["compare"] = gr.Button("▶ Train both and compare", variant="primary")
        ui["compare_stop"] = gr.Button("■ Stop", variant="stop")
    ui["compare_progress"] = gr.HTML(recorded.get("compare_progress", progress_html(0, COMPARE_NOT_STARTED)))
    with gr.Row():
        ui["compare_acc_plot"] = _plot("Validation accuracy", "accuracy", RUN_COLOURS, [0, 1],
                                       recorded.get("compare_acc_plot"))
        ui["compare_loss_plot"] = _plot("Training loss", "loss", RUN_COLOURS, value=recorded.get("compare_loss_plot"))
    ui["compare_summary"] = gr.Markdown(recorded.get("compare_summary", ""), elem_id="compare-summary")
    ui["compare_table"] = gr.Dataframe(recorded.get("compare_table", compare_table({})), label="Side by side",
                                       interactive=False, elem_id="compare-table")
    ui["compare_confusions"] = gr.HTML(recorded.get("compare_confusions", ""))
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
    ui["eval_table"] = gr.Dataframe(empty_frame(CHECKPOINT_TABLE_COLUMNS), interactive=False, label="Results")
    ui["eval_confusions"] = gr.HTML()


TRAIN_OUTPUTS = ("progress", "loss_plot", "acc_plot", "log", "results", "per_class", "confusion", "errors_caption",
                 "errors", "errors_fixable")
COMPARE_OUTPUTS = ("compare_progress", "compare_acc_plot", "compare_loss_plot", "compare_log", "compare_summary",
                   "compare_table", "compare_confusions")
CHECKPOINT_PICKERS = ("checkpoint", "ckpt_a", "ckpt_b")


def _pick(ui: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    return [ui[name] for name in names]


def option_widgets(ui: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig field → its widget, for the fields marked ``app=True``, in page order (the order of the /train
    and /compare API parameters after the dataset)."""
    shown = app_option_names()
    missing = [name for name in shown if name not in ui]
    if missing:
        raise LookupError(f"TrainConfig fields marked app=True without a widget in _options_panel: {missing}")
    return {name: widget for name, widget in ui.items() if name in shown}


def _wire_dataset(app: DemoApp, ui: dict[str, Any]) -> dict[str, Any]:
    scan_inputs = _pick(ui, ("data_dir", "seed", "img_size"))
    doctor = dict(fn=app.doctor, inputs=ui["data_dir"],
                  outputs=_pick(ui, ("doctor", "conflicts", "doctor_box", "doctor_fixable")),
                  concurrency_limit=2, concurrency_id="scan")
    gr.on([ui["scan"].click, ui["data_dir"].submit], app.scan, scan_inputs, ui["summary"], api_name="scan",
          concurrency_limit=2, concurrency_id="scan").then(**doctor, api_name="doctor")
    ui["zip"].upload(app.upload_zip, [ui["zip"], ui["seed"], ui["img_size"]], [ui["data_dir"], ui["summary"]],
                     api_name="upload_zip", concurrency_limit=2, concurrency_id="scan").then(
        **doctor, api_visibility="private")
    _wire_fixes(app, ui, dict(fn=app.scan, inputs=scan_inputs, outputs=ui["summary"], concurrency_limit=2,
                              concurrency_id="scan"), doctor)
    return doctor


FIX_PANELS = {"doctor": "conflicts", "errors": "errors", "inspect": "inspect_errors"}  # fix panel → its gallery


def _wire_fixes(app: DemoApp, ui: dict[str, Any], scan: dict[str, Any], doctor: dict[str, Any]) -> None:
    """The fix panels under the galleries and the add panel. After every change the dataset box points to the
    folder changed (a working copy for a read-only dataset), and the summary and the doctor are read again."""
    named: set[str] = set()

    def wire(trigger, fn, inputs, outputs, name: str) -> None:
        visibility = {"api_name": name} if name not in named else {"api_visibility": "private"}
        named.add(name)  # the first of several identical events gets the public API name
        trigger(fn, inputs, outputs, concurrency_limit=2, concurrency_id="edit", **visibility).then(
            **scan, api_visibility="private").then(**doctor, api_visibility="private")

    for prefix, gallery in FIX_PANELS.items():
        fixable, picture, to_class, message = _pick(ui, tuple(f"{prefix}_{n}" for n in
                                                              ("fixable", "picture", "to_class", "msg")))
        ui[gallery].select(app.pick_picture, fixable, [picture, to_class, message], api_visibility="private",
                           concurrency_limit=None)
        done = [message, ui["data_dir"]]
        wire(ui[f"{prefix}_move"].click, app.move_picture, [fixable, picture, to_class, ui["data_dir"]], done,
             "move_picture")
        wire(ui[f"{prefix}_aside"].click, app.set_aside_picture, [fixable, picture, ui["data_dir"]], done,
             "set_aside")
        wire(ui[f"{prefix}_undo"].click, app.undo, ui["data_dir"], done, "undo")
    ui["add_class"].focus(app.class_choices, [ui["data_dir"], ui["add_class"]], ui["add_class"],
                          api_visibility="private", concurrency_limit=None)
    wire(ui["add"].click, app.add_pictures, _pick(ui, ("add_class", "add_files", "add_webcam", "data_dir")),
         _pick(ui, ("add_msg", "data_dir", "add_files", "add_webcam")), "add_pictures")
    wire(ui["add_undo"].click, app.undo, ui["data_dir"], [ui["add_msg"], ui["data_dir"]], "undo")


def _wire_insight(app: DemoApp, ui: dict[str, Any]) -> None:
    """Grad-CAM after each prediction (its own queue slot, so the top-5 label never waits for it), the
    mistakes of a model, and the Hub panel."""
    cam = dict(fn=app.explain, inputs=_pick(ui, ("image", "checkpoint", "cam_target", "prediction")),
               outputs=_pick(ui, ("cam_image", "cam_caption", "cam_target")), concurrency_limit=2,
               concurrency_id="cam", show_progress="minimal", preprocess=False)
    ui["cam_target"].input(**cam, api_name="explain")  # first: the public endpoint gets the plain name
    for event in ui["predict_events"]:
        event.then(**cam, api_visibility="private")
    ui["inspect"].click(app.inspect, [ui["checkpoint"], ui["data_dir"]],
                        _pick(ui, ("inspect_caption", "inspect_confusion", "inspect_table", "inspect_errors",
                                   "inspect_fixable")),
                        api_name="inspect", concurrency_limit=1, concurrency_id="evaluate")
    ui["batch_run"].click(app.predict_batch, [ui["batch_files"], ui["checkpoint"]],
                          _pick(ui, ("batch_caption", "batch_table", "batch_csv")), api_name="predict_batch",
                          concurrency_limit=1, concurrency_id="evaluate")
    gr.on([ui["hub_load"].click, ui["hub_repo"].submit], app.load_from_hub,
          _pick(ui, ("hub_repo", "hub_loaded", "push_token")),
          [ui["hub_load_msg"], ui["checkpoint"], ui["hub_loaded"]], api_name="load_from_hub", concurrency_limit=2,
          concurrency_id="hub")
    ui["push"].click(app.push, _pick(ui, ("checkpoint", "push_repo", "push_private", "push_token")), ui["push_msg"],
                     api_name="push_to_hub", concurrency_limit=1, concurrency_id="hub")


def _wire_jobs(app: DemoApp, ui: dict[str, Any]) -> None:
    """Train and Compare share one concurrency slot: one training at a time, others queue."""
    # The State too: the pickers updated after a run also list this session's Hub models.
    inputs, options = [ui["data_dir"], ui["hub_loaded"]], option_widgets(ui)
    # Training may continue from the model selected in Predict (the last two /train parameters).
    continuing = {**options, "continue_from": ui["continue_from"], "model": ui["checkpoint"]}
    pickers = _pick(ui, CHECKPOINT_PICKERS)
    # Continuing needs fewer epochs than a fresh start: the box sets the slider and the defaults line to match.
    ui["continue_from"].input(app.epochs_for_start, ui["continue_from"], _pick(ui, ("epochs", "defaults_note")),
                              api_visibility="private", concurrency_limit=None)
    for button, stop, fn, outputs, name, kwargs in (
        ("train", "stop", app.train, TRAIN_OUTPUTS, "train", continuing),
        ("compare", "compare_stop", app.compare, COMPARE_OUTPUTS, "compare", options),
    ):
        progress = ui[outputs[0]]
        event = ui[button].click(app.reserve, None, progress, api_visibility="private", concurrency_limit=None,
                                 show_progress="hidden").success(
            fn, inputs, _pick(ui, outputs) + pickers, inputs_kwargs=kwargs, api_name=name, concurrency_limit=1,
            concurrency_id="train", show_progress_on=progress)
        if name == "train":
            event.then(app.auto_push, _pick(ui, ("push_repo", "push_private", "push_token", "push_auto")),
                       ui["push_msg"], api_visibility="private", concurrency_limit=1, concurrency_id="hub")
        ui[stop].click(app.stop, None, None, api_name=f"stop_{name}" if name != "train" else "stop",
                       concurrency_limit=None)


def _wire_checkpoints(app: DemoApp, ui: dict[str, Any]) -> None:
    pickers = _pick(ui, CHECKPOINT_PICKERS)
    ui["refresh"].click(app.refresh, [ui["hub_loaded"], *pickers], pickers, api_name="refresh_checkpoints",
                        concurrency_limit=None)
    # preprocess=False: gr.Image would open every upload with PIL first, so an empty or non-image file or a
    # decompression bomb would fail inside Gradio with a generic error; the handler gets the raw upload and the
    # one image loader answers with a clear message instead.
    predict = dict(fn=app.predict, inputs=_pick(ui, ("image", "checkpoint", "threshold")),
                   outputs=_pick(ui, ("label", "caption", "prediction")), concurrency_limit=PREDICT_CONCURRENCY,
                   concurrency_id="predict", show_progress="minimal", preprocess=False)
    # A new model first sets the threshold control to its own default, then predicts with it.
    ui["predict_events"] = [
        gr.on([ui["image"].change, ui["threshold"].release], **predict, api_name="predict"),
        ui["checkpoint"].change(app.threshold_control, ui["checkpoint"], ui["threshold"], api_name="threshold_control",
                                concurrency_limit=PREDICT_CONCURRENCY, concurrency_id="predict").then(
            **predict, api_visibility="private"),
    ]
    # One export at a time: a second request for the same model then finds the first one's export.
    ui["download"].click(app.download, [ui["checkpoint"]], [ui["download_files"], ui["download_msg"]],
                         api_name="download_model", concurrency_limit=1, concurrency_id="export")
    ui["evaluate"].click(app.compare_checkpoints, [ui["ckpt_a"], ui["ckpt_b"], ui["data_dir"]],
                         _pick(ui, ("eval_caption", "eval_table", "eval_confusions")),
                         api_name="compare_checkpoints", concurrency_limit=1, concurrency_id="evaluate")


def build_demo(checkpoint_root: str | os.PathLike | None = None, data_dir: str | None = None,
               default_model: bool = True, public: bool | None = None,
               workspace_root: str | os.PathLike | None = None) -> gr.Blocks:
    """The whole app. Nothing is trained or loaded here; only checkpoints are listed (and a ``$POKEDEMO_MODEL``
    from the Hub downloaded). ``data_dir`` None: the bundled data (or ``$POKEDEMO_DATA``); ``default_model``
    False leaves the starter (or ``$POKEDEMO_MODEL``) out of the model pickers; ``public`` None: public mode
    as the environment says (``pokedemo.app.public.public_mode``; app.py also knows the host and --share);
    ``workspace_root`` None: working copies of read-only datasets go to ``$POKEDEMO_WORKSPACE`` or ./datasets
    (in public mode: into the visitor's own uploads)."""
    data_dir = prefilled_data_dir() if data_dir is None else data_dir
    policy = PublicPolicy.create(public_mode() if public is None else public, data_dir)
    app = DemoApp(checkpoint_root or default_checkpoint_root(), data_dir,
                  load_default_model() if default_model else None, policy,
                  workspace_root or default_workspace_root())
    # The engine imports and the default model loads in the background while the page is built and served.
    default_path = app.default_model.path if app.default_model else None
    threading.Thread(target=warm_up, args=(default_path,), name="pokedemo-warm-up", daemon=True).start()
    ui: dict[str, Any] = {}
    # Public mode: Gradio's own copies of uploads go after the time a visitor's files are kept.
    kept_s = int(policy.limits.session_hours * 3600)
    with gr.Blocks(title="Pokédemo — transfer learning",
                   delete_cache=(min(kept_s, 3600), kept_s) if policy.public else None) as demo:
        gr.Markdown(INTRO)
        if policy.public:
            gr.Markdown(public_banner(policy.limits), elem_id="public-banner")
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
        # The device's defaults first: the dataset scan then fills the tensor cache at the size training uses.
        demo.load(app.training_defaults, None, _pick(ui, ("epochs", "img_size", "defaults_note")),
                  api_visibility="private", concurrency_limit=None).then(
            app.on_load, load_inputs, [ui["summary"], *_pick(ui, CHECKPOINT_PICKERS)],
            api_visibility="private", concurrency_limit=2, concurrency_id="scan").then(
            **doctor, api_visibility="private")
    demo.queue(max_size=QUEUE_MAX_SIZE)
    demo.pokedemo = app  # for tests and later panels: the handlers and their job registry
    return demo


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` shared by app.py and the tests (theme and CSS live there in 6.x)."""
    return {"theme": gr.themes.Soft(primary_hue="orange"), "css": CSS, "max_file_size": MAX_UPLOAD,
            "footer_links": ["api"]}
