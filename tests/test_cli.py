"""The command line, as a user runs it: real processes for the end-to-end run, in-process for the rest."""

import json
import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pokedemo.cli import build_parser, main
from pokedemo.config import TrainConfig
from pokedemo.options import command_line, config_from_args

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, timeout=300):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pokedemo", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=timeout)


def test_train_evaluate_predict_end_to_end(tiny_dataset, tmp_path, capsys):
    """Training runs as a user starts it (``python -m pokedemo`` in a process of its own); evaluate and predict
    read its checkpoint through the same ``main`` in this process."""
    data = tiny_dataset(tmp_path / "data")
    out = tmp_path / "runs"
    options = ["--scratch", "--epochs", "2", "--img-size", "32", "--batch-size", "8", "--label-smoothing", "0.05",
               "--select-epoch-by", "val_acc", "--no-calibrate"]
    result = run_cli("train", "--data", data, *options, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"checkpoint", "best_val_acc", "test_acc", "seconds"} <= set(summary)
    run_dir = Path(summary["checkpoint"])
    assert run_dir.parent == out
    assert {"model.safetensors", "config.json", "history.json"} <= {p.name for p in run_dir.iterdir()}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "complete" and config["train_config"]["pretrained"] is False
    # CLI options → TrainConfig → config.json → its reproduce command → the same TrainConfig
    recorded = TrainConfig.from_dict(config["train_config"])
    assert recorded == config_of("train", "--data", str(data), *options).resolved("cpu")
    command = shlex.split(config["reproduce"]["command"])
    assert command[:4] == ["python", "-m", "pokedemo", "train"] and config_of(*command[3:]) == recorded
    assert command[command.index("--data") + 1] == str(data)

    code = main(["evaluate", "--checkpoint", str(run_dir), "--data", str(data), "--json"])
    evaluated = capsys.readouterr()
    assert code == 0, evaluated.err
    report = json.loads(evaluated.out)
    assert {"accuracy", "n", "per_class", "confusion", "classes"} <= set(report) and report["n"] == 24

    good = next((data / "a").iterdir())
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert main(["predict", "--checkpoint", str(run_dir), "--json", "--top-k", "2", str(good), str(bad)]) == 1
    predicted = capsys.readouterr()
    items = json.loads(predicted.out)
    assert items[0]["image"] == str(good) and len(items[0]["top_k"]) == 2
    assert set(items[0]["top_k"][0]) == {"label", "prob"}
    assert items[1]["image"] == str(bad) and "error" in items[1]
    assert "Traceback" not in predicted.err and len(predicted.err.strip().splitlines()) == 1


def config_of(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))


def test_train_help_lists_every_training_option():
    """Every TrainConfig field has its flag in ``train --help`` (``pretrained`` as --scratch, the weights file as
    --weights); the user-facing ones before the tuning section."""
    result = run_cli("train", "--help")
    assert result.returncode == 0, result.stderr
    user_part, tuning_part = result.stdout.split("tuning options:")
    for field in dataclasses.fields(TrainConfig):
        flag = field.metadata.get("flag", "--" + field.name.replace("_", "-"))
        assert f"  {flag}" in (tuning_part if field.metadata["tuning"] else user_part), field.name
    for flag in ("--data", "--out", "--scratch", "--weights", "--img-size", "--device"):
        assert f"  {flag}" in user_part


def _differs_everywhere() -> TrainConfig:
    """A config in which every field differs from its default (parsing does not validate: linear with scratch)."""
    return TrainConfig(
        backbone="resnet18", pretrained=False, strategy="linear", epochs=3, batch_size=16, lr=0.0015,
        backbone_lr_scale=0.5, warm_start_lr_scale=0.2, weight_decay=0.02, img_size=96, last_epoch_scale=1.5,
        eval_scale=1.125, select_epoch_by="val_acc", seed=7, label_smoothing=0.05, augment=0.5, warmup_epochs=1.0,
        head_warmup=False, freeze_bn=False, calibrate=False, val_ratio=0.15, test_ratio=0.25, device="cpu",
        weights_file="/models/my weights.pth", init_from="runs/my start",
    )


def test_reproduce_command_parses_back_to_the_same_config():
    config, defaults = _differs_everywhere(), TrainConfig()
    same = [f.name for f in dataclasses.fields(TrainConfig) if getattr(config, f.name) == getattr(defaults, f.name)]
    assert same == []
    for command in ("train", "compare"):
        words = shlex.split(command_line(config, "data/my pokemon", command=command))
        assert words[:4] == ["python", "-m", "pokedemo", command] and "data/my pokemon" in words
        assert config_of(*words[3:]) == config
    assert config_of(*shlex.split(command_line(defaults, "data"))[3:]) == defaults
    assert shlex.split(command_line(defaults, "data")) == ["python", "-m", "pokedemo", "train", "--data", "data"]
    pretrained = dataclasses.replace(config, pretrained=True, head_warmup=True)
    assert config_of(*shlex.split(command_line(pretrained, "data"))[3:]) == pretrained


def test_evaluate_on_own_test_split_and_plain_output(tiny_checkpoint, capsys):
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "true \\ pred" in out
    assert "known-class images accepted" in out and "open-set score cosine" in out


