"""Checkpoint format: atomic writes, validation, listing. No pickle is ever loaded."""

import json
import os
import pickle

import pytest
import torch

from pokedemo import checkpoint as ckpt
from pokedemo.models import build_classifier


def make_checkpoint(root, name="run", status="complete", classes=("a", "b", "c"), test_acc=0.9, created="2026-01-01"):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    model = build_classifier("resnet18", len(classes), pretrained=False)
    digest = ckpt.save_weights(run_dir, model.state_dict())
    ckpt.write_config(run_dir, {
        "backbone": "resnet18", "pretrained": False, "num_classes": len(classes), "class_names": list(classes),
        "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "weights_sha256": digest, "status": status,
        "created_at": created, "metrics": {"test": {"accuracy": test_acc}},
    })
    ckpt.write_history(run_dir, [])
    return run_dir, model


def test_round_trip_gives_identical_outputs(tmp_path):
    run_dir, model = make_checkpoint(tmp_path)
    loaded = ckpt.load_checkpoint(run_dir)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.allclose(loaded.model(x), model(x))
    assert loaded.classes == ["a", "b", "c"] and loaded.image_size == 32
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "history.json", "model.safetensors"]


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    ckpt.atomic_write_json(target, {"v": 1})

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        ckpt.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_weights_not_matching_config_are_refused(tmp_path):
    run_dir, _ = make_checkpoint(tmp_path)
    other = build_classifier("resnet18", 3, pretrained=False)
    ckpt.save_weights(run_dir, other.state_dict())  # as if killed between weights and config
    with pytest.raises(ckpt.CheckpointError, match="does not match"):
        ckpt.load_checkpoint(run_dir)


def test_unfinished_run_is_refused_and_hidden(tmp_path):
    run_dir, _ = make_checkpoint(tmp_path, name="busy", status="training")
    with pytest.raises(ckpt.CheckpointError, match="unfinished"):
        ckpt.load_checkpoint(run_dir)
    assert ckpt.load_checkpoint(run_dir, allow_incomplete=True).classes == ["a", "b", "c"]
    assert ckpt.list_checkpoints(tmp_path) == []


def test_pickle_renamed_to_safetensors_is_refused_without_executing(tmp_path):
    run_dir, _ = make_checkpoint(tmp_path)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    (run_dir / "model.safetensors").write_bytes(payload)
    config = json.loads((run_dir / "config.json").read_text())
    config["weights_sha256"] = ckpt.sha256_file(run_dir / "model.safetensors")
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="unreadable weights"):
        ckpt.load_checkpoint(run_dir)
    assert not marker.exists()


def test_wrong_shapes_are_refused(tmp_path):
    run_dir, _ = make_checkpoint(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(num_classes=4, class_names=["a", "b", "c", "d"])
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="head.weight"):
        ckpt.load_checkpoint(run_dir)


@pytest.mark.parametrize("mutate, words", [
    (lambda c: "{not json", "malformed"),
    (lambda c: {**c, "format": "other"}, "not a pokedemo checkpoint"),
    (lambda c: {k: v for k, v in c.items() if k != "class_names"}, "class_names"),
    (lambda c: {**c, "image_size": "big"}, "image_size"),
    (lambda c: {**c, "class_names": ["a", "b"]}, "class_names"),
    (lambda c: {**c, "backbone": "vgg99"}, "vgg99"),
])
def test_malformed_config_is_refused_with_one_line(tmp_path, mutate, words):
    run_dir, _ = make_checkpoint(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    changed = mutate(config)
    (run_dir / "config.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_checkpoint(run_dir)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_files_are_refused(tmp_path):
    run_dir, _ = make_checkpoint(tmp_path)
    (run_dir / "model.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_checkpoint(run_dir)
    with pytest.raises(ckpt.CheckpointError, match="not a directory"):
        ckpt.load_checkpoint(tmp_path / "nowhere")
    (run_dir / "config.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="config.json is missing"):
        ckpt.load_checkpoint(run_dir)


def test_listing_is_newest_first_and_skips_junk(tmp_path):
    make_checkpoint(tmp_path, name="old", created="2026-01-01T00:00:00")
    make_checkpoint(tmp_path, name="new", created="2026-02-01T00:00:00", test_acc=0.5)
    make_checkpoint(tmp_path, name="stopped", created="2026-01-15T00:00:00", status="cancelled", test_acc=None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{")
    infos = ckpt.list_checkpoints(tmp_path)
    assert [i.name for i in infos] == ["new", "stopped", "old"]
    assert "50.0%" in infos[0].label() and "cancelled" in infos[1].label()
    assert ckpt.list_checkpoints(tmp_path / "absent") == []


def test_new_run_dirs_are_unique(tmp_path):
    first = ckpt.new_run_dir(tmp_path, "resnet18", True, name="same")
    second = ckpt.new_run_dir(tmp_path, "resnet18", True, name="same")
    assert first != second and first.is_dir() and second.is_dir()


def test_listing_hides_runs_with_truncated_or_foreign_weights(tmp_path):
    good, _ = make_checkpoint(tmp_path, name="good")
    truncated, _ = make_checkpoint(tmp_path, name="truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    foreign, _ = make_checkpoint(tmp_path, name="foreign")
    (foreign / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert ckpt.weights_look_complete(good / "model.safetensors")
    assert not ckpt.weights_look_complete(foreign / "model.safetensors")
    assert not ckpt.weights_look_complete(tmp_path / "missing.safetensors")
    for broken in (b"", data + b"\0" * 8):  # empty, or bytes beyond the tensors the header lists
        (truncated / "model.safetensors").write_bytes(broken)
        assert not ckpt.weights_look_complete(truncated / "model.safetensors")
    assert [info.name for info in ckpt.list_checkpoints(tmp_path)] == ["good"]
