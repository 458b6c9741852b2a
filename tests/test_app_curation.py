"""Acting on what the app shows, through its API (gradio_client) and its handlers: move, set aside, add pictures
or a class, undo (also after a restart), working copies of read-only data, two sessions on one copy, continuing
training from the selected model, and batch prediction with bad files."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("gradio_client", reason="the app's tests need gradio (engine and CLI tests run without it)")

import gradio as gr  # noqa: E402
from conftest import app_client, launch_local, make_tiny_dataset, tiny_run  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from pokedemo.app import handlers, layout, text  # noqa: E402
from pokedemo.config import bundled_data_dir  # noqa: E402
from pokedemo.curation import SET_ASIDE_DIR, STATE_DIR  # noqa: E402

pytestmark = pytest.mark.app


@pytest.fixture(scope="module")
def app_parts(tmp_path_factory):
    """(url, demo, data folder with one label conflict, checkpoint root, a finished run, workspace)."""
    base = tmp_path_factory.mktemp("curation-app")
    data = make_tiny_dataset(base / "data")
    root, workspace = base / "checkpoints", base / "workspace"
    run = tiny_run(data, root)
    shutil.copyfile(data / "b" / "003.png", data / "c" / "stray.png")  # the same picture in two classes
    demo = layout.build_demo(checkpoint_root=root, data_dir=str(data), default_model=False, workspace_root=workspace)
    url = launch_local(demo, **layout.launch_options())
    try:
        yield url, demo, data, root, run, workspace
    finally:
        demo.close()


def client_for(url: str, tmp_path: Path) -> Client:
    return app_client(url, tmp_path)


def files_of(root: Path) -> dict[str, str]:
    """rel path → sha256 of every picture under root, set-aside ones included."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


# ---------------------------------------------------------------------------------------- through the API


def test_set_aside_the_conflict_then_undo_with_the_summary_and_doctor_refreshed(app_parts, tmp_path):
    url, _, data, *_ = app_parts
    client = client_for(url, tmp_path)
    before = files_of(data)
    report, _ = client.predict(str(data), api_name="/doctor")
    assert "label conflicts: 1" in report
    message, folder = client.predict("c/stray.png", str(data), api_name="/set_aside")
    assert message.startswith("✅ Set aside `c/stray.png`") and folder == str(data.resolve())
    assert (data / STATE_DIR / SET_ASIDE_DIR / "c" / "stray.png").is_file()
    assert "label conflicts: 0" in client.predict(str(data), api_name="/doctor")[0]
    assert "| c | 8 |" in client.predict(str(data), 0, 32, api_name="/scan")
    message, folder = client.predict(str(data), api_name="/undo")
    assert message.startswith("↩️ Undone") and "is back at `c/stray.png`" in message
    assert files_of(data) == before
    assert client.predict(str(data), api_name="/undo")[0] == text.NOTHING_TO_UNDO


def test_move_to_another_class_never_overwrites_and_undo_puts_it_back(app_parts, tmp_path):
    url, _, data, *_ = app_parts
    client = client_for(url, tmp_path)
    shutil.copyfile(data / "a" / "001.png", data / "a" / "twin.png")
    (data / "b" / "twin.png").write_bytes((data / "b" / "000.png").read_bytes())  # the name is taken in b
    message, _ = client.predict("a/twin.png", "b", str(data), api_name="/move_picture")
    assert "now `b/twin-1.png`" in message
    assert (data / "b" / "twin.png").read_bytes() == (data / "b" / "000.png").read_bytes(), "never overwritten"
    assert client.predict("a/twin.png", "b", str(data), api_name="/move_picture")[0].startswith("⚠️")
    assert client.predict("b/twin-1.png", None, str(data), api_name="/move_picture")[0] == text.NO_TARGET_CLASS
    assert client.predict(None, str(data), api_name="/set_aside")[0] == text.NO_PICTURE
    client.predict(str(data), api_name="/undo")
    assert (data / "a" / "twin.png").is_file() and not (data / "b" / "twin-1.png").exists()
    (data / "a" / "twin.png").unlink()
    (data / "b" / "twin.png").unlink()


