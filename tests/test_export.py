"""ONNX export: the graph gives the Predictor's probabilities, the metadata says how to feed it, the standalone
script reads pictures as pokedemo does, and a failed export leaves nothing behind."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pokedemo.checkpoint import CheckpointError, read_config
from pokedemo.export import (
    INPUT_NAME, MAX_PROBABILITY_DIFF, ONNX_FILE, README_FILE, RECORD_FILE, SCRIPT_FILE, ExportError,
    export_checkpoint, model_metadata, read_metadata,
)
from pokedemo.predict import Predictor

from conftest import EDGE_CASES, app_client

pytestmark = pytest.mark.xdist_group("tiny-onnx-export")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported once (parity on its recorded test split)."""
    return export_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("export") / "tiny-onnx")


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    import torch

    return Predictor.load(tiny_checkpoint, device=torch.device("cpu"))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_parity_on_the_recorded_test_split(exported, tiny_checkpoint):
    recorded_test = sum(1 for entry in read_config(tiny_checkpoint)["split"] if entry["split"] == "test")
    parity = exported.parity
    assert parity.skipped is None and parity.source == "recorded test split"
    assert parity.pictures == recorded_test > 0
    assert parity.max_abs_diff <= MAX_PROBABILITY_DIFF and parity.top1_agree == parity.pictures
    assert exported.latency.pictures == recorded_test
    assert exported.latency.onnxruntime_p50_ms > 0 and exported.latency.torch_p50_ms > 0
    assert sorted(p.name for p in exported.out_dir.iterdir()) == sorted(
        [ONNX_FILE, README_FILE, RECORD_FILE, SCRIPT_FILE])
    assert exported.size_bytes == (exported.out_dir / ONNX_FILE).stat().st_size
    assert leftovers(exported.out_dir.parent) == []


def test_graph_takes_uint8_of_any_batch_and_gives_the_predictors_probabilities(exported, predictor, tiny_data_dir):
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == INPUT_NAME and graph_input.type == "tensor(uint8)"
    assert graph_input.shape[1:] == [3, predictor.image_size, predictor.image_size]
    pictures = sorted(tiny_data_dir.rglob("*.png"))
    for batch in (pictures[:1], pictures[:5]):
        images = np.concatenate([predictor.image_tensor(p).numpy() for p in batch])
        found = session.run(None, {INPUT_NAME: images})[0]
        expected = predictor.probabilities(torch.from_numpy(images)).numpy()
        assert found.shape == (len(batch), len(predictor.classes))
        np.testing.assert_allclose(found, expected, atol=MAX_PROBABILITY_DIFF, rtol=0)
        np.testing.assert_allclose(found.sum(axis=1), 1.0, atol=1e-5)


def test_metadata_round_trip(exported, predictor):
    import onnxruntime as ort

    in_file = read_metadata(exported.onnx_path)
    assert in_file == exported.metadata == model_metadata(predictor)
    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == in_file
    config = predictor.checkpoint.config
    assert json.loads(in_file["class_names"]) == predictor.classes
    assert int(in_file["image_size"]) == predictor.image_size
    assert json.loads(in_file["mean"]) == config["mean"] and json.loads(in_file["std"]) == config["std"]
    assert float(in_file["temperature"]) == config["metrics"]["calibration"]["temperature"]
    assert "ImageOps.fit" in in_file["resize"]
    record = json.loads((exported.out_dir / RECORD_FILE).read_text())
    assert record["metadata"] == in_file and record["parity"]["pictures"] == exported.parity.pictures


def run_script(export_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # -I: isolated from this checkout (no pokedemo on the path), as on a user's machine
    return subprocess.run([sys.executable, "-I", str(export_dir / SCRIPT_FILE), *args], cwd=export_dir,
                          capture_output=True, text=True, timeout=300)


def test_script_needs_only_pillow_numpy_onnxruntime(exported):
    tree = ast.parse((exported.out_dir / SCRIPT_FILE).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "onnxruntime", "PIL"}


def test_script_gives_the_predictors_answer(exported, predictor, tiny_data_dir, tmp_path):
    # A tiny-dataset picture plus pictures that exercise the loader: EXIF turn, 16-bit grey, animation, CMYK,
    # and a big palette image (the cheap reduction).
    pictures = [sorted(tiny_data_dir.rglob("*.png"))[0]] + [
        EDGE_CASES / name for name in ("exif-rotated.jpg", "16bit-gray.png", "animated.gif", "cmyk.jpg",
                                       "huge-7000x5000-palette.png")]
    done = run_script(exported.out_dir, "--json", *map(str, pictures))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["picture"] for r in results] == list(map(str, pictures))
    for result, picture in zip(results, pictures):
        expected = predictor.predict_dict(picture)
        found = result["probabilities"]
        assert max(found, key=found.get) == max(expected, key=expected.get), picture
        assert max(abs(found[c] - expected[c]) for c in expected) <= MAX_PROBABILITY_DIFF, picture


