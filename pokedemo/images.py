"""Images in, tensors out: THE image loader (``load_image``), the perceptual hash and the one preprocessing
function (``image_to_tensor``) used by the tensor cache, evaluation, prediction and Grad-CAM alike.

See docs/ARCHITECTURE.md ("images.py contract"). torch is imported lazily so that loading an image does not pay
torch's import time (the app and the CLI's `doctor` only need PIL + numpy for that).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})

# Pillow's own default limit (2**30 // 4 // 3 pixels). Using the same number means any image we accept never
# trips Pillow's DecompressionBombWarning, and we never have to touch Pillow's global settings or warning filters.
# Our check reads the header size before decoding, so it holds even if other code sets
# PIL.Image.MAX_IMAGE_PIXELS = None.
MAX_IMAGE_PIXELS: int = 89_478_485

# Formats Pillow may decode for us. Restricting them keeps e.g. EPS (which shells out to Ghostscript) away from
# user uploads; the file *content* decides, so a PNG named .jpg still loads.
DECODE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "AVIF")

DEFAULT_MAX_SIDE = 1024
_WHITE = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image could not be read. str(e) is one line naming the file and the reason."""

    def __init__(self, message: str, *, source: str = "", reason: str = ""):
        super().__init__(message)
        self.source = source
        self.reason = reason or message


# ----------------------------------------------------------------------------------------------- image loading

# EXIF orientation -> transpose: Pillow's table, not ImageOps.exif_transpose itself. That one re-serialises the
# whole EXIF block to drop the tag and raises on corrupt tags the orientation read survives (a fuzzed-EXIF test in
# tests/test_data.py), and it would turn the full-size image where this turns the reduced one.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True)
class Original:
    """What the file was before normalisation (reported in ImageRecord)."""

    width: int
    height: int
    format: str
    mode: str


def load_image(source: Any, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Return `source` (path, bytes, binary file object or PIL image) as an upright RGB image.

    EXIF orientation applied, transparency composited onto white, first frame of animations, longer side
    reduced to <= max_side (cheaply: JPEG draft, then Image.thumbnail's reduce + resize). Raises ImageLoadError
    for anything unreadable.
    """
    return load_image_with_original(source, max_side)[0]


def load_image_with_original(source: Any, max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[Image.Image, Original]:
    """``load_image`` plus what the file was before normalisation (size, format, mode: the scan records them)."""
    name = _source_name(source)
    try:
        im, opened = _open(source, name)
    except ImageLoadError:
        raise
    except Exception as exc:  # Pillow raises many types for bad data; callers get exactly one
        raise _load_error(name, _reason(exc)) from exc
    try:
        original = Original(im.size[0], im.size[1], im.format or "", im.mode)
        out = _normalise(im, max_side, name)
        return (out.copy() if out is im else out), original  # never hand out (or close) the caller's object
    except ImageLoadError:
        raise
    except Exception as exc:
        raise _load_error(name, _reason(exc)) from exc
    finally:
        if opened:
            im.close()


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    if isinstance(source, Image.Image):
        return Path(getattr(source, "filename", "") or "<image>").name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return Path(str(getattr(source, "name", "") or "<file>")).name


def _load_error(name: str, reason: str) -> ImageLoadError:
    return ImageLoadError(f"cannot load image {name!r}: {reason}", source=name, reason=reason)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]  # always one line
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image file"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too many pixels to decode safely (possible decompression bomb): {text}"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot read file: {exc.strerror or text}"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    if isinstance(exc, (OSError, SyntaxError, EOFError)) and text:
        return f"corrupt or truncated image ({text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(source: Any, name: str) -> tuple[Image.Image, bool]:
    """Open lazily (header only). Returns (image, whether we opened it and must close it)."""
    if isinstance(source, Image.Image):
        return source, False
    if isinstance(source, (str, os.PathLike)):
        if os.path.getsize(source) == 0:
            raise _load_error(name, "empty file (0 bytes)")
        return Image.open(source, formats=_decode_formats()), True
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
    if not data:
        raise _load_error(name, "empty file (0 bytes)")
    return Image.open(io.BytesIO(data), formats=_decode_formats()), True


def _decode_formats() -> list[str]:
    Image.init()  # idempotent; makes sure plugins are registered before we filter by them
    return [f for f in DECODE_FORMATS if f in Image.OPEN]


def _normalise(im: Image.Image, max_side: int | None, name: str) -> Image.Image:
    given = im  # may be the caller's image: never changed in place (Image.thumbnail works in place)
    w, h = im.size
    if w < 1 or h < 1:
        raise _load_error(name, f"image has no pixels ({w}x{h})")
    if w * h > MAX_IMAGE_PIXELS:  # header only so far: nothing big has been allocated
        raise _load_error(name, f"image claims {w}x{h} = {w * h / 1e6:.0f} Mpx, over the "
                                f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit (possible decompression bomb)")
    if im.tell() != 0:  # animations: the first frame (not n_frames, which walks through the whole file)
        im.seek(0)
    if max_side and max(w, h) > max_side and im.format in ("JPEG", "MPO"):
        k = max_side / max(w, h)  # libjpeg decodes at 1/2, 1/4, 1/8 scale for almost nothing
        im.draft(None, (max(1, math.ceil(w * k)), max(1, math.ceil(h * k))))
    im.load()
    orientation = _exif_orientation(im)
    im = _to_8bit(im)
    if im.mode == "P" and max_side and max(im.size) > 2 * max_side:
        # Palette images cannot be reduce()d and converting a huge one to RGB first costs memory and time; a
        # nearest pre-shrink to twice the target keeps the palette (and its transparency) and is cheap.
        im = im.copy() if im is given else im
        im.thumbnail((2 * max_side, 2 * max_side), Image.Resampling.NEAREST, reducing_gap=None)
    im = im.convert("RGBA") if _has_alpha(im) else im.convert("RGB") if im.mode not in ("RGB", "L") else im
    if max_side and max(im.size) > max_side:
        # reducing_gap: integer box reduce() first, then a short antialiased resize; RGBA is premultiplied.
        im = im.copy() if im is given else im
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    im = _flatten(im)
    method = _ORIENTATION.get(orientation)
    return im.transpose(method) if method is not None else im


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation, 1 (as stored) when absent or unreadable."""
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:  # broken EXIF must not make an otherwise fine picture unreadable
        return 1


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale -> 8-bit L, scaled (Pillow's convert() clips them to white)."""
    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    a = np.asarray(im).astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if im.mode.startswith("I;16") or (im.mode == "I" and 255 < hi <= 65535 and lo >= 0):
        a = a / 257.0  # 16-bit range onto 8 bits
    elif im.mode == "F" and 0 <= lo and hi <= 1.0:
        a = a * 255.0
    elif lo < 0 or hi > 255:
        a = (a - lo) * (255.0 / max(hi - lo, 1e-12))  # unknown range: stretch
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _flatten(im: Image.Image) -> Image.Image:
    """Composite alpha onto white and return RGB."""
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB") if im.mode != "RGB" else im


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: 9x8 greyscale thumbnail, one bit per horizontal neighbour comparison."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def image_to_tensor(img: Image.Image, size: int) -> "torch.Tensor":
    """uint8 [3, size, size]: shorter side resized to `size` (antialiased bilinear), centre crop.

    THE preprocessing for the tensor cache, evaluation and prediction. Bilinear + antialias matches the
    torchvision eval transforms the pretrained backbones were trained with.
    """
    import torch

    if img.mode != "RGB":
        img = load_image(img, max_side=None)
    # The centre square of the source resized in one step (ImageOps.fit passes the crop as the resize box).
    img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