def test_add_a_class_from_uploads_and_a_webcam_capture_then_undo(app_parts, tmp_path, edge_cases_dir):
    url, _, data, *_ = app_parts
    client = client_for(url, tmp_path)
    pictures = [make_tiny_dataset(tmp_path / "new", classes=("d",), per_class=3) / "d" / f"00{i}.png"
                for i in range(3)]
    message, folder, files, webcam = client.predict(
        "d", [handle_file(str(p)) for p in pictures[:2]], handle_file(str(pictures[2])), str(data),
        api_name="/add_pictures")
    assert message.startswith("✅ Added 3 picture(s) to class **d**") and files is None and webcam is None
    assert sorted(p.name for p in (data / "d").iterdir()) == ["000.png", "001.png", "002.png"]
    assert "| d | 3 |" in client.predict(str(data), 0, 32, api_name="/scan")
    for _ in range(3):
        client.predict(str(data), api_name="/undo")
    assert not list((data / "d").iterdir()), "undoing an addition sets the picture aside"
    (data / "d").rmdir()
    for name in ("../evil", ".hidden", "a/b"):
        message, *_ = client.predict(name, [handle_file(str(pictures[0]))], None, str(data),
                                     api_name="/add_pictures")
        assert message.startswith("⚠️") and "class name" in message
    message, *_ = client.predict("a", [handle_file(str(edge_cases_dir / "truncated.jpg"))], None, str(data),
                                 api_name="/add_pictures")
    assert message.startswith("⚠️") and "truncated.jpg" in message
    assert client.predict("a", [], None, str(data), api_name="/add_pictures")[0] == text.ADD_NOTHING
    assert not (tmp_path.parent / "evil").exists() and sorted(p.name for p in data.iterdir()
                                                               if not p.name.startswith(".")) == ["a", "b", "c"]


def test_two_sessions_editing_one_dataset_see_each_others_changes(app_parts, tmp_path):
    url, _, data, *_ = app_parts
    first, second = client_for(url, tmp_path / "1"), client_for(url, tmp_path / "2")
    first.predict("a/000.png", str(data), api_name="/set_aside")
    assert "| a | 7 |" in second.predict(str(data), 0, 32, api_name="/scan"), "the second session sees it"
    second.predict("b/000.png", "a", str(data), api_name="/move_picture")
    assert "| a | 8 |" in first.predict(str(data), 0, 32, api_name="/scan")
    assert "is back at `b/000.png`" in first.predict(str(data), api_name="/undo")[0], "undo: the newest change"
    assert "is back at `a/000.png`" in second.predict(str(data), api_name="/undo")[0]
    assert "| a | 8 |" in second.predict(str(data), 0, 32, api_name="/scan")


def test_batch_prediction_of_files_and_a_zip_with_bad_files(app_parts, tmp_path, edge_cases_dir):
    url, _, data, root, run, _ = app_parts
    client = client_for(url, tmp_path)
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(data / "b" / "001.png", "pics/b1.png")
        zf.write(edge_cases_dir / "empty.jpg", "pics/empty.jpg")
    broken_zip = tmp_path / "broken.zip"
    broken_zip.write_text("not a zip")
    uploads = [data / "a" / "000.png", edge_cases_dir / "not-an-image.jpg", archive, broken_zip]
    caption, table, csv_file = client.predict([handle_file(str(p)) for p in uploads], str(run),
                                              api_name="/predict_batch")
    rows = {row[0]: row for row in table["data"]}
    assert list(rows) == ["000.png", "not-an-image.jpg", "more.zip/pics/b1.png", "more.zip/pics/empty.jpg",
                          "broken.zip"]
    assert rows["000.png"][1] in ("a", "b", "c") and rows["000.png"][2].endswith("%") and not rows["000.png"][3]
    assert all(rows[name][3] and not rows[name][1] for name in ("not-an-image.jpg", "more.zip/pics/empty.jpg",
                                                                 "broken.zip"))
    assert "5 picture(s)" in caption and "3 could not be used" in caption
    with open(csv_file, newline="", encoding="utf-8") as f:
        saved = list(csv.DictReader(f))
    assert [r["file"] for r in saved] == list(rows) and saved[0]["label"] == rows["000.png"][1]
    assert client.predict([], str(run), api_name="/predict_batch")[0] == text.BATCH_EMPTY