def test_script_says_one_line_for_a_truncated_file(exported, tiny_data_dir, tmp_path):
    good = sorted(tiny_data_dir.rglob("*.png"))[0]
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    done = run_script(exported.out_dir, str(truncated), str(good))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"error: cannot read {truncated}: ")
    assert done.stdout.startswith(f"{good}: ")  # the other picture is still classified


def test_a_folder_that_is_not_a_checkpoint_writes_nothing(tmp_path):
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    with pytest.raises(CheckpointError) as caught:
        export_checkpoint(folder, out)
    assert "\n" not in str(caught.value)
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_unwritable_target_writes_nothing(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError) as caught:
        export_checkpoint(tiny_checkpoint, blocker / "out")
    assert "cannot write" in str(caught.value) and "\n" not in str(caught.value)
    assert blocker.read_text() == "not a folder" and leftovers(tmp_path) == []


def test_a_failed_parity_check_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    import pokedemo.export as export

    real = export.onnx_outputs

    def reversed_classes(session, pictures):
        probabilities, scores, known = real(session, pictures)
        return probabilities[:, ::-1], scores, known

    monkeypatch.setattr(export, "onnx_outputs", reversed_classes)
    out = tmp_path / "out"
    with pytest.raises(ExportError) as caught:
        export_checkpoint(tiny_checkpoint, out)
    assert str(caught.value).startswith("ONNX parity check failed") and "\n" not in str(caught.value)
    assert not out.exists() and leftovers(tmp_path) == []


