"""Grad-CAM: where did the model look for a class?

A short hook-based implementation (Selvaraju et al., 2017) on the last convolutional feature map, the one
global pooling turns into the features the linear head reads:

- resnet18: ``features.layer4`` (512 channels, stride 32; 4x4 cells at 128 px).
- efficientnet_lite0/1/2 (timm): ``features.bn2``: ``conv_head`` followed by its BatchNorm + ReLU6. That is
  the map that gets pooled, so with a pooled linear head Grad-CAM is exactly the class activation map, and it
  is non-negative like resnet's post-ReLU ``layer4``. A fine-tuned efficientnet gives broad maps whichever
  last-stage layer is hooked; ``bn2`` is the most concentrated of them (comparison in BENCHMARKS.md).
- any other timm model (``timm/<model>`` from the Hub): the last stage timm lists in its ``feature_info``
  (stride 32), the counterpart of resnet's ``layer4``; a head convolution after the pooling (MobileNetV4) would
  only see a 1x1 map.

The image goes through exactly the prediction path (``load_image`` → ``image_to_tensor`` → [0, 1]); the
Classifier normalises internally. Feature cells are placed where the convolutions centre them (see
``_interp_matrix``). The heatmap covers the displayed image; the parts outside the centre crop the model saw
stay 0 and are dimmed in the overlay.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pokedemo.images import image_to_tensor, load_image

DISPLAY_MAX_SIDE = 512  # overlays are for looking at: big uploads are shown at most this large,
DISPLAY_MIN_SIDE = 128  # and tiny ones (an 8x8 icon) at least this large (longer side)
_HOOK_LAYERS = {"resnet18": "layer4", "efficientnet_lite0": "bn2", "efficientnet_lite1": "bn2",
                "efficientnet_lite2": "bn2"}  # names inside Classifier.features

# Inferno-like colour map: dark purple (cold) → red → orange → pale yellow (hot). A few control points
# interpolated to 256 entries are enough; no matplotlib needed.
_CMAP_POINTS = np.array([
    (0.00, 0, 0, 4), (0.25, 87, 16, 110), (0.50, 188, 55, 84), (0.75, 249, 142, 9), (1.00, 252, 255, 164),
], dtype=np.float64)


@dataclass
class CamResult:
    heatmap: np.ndarray   # float32 [H, W] in [0, 1], same size as `overlay`
    overlay: Image.Image  # the image with the heatmap blended on it
    label: str            # the class the map explains
    prob: float           # the model's probability for that class
    class_index: int
    predicted: str        # the model's top class (equal to `label` unless a target was given)
    evidence: float       # the map's raw maximum before scaling; 0: no positive evidence for `label` anywhere


_LUT = np.stack([
    np.interp(np.linspace(0, 1, 256), _CMAP_POINTS[:, 0], _CMAP_POINTS[:, c]) for c in (1, 2, 3)
], axis=1).round().astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] colours for values in [0, 1]."""
    return _LUT[np.clip(np.rint(np.asarray(values) * 255), 0, 255).astype(np.int64)]


def cam_layer(model: Any):
    """The module whose output Grad-CAM explains (see the module docstring for the choice)."""
    from torch import nn

    name = _HOOK_LAYERS.get(getattr(model, "backbone", ""))
    if name is not None:
        return getattr(model.features, name)
    stages = getattr(model.features, "feature_info", None)  # timm models
    if stages:
        return model.features.get_submodule(stages[-1]["module"])
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]  # unknown backbone: last conv
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional backbone")
    return convs[-1]


def _resolve_target(target: int | str | None, classes: Sequence[str], logits) -> int:
    if target is None:
        return int(logits.argmax())
    if isinstance(target, str):
        if target not in classes:
            raise ValueError(f"unknown class {target!r}; choose one of {', '.join(classes)}")
        return list(classes).index(target)
    if not 0 <= int(target) < len(classes):
        raise ValueError(f"class index {target} out of range 0..{len(classes) - 1}")
    return int(target)


def class_activation(predictor: Any, tensor, target: int | str | None = None):
    """(cam [h, w] float tensor ≥ 0 at feature-map resolution, probabilities [C], class index) for a uint8
    [3, S, S] image tensor. Gradients only reach the hooked activation; parameters' .grad stay untouched."""
    import torch

    model, store = predictor.model, {}
    # The Predictor's lock: our hook must not fire for (or during) another thread's forward pass.
    # inference_mode(False) + enable_grad: callers (a Gradio handler, a test) may have switched autograd off.
    with predictor._lock, torch.inference_mode(False), torch.enable_grad():
        handle = cam_layer(model).register_forward_hook(lambda _m, _i, out: store.__setitem__("act", out))
        try:
            x = tensor.unsqueeze(0).to(predictor.device).float().div(255).requires_grad_(True)
            logits = model.eval()(x.contiguous(memory_format=torch.channels_last))[0].float()
            index = _resolve_target(target, predictor.classes, logits)
            (grads,) = torch.autograd.grad(logits[index], store["act"])
        finally:
            handle.remove()
    act = store["act"].detach()[0].float()
    weights = grads[0].float().mean(dim=(1, 2))  # one weight per channel: its average gradient
    cam = torch.relu((weights[:, None, None] * act).sum(0))
    return cam.cpu(), torch.softmax(logits.detach(), 0).cpu(), index