def test_continue_training_from_the_selected_model(app_parts, tmp_path):
    url, _, data, root, run, _ = app_parts
    client = client_for(url, tmp_path)
    before = {p.name for p in root.iterdir()}
    options = ["resnet18", False, "finetune", 1, 0.002, 8, 32, 0]
    outputs = client.predict(str(data), *options, True, str(run), api_name="/train")
    assert "Test accuracy" in outputs[4]
    (new,) = {p.name for p in root.iterdir()} - before
    saved = json.loads((root / new / "config.json").read_text())
    assert saved["train_config"]["init_from"] == str(run) and saved["init_from"]["kept_classes"] == ["a", "b", "c"]
    # Only this app's models: any other folder is refused with a message, and no run is made.
    outputs = client.predict(str(data), *options, True, str(tmp_path), api_name="/train")
    assert "cannot continue from the selected model" in outputs[4]
    assert {p.name for p in root.iterdir()} - before == {new}


# ------------------------------------------------------------------------------------------ the handlers


def test_the_first_edit_of_read_only_data_makes_a_working_copy_and_undo_works_after_a_restart(tmp_path):
    bundled = bundled_data_dir()
    original = files_of(bundled)
    app = handlers.DemoApp(tmp_path / "runs", str(bundled), workspace_root=tmp_path / "workspace")
    message, folder = app.set_aside_picture(None, "pikachu/00000004.jpg", str(bundled))
    copy = tmp_path / "workspace" / "pokemon"
    assert folder == str(copy) and "working copy was made" in message and str(copy) in message
    assert not (copy / "pikachu" / "00000004.jpg").exists() and files_of(bundled) == original
    message, folder = app.move_picture(None, "squirtle/00000000.jpg", "pikachu", str(bundled))
    assert folder == str(copy) and "Changed in the working copy" in message, "the copy is made once"

    restarted = handlers.DemoApp(tmp_path / "runs", str(bundled), workspace_root=tmp_path / "workspace")
    assert "is back at `squirtle/00000000.jpg`" in restarted.undo(str(bundled))[0]
    assert "is back at `pikachu/00000004.jpg`" in restarted.undo(str(copy))[0]
    assert files_of(copy) == original and files_of(bundled) == original
    assert restarted.undo(str(copy))[0] == text.NOTHING_TO_UNDO


def test_clicking_a_gallery_tile_fills_the_pickers(app_parts):
    _, demo, data, *_ = app_parts
    app = demo.pokedemo
    *_, fixable = app.doctor(str(data))
    picture, to_class, hint = app.pick_picture(fixable, select(0))
    assert picture.choices == [("b/003.png", "b/003.png"), ("c/stray.png", "c/stray.png")]
    assert picture.value == "b/003.png" and to_class.value is None and hint == text.FIX_HINT
    assert [c[0] for c in to_class.choices] == ["a", "b", "c"]
    errors = {"root": str(data), "tiles": [{"paths": ["a/001.png"], "suggest": "c"}]}
    picture, to_class, _ = app.pick_picture(errors, select(0))
    assert picture.value == "a/001.png" and to_class.value == "c", "the predicted class is suggested"
    assert app.pick_picture(errors, select(5))[:2] == (gr.skip(), gr.skip())
