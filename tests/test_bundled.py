"""What a fresh clone ships with: the bundled dataset, the starter model and the defaults that use them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pokedemo import checkpoint as ckpt
from pokedemo import config as cfg

from conftest import train_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_cli(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pokedemo", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300, check=False)


# ------------------------------------------------------------------------------------------ bundled dataset


def test_bundled_dataset_is_found_from_the_package_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POKEDEMO_DATA", raising=False)
    assert cfg.bundled_data_dir() == REPO_ROOT / "data" / "pokemon" and cfg.bundled_data_dir().is_dir()
    assert cfg.default_data_dir() == str(REPO_ROOT / "data" / "pokemon")
    monkeypatch.setenv("POKEDEMO_DATA", "/somewhere/else")
    assert cfg.default_data_dir() == "/somewhere/else"


def test_bundled_dataset_is_small_and_keeps_its_duplicates():
    root = cfg.bundled_data_dir()
    files = [p for p in root.rglob("*") if p.is_file()]
    images = [p for p in files if p.suffix == ".jpg"]
    assert sum(p.stat().st_size for p in files) <= 15 * MB
    assert max(p.stat().st_size for p in files) < 10 * MB  # the Hub takes files over 10 MB only through LFS
    card = (root / "README.md").read_text(encoding="utf-8")
    counts = {d.name: sum(1 for _ in d.glob("*.jpg")) for d in root.iterdir() if d.is_dir()}
    assert all(f"| {name} | {n} |" in card for name, n in counts.items())
    assert "python scripts/bundle_dataset.py" in card
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in images]
    assert len(set(digests)) < len(digests)  # exact copies stayed byte-identical


def test_doctor_without_data_uses_the_bundled_set(tmp_path):
    proc = _run_cli("doctor", "--json", cwd=tmp_path, env={"POKEDEMO_DATA": ""})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["root"]) == cfg.bundled_data_dir()
    assert len(report["classes"]) == 5 and report["n_images"] == sum(report["classes"].values())
    assert len(report["exact_duplicate_groups"]) >= 163 and report["conflict_groups"]


def test_help_says_what_the_defaults_are():
    for command in ("train", "compare", "doctor"):
        text = " ".join(_run_cli(command, "--help").stdout.split())
        assert "default: $POKEDEMO_DATA, else the bundled data/pokemon" in text, command
    assert "bundled starter model" in " ".join(_run_cli("predict", "--help").stdout.split())


def _odd_source(root: Path) -> Path:
    """A small source folder with what the bundler must handle: RGBA, palette, 16-bit, EXIF-rotated, an exact
    copy across classes, and two files whose names differ only by extension."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8))
    picture.save(root / "a" / "photo.jpg", quality=95)
    (root / "b" / "copy.jpg").write_bytes((root / "a" / "photo.jpg").read_bytes())
    rgba = Image.new("RGBA", (100, 60), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 50, 60))
    rgba.save(root / "a" / "photo.png")  # same stem as photo.jpg
    picture.convert("P").save(root / "b" / "palette.gif")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(root / "b" / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (80, 40), (0, 200, 0)).save(root / "b" / "rotated.jpg", exif=exif)
    return root


def test_bundle_script_is_deterministic_and_keeps_copies_identical(tmp_path):
    bundler = _load_script("bundle_dataset")
    source = _odd_source(tmp_path / "src")
    bundler.main([str(source), str(tmp_path / "one")])
    bundler.main([str(source), str(tmp_path / "two")])
    one = {p.relative_to(tmp_path / "one").as_posix(): p.read_bytes() for p in (tmp_path / "one").rglob("*.jpg")}
    two = {p.relative_to(tmp_path / "two").as_posix(): p.read_bytes() for p in (tmp_path / "two").rglob("*.jpg")}
    assert one == two
    assert set(one) == {"a/photo.jpg", "a/photo-png.jpg", "b/copy.jpg", "b/palette.jpg", "b/deep.jpg",
                        "b/rotated.jpg"}
    assert one["a/photo.jpg"] == one["b/copy.jpg"]
    with Image.open(tmp_path / "one" / "a" / "photo.jpg") as im:
        assert im.format == "JPEG" and max(im.size) == bundler.MAX_SIDE and "exif" not in im.info
    with Image.open(tmp_path / "one" / "a" / "photo-png.jpg") as im:
        assert im.getpixel((90, 30))[0] > 240  # transparency came out white, not black
    with Image.open(tmp_path / "one" / "b" / "rotated.jpg") as im:
        assert im.size == (40, 80)  # EXIF orientation applied
    card = (tmp_path / "one" / "README.md").read_text()
    assert "exact-duplicate groups (same bytes): 1 (2 images)" in card and "a/photo.jpg = b/copy.jpg" in card