def test_predict_answers_unknown_with_the_closest_class(tiny_checkpoint, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(noise)
    strictest = ["predict", "--checkpoint", str(tiny_checkpoint), "--threshold", "1.0", str(noise)]
    assert main(strictest) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{noise}: unknown (closest: ") and "%" in line
    assert main([*strictest, "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["label"] is None and item["closest"] == item["top_k"][0]["label"] and item["known"] is False
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), "--threshold", "-1.0", "--json", str(noise)]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["label"] == item["closest"] and item["known"] is True


def test_an_older_checkpoint_says_its_threshold_is_the_default(tiny_checkpoint, tiny_data_dir, tmp_path, capsys):
    from test_predict import without_open_set

    old = without_open_set(tiny_checkpoint, tmp_path / "old")
    assert main(["predict", "--checkpoint", str(old), str(next((tiny_data_dir / "a").iterdir()))]) == 0
    captured = capsys.readouterr()
    assert "records no open-set threshold" in captured.err and "70%" in captured.err
    assert main(["evaluate", "--checkpoint", str(old)]) == 0
    assert "with the default threshold (none recorded)" in capsys.readouterr().out


def test_predict_plain_output(tiny_checkpoint, tiny_data_dir, capsys):
    image = next((tiny_data_dir / "c").iterdir())
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), str(image)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(image)) and "%" in line


def test_predict_a_folder_into_csv(tiny_checkpoint, tiny_data_dir, tmp_path, capsys):
    """A folder is searched recursively; a bad file is a row with its error and exit status 1."""
    import csv
    import shutil

    folder = tmp_path / "pictures"
    shutil.copytree(tiny_data_dir, folder)
    (folder / "c" / "broken.png").write_bytes(b"junk")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), "--csv", str(out), str(folder)]) == 1
    rows = list(csv.DictReader(out.open()))
    n_pictures = sum(1 for p in folder.rglob("*.png"))
    assert len(rows) == n_pictures
    assert [r["file"] for r in rows if r["error"]] == [str(folder / "c" / "broken.png")]
    assert all(r["label"] for r in rows if not r["error"])
    assert "broken.png" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["train", "--data", "/nonexistent/folder"], "/nonexistent/folder"),
    (["train", "--data", "{data}", "--backbone", "vgg99"], "vgg99"),
    (["evaluate", "--checkpoint", "/nonexistent/run"], "not found"),
    (["predict", "--checkpoint", "{data}", "x.jpg"], "checkpoint"),
    (["compare", "--data", "/nonexistent/folder"], "/nonexistent/folder"),
])
def test_user_errors_are_one_line_exit_2(args, words, tiny_data_dir, capsys):
    args = [a.replace("{data}", str(tiny_data_dir)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and len(err.splitlines()) == 1


def test_missing_weights_offline_is_one_line_with_advice(tiny_data_dir, tmp_path):
    result = run_cli("train", "--data", tiny_data_dir, "--backbone", "resnet18", "--epochs", "1", "--out",
                     tmp_path / "runs",
                     env={"TORCH_HOME": str(tmp_path / "th"), "POKEDEMO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    err_lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(err_lines) == 1 and "resnet18-f37072fd.pth" in err_lines[0] and "--scratch" in err_lines[0]


def test_compare_prints_table_and_both_runs(tiny_data_dir, tmp_path, capsys):
    code = main(["compare", "--data", str(tiny_data_dir), "--backbone", "efficientnet_lite0", "--epochs", "1",
                 "--img-size", "32", "--batch-size", "8", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test acc" in out and "epochs to 90% val" in out
    assert "pretrained:" in out and "scratch:" in out


def test_ctrl_c_stops_after_the_batch_and_keeps_the_best_checkpoint(tmp_path):
    """SIGINT during epoch 2 → the engine's Cancelled event: exit 130, the epoch-1 checkpoint saved and loadable.

    The process is held before epoch 2's first batch (tests/hold_at_batch.py) until SIGINT has been handled, so
    the run is certainly mid-training when interrupted, however fast the machine."""
    import signal

    from conftest import hold_at_batch_command, make_tiny_dataset, reached_file, wait_for

    from pokedemo.checkpoint import load_checkpoint, read_config

    data = make_tiny_dataset(tmp_path / "data")
    out, hold = tmp_path / "runs", tmp_path / "hold"
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = hold_at_batch_command(hold, 2, 0, "pokedemo", "train", "--data", str(data), "--scratch",
                                    "--epochs", "3", "--img-size", "32", "--batch-size", "8", "--out", str(out))
    with open(stdout, "w") as out_file, open(stderr, "w") as err_file:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out_file, stderr=err_file, text=True)
    try:
        # Timeouts below only guard against a hang; the test waits on the run's own signals.
        assert wait_for(lambda: reached_file(hold).exists() or proc.poll() is not None, timeout=600)
        assert proc.poll() is None, stderr.read_text()
        proc.send_signal(signal.SIGINT)
        assert wait_for(lambda: "stopping after this batch" in stderr.read_text() or proc.poll() is not None,
                        timeout=600), stderr.read_text()
        hold.unlink()
        proc.wait(timeout=600)
    finally:
        proc.kill()
    err = stderr.read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "stopping after this batch" in err
    assert "Training stopped in epoch 2" in stdout.read_text()
    run_dir = next(out.glob("*/config.json")).parent
    assert read_config(run_dir)["status"] == "cancelled" and read_config(run_dir)["metrics"]["best_epoch"] == 1
    assert load_checkpoint(run_dir).classes == ["a", "b", "c"]
