"""The Gradio app, end to end through gradio_client against the app launched in-process, plus its pure helpers.

Every training here is tiny (24 images of 24 px, 32 px input, resnet18 from scratch or the bundled
efficientnet_lite0 weights) so the whole file stays well under two minutes on two CPU cores.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio_client", reason="the app's tests need gradio (engine and CLI tests run without it)")

from conftest import CLIENT_TIMEOUT_S, app_client, make_tiny_dataset, wait_for  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from pokedemo.app import handlers, layout, sources, text, views  # noqa: E402
from pokedemo.config import TrainConfig, resolve_device, starter_checkpoint  # noqa: E402
from pokedemo.events import (  # noqa: E402
    BatchProgress, Cancelled, CompareFinished, EpochEnd, Failed, Finished, NewBest, RunStarted, Stage, Tagged,
)
from pokedemo.uploads import UploadError, ZipLimits, _copy_limited, dataset_root, extract_dataset_zip  # noqa: E402

# backbone, pretrained, strategy, epochs, lr, batch size, image size, seed
OPTION_NAMES = ("backbone", "pretrained", "strategy", "epochs", "lr", "batch_size", "img_size", "seed")
TINY_OPTIONS = ["resnet18", False, "finetune", 2, 0.002, 8, 32, 0]
TINY_KWARGS = dict(zip(OPTION_NAMES, TINY_OPTIONS))
# The same run as the CLI states it.
TINY_ARGS = ["--backbone", "resnet18", "--scratch", "--strategy", "finetune", "--epochs", "2", "--lr", "0.002",
             "--batch-size", "8", "--img-size", "32", "--seed", "0"]
# A tiny run of 3 epochs that tests hold before epoch 2 (batch_gate), so it is certainly in progress, with
# epoch 1's checkpoint saved, while they predict, queue, stop or disconnect: on a slow CPU and a fast GPU alike.
HELD_OPTIONS = ["resnet18", False, "finetune", 3, 0.002, 8, 32, 0]
HELD_AT = (2, 0)


def client_for(url: str, tmp_path: Path) -> Client:
    return app_client(url, tmp_path)


@pytest.fixture
def client(served, tmp_path):
    return client_for(served[0], tmp_path)


def values(picker: dict) -> list[str]:
    """The values a checkpoint dropdown (as the API returns it) offers."""
    return [value for _, value in picker["choices"]]


def confidences(label: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def new_run(root: Path, before: set[str]) -> Path:
    (run,) = [p for p in root.iterdir() if p.name not in before]
    return run


def run_status(run: Path) -> str | None:
    from pokedemo.checkpoint import read_config

    return read_config(run)["status"]


def stop_and_release(client: Client, job, gate) -> None:
    """Stop a held run and let it go on to its Cancelled event; safe to call whatever state the test left."""
    if not job.done():
        client.predict(api_name="/stop")
    gate.release()
    assert wait_for(job.done, timeout=600), "stop did not end the run"  # the timeout only guards a hang


# ------------------------------------------------------------------------------------ through the API


def test_dataset_summary(served, client):
    _, data, *_ = served
    summary = client.predict(str(data), 0, 32, api_name="/scan")
    assert "3 classes · 24 images" in summary
    assert "| a | 8 |" in summary and "test" in summary
    missing = client.predict(str(data / "nope"), 0, 32, api_name="/scan")
    assert missing.startswith("⚠️") and "not found" in missing
    assert client.predict("", 0, 32, api_name="/scan") == text.NO_DATASET


def test_zip_upload_is_extracted_and_summarised(served, client, tmp_path):
    _, data, *_ = served
    archive = tmp_path / "pokemon.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(data.rglob("*.png")):
            zf.write(path, f"wrapper/{path.relative_to(data).as_posix()}")
        zf.writestr("__MACOSX/wrapper/a/._000.png", b"junk")
    folder, summary = client.predict(handle_file(str(archive)), 0, 32, api_name="/upload_zip")
    assert Path(folder).name == "wrapper" and sorted(p.name for p in Path(folder).iterdir()) == ["a", "b", "c"]
    assert "3 classes · 24 images" in summary

    bad = tmp_path / "bad.zip"
    bad.write_text("this is not a zip")
    _, summary = client.predict(handle_file(str(bad)), 0, 32, api_name="/upload_zip")
    assert summary.startswith("⚠️") and "zip" in summary


def test_training_streams_updates_and_selects_the_new_checkpoint(served, client):
    _, data, root, *_ = served
    before = {p.name for p in root.iterdir()}
    job = client.submit(str(data), *TINY_OPTIONS, api_name="/train")
    updates = list(job)
    assert len(updates) >= 4, "progress, epochs and the result should each reach the browser"
    final = job.outputs()[-1]
    (progress, loss, accuracy, log, results, per_class, confusion, errors_caption, errors, predict_pick, pick_a,
     pick_b) = final
    assert "Test accuracy" in results and "Predict" in results
    assert "test accuracy" in progress
    assert {row[2] for row in accuracy["data"]} == {"train (each batch)", "train (epoch)", "validation"}
    assert [row[0] for row in accuracy["data"] if row[2] == "validation"] == [1.0, 2.0]
    assert {row[2] for row in loss["data"]} == {"train (each batch)", "train (epoch)", "validation"}
    assert "epoch 2/2" in log
    assert [row[0] for row in per_class["data"]] == ["a", "b", "c", "macro average"]  # as in the inspect panel
    assert Path(confusion).stat().st_size > 1000  # the confusion matrix picture
    import re

    wrong = re.match(r"\*\*(\d+) of", errors_caption)
    assert (errors_caption == text.NO_ERRORS and not errors) or len(errors) == int(wrong.group(1))
    new = {p.name for p in root.iterdir()} - before
    assert len(new) == 1
    run = new.pop()
    assert predict_pick["value"] == str(root / run)
    assert predict_pick["value"] in [value for _, value in pick_a["choices"]]
    # The app's widget values make the config the same CLI options make, and the run records how to repeat it.
    recorded = TrainConfig.from_dict(json.loads((root / run / "config.json").read_text())["train_config"])
    assert recorded == cli_config("train", "--data", str(data), *TINY_ARGS).resolved(resolve_device("auto"))
    assert cli_config(*reproduce_words(root / run)) == recorded


def cli_config(*argv: str) -> TrainConfig:
    from pokedemo.cli import build_parser
    from pokedemo.options import config_from_args

    return config_from_args(build_parser().parse_args(argv))


def reproduce_words(run: Path) -> list[str]:
    """A run's recorded reproduce command as the argument list after ``python -m pokedemo``."""
    import shlex

    words = shlex.split(json.loads((run / "config.json").read_text())["reproduce"]["command"])
    assert words[:3] == ["python", "-m", "pokedemo"]
    return words[3:]


