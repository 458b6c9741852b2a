"""Classify pictures with a model exported by pokedemo (model.onnx), with Pillow, numpy and onnxruntime only.

    python predict_onnx.py picture.jpg [more.png ...] [--model model.onnx] [--top-k 5] [--json]

The pictures are read exactly as pokedemo reads them (pokedemo.images: load_image, then image_to_tensor), so
the probabilities are pokedemo's: EXIF orientation applied, transparency onto white, the first frame of an
animation, 16-bit greyscale scaled to 8 bits, the longer side reduced to at most max_side (JPEG draft, then
Image.thumbnail), then ImageOps.fit to S x S. S, max_side and the class names come from the model's metadata.
An unreadable file gives one line on stderr; the others are still classified and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own limit: larger pictures are refused before decoding
DECODE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "AVIF")
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


def load_rgb(path: str | Path, max_side: int) -> Image.Image:
    """The picture as an upright RGB image whose longer side is at most max_side (pokedemo's load_image)."""
    Image.init()
    with Image.open(path, formats=[f for f in DECODE_FORMATS if f in Image.OPEN]) as im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ValueError(f"{w}x{h} pixels is over the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit")
        if im.tell() != 0:
            im.seek(0)
        if max(w, h) > max_side and im.format in ("JPEG", "MPO"):
            k = max_side / max(w, h)
            im.draft(None, (max(1, math.ceil(w * k)), max(1, math.ceil(h * k))))
        im.load()
        orientation = exif_orientation(im)
        rgb = to_8bit(im)
        if rgb.mode == "P" and max(rgb.size) > 2 * max_side:
            rgb = rgb.copy()
            rgb.thumbnail((2 * max_side, 2 * max_side), Image.Resampling.NEAREST, reducing_gap=None)
        has_alpha = rgb.mode in ALPHA_MODES or "transparency" in rgb.info
        rgb = rgb.convert("RGBA") if has_alpha else rgb.convert("RGB") if rgb.mode not in ("RGB", "L") else rgb
        if max(rgb.size) > max_side:
            rgb = rgb.copy()
            rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
        if rgb.mode == "RGBA":
            white = Image.new("RGB", rgb.size, (255, 255, 255))
            white.paste(rgb, mask=rgb.getchannel("A"))
            rgb = white
        rgb = rgb.convert("RGB") if rgb.mode != "RGB" else rgb.copy()
    turn = ORIENTATION.get(orientation)
    return rgb.transpose(turn) if turn is not None else rgb


def exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # a broken EXIF block leaves the picture as stored
        return 1


def to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale → 8-bit L, scaled (Pillow's convert() would clip to white)."""
    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    a = np.asarray(im).astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if im.mode.startswith("I;16") or (im.mode == "I" and 255 < hi <= 65535 and lo >= 0):
        a = a / 257.0
    elif im.mode == "F" and 0 <= lo and hi <= 1.0:
        a = a * 255.0
    elif lo < 0 or hi > 255:
        a = (a - lo) * (255.0 / max(hi - lo, 1e-12))
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def load_pixels(path: str | Path, size: int, max_side: int) -> np.ndarray:
    """uint8 [3, size, size]: the centre square resized (pokedemo's image_to_tensor)."""
    square = ImageOps.fit(load_rgb(path, max_side), (size, size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8).transpose(2, 0, 1).copy()


def why_unreadable(picture: str, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, UnidentifiedImageError):
        empty = Path(picture).is_file() and Path(picture).stat().st_size == 0
        return "empty file (0 bytes)" if empty else "not a recognised image file"
    text = " ".join(str(exc).split())[:200]
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify pictures with a pokedemo ONNX model.")
    parser.add_argument("pictures", nargs="+", metavar="PICTURE")
    parser.add_argument("--model", default=str(Path(__file__).with_name("model.onnx")), help="the ONNX file")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per picture")
    parser.add_argument("--json", action="store_true", help="print every class's probability as JSON")
    args = parser.parse_args(argv)
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes, size, max_side = json.loads(meta["class_names"]), int(meta["image_size"]), int(meta["max_side"])
    input_name = session.get_inputs()[0].name
    results, failed = [], False
    for picture in args.pictures:
        try:
            pixels = load_pixels(picture, size, max_side)
        except Exception as exc:  # Pillow raises many types for bad files; each becomes one line
            print(f"error: cannot read {picture}: {why_unreadable(picture, exc)}", file=sys.stderr)
            failed = True
            continue
        probabilities, score, known = (out[0] for out in session.run(None, {input_name: pixels[None]}))
        ranked = sorted(zip(classes, probabilities.tolist()), key=lambda pair: -pair[1])
        closest = ranked[0][0]
        results.append({"picture": picture, "label": closest if known else None, "closest": closest,
                        "open_set_score": float(score), "probabilities": dict(zip(classes, probabilities.tolist()))})
        if not args.json:
            shown = ", ".join(f"{name} {p:.1%}" for name, p in ranked[:max(1, args.top_k)])
            print(f"{picture}: {shown}" if known else f"{picture}: none of these (closest: {shown})")
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
