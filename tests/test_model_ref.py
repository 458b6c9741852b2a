"""The one resolver of model references: run folder, run name under the checkpoint root, Hub repo id."""

import shutil

import pytest

from pokedemo import predict
from pokedemo.checkpoint import CheckpointError
from pokedemo.model_ref import in_hub_cache, resolve_model


def test_a_run_folder_its_files_and_its_name_under_the_root(tiny_checkpoint, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    run = root / "my-run"
    shutil.copytree(tiny_checkpoint, run)
    assert resolve_model(run) == run
    assert resolve_model(run / "config.json") == run and resolve_model(str(run / "model.safetensors")) == run
    assert resolve_model("my-run", root=root) == root / "my-run"
    with pytest.raises(CheckpointError, match="checkpoint not found: my-run"):
        resolve_model("my-run")  # a run name needs the root it lives under
    monkeypatch.setenv("POKEDEMO_CHECKPOINTS", str(root))
    assert predict.Predictor.load("my-run").classes == predict.Predictor.load(run).classes  # the CLI's --checkpoint


def test_only_inside_refuses_other_folders_and_hub_false_never_downloads(tiny_checkpoint, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(tiny_checkpoint, root / "mine")
    assert resolve_model(root / "mine", only_inside=[root]) == root / "mine"
    for elsewhere in (tiny_checkpoint, tmp_path / "missing" / "run"):
        with pytest.raises(CheckpointError, match="is not one of this app's checkpoints"):
            resolve_model(elsewhere, only_inside=[root])
    with pytest.raises(CheckpointError, match="checkpoint not found: alice/model"):
        resolve_model("alice/model", only_inside=[root], hub=False)  # never sent to the Hub
    assert not in_hub_cache(root / "mine")
