"""Continuing from a trained model (``TrainConfig.init_from``): same classes, added classes, and what is recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import compare_folder, make_tiny_dataset, train_folder

from pokedemo.checkpoint import CheckpointError, load_checkpoint, warm_start
from pokedemo.config import TrainConfig
from pokedemo.events import CompareFinished, Finished, Stage
from pokedemo.models import build_classifier
from pokedemo.options import command_line

TINY = TrainConfig(backbone="resnet18", pretrained=False, epochs=1, batch_size=8, img_size=32, seed=0)


def _finished(events) -> Finished:
    events = list(events)
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def _head_rows(run: Path, temperature_free: bool = True) -> dict[str, torch.Tensor]:
    loaded = load_checkpoint(run)
    t = loaded.config["metrics"].get("calibration", {}).get("temperature", 1.0) if temperature_free else 1.0
    return {name: loaded.model.head.weight[i].detach() * t for i, name in enumerate(loaded.classes)}


def test_warm_start_keeps_rows_by_class_name_and_adds_fresh_ones(tiny_checkpoint: Path):
    start = load_checkpoint(tiny_checkpoint)
    torch.manual_seed(1)
    model = build_classifier("resnet18", 4, pretrained=False)
    fresh = model.head.weight.detach().clone()
    warm = warm_start(model, ["c", "new", "a", "b"], start)
    assert (warm.kept, warm.added, warm.dropped) == (["c", "a", "b"], ["new"], [])
    old = _head_rows(tiny_checkpoint)
    for row, name in enumerate(["c", "new", "a", "b"]):
        expected = fresh[row] if name == "new" else old[name]
        assert torch.allclose(model.head.weight[row], expected, atol=1e-5), name
    key = next(k for k in start.model.state_dict() if k.startswith("features."))
    assert torch.equal(model.state_dict()[key], start.model.state_dict()[key]), "the backbone is the checkpoint's"


def test_warm_start_refuses_another_backbone(tiny_checkpoint: Path):
    model = build_classifier("efficientnet_lite0", 3, pretrained=False)
    with pytest.raises(CheckpointError, match="resnet18"):
        warm_start(model, ["a", "b", "c"], load_checkpoint(tiny_checkpoint))


def test_continue_with_the_same_classes_starts_where_the_model_was(tiny_checkpoint: Path, tiny_data_dir: Path,
                                                                   tmp_path: Path):
    # efficientnet_lite0 and a head fit asked for: the checkpoint's resnet18 is used and its head kept.
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", pretrained=True, head_warmup=True,
                                 init_from=str(tiny_checkpoint), seed=3)
    events = list(train_folder(config, tiny_data_dir, tmp_path / "runs"))
    final = _finished(events)
    warm = next(e for e in events if isinstance(e, Stage) and e.name == "warm-start")
    assert "its head is kept" in warm.message and not any(isinstance(e, Stage) and e.name == "head" for e in events)
    saved = json.loads((Path(final.run_dir) / "config.json").read_text())
    assert saved["backbone"] == "resnet18"
    assert saved["train_config"]["init_from"] == str(tiny_checkpoint)
    assert saved["init_from"]["added_classes"] == [] and saved["init_from"]["kept_classes"] == ["a", "b", "c"]
    assert len(saved["split"]) == 24, "the split of the current data is drawn and recorded"
    learnt = {e["sha256"] for e in json.loads((tiny_checkpoint / "config.json").read_text())["split"]
              if e["split"] == "train"}
    held_out = [e for e in saved["split"] if e["split"] != "train"]
    assert held_out and not {e["sha256"] for e in held_out} & learnt, "only pictures neither model learnt are held out"
    assert any(isinstance(e, Stage) and e.name == "split" and "drawn again" in e.message for e in events)
    assert "--init-from" in saved["reproduce"]["command"]


def test_continue_after_adding_a_class_grows_the_head(tiny_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path):
    data = make_tiny_dataset(tmp_path / "data", classes=("a", "b", "c", "d"))
    for name in ("a", "b", "c"):  # the same pictures as the checkpoint's data, plus class d
        for src in (tiny_data_dir / name).iterdir():
            (data / name / src.name).write_bytes(src.read_bytes())
    events = list(train_folder(dataclasses.replace(TINY, init_from=str(tiny_checkpoint)), data, tmp_path / "runs"))
    warm = next(e for e in events if isinstance(e, Stage) and e.name == "warm-start")
    assert "fresh head row: d" in warm.message and "its head is kept" not in warm.message
    saved = load_checkpoint(_finished(events).run_dir)
    assert saved.classes == ["a", "b", "c", "d"] and saved.model.head.weight.shape[0] == 4
    assert saved.config["init_from"]["added_classes"] == ["d"]
    learnt = {e["sha256"] for e in json.loads((tiny_checkpoint / "config.json").read_text())["split"]
              if e["split"] == "train"}
    parts = {e["path"]: e["split"] for e in saved.config["split"]}
    assert {parts[p] for p in parts if p.startswith("d/")} == {"train", "val", "test"}, "a new class is split as usual"
    assert all(e["split"] == "train" for e in saved.config["split"] if e["sha256"] in learnt)


def test_a_comparison_that_continues_tests_both_runs_on_pictures_the_start_model_never_learnt(
        tiny_checkpoint: Path, tiny_data_dir: Path, tmp_path: Path):
    config = dataclasses.replace(TINY, init_from=str(tiny_checkpoint), seed=5)
    final = list(compare_folder(config, tiny_data_dir, tmp_path / "runs"))[-1]
    assert isinstance(final, CompareFinished), final
    splits = [json.loads((Path(final.results[k]["run_dir"]) / "config.json").read_text())["split"]
              for k in ("pretrained", "scratch")]
    assert splits[0] == splits[1], "both runs test on the same pictures"
    learnt = {e["sha256"] for e in json.loads((tiny_checkpoint / "config.json").read_text())["split"]
              if e["split"] == "train"}
    assert all(e["split"] == "train" for e in splits[0] if e["sha256"] in learnt)


def test_a_run_name_in_the_checkpoint_folder_is_a_reference(tiny_checkpoint: Path, tiny_data_dir: Path):
    config = dataclasses.replace(TINY, init_from=tiny_checkpoint.name)
    final = _finished(train_folder(config, tiny_data_dir, tiny_checkpoint.parent))
    assert json.loads((Path(final.run_dir) / "config.json").read_text())["init_from"]["checkpoint"] == str(
        tiny_checkpoint)


def test_an_unknown_reference_is_a_failed_event(tiny_data_dir: Path, tmp_path: Path):
    events = list(train_folder(dataclasses.replace(TINY, init_from=str(tmp_path / "nope")), tiny_data_dir, tmp_path))
    assert type(events[-1]).__name__ == "Failed" and "not found" in events[-1].message


def test_the_cli_option_is_init_from():
    words = command_line(dataclasses.replace(TINY, init_from="runs/x"), "data")
    assert "--init-from runs/x" in words