def _crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centre square that image_to_tensor feeds the model, in display pixels.

    Whole pixels, because it indexes the heatmap array; image_to_tensor's ImageOps.fit crops the same centre
    square with a fractional box, which PIL does not hand out."""
    short = min(width, height)
    left, top = (width - short) // 2, (height - short) // 2
    return left, top, left + short, top + short


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Catmull-Rom (Keys, a=-0.5) cubic convolution kernel."""
    t = np.abs(t)
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _interp_matrix(cells: int, out: int, model_side: int) -> np.ndarray:
    """[out, cells] cubic interpolation weights from feature cells to display pixels.

    Where: with the symmetric padding of both backbones every stride-2 layer centres output j on input 2j, so
    feature cell i sits on model-input pixel stride*i, not in the middle of its stride-wide block (where
    align_corners=False resizing puts it: half a cell, 16 px at 128 px, off towards the bottom right).
    Beyond the outermost cells the value is held.
    How: cubic rather than bilinear, because bilinear can only peak exactly on a cell; a cubic through a 4x4
    map peaks between two hot cells when the object straddles them (more peaks inside the object, see
    BENCHMARKS.md).
    """
    stride = model_side / cells
    pixel_centres = (np.arange(out) + 0.5) * (model_side / out)  # display pixel -> model-input coordinate
    position = np.clip((pixel_centres - 0.5) / stride, 0, cells - 1)  # input pixel p is centred at p + 0.5
    base = np.floor(position).astype(np.int64)
    weights = np.zeros((out, cells))
    for offset in (-1, 0, 1, 2):
        j = base + offset
        np.add.at(weights, (np.arange(out), np.clip(j, 0, cells - 1)), _keys_cubic(position - j))
    return weights


def upsample_cam(cam, width: int, height: int, model_side: int) -> np.ndarray:
    """Feature-map CAM [h, w] → float32 [height, width] in [0, 1], on the centre crop, 0 elsewhere."""
    left, top, right, bottom = _crop_box(width, height)
    side = right - left
    cam = np.asarray(cam, dtype=np.float64)
    up = _interp_matrix(cam.shape[0], side, model_side) @ cam @ _interp_matrix(cam.shape[1], side, model_side).T
    peak = float(up.max())
    up = np.clip(up / peak, 0, 1) if peak > 0 else np.zeros_like(up)  # cubic overshoot below 0 clipped
    heatmap = np.zeros((height, width), dtype=np.float32)
    heatmap[top:bottom, left:right] = up
    return heatmap


def blend_overlay(image: Image.Image, heatmap: np.ndarray) -> Image.Image:
    """Colour map blended in proportion to heat (cold parts keep the picture); outside the crop dimmed."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    alpha = (0.1 + 0.55 * heatmap)[..., None]  # cold parts keep the picture, hot parts glow
    out = base * (1 - alpha) + colormap(heatmap).astype(np.float32) * alpha
    left, top, right, bottom = _crop_box(image.width, image.height)
    seen = np.zeros(heatmap.shape, dtype=bool)
    seen[top:bottom, left:right] = True
    out[~seen] = base[~seen] * 0.35  # the model never saw these pixels
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def grad_cam(predictor: Any, source: Any, target: int | str | None = None) -> CamResult:
    """Grad-CAM of `source` (path, bytes, file object, PIL image) for `target` (class name or index; default
    the top class). Raises ImageLoadError for unreadable images, ValueError for an unknown class."""
    image = load_image(source)
    cam, probs, index = class_activation(predictor, image_to_tensor(image, predictor.image_size), target)
    display = _display_copy(image)
    heatmap = upsample_cam(cam.numpy(), display.width, display.height, predictor.image_size)
    return CamResult(
        heatmap=heatmap, overlay=blend_overlay(display, heatmap), label=predictor.classes[index],
        prob=float(probs[index]), class_index=index, predicted=predictor.classes[int(probs.argmax())],
        evidence=float(cam.max()),
    )


def _display_copy(image: Image.Image) -> Image.Image:
    """The image scaled so its longer side is within [DISPLAY_MIN_SIDE, DISPLAY_MAX_SIDE] (up or down).

    Not ImageOps.contain: it rounds the short side of a thin image (1024x1 to 512 px) to 0 and fails;
    Image.thumbnail only ever shrinks."""
    longer = max(image.size)
    side = min(max(longer, DISPLAY_MIN_SIDE), DISPLAY_MAX_SIDE)
    if side == longer:
        return image.copy()
    size = (max(1, round(image.width * side / longer)), max(1, round(image.height * side / longer)))
    return image.resize(size, Image.Resampling.LANCZOS)


def write_cam_overlays(predictor: Any, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Write `<stem>_cam.png` (top-class Grad-CAM overlay) per image into out_dir; returns the written paths.
    Images sharing a stem get `_cam-2.png`, `_cam-3.png`, ... instead of overwriting each other."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in paths:
        result = grad_cam(predictor, path)
        stem, n = Path(path).stem, 1
        target = out / f"{stem}_cam.png"
        while target in written:
            n += 1
            target = out / f"{stem}_cam-{n}.png"
        result.overlay.save(target)
        written.append(target)
    return written