def test_the_train_and_compare_endpoints_take_every_app_option_by_name(served):
    from pokedemo.options import app_option_names

    demo = served[-1]
    # Training may also continue from the model selected in Predict: two last parameters after the options.
    for name, extra in (("train", ["continue_from", "model"]), ("compare", [])):
        (fn,) = [f for f in demo.fns.values() if f.api_name == name]
        assert fn.input_keyword_names == [*OPTION_NAMES, *extra]  # page order = API order after the dataset
    assert set(app_option_names()) == set(OPTION_NAMES)


def test_an_app_option_without_a_widget_stops_the_build(monkeypatch):
    monkeypatch.setattr(layout, "app_option_names", lambda: (*OPTION_NAMES, "weight_decay"))
    with pytest.raises(LookupError, match="weight_decay"):
        layout.option_widgets({name: object() for name in OPTION_NAMES})


def test_predict_returns_all_class_confidences(served, client):
    _, data, _, checkpoint, _ = served
    label, caption, _ = client.predict(handle_file(str(data / "b" / "000.png")), str(checkpoint), api_name="/predict")
    probs = confidences(label)
    assert sorted(probs) == ["a", "b", "c"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] == max(probs, key=probs.get)
    assert checkpoint.name in caption


def noise_picture(path: Path) -> Path:
    """A picture of none of the classes; below the strictest threshold (1.0: exactly a class's direction)."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_a_picture_below_the_threshold_is_none_of_the_classes_with_the_closest_still_shown(served, client, tmp_path):
    _, data, _, checkpoint, _ = served
    image = handle_file(str(noise_picture(tmp_path / "noise.png")))
    label, caption, answer = client.predict(image, str(checkpoint), 1.0, api_name="/predict")  # the strictest
    assert answer["label"] is None and answer["closest"] in "abc" and answer["open_set"]["threshold"] == 1.0
    assert text.unknown_verdict(3) in caption and f"Closest: {answer['closest']}" in caption
    assert len(label["confidences"]) == 3 and label["label"] == answer["closest"]  # the top 5 stay visible
    assert confidences(label) == pytest.approx({t["label"]: t["prob"] for t in answer["top_k"]}, abs=1e-6)
    control = client.predict(str(checkpoint), api_name="/threshold_control")
    default = control["value"]
    label, caption, answer = client.predict(image, str(checkpoint), default, api_name="/predict")
    assert answer["open_set"]["default_threshold"] is True and answer["known"] == (answer["label"] is not None)
    assert f"Default {default:.2f}" in control["info"] and "standard deviations below the mean" in control["info"]


def test_grad_cam_explains_the_closest_class_with_the_labels_numbers(served, client, tmp_path):
    _, data, _, checkpoint, _ = served
    image = handle_file(str(noise_picture(tmp_path / "noise.png")))
    _, _, answer = client.predict(image, str(checkpoint), 1.0, api_name="/predict")
    overlay, caption, _ = client.predict(image, str(checkpoint), text.TOP_CLASS, answer, api_name="/explain")
    prob = next(t["prob"] for t in answer["top_k"] if t["label"] == answer["closest"])
    assert f"looked for **{answer['closest']}**, the closest class ({prob:.0%}" in caption


def test_predict_without_image_or_model_gives_guidance(served, client):
    _, data, _, checkpoint, _ = served
    label, caption, _ = client.predict(None, str(checkpoint), api_name="/predict")
    assert not label and "Upload" in caption
    label, caption, _ = client.predict(handle_file(str(data / "a" / "000.png")), None, api_name="/predict")
    assert not label and caption == text.NO_CHECKPOINT
    label, caption, _ = client.predict(handle_file(str(data / "a" / "000.png")), "/etc", api_name="/predict")
    assert not label and "not one of this app's checkpoints" in caption


# Refused with a message (truncated.jpg too: Pillow's default refuses truncated files, see test_data).
EDGE_CASES_REFUSED = {"bomb-40000x40000.png", "empty.jpg", "not-an-image.jpg", "truncated.jpg"}


def test_every_edge_case_file_gets_an_answer(served, client, edge_cases_dir):
    _, _, _, checkpoint, _ = served
    files = sorted(p for p in edge_cases_dir.iterdir() if p.suffix != ".md")
    assert EDGE_CASES_REFUSED <= {p.name for p in files} and len(files) > len(EDGE_CASES_REFUSED)
    for path in files:
        label, caption, _ = client.predict(handle_file(str(path)), str(checkpoint), api_name="/predict")
        if path.name in EDGE_CASES_REFUSED:
            assert not label and caption.startswith("⚠️") and "cannot be used as an image" in caption, path
        else:
            assert sum(confidences(label).values()) == pytest.approx(1.0, abs=1e-4), path.name


def test_prediction_is_answered_while_training_runs_and_stop_cancels(served, tmp_path, batch_gate):
    url, data, root, checkpoint, _ = served
    trainer, user = client_for(url, tmp_path / "t"), client_for(url, tmp_path / "u")
    before = {p.name for p in root.iterdir()}
    gate = batch_gate(*HELD_AT)
    job = trainer.submit(str(data), *HELD_OPTIONS, api_name="/train")
    try:
        gate.wait_reached()
        label, *_ = user.predict(handle_file(str(data / "c" / "001.png")), str(checkpoint), api_name="/predict")
        assert label is not None
        assert not job.done(), "the training ended while it was held"
    finally:
        stop_and_release(trainer, job, gate)
    final = job.outputs()[-1]
    results, predict_pick = final[4], final[-3]
    assert "Stopped" in results and "best checkpoint so far" in results
    run_dir = Path(predict_pick["value"])
    assert run_dir == new_run(root, before) and run_status(run_dir) == "cancelled"
    from pokedemo.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir).config["metrics"]["best_epoch"] == 1


def test_second_training_waits_in_the_queue(served, tmp_path, batch_gate):
    url, data, root, *_ = served
    first, second = client_for(url, tmp_path / "1"), client_for(url, tmp_path / "2")
    gate = batch_gate(*HELD_AT)
    long_job = first.submit(str(data), *HELD_OPTIONS, api_name="/train")
    short_job = None
    try:
        gate.wait_reached()
        short_job = second.submit(str(data), *TINY_OPTIONS, api_name="/train")
        assert wait_for(lambda: short_job.status().code == Status.IN_QUEUE, timeout=600)
        # the first run cannot end while held: whatever the machine's speed, the second one is still queued
        assert short_job.status().code == Status.IN_QUEUE and short_job.status().rank == 0
        assert gate.arrivals == 1 and not long_job.done()
    finally:
        stop_and_release(first, long_job, gate)
        if short_job is not None:
            assert wait_for(short_job.done, timeout=600)
    assert "Stopped" in long_job.outputs()[-1][4]
    assert "Test accuracy" in short_job.outputs()[-1][4]


def test_a_browser_that_disconnects_mid_training_stops_the_run_and_keeps_the_best(served, tmp_path, batch_gate):
    """The tab is closed while a run trains: the server must stop the run (saving the best epoch), not train on
    for nobody, and free the training slot. A separate process is the browser; killing it drops its
    connection. Gradio marks the request dead when it notices the dropped connection (it checks between
    messages, up to 10 s later), so the run is held until then: otherwise a fast machine could finish the run
    before Gradio looked, and the test would pass or fail by speed."""
    import subprocess
    import sys

    url, data, root, _, demo = served
    before = {p.name for p in root.iterdir()}
    gate = batch_gate(*HELD_AT)
    browser = (f"from gradio_client import Client\n"
               f"client = Client({url!r}, verbose=False, analytics_enabled=False, "
               f"httpx_kwargs={{'timeout': {CLIENT_TIMEOUT_S}}})\n"
               f"job = client.submit({str(data)!r}, *{HELD_OPTIONS!r}, api_name='/train')\n"
               f"import time\ntime.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", browser])
    try:
        gate.wait_reached()
        proc.kill()
        proc.wait(timeout=60)

        def request_dead() -> bool:  # Gradio's own record of in-flight requests (internal, no public API)
            return not any(job.alive for jobs in demo._queue.active_jobs if jobs for job in jobs)

        assert wait_for(request_dead, timeout=600)
    finally:
        proc.kill()
        gate.release()
    run = new_run(root, before)
    assert wait_for(lambda: run_status(run) != "training", timeout=600)  # the timeout only guards a hang
    assert run_status(run) == "cancelled"
    assert wait_for(lambda: demo.pokedemo.jobs.running is None, timeout=600)
    from pokedemo.checkpoint import load_checkpoint

    # Gradio closes the handler at its next yield, which comes after epoch 2's first batch or (the app throttles
    # batch updates) at the latest with epoch 2's end: so the run stops in epoch 2 or before epoch 3's first
    # batch, never trains to the end, and what it keeps is the best of the epochs it finished.
    history = json.loads((run / "history.json").read_text())
    assert 1 <= len(history) <= 2, history
    best = max(history, key=lambda h: (h["val_acc"], -h["val_loss"]))["epoch"]
    assert load_checkpoint(run).config["metrics"]["best_epoch"] == best


def test_stop_without_a_running_job_does_not_cancel_the_next_one(served, client):
    _, data, *_ = served
    assert client.predict(api_name="/stop") == ()
    outputs = client.predict(str(data), *TINY_OPTIONS, api_name="/train")
    assert "Test accuracy" in outputs[4]


def test_training_problems_are_messages(served, client, tmp_path):
    _, data, *_ = served
    outputs = client.predict("", *TINY_OPTIONS, api_name="/train")
    assert "Training failed" in outputs[4] and "No dataset" in outputs[4]
    outputs = client.predict(str(tmp_path / "missing"), *TINY_OPTIONS, api_name="/train")
    assert "Training failed" in outputs[4] and "not found" in outputs[4]
    linear_scratch = list(TINY_OPTIONS)
    linear_scratch[2] = "linear"
    outputs = client.predict(str(data), *linear_scratch, api_name="/train")
    assert "Training failed" in outputs[4] and "linear" in outputs[4]
    outputs = client.predict("", *TINY_OPTIONS, api_name="/compare")
    assert outputs[4].startswith("⚠️") and "No dataset" in outputs[4] and "Failed" in outputs[0]


def test_compare_trains_both_runs_then_checkpoints_compare_on_one_split(served, client):
    _, data, root, *_ = served
    options = ["efficientnet_lite0", True, "finetune", 1, 0.002, 8, 32, 0]
    job = client.submit(str(data), *options, api_name="/compare")
    updates = list(job)
    assert len(updates) >= 4
    progress, accuracy, loss, log, summary, table, confusions, predict_pick, pick_a, pick_b = job.outputs()[-1]
    assert {row[2] for row in accuracy["data"]} == {"pretrained", "scratch"}
    assert [row[0] for row in table["data"]] == ["pretrained", "scratch"]
    assert "Pretrained" in summary and "scratch" in summary
    assert confusions.count("<table") == 2
    assert "[pretrained]" in log and "[scratch]" in log
    run_a, run_b = pick_a["value"], pick_b["value"]
    assert predict_pick["value"] == run_a and "pretrained" in run_a and "scratch" in run_b

    caption, results, matrices = client.predict(run_a, run_b, str(data), api_name="/compare_checkpoints")
    assert "same" in caption and "test images" in caption, caption
    assert [row[0] for row in results["data"]] == ["A", "B"]
    assert results["data"][0][4] == results["data"][1][4]  # the same number of test images
    assert matrices.count("<table") == 2


def test_compare_whose_pretrained_run_fails_says_why_and_never_trains_scratch(served, client, tmp_path,
                                                                          monkeypatch):
    _, data, root, *_ = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no resnet18 ImageNet weights here...
    monkeypatch.setenv("POKEDEMO_OFFLINE", "1")  # ...and no download
    before = {p.name for p in root.iterdir()}
    options = ["resnet18", True, "finetune", 1, 0.002, 8, 32, 0]
    progress, accuracy, loss, log, summary, table, confusions, predict_pick, *_ = client.predict(
        str(data), *options, api_name="/compare")
    assert summary.startswith("⚠️") and "resnet18-f37072fd.pth" in summary
    assert "(pretrained)" in progress and "Failed" in progress
    assert "[scratch]" not in log and table["data"] == [] and confusions == ""
    assert predict_pick.get("value") in (None, "") or Path(predict_pick["value"]).name in before
    assert {p.name for p in root.iterdir()} == before  # neither run left anything behind


def test_compare_stopped_during_the_pretrained_run_keeps_it_and_never_trains_scratch(served, tmp_path,
                                                                                   batch_gate):
    url, data, root, *_ = served
    user = client_for(url, tmp_path)
    before = {p.name for p in root.iterdir()}
    gate = batch_gate(*HELD_AT)
    job = user.submit(str(data), "efficientnet_lite0", True, "finetune", 2, 0.002, 8, 32, 0, api_name="/compare")
    try:
        gate.wait_reached()
    finally:
        stop_and_release(user, job, gate)
    progress, accuracy, loss, log, summary, table, confusions, predict_pick, pick_a, pick_b = job.outputs()[-1]
    assert summary.startswith("⚠️") and "Training stopped in epoch 2" in summary, summary
    assert "[scratch]" not in log and table["data"] == []
    run = new_run(root, before)
    assert "pretrained" in run.name and run_status(run) == "cancelled"
    assert predict_pick["value"] == str(run)  # the stopped run's best epoch, ready to predict with


def test_checkpoint_refresh_lists_new_runs(served, client):
    _, _, root, checkpoint, _ = served
    picks = client.predict(str(checkpoint), None, str(root / "deleted"), api_name="/refresh_checkpoints")
    listed = [value for _, value in picks[0]["choices"]]
    runs = [value for value in listed if Path(value).parent == root]
    created = [json.loads((Path(run) / "config.json").read_text())["created_at"] for run in runs]
    assert str(checkpoint) in runs and created == sorted(created, reverse=True)  # newest first
    assert listed[len(runs):] == [str(starter_checkpoint())]  # the starter is older than every run made here
    assert picks[0]["value"] == str(checkpoint)  # kept
    assert picks[1]["value"] == picks[2]["value"] == listed[0]  # empty or gone: the newest


# -------------------------------------------------------------- seeing inside: doctor, mistakes, Grad-CAM


def test_doctor_finds_a_duplicate_and_a_label_conflict(served, client, tmp_path):
    import shutil

    data = make_tiny_dataset(tmp_path / "dup")
    shutil.copyfile(data / "a" / "000.png", data / "a" / "copy.png")      # an exact duplicate inside a class
    shutil.copyfile(data / "b" / "003.png", data / "c" / "stray.png")     # the same picture in two classes
    report, conflicts = client.predict(str(data), api_name="/doctor")
    assert "26 images in 3 classes" in report
    assert "exact duplicate groups: 2" in report and "label conflicts: 1" in report
    assert "Label conflicts" in report and "⚠️" in report
    strips = conflicts["value"]  # a gallery update: shown only when there are conflicts
    assert conflicts["visible"] and len(strips) == 1 and strips[0]["caption"] == "b/003.png | c/stray.png"
    assert Path(strips[0]["image"]).stat().st_size > 500

    report, conflicts = client.predict(str(tmp_path / "missing"), api_name="/doctor")
    assert report.startswith("⚠️") and not conflicts["value"] and not conflicts["visible"]
    assert client.predict("", api_name="/doctor")[0] == text.DOCTOR_EMPTY


def test_inspect_shows_confusion_per_class_and_mistakes_sorted(served, client):
    _, data, _, checkpoint, _ = served
    caption, confusion, table, errors = client.predict(str(checkpoint), str(data), api_name="/inspect")
    assert Path(confusion).stat().st_size > 1000
    assert [row[0] for row in table["data"]] == ["a", "b", "c", "macro average"]
    if errors:  # a 1-epoch tiny model usually gets some wrong; each is captioned "true → predicted (p)"
        assert f"{len(errors)} of" in caption
        probs = [float(e["caption"].split("(")[1].split("%")[0]) for e in errors]
        assert probs == sorted(probs, reverse=True)
        assert all(" → " in e["caption"] for e in errors)
    else:
        assert caption == text.NO_ERRORS
    caption, confusion, _, errors = client.predict(None, str(data), api_name="/inspect")
    assert caption == text.NO_CHECKPOINT and confusion is None and not errors


def test_grad_cam_overlay_for_the_top_class_and_a_picked_one(served, client):
    _, data, _, checkpoint, _ = served
    image = handle_file(str(data / "b" / "000.png"))
    overlay, caption, picker = client.predict(image, str(checkpoint), text.TOP_CLASS, api_name="/explain")
    from PIL import Image

    with Image.open(overlay) as img:
        assert img.size == (128, 128)  # a 24 px upload is shown at the display minimum
    assert "Where the model looked" in caption
    assert [c[1] for c in picker["choices"]] == [text.TOP_CLASS, "a", "b", "c"]
    label, *_ = client.predict(image, str(checkpoint), api_name="/predict")
    other = next(name for name in "abc" if name != label["label"])
    overlay, caption, picker = client.predict(image, str(checkpoint), other, api_name="/explain")
    assert f"evidence for **{other}**" in caption and picker["value"] == other
    overlay, caption, _ = client.predict(handle_file(str(data / "a" / "000.png")), None, "a", api_name="/explain")
    assert overlay is None and caption == ""


# ------------------------------------------------------------------------------------------------ the Hub


def test_push_to_hub_gives_a_link_and_bad_tokens_a_message(served, client, hub_env):
    _, data, _, checkpoint, _ = served
    token = hub_env.add_user("alice")
    message = client.predict(str(checkpoint), "alice/tiny", False, token, api_name="/push_to_hub")
    assert message.startswith("✅") and f"({hub_env.url}/alice/tiny)" in message and token not in message
    assert len(hub_env.file("alice/tiny", "model.safetensors")) > 1000  # the weights really arrived
    bad = "hf_" + "x" * 30
    message = client.predict(str(checkpoint), "alice/tiny", False, bad, api_name="/push_to_hub")
    assert message.startswith("❌") and bad not in message
    message = client.predict(str(checkpoint), "", False, token, api_name="/push_to_hub")
    assert "repo id" in message and token not in message


def test_a_model_loaded_from_the_hub_cannot_be_pushed_again(served, client, hub_env):
    _, _, _, checkpoint, _ = served
    token = hub_env.add_user("dana")
    assert client.predict(str(checkpoint), "dana/original", False, token, api_name="/push_to_hub").startswith("✅")
    message, picker = client.predict("dana/original", api_name="/load_from_hub")
    assert message.startswith("✅")
    snapshot = picker["value"]
    assert snapshot != str(checkpoint)
    message = client.predict(snapshot, "dana/copy", False, token, api_name="/push_to_hub")
    assert message.startswith("❌ Only runs trained here can be pushed") and token not in message
    assert "dana/copy" not in hub_env.repos


def test_a_hub_repo_id_loads_into_the_picker_and_predicts(served, client, hub_env):
    _, data, _, checkpoint, _ = served
    token = hub_env.add_user("bob")
    assert client.predict(str(checkpoint), "bob/shared", False, token, api_name="/push_to_hub").startswith("✅")
    message, picker = client.predict("bob/shared", api_name="/load_from_hub")
    assert message.startswith("✅") and "bob/shared" in message
    assert any("bob/shared" in label for label, _ in picker["choices"])
    image = handle_file(str(data / "c" / "001.png"))
    from_hub, *_ = client.predict(image, picker["value"], api_name="/predict")
    local, *_ = client.predict(image, str(checkpoint), api_name="/predict")
    assert confidences(from_hub) == pytest.approx(confidences(local), abs=1e-5)
    typed, *_ = client.predict(image, "bob/shared", api_name="/predict")  # typed into the picker
    assert confidences(typed) == pytest.approx(confidences(local), abs=1e-5)
    message, _ = client.predict("bob/nope", api_name="/load_from_hub")
    assert message.startswith("❌") and "bob/nope" in message


def test_a_hub_model_loaded_in_one_session_stays_out_of_other_sessions_pickers(served, hub_env, tmp_path):
    _, _, _, checkpoint, _ = served
    token = hub_env.add_user("dora")
    loader, other = client_for(served[0], tmp_path / "loader"), client_for(served[0], tmp_path / "other")
    assert loader.predict(str(checkpoint), "dora/private-pick", False, token,
                          api_name="/push_to_hub").startswith("✅")
    message, picker = loader.predict("dora/private-pick", api_name="/load_from_hub")
    assert message.startswith("✅")
    hub_value = picker["value"]
    assert hub_value in values(picker)

    def listed(client: Client) -> list[list[str]]:  # the values of all three pickers after ↻
        return [values(p) for p in client.predict(None, None, None, api_name="/refresh_checkpoints")]

    assert all(hub_value in choices for choices in listed(loader))  # its own session keeps listing it
    assert all(hub_value not in choices and str(checkpoint) in choices for choices in listed(other))
    fresh = client_for(served[0], tmp_path / "fresh")  # a session that starts after the load does not see it
    assert all(hub_value not in choices for choices in listed(fresh))


# ------------------------------------------------------------------------------------------ pure helpers


def test_importing_the_app_writes_nothing_into_the_package():
    # Gradio writes a .pyi stub beside any module that defines a Component subclass; the app must define none.
    for module in (layout, handlers, sources, text, views):
        assert not Path(module.__file__).with_suffix(".pyi").exists(), module.__name__


def test_image_source_reads_gradios_raw_image_value():
    import base64

    assert handlers.image_source({"path": "/tmp/gradio/x.png", "url": "http://h/file=x.png"}) == "/tmp/gradio/x.png"
    data_url = "data:image/png;base64," + base64.b64encode(b"abc").decode()
    assert handlers.image_source({"path": None, "url": data_url}) == b"abc"
    assert handlers.image_source("/a.png") == "/a.png" and handlers.image_source(None) is None and handlers.image_source("") is None


def test_format_duration_and_percent():
    assert text.format_duration(42) == "0:42"
    assert text.format_duration(3723) == "1:02:03"
    assert text.format_duration(None) == "—" and text.format_duration(float("nan")) == "—"
    assert text.percent(0.9355) == "93.5%" and text.percent(None) == "—"


def _run_events(run_dir="/runs/x"):
    return [
        Stage("cache", "Decoding 24 images"),
        RunStarted(run_dir, "cpu", ["a", "b"], {"a": 8, "b": 8}, {"train": 10, "val": 3, "test": 3}, [], 0, 0, 4, {}),
        BatchProgress(1, 2, 1, 4, 0.9, 0.5, 50.0, 3.0),
        BatchProgress(1, 2, 2, 4, 0.8, 0.75, 50.0, 2.0),
        EpochEnd(1, 2, 0.85, 0.5, 0.7, 0.66, 0.001, 1.5, 50.0),
        NewBest(1, 0.66, run_dir),
        EpochEnd(2, 2, 0.6, 0.8, 0.5, 1.0, 0.0, 3.0, 55.0),
        Finished(run_dir, 2, 1.0, 0.75, {"n": 4, "classes": ["a", "b"], "confusion": [[2, 0], [1, 1]],
                                         "per_class": {}}, 3.2),
    ]


def test_run_view_turns_events_into_curves_progress_and_log():
    view = views.RunView()
    events = _run_events()
    for event in events[:4]:
        view.update(event)
    assert view.fraction == 0.5 and "ETA 0:02" in view.status and "50 images/s" in view.status
    for event in events[4:]:
        view.update(event)
    loss, accuracy = views.curve_frames(view.points)
    assert list(accuracy.columns) == views.PLOT_COLUMNS
    assert accuracy[accuracy.series == "validation"].value.tolist() == [0.66, 1.0]
    assert loss[loss.series == "train (each batch)"].epoch.tolist() == [0.5, 1.0]
    batches = accuracy[accuracy.series == "train (each batch)"]
    assert batches.epoch.tolist() == [0.5, 1.0] and batches.value.tolist() == [0.5, 0.75]
    assert view.fraction == 1.0 and view.final is events[-1] and view.run_dir == "/runs/x"
    assert any(line.startswith("epoch 2/2") for line in view.log) and "Decoding 24 images" in view.log
    assert views.plot_value(accuracy) is accuracy and views.plot_value(views.curve_frames([])[0]) is None


def test_run_view_log_is_short_and_failures_say_why():
    view = views.RunView()
    for i in range(40):
        view.update(Stage("s", f"line {i}"))
    assert len(view.log) == views.LOG_LINES and view.log[-1] == "line 39"
    view.update(Failed("pretrained weights for resnet18 are not on this machine"))
    assert view.status.startswith("Failed: pretrained weights")
    assert "Training failed" in text.results_markdown(view.final)
    stopped = Cancelled("/runs/y", 3, 9.0, "Training stopped in epoch 3; the best checkpoint so far is saved.")
    assert "selected in the **Predict** tab" in text.results_markdown(stopped)
    assert "selected" not in text.results_markdown(Cancelled(None, 1, 1.0, "nothing was saved"))


def test_compare_view_colours_curves_by_run():
    view = views.CompareView()
    for event in _run_events("/runs/p"):
        view.update(Tagged("pretrained", event))
    assert view.fraction == 0.5 and view.status.startswith("Run 1 of 2 (pretrained)")
    view.update(Tagged("scratch", _run_events("/runs/s")[2]))
    assert view.fraction == pytest.approx(0.5 + 0.25 / 2)
    accuracy, loss = views.compare_frames(view.points)
    assert set(accuracy.dropna().series) == {"pretrained"} and set(loss.dropna().series) == {"pretrained"}
    # scratch is already in the legend (a NaN row), so the chart's colours stay fixed when its points arrive
    assert set(accuracy.series) == {"pretrained", "scratch"}
    assert accuracy[accuracy.series == "scratch"].value.isna().all()
    results = {
        "pretrained": {"status": "finished", "test_acc": 0.9, "best_val_acc": 0.95, "seconds": 61,
                       "epochs_to_90": 1, "classes": ["a", "b"], "confusion": [[2, 0], [0, 2]]},
        "scratch": {"status": "finished", "test_acc": 0.5, "best_val_acc": 0.6, "seconds": 70,
                    "epochs_to_90": None, "classes": ["a", "b"], "confusion": [[1, 1], [1, 1]]},
    }
    view.update(CompareFinished(results, []))
    assert view.status == "Both runs finished." and view.message() is None
    table = text.compare_table(results, epochs=3)
    assert table.values.tolist() == [["pretrained", "90.0%", "95.0%", "1:01", "1"],
                                     ["scratch", "50.0%", "60.0%", "1:10", "not within 3"]]
    assert "40.0 points better" in text.compare_takeaway(results, 3)
    assert text.compare_confusions(results).count("<table") == 2


def test_confusion_html_escapes_names_and_shows_counts():
    report = {"classes": ["<b>x</b>", "y"], "confusion": [[3, 1], [0, 4]]}
    page = text.confusion_html(report, "Test")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert page.count("<td") == 4 and ">3</td>" in page and ">4</td>" in page
    assert "rgba(34,197,94" in page and "rgba(239,68,68" in page  # correct green, mistakes red


def test_per_class_frame_and_report_on_items():
    report = {"per_class": {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}}}
    assert text.per_class_frame(report).values.tolist() == [["a", "100.0%", "50.0%", "66.7%", 2],
                                                            ["macro average", "100.0%", "50.0%", "66.7%", 2]]
    items = [{"path": "a/1", "true": "a", "pred": "a"}, {"path": "b/1", "true": "b", "pred": "a"},
             {"path": "b/2", "true": "b", "pred": "b"}]
    report = views.report_on_items(items, ["a", "b"], {"a/1", "b/1"})
    assert report["n"] == 2 and report["accuracy"] == 0.5 and report["confusion"] == [[1, 0], [1, 0]]


def test_both_panels_render_the_same_per_class_table_for_one_report(tmp_path, monkeypatch):
    """The Train tab (after a run) and the "where does it go wrong" panel show one table for one report."""
    report = {"n": 4, "classes": ["a", "b"], "confusion": [[2, 0], [1, 1]], "items": [], "root": str(tmp_path),
              "per_class": {"a": {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
                            "b": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}}}
    app = handlers.DemoApp(tmp_path, "")
    finished = Finished(str(tmp_path / "run"), 1, 1.0, 0.75, report, 1.0)
    view = views.RunView()
    view.update(finished)
    train_table = app._train_outputs(view, done=True)[5]
    monkeypatch.setattr(app, "_predictor", lambda checkpoint, request: object())
    monkeypatch.setattr(sources, "test_report", lambda predictor, folder, gate=None, hub=None: report)
    inspect_table = app.inspect("some-run", "")[2]
    assert train_table.values.tolist() == inspect_table.values.tolist()
    assert train_table.values.tolist()[-1] == ["macro average", "83.3%", "75.0%", "73.3%", 4]
    assert list(train_table.columns) == list(inspect_table.columns) == text.PER_CLASS_COLUMNS


GRADIO_BLOCKED = "import sys; sys.modules['gradio'] = None; sys.modules['gradio_client'] = None\n"


def _run_python(code: str) -> str:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_views_text_and_sources_import_without_gradio():
    out = _run_python(GRADIO_BLOCKED + "import pokedemo.app, pokedemo.app.views, pokedemo.app.text, "
                      "pokedemo.app.sources\nprint(sorted(m for m in sys.modules if m.startswith('gradio')))")
    assert out.strip() == "['gradio', 'gradio_client']"  # only the blocked placeholders: nothing imported them
    blocked = _run_python(GRADIO_BLOCKED + "try:\n    import pokedemo.app.layout\nexcept ImportError:\n"
                          "    print('blocked')")
    assert blocked.strip() == "blocked"  # the check above can fail: layout does need gradio


def test_importing_the_app_changes_no_environment_variables():
    # Environment set-up for the app belongs to app.py's main() (pokedemo.startup for the thread policy).
    out = _run_python("import os, json\nbefore = dict(os.environ)\nimport pokedemo\n"
                      "import pokedemo.app.layout\nfrom pokedemo.app import build_demo, launch_options\n"
                      "after = dict(os.environ)\n"
                      "print(json.dumps(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))))")
    assert out.strip() == "[]"


# Runs app.main in a fresh interpreter and records the environment at the moment gradio, and torch if it comes
# first, start to be imported; gradio's import is then refused, which ends main before it builds anything.
IMPORT_ORDER_SPY = """
import importlib.abc, json, os, sys
NAMES = ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")
seen = {}
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("gradio", "torch") and name not in seen:
            seen[name] = {k: os.environ.get(k) for k in NAMES}
        if name == "gradio":
            raise ImportError("the spy ends the app here")
        return None