def test_bundle_script_refuses_to_empty_a_folder_it_did_not_make(tmp_path):
    bundler = _load_script("bundle_dataset")
    source = _odd_source(tmp_path / "src")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        bundler.main([str(source), str(precious)])
    assert (precious / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------ starter model


@pytest.fixture(scope="module")
def starter() -> Path:
    path = cfg.starter_checkpoint()
    if not (path / ckpt.CONFIG_FILE).is_file():
        pytest.fail(f"the starter model is missing at {path} (make it with scripts/make_starter.py)", pytrace=False)
    return path


def test_starter_is_a_small_half_precision_checkpoint_that_loads_as_float32(starter):
    from safetensors import safe_open

    assert sum(p.stat().st_size for p in starter.iterdir()) <= 8 * MB
    with safe_open(str(starter / ckpt.WEIGHTS_FILE), "pt") as weights:
        dtypes = {k: weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118 - safe_open is not iterable
    import torch

    model = {dtype for k, dtype in dtypes.items() if not k.startswith("open_set.") and dtype.is_floating_point}
    statistics = {dtype for k, dtype in dtypes.items() if k.startswith("open_set.")}
    assert model == {torch.float16}, "the network's weights are stored in half precision"
    assert statistics == {torch.float32}, "the open-set statistics stay as they were fitted"
    loaded = ckpt.load_checkpoint(starter)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    config = loaded.config
    assert config["status"] == "complete" and config["pretrained"] is True
    assert config["dataset"]["root"] == "data/pokemon"  # no path of the machine it was made on
    assert "scripts/make_starter.py" in config["reproduce"]["command"]
    assert any(info.path == starter for info in ckpt.list_checkpoints(starter.parent))


def test_starter_test_accuracy_is_reproduced_by_evaluate_from_another_cwd(starter, tmp_path):
    recorded = json.loads((starter / ckpt.CONFIG_FILE).read_text())["metrics"]["test"]
    proc = _run_cli("evaluate", "--checkpoint", str(starter), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["n"] == recorded["n"] and report["accuracy"] == recorded["accuracy"]
    assert report["confusion"] == recorded["confusion"]


def test_recorded_comparison_has_both_runs_curves_and_table(starter):
    record = json.loads((starter / "comparison.json").read_text())
    assert record["recorded"] is True and "make_starter.py" in record["command"]
    assert set(record["results"]) == {"pretrained", "scratch"}
    for run, history in record["history"].items():
        assert [h["epoch"] for h in history] == list(range(1, record["epochs"] + 1))
        assert all(0 <= h["val_acc"] <= 1 for h in history)
        assert record["results"][run]["test_acc"] == pytest.approx(
            next(row["test_acc"] for row in record["table"] if row["run"] == run))
    assert not any("run_dir" in row for row in record["table"])  # no path of the machine it was made on


def test_predict_without_checkpoint_uses_the_starter(tmp_path, starter):
    image = next(cfg.bundled_data_dir().glob("pikachu/*.jpg"))
    proc = _run_cli("predict", str(image), "--json", cwd=tmp_path, env={"POKEDEMO_MODEL": ""})
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    top = result["top_k"]
    assert len(top) == 5 and sum(t["prob"] for t in top) == pytest.approx(1, abs=1e-4)
    assert {t["label"] for t in top} == set(json.loads((starter / "config.json").read_text())["class_names"])


def test_the_app_warm_up_loads_the_starter_and_runs_it_once_before_any_request(starter, monkeypatch):
    """The warm-up leaves the default model cached and already run once (torch's first-call set-up done), so the
    first user's prediction reuses it; the blank-image pass changes nothing a prediction returns."""
    from pokedemo import predict
    from pokedemo.app import sources

    monkeypatch.setattr(predict, "_predictors", predict.OrderedDict())  # nothing cached from other tests
    warmed: list[int] = []
    original = predict.Predictor.warm_up
    monkeypatch.setattr(predict.Predictor, "warm_up", lambda self: (warmed.append(id(self)), original(self)))
    sources.warm_up(starter)
    cached = predict.get_predictor(starter)
    assert warmed == [id(cached)]
    image = min((Path(cfg.default_data_dir()) / "pikachu").iterdir())
    fresh = predict.Predictor.load(starter, device=cached.device).predict(image)
    warm = cached.predict(image)
    assert [label for label, _ in warm] == [label for label, _ in fresh]
    assert [p for _, p in warm] == pytest.approx([p for _, p in fresh], abs=1e-6)


def test_pokedemo_model_overrides_the_default_model(monkeypatch, tmp_path):
    monkeypatch.delenv("POKEDEMO_MODEL", raising=False)
    assert cfg.default_model() == str(cfg.starter_checkpoint())
    monkeypatch.setenv("POKEDEMO_MODEL", "someone/their-model")
    assert cfg.default_model() == "someone/their-model"


def test_a_training_run_never_overwrites_the_starter(tiny_data_dir, tmp_path, starter):
    """A run that asks for the starter's name in a folder holding a starter gets a folder of its own."""
    import shutil

    from pokedemo.config import TrainConfig
    from pokedemo.events import Finished
    
    root = tmp_path / "checkpoints"
    copy = root / starter.name
    shutil.copytree(starter, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    config = TrainConfig(backbone="resnet18", pretrained=False, epochs=1, batch_size=8, img_size=32)
    final = list(train_folder(config, tiny_data_dir, root, run_name=starter.name))[-1]
    assert isinstance(final, Finished), final
    assert Path(final.run_dir) != copy and Path(final.run_dir).parent == root
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_gitignore_keeps_runs_out_but_not_the_starter():
    def ignored(path: str) -> bool:
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT, check=False)
        return proc.returncode == 0

    if not (REPO_ROOT / ".git").exists():
        pytest.fail("the tests run in a git checkout of pokedemo", pytrace=False)
    assert ignored("checkpoints/20260101-000000-resnet18-scratch/model.safetensors")
    assert not ignored("checkpoints/pokemon-starter/model.safetensors")
    assert not ignored("data/pokemon/pikachu/00000000.jpg")


def test_make_starter_writes_a_complete_starter_and_can_run_again(tiny_data_dir, tmp_path):
    """The script end to end on the tiny dataset (1 epoch at 32 px), twice: the second run replaces the first."""
    maker = _load_script("make_starter")
    out = tmp_path / "checkpoints" / "pokemon-starter"
    args = ["--data", str(tiny_data_dir), "--out", str(out), "--epochs", "1", "--img-size", "32"]
    for _ in range(2):
        assert maker.main(args) == 0
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [ckpt.WEIGHTS_FILE, ckpt.CONFIG_FILE, ckpt.HISTORY_FILE, "comparison.json", "README.md"])
        assert [p.name for p in out.parent.iterdir()] == ["pokemon-starter"]  # no build folders left behind
    config = ckpt.read_config(out)
    assert config["weights_dtype"] == "float16" and config["train_config"]["backbone"] == "efficientnet_lite0"
    assert "--epochs 1" in config["reproduce"]["command"]
    from pokedemo.predict import Predictor, evaluate_split

    assert evaluate_split(Predictor.load(out))["accuracy"] == config["metrics"]["test"]["accuracy"]