def test_without_onnxruntime_the_file_is_written_and_the_check_skipped(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    result = export_checkpoint(tiny_checkpoint, tmp_path / "out")
    assert "onnxruntime is not installed" in result.parity.skipped and result.latency is None
    assert (tmp_path / "out" / ONNX_FILE).stat().st_size > 0
    assert "parity check skipped" in result.summary_lines()[1]
    assert "was not checked" in (tmp_path / "out" / README_FILE).read_text()


def test_a_folder_of_pictures_checks_parity_and_replaces_an_earlier_export(exported, tiny_checkpoint,
                                                                          tiny_data_dir, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(exported.out_dir, out)
    data = tmp_path / "pictures"
    shutil.copytree(tiny_data_dir, data)
    (data / "broken.png").write_bytes(b"not a png")
    result = export_checkpoint(tiny_checkpoint, out, data=data)
    assert result.parity.source == str(data) and result.parity.passed
    assert result.parity.pictures == len(list(tiny_data_dir.rglob("*.png"))) and result.parity.unreadable == 1
    assert json.loads((out / RECORD_FILE).read_text())["parity"]["source"] == str(data)
    assert leftovers(tmp_path) == []


def test_a_folder_holding_other_files_is_refused(tiny_checkpoint, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="already holds other files"):
        export_checkpoint(tiny_checkpoint, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_download_is_exported_once_per_weights_file(tiny_checkpoint, tmp_path):
    import zipfile

    from pokedemo.export import model_download

    onnx_file, archive, record = model_download(tiny_checkpoint, tmp_path / "cache")
    made = onnx_file.stat().st_mtime_ns
    assert model_download(tiny_checkpoint, tmp_path / "cache") == (onnx_file, archive, record)
    assert onnx_file.stat().st_mtime_ns == made  # not exported again
    assert onnx_file.name == ONNX_FILE and record["parity"]["top1_agree"] == record["parity"]["pictures"]
    run = tiny_checkpoint.name
    assert archive.name == f"{run}.zip"
    assert {f"{run}/model.safetensors", f"{run}/config.json", f"{run}/onnx/{ONNX_FILE}",
            f"{run}/onnx/{SCRIPT_FILE}", f"{run}/onnx/{README_FILE}"} <= set(zipfile.ZipFile(archive).namelist())
    assert leftovers(archive.parent) == []


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pokedemo", *args], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])


def test_cli_export_of_a_folder_that_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    out = tmp_path / "out"
    done = run_cli("export", "--checkpoint", str(folder), "--out", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert not out.exists() and leftovers(tmp_path) == []


def test_cli_export_into_an_unwritable_folder(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_cli("export", "--checkpoint", str(tiny_checkpoint), "--out", str(blocker / "out"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: cannot write into") and len(done.stderr.splitlines()) == 1
    assert blocker.read_text() == "not a folder" and leftovers(tmp_path) == []


def test_cli_export_prints_size_parity_and_latency(tiny_checkpoint, tmp_path, capsys):
    """The export itself runs through the CLI's main in this process; the two tests above start the command as
    a process of its own."""
    from pokedemo.cli import main

    code = main(["export", "--checkpoint", str(tiny_checkpoint), "--format", "onnx", "--out", str(tmp_path / "x")])
    done = capsys.readouterr()
    assert code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0].startswith(str(tmp_path / "x" / ONNX_FILE)) and "MB" in lines[0]
    assert "top-1 agreement" in lines[1] and "onnxruntime" in lines[2] and "torch Predictor" in lines[2]


@pytest.mark.app
def test_the_app_downloads_the_selected_model_as_onnx_and_a_zip(served, tmp_path):
    import zipfile

    import onnxruntime as ort
    import torch

    from pokedemo.app import text

    url, data, _, checkpoint, _ = served
    client = app_client(url, tmp_path)
    files, message = client.predict(str(checkpoint), api_name="/download_model")
    assert message.startswith("✅") and "test pictures" in message
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    assert sorted(by_suffix) == [".onnx", ".zip"]
    session = ort.InferenceSession(str(by_suffix[".onnx"]), providers=["CPUExecutionProvider"])
    picture = sorted(data.rglob("*.png"))[0]
    predictor = Predictor.load(checkpoint, device=torch.device("cpu"))  # the export's parity is the CPU's
    found = session.run(None, {INPUT_NAME: predictor.image_tensor(picture).numpy()})[0][0]
    expected = predictor.predict_dict(picture)
    assert np.abs(found - np.array([expected[c] for c in predictor.classes])).max() <= MAX_PROBABILITY_DIFF
    names = zipfile.ZipFile(by_suffix[".zip"]).namelist()
    assert f"{checkpoint.name}/model.safetensors" in names and f"{checkpoint.name}/onnx/{SCRIPT_FILE}" in names
    files, message = client.predict(None, api_name="/download_model")
    assert files is None and message == text.DOWNLOAD_NO_CHECKPOINT


def test_the_graph_says_none_of_these_as_pokedemo_does(exported, tiny_checkpoint, tmp_path):
    """The open-set score and the known/unknown answer come out of the graph, equal to the Predictor's, and
    predict_onnx.py words an unknown picture as pokedemo does."""
    import onnx
    import onnxruntime as ort

    from pokedemo.export import KNOWN_NAME, SCORE_NAME, onnx_outputs

    result = exported  # read only: the strict copy below is written beside the test's own files
    assert result.parity.max_score_diff is not None and result.parity.max_score_diff <= 1e-4
    rule = json.loads(read_metadata(result.onnx_path)["open_set"])
    predictor = Predictor.load(tiny_checkpoint, torch.device("cpu"))
    assert rule["score"] == predictor.open_set.score and len(rule["thresholds"]) == len(predictor.classes)
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()][1:] == [SCORE_NAME, KNOWN_NAME]
    noise = np.random.default_rng(0).integers(0, 256, (1, 3, predictor.image_size, predictor.image_size),
                                                dtype=np.uint8)
    _, scores, known = onnx_outputs(session, noise)
    expected = predictor.classify_tensors(torch.from_numpy(noise))[0]
    assert abs(float(scores[0]) - expected.score) <= 1e-4 and bool(known[0]) == expected.known
    picture = tmp_path / "noise.png"
    Image.fromarray(noise[0].transpose(1, 2, 0)).save(picture)
    strict = tmp_path / "strict.onnx"  # every picture unknown: a threshold above any score
    model = onnx.load(str(result.onnx_path))
    thresholds = predictor.open_set.thresholds.numpy().astype(np.float32)
    holding = [init for init in model.graph.initializer  # the exporter may rename the buffer: found by its values
               if np.array_equal(onnx.numpy_helper.to_array(init), thresholds)]
    assert len(holding) == 1
    holding[0].CopyFrom(onnx.numpy_helper.from_array(np.full(len(thresholds), 9.0, np.float32), holding[0].name))
    onnx.save(model, str(strict))
    script = result.onnx_path.parent / "predict_onnx.py"
    out = subprocess.run([sys.executable, str(script), "--model", str(strict), str(picture)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "none of these (closest:" in out.stdout, out.stderr