for name in NAMES:
    os.environ.pop(name, None)
sys.meta_path.insert(0, Spy())
import app
try:
    app.main(["--threads", "2"])
except ImportError:
    pass
print(json.dumps(seen))
"""


def test_app_main_sets_up_the_environment_before_importing_gradio():
    seen = json.loads(_run_python(IMPORT_ORDER_SPY).strip().splitlines()[-1])
    expected = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "2",
                "OMP_WAIT_POLICY": "PASSIVE"}
    assert "gradio" in seen and seen["gradio"] == expected, seen
    assert seen.get("torch", expected) == expected, seen  # torch reads OMP_NUM_THREADS when it is imported


def test_dataset_summary_reports_unreadable_duplicates_and_conflicts(tiny_dataset):
    root = tiny_dataset()
    (root / "a" / "broken.jpg").write_bytes(b"not an image")
    (root / "b" / "copy-of-a.png").write_bytes((root / "a" / "000.png").read_bytes())
    summary = sources.summarise_dataset(str(root), 0, None)
    assert "3 classes · 25 images" in summary
    assert "1 unreadable file(s) skipped: `a/broken.jpg`" in summary
    assert "1 group(s) look alike but sit in different class folders" in summary
    assert "`a/000.png` ↔ `b/copy-of-a.png`" in summary
    assert sources.summarise_dataset("  ", 0, None) == text.NO_DATASET


def test_backbone_default_prefers_available_weights():
    choices = [("resnet18 — pretrained weights: needs download", "resnet18"),
               ("efficientnet_lite0 — pretrained weights: bundled", "efficientnet_lite0")]
    assert sources.default_backbone(choices) == "efficientnet_lite0"
    cached = [("resnet18 — pretrained weights: cached", "resnet18"), choices[1]]
    assert sources.default_backbone(cached) == TrainConfig().backbone
    listed = sources.backbone_choices()
    assert [name for _, name in listed] == [
        "resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", text.HUB_BACKBONE_EXAMPLE]
    assert all("bundled" in label for label, name in listed[1:4])
    assert "from the Hub (needs internet)" in listed[-1][0]
    hub_only = [("resnet18 — pretrained weights: needs download", "resnet18"), listed[-1]]
    assert sources.default_backbone(hub_only) == TrainConfig().backbone  # a Hub model is never picked for you


def test_train_tab_offers_the_devices_defaults_and_says_why(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    epochs, img_size, note = sources.training_defaults()
    assert (epochs, img_size) == (4, 128) and "Defaults on the CPU: 128 px (the last epoch and evaluation at 160 px) and 4 epochs, because" in note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolving the device starts no GPU
    epochs, img_size, note = sources.training_defaults()
    assert (epochs, img_size) == (10, 224) and "CUDA GPU: 224 px and 10 epochs" in note
    assert note.startswith("<small>")
    epochs, img_size, note = sources.training_defaults(continuing=True)
    assert (epochs, img_size) == (3, 224) and "3 epochs (a run that continues from a model)" in note


def test_the_options_panel_has_the_defaults_line(served):
    demo = served[-1]
    notes = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "defaults-note"]
    assert len(notes) == 1 and notes[0].value == text.defaults_text("cpu")  # until page load sets the device's


def test_widget_values_become_a_typed_config():
    from pokedemo.options import config_from_values

    widgets = dict(zip(OPTION_NAMES, ("resnet18", True, "linear", 3.0, "0.01", 16.0, "64", 7.0)))
    config = config_from_values(widgets)
    assert (config.epochs, config.lr, config.batch_size, config.img_size, config.seed) == (3, 0.01, 16, 64, 7)
    assert config.strategy == "linear" and config.pretrained is True
    assert config == TrainConfig(backbone="resnet18", strategy="linear", epochs=3, lr=0.01, batch_size=16,
                                 img_size=64, seed=7)
    with pytest.raises(TypeError, match="colour"):
        config_from_values({**widgets, "colour": "red"})


def test_checkpoints_outside_the_root_are_refused(tmp_path, monkeypatch):
    from pokedemo.checkpoint import CheckpointError

    root = tmp_path / "runs"
    (root / "one").mkdir(parents=True)
    assert sources.run_of_this_app(str(root / "one"), root).resolve() == (root / "one").resolve()
    assert sources.run_of_this_app("one", root).resolve() == (root / "one").resolve()
    monkeypatch.chdir(tmp_path)
    assert sources.run_of_this_app("runs/one", "runs").resolve() == (root / "one").resolve()  # from the working dir
    for outside in ("/etc", str(root / ".." / "x"), "../x", "alice/model"):  # a Hub id is no run of this app
        with pytest.raises(CheckpointError):
            sources.run_of_this_app(outside, root)


def test_a_second_job_from_the_same_tab_is_refused_and_others_are_told_to_wait(tmp_path):
    from types import SimpleNamespace

    import gradio as gr

    app = handlers.DemoApp(tmp_path, "")
    mine, theirs = SimpleNamespace(session_hash="mine"), SimpleNamespace(session_hash="theirs")
    assert "Starting" in app.reserve(mine)
    with pytest.raises(gr.Error, match="already running or waiting"):
        app.reserve(mine)
    with app.jobs.running_job("mine"):
        assert "another training is running" in app.reserve(theirs)


def test_job_registry_one_job_per_session_and_stop_flags():
    jobs = handlers.JobRegistry()
    assert jobs.reserve("s1") and not jobs.reserve("s1")
    assert jobs.request_stop("s1") and not jobs.request_stop("s2")
    with jobs.running_job("s1") as flag:
        assert flag.is_set()  # stop pressed while queued: the job sees it when it starts
        assert jobs.busy_elsewhere("s2") and not jobs.busy_elsewhere("s1")
    assert jobs.running is None and jobs.reserve("s1")
    with jobs.running_job("api") as flag:  # API callers skip reserve
        assert not flag.is_set()


# ----------------------------------------------------------------------------------------- zip uploads


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_unwraps_one_top_folder_and_ignores_macos_junk(tmp_path):
    archive = _zip(tmp_path / "d.zip", {"pokemon/a/1.png": b"x", "pokemon/b/1.png": b"y",
                                        "__MACOSX/pokemon/a/._1.png": b"z", "pokemon/a/._2.png": b"z"})
    root = extract_dataset_zip(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "pokemon"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == ["a/1.png", "b/1.png"]
    assert not (tmp_path / "out" / "__MACOSX").exists()


def test_zip_of_class_folders_at_top_level_is_not_unwrapped(tmp_path):
    archive = _zip(tmp_path / "d.zip", {"a/1.png": b"x", "b/1.png": b"y"})
    assert extract_dataset_zip(archive, tmp_path / "out") == tmp_path / "out"
    single = _zip(tmp_path / "s.zip", {"only/1.png": b"x"})
    assert dataset_root(extract_dataset_zip(single, tmp_path / "out2")) == tmp_path / "out2"


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/abs/evil.png", "C:/evil.png",
                                  "..\\evil.png"])
def test_zip_paths_outside_the_target_are_refused(tmp_path, name):
    archive = _zip(tmp_path / "d.zip", {"a/1.png": b"x", name: b"evil"})
    with pytest.raises(UploadError, match="unsafe path"):
        extract_dataset_zip(archive, tmp_path / "deep" / "out")
    assert not list(tmp_path.rglob("evil.png"))


def test_zip_symlinks_are_skipped(tmp_path):
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/1.png", b"x")
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    root = extract_dataset_zip(archive, tmp_path / "out")
    assert not (root / "a" / "link.png").exists() and (root / "a" / "1.png").read_bytes() == b"x"


def test_zip_limits_on_files_size_and_ratio(tmp_path):
    archive = _zip(tmp_path / "d.zip", {f"a/{i}.png": b"x" for i in range(5)})
    with pytest.raises(UploadError, match="5 files"):
        extract_dataset_zip(archive, tmp_path / "o1", ZipLimits(max_files=4))
    with pytest.raises(UploadError, match="MB"):
        extract_dataset_zip(_zip(tmp_path / "big.zip", {"a/1.png": b"\0" * 3_000_000}), tmp_path / "o2",
                            ZipLimits(max_total_bytes=2_000_000))
    with pytest.raises(UploadError, match="zip bomb"):
        extract_dataset_zip(_zip(tmp_path / "bomb.zip", {"a/1.png": b"\0" * 3_000_000}), tmp_path / "o3",
                            ZipLimits(ratio_floor_bytes=1_000_000))


def test_zip_bytes_beyond_the_declared_size_stop_extraction(tmp_path):
    import io

    with pytest.raises(UploadError, match="more data"):
        _copy_limited(io.BytesIO(b"\0" * 5000), tmp_path / "f", budget=4000)
    assert _copy_limited(io.BytesIO(b"\0" * 5000), tmp_path / "g", budget=5000) == 5000


def test_not_a_zip_and_empty_zip_are_clear_errors(tmp_path):
    text = tmp_path / "x.zip"
    text.write_text("hello")
    with pytest.raises(UploadError, match="not a readable .zip"):
        extract_dataset_zip(text, tmp_path / "o1")
    with pytest.raises(UploadError, match="no files"):
        extract_dataset_zip(_zip(tmp_path / "e.zip", {}), tmp_path / "o2")


# --------------------------------------------------------------------------------------------- app.py


def test_app_listens_where_asked_locally_and_leaves_it_to_gradio_on_spaces(monkeypatch):
    import app

    from pokedemo.app.public import on_spaces

    for name in ("SYSTEM", "SPACE_ID", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "POKEDEMO_PUBLIC"):
        monkeypatch.delenv(name, raising=False)
    local = app.server_settings(app.parse_args([]))
    assert local == {"server_name": "127.0.0.1", "server_port": 7860, "share": False}
    assert app.public_for(local) is False  # python app.py: a local tool, public mode off
    args = app.parse_args(["--host", "0.0.0.0", "--port", "8080", "--share"])
    assert app.server_settings(args) == {"server_name": "0.0.0.0", "server_port": 8080, "share": True}
    assert app.public_for(app.server_settings(args)) is True
    assert app.public_for(app.server_settings(app.parse_args(["--share"]))) is True
    monkeypatch.setenv("SYSTEM", "spaces")
    assert app.server_settings(args) == {} and app.public_for({}) is True
    monkeypatch.delenv("SYSTEM")
    monkeypatch.setenv("SPACE_ID", "someone/pokedemo")
    assert on_spaces() and app.public_for({}) is True
    monkeypatch.setenv("POKEDEMO_PUBLIC", "0")
    assert app.public_for({}) is False


def test_backbone_dropdown_keeps_the_choice_or_picks_a_usable_default(monkeypatch):
    from pokedemo import models

    for usable in models.BACKBONE_NAMES:  # only one backbone has its weights here: that one is offered first
        monkeypatch.setattr(models, "weights_status", lambda name: "bundled" if name == usable else "needs download")
        assert handlers.backbone_dropdown(None).value == usable
        assert handlers.backbone_dropdown("resnet18").value == "resnet18"  # the user's choice is kept
        assert handlers.backbone_dropdown("timm/convnext_atto.d2_in1k").value == "timm/convnext_atto.d2_in1k"
    monkeypatch.setattr(models, "weights_status", lambda name: "cached")
    assert handlers.backbone_dropdown(None).value == TrainConfig().backbone


def test_auto_push_after_training_pushes_only_a_finished_run(served, hub_env):
    _, data, root, _, _ = served
    token = hub_env.add_user("carol")
    app = handlers.DemoApp(root, str(data))
    app.auto_push("carol/auto", False, token, True)  # nothing trained yet: nothing to push
    assert "carol/auto" not in hub_env.repos
    list(app.train(str(data), **TINY_KWARGS))
    app.auto_push("carol/auto", False, token, False)  # box not ticked: the finished run is not pushed
    assert "carol/auto" not in hub_env.repos and "anonymous" not in app.finished_runs
    list(app.train(str(data), **TINY_KWARGS))
    message = app.auto_push("carol/auto", False, token, True)
    assert message.startswith("✅") and "carol/auto" in message and token not in message
    assert len(hub_env.file("carol/auto", "model.safetensors")) > 1000
    list(app.train(str(data), **TINY_KWARGS))
    assert "repo id" in app.auto_push("", False, token, True)


def test_many_classes_show_top_confusions_instead_of_a_matrix():
    from pokedemo.metrics import classification_report

    classes = [f"species{k:02d}" for k in range(30)]
    targets = list(range(30)) * 2
    predictions = list(range(30)) + [1] + list(range(1, 30))  # species00 → species01 once
    report = {**classification_report(targets, predictions, classes), "items": [
        {"path": "x.png", "true": "species00", "pred": "species01", "prob": 0.9}]}
    assert views.confusion_picture(report) is None
    assert "<td>species00</td><td>species01</td>" in text.confusion_html(report) and "<th>species02" not in \
        text.confusion_html(report)
    listing = text.top_confusions_markdown(report)
    assert "| species00 | species01 | 1 | 50.0% |" in listing and "30 classes" in listing
    assert listing in text.errors_caption(report)
    small = {"classes": ["a", "b"], "confusion": [[1, 1], [0, 2]]}
    assert views.confusion_picture(small) is not None and "<table" in text.confusion_html(small)
