"""Images in, tensors out: the one image loader, dataset scan, duplicate groups, duplicate-aware split,
the uint8 tensor cache and the batched training augmentation.

See docs/ARCHITECTURE.md ("data.py contract"). torch is imported lazily so that loading an image or scanning a
folder does not pay torch's import time (the UI and the CLI's `doctor` only need PIL + numpy for that).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})

# Pillow's own default limit (2**30 // 4 // 3 pixels). Using the same number means any image we accept never
# trips Pillow's DecompressionBombWarning, and we never have to touch Pillow's global settings or warning filters.
# Our check reads the header size before decoding, so it holds even if other code sets
# PIL.Image.MAX_IMAGE_PIXELS = None.
MAX_IMAGE_PIXELS: int = 89_478_485

# dhash bits that may differ for two pictures to count as near-duplicates, chosen by looking at pairs of the
# shared pokemon data side by side: re-encodes, recolours, crops and watermarked copies of one picture sit at
# 0-8 bits (mostly true copies up to 7, about half at 8). From 9 bits on, different pictures with the same
# composition (a figure centred on white or on a dark wallpaper, plush photos) are as common as copies,
# cross-class pairs jump (1 pair at 8, 7 at 9, 15 at 10) and groups start to chain (largest group: 7 images
# at 8 bits, 11 at 10, 39 at 12). A false merge only costs split granularity; a missed copy leaks into test.
NEAR_DUPLICATE_BITS: int = 8

# Formats Pillow may decode for us. Restricting them keeps e.g. EPS (which shells out to Ghostscript) away from
# user uploads; the file *content* decides, so a PNG named .jpg still loads.
DECODE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "AVIF")

DEFAULT_MAX_SIDE = 1024
IGNORED_DIR_NAMES = frozenset({"__MACOSX"})
TENSOR_CACHE_BYTES = 1 << 30  # LRU byte budget of the module-level tensor cache (224 px: ~7000 images)
_WHITE = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image could not be read. str(e) is one line naming the file and the reason."""

    def __init__(self, message: str, *, source: str = "", reason: str = ""):
        super().__init__(message)
        self.source = source
        self.reason = reason or message


class DatasetError(ValueError):
    """The dataset folder cannot be used (missing, <2 classes, a class too small to split...). One line."""


# ----------------------------------------------------------------------------------------------- image loading

_ORIENTATION = {  # EXIF orientation -> transpose, the same table as PIL.ImageOps.exif_transpose
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
class _Original:
    """What the file was before normalisation (reported in ImageRecord)."""

    width: int
    height: int
    format: str
    mode: str


def load_image(source: Any, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Return `source` (path, bytes, binary file object or PIL image) as an upright RGB image.

    EXIF orientation applied, transparency composited onto white, first frame of animations, longer side
    reduced to <= max_side (cheaply: JPEG draft, reduce). Raises ImageLoadError for anything unreadable.
    """
    return _load(source, max_side)[0]


def _load(source: Any, max_side: int | None) -> tuple[Image.Image, _Original]:
    name = _source_name(source)
    try:
        im, opened = _open(source, name)
    except ImageLoadError:
        raise
    except Exception as exc:  # Pillow raises many types for bad data; callers get exactly one
        raise _load_error(name, _reason(exc)) from exc
    try:
        original = _Original(im.size[0], im.size[1], im.format or "", im.mode)
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
        # Palette images cannot be reduce()d and converting 35 Mpx to RGB costs ~100 MB and a second; a nearest
        # pre-shrink to twice the target keeps the palette (and its transparency) and costs milliseconds.
        im = im.resize(_fit(im.size, 2 * max_side), Image.Resampling.NEAREST)
    im = im.convert("RGBA") if _has_alpha(im) else im.convert("RGB") if im.mode not in ("RGB", "L") else im
    if max_side and max(im.size) > max_side:
        # reducing_gap: integer box reduce() first, then a short antialiased resize; RGBA is premultiplied.
        im = im.resize(_fit(im.size, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    im = _flatten(im)
    method = _ORIENTATION.get(orientation)
    return im.transpose(method) if method is not None else im


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    w, h = size
    k = side / max(w, h)
    return max(1, round(w * k)), max(1, round(h * k))


def _exif_orientation(im: Image.Image) -> int:
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
    w, h = img.size
    short = min(w, h)
    left, top = (w - short) / 2, (h - short) / 2  # centre square of the source = centre crop after resize
    box = (left, top, left + short, top + short)
    img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------- dataset scan


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    rel_path: str
    label: int
    sha256: str
    dhash: int
    width: int
    height: int
    format: str
    mode: str


@dataclass(frozen=True)
class Unreadable:
    rel_path: str
    reason: str


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    records: list[ImageRecord]
    unreadable: list[Unreadable]
    exact_groups: list[list[int]]
    near_groups: list[list[int]]
    conflict_groups: list[list[int]]

    def class_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.classes}
        for rec in self.records:
            counts[self.classes[rec.label]] += 1
        return counts

    def labels(self) -> list[int]:
        return [rec.label for rec in self.records]


# sha256 -> (dhash, width, height, format, mode) or an unreadable reason (str). Tiny entries, so unbounded:
# a re-scan in the same process only reads and hashes bytes.
_FACTS: dict[str, tuple[int, int, int, str, str] | str] = {}
_STATS = {"decodes": 0}
_STATS_LOCK = threading.Lock()
_CLAIMS: dict[str, threading.Event] = {}  # sha256 being decoded right now
_CLAIMS_LOCK = threading.Lock()


def _workers() -> int:
    # PIL and hashlib release the GIL, so threads scale with cores; a few more than cores hide file I/O.
    return max(2, min(8, (os.cpu_count() or 2) + 1))


def scan_dataset(root: Any, *, image_size: int | None = None,
                 near_threshold: int = NEAR_DUPLICATE_BITS, require_splittable: bool = True) -> Dataset:
    """Read every image under ROOT/<class>/ once: sha256, dhash, size, format, mode, duplicate groups.

    With image_size, the same decode also fills the tensor cache for that size. ``require_splittable=False``
    (evaluation of a folder) accepts a single class and classes too small to split.
    """
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise DatasetError(f"dataset folder not found: {root_path}")
    classes = _class_folders(root_path)
    if not classes:
        raise DatasetError(f"{root_path} has no class folders; expected ROOT/<class name>/<images>")
    if len(classes) < 2 and require_splittable:
        raise DatasetError(f"{root_path} needs at least 2 class folders (one per class), found {len(classes)}")
    files = _list_files(root_path, classes)
    with ThreadPoolExecutor(_workers()) as pool:
        results = list(pool.map(lambda f: _scan_file(f[1], image_size), files))
    records, unreadable = [], []
    for (rel, path, label), result in zip(files, results):
        if isinstance(result, str):
            unreadable.append(Unreadable(rel, result))
        else:
            records.append(ImageRecord(path, rel, label, *result))
    exact = _exact_groups(records)
    near = near_duplicate_groups([r.dhash for r in records], near_threshold)
    conflicts = [g for g in near if len({records[i].label for i in g}) > 1]
    dataset = Dataset(root_path, classes, records, unreadable, exact, near, conflicts)
    if require_splittable:
        _check_splittable(dataset)
    return dataset


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in IGNORED_DIR_NAMES


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and _visible(e.name))


def _list_files(root: Path, classes: list[str]) -> list[tuple[str, Path, int]]:
    """(rel_path, absolute path, label) of every image file, sorted by rel_path. Class folders are walked
    recursively; hidden entries (.DS_Store, ._AppleDouble) and __MACOSX are skipped."""
    files = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = [d for d in dirnames if _visible(d)]
            for filename in filenames:
                if _visible(filename) and os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS:
                    path = Path(dirpath) / filename
                    files.append((path.relative_to(root).as_posix(), path, label))
    return sorted(files)


def _scan_file(path: Path, image_size: int | None) -> tuple[str, int, int, int, str, str] | str:
    """(sha256, dhash, width, height, format, mode), or the reason the file is unreadable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    sha = hashlib.sha256(data).hexdigest()
    facts = _facts_once(data, sha, image_size)
    return facts if isinstance(facts, str) else (sha, *facts)


def _cached_facts(sha: str, image_size: int | None):
    facts = _FACTS.get(sha)
    if facts is None or isinstance(facts, str) or image_size is None:
        return facts
    return facts if _TENSORS.get((sha, image_size)) is not None else None


def _facts_once(data: bytes, sha: str, image_size: int | None):
    """Cached facts, else decode. Exact copies in one scan arrive in parallel: the first thread claims the
    sha256, the others wait for it, so every distinct file is decoded once."""
    while True:
        with _CLAIMS_LOCK:
            facts = _cached_facts(sha, image_size)
            if facts is not None:
                return facts
            event = _CLAIMS.get(sha)
            mine = event is None
            if mine:
                event = _CLAIMS[sha] = threading.Event()
        if not mine:
            event.wait()
            continue
        try:
            return _decode_facts(data, sha, image_size)
        finally:
            with _CLAIMS_LOCK:
                _CLAIMS.pop(sha).set()


def _decode_facts(data: bytes, sha: str, image_size: int | None):
    _count_decode()
    try:
        img, orig = _load(data, DEFAULT_MAX_SIDE)
    except ImageLoadError as exc:
        _FACTS[sha] = exc.reason
        return exc.reason
    facts = (dhash(img), orig.width, orig.height, orig.format, orig.mode)
    _FACTS[sha] = facts
    if image_size is not None:
        _TENSORS.put((sha, image_size), image_to_tensor(img, image_size))
    return facts


def _count_decode() -> None:
    with _STATS_LOCK:
        _STATS["decodes"] += 1


def _check_splittable(dataset: Dataset) -> None:
    """Each class must reach train, val and test: 3 images that are not copies of each other."""
    n_images = Counter(dataset.labels())
    n_distinct = Counter(label for unit in _units(dataset)
                         for label in {dataset.records[i].label for i in unit})
    for label, name in enumerate(dataset.classes):
        if n_distinct[label] < 3:
            bad = sum(1 for u in dataset.unreadable if u.rel_path.split("/", 1)[0] == name)
            extra = f" ({bad} more unreadable)" if bad else ""
            raise DatasetError(
                f"class '{name}' has {n_images[label]} readable images{extra} but only {n_distinct[label]} "
                f"distinct (non-duplicate) pictures; at least 3 are needed to split it into train/val/test")


# ----------------------------------------------------------------------------------------------- duplicates


def _exact_groups(records: list[ImageRecord]) -> list[list[int]]:
    by_sha: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_sha.setdefault(rec.sha256, []).append(i)
    return sorted(g for g in by_sha.values() if len(g) > 1)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def hamming_matrix(a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """Pairwise dhash Hamming distances, int [len(a), len(b)]."""
    ha = np.array(a, dtype=np.uint64)[:, None]
    hb = np.array(b, dtype=np.uint64)[None, :]
    return _popcount64(ha ^ hb).astype(np.int64)


def _close_pairs(hashes: Sequence[int], threshold: int, block: int = 256):
    """(i, j) with i < j and distance <= threshold, in row blocks so memory stays ~block x N x 9 bytes."""
    h = np.array(hashes, dtype=np.uint64)
    for start in range(0, len(h), block):
        rows = h[start:start + block, None]
        close = _popcount64(rows ^ h[None, start:]) <= threshold  # upper triangle (and diagonal) only
        for i, j in zip(*np.nonzero(close)):
            if i < j:  # both offsets are relative to `start`
                yield int(i) + start, int(j) + start


def near_duplicate_groups(hashes: Sequence[int], threshold: int = NEAR_DUPLICATE_BITS) -> list[list[int]]:
    """Connected components (size >= 2) of the graph 'dhash distance <= threshold' (union-find)."""
    n = len(hashes)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in _close_pairs(hashes, threshold):
        parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(g for g in groups.values() if len(g) > 1)


def _units(dataset: Dataset) -> list[list[int]]:
    """Indivisible pieces for splitting: every near group, plus each remaining image alone."""
    grouped = {i for g in dataset.near_groups for i in g}
    singles = [[i] for i in range(len(dataset.records)) if i not in grouped]
    return [list(g) for g in dataset.near_groups] + singles


def _component_ids(dataset: Dataset) -> list[int]:
    comp = [0] * len(dataset.records)
    for cid, unit in enumerate(_units(dataset)):
        for i in unit:
            comp[i] = cid
    return comp


# ----------------------------------------------------------------------------------------------- splitting

_PARTS = ("train", "val", "test")


@dataclass
class Split:
    train: list[int]
    val: list[int]
    test: list[int]
    seed: int
    ratios: tuple[float, float, float]

    def parts(self) -> dict[str, list[int]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def to_record(self, dataset: Dataset) -> list[dict]:
        """JSON-able list reproducing this split: path, sha256, class name and part of every image."""
        out = []
        for part, indices in self.parts().items():
            for i in indices:
                rec = dataset.records[i]
                out.append({"path": rec.rel_path, "sha256": rec.sha256,
                            "label": dataset.classes[rec.label], "split": part})
        return out


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(x < 0 or not math.isfinite(x) for x in r) or r[0] <= 0:
        raise ValueError(f"ratios must be 3 non-negative numbers (train, val, test) with train > 0, got {ratios}")
    total = sum(r)
    return (r[0] / total, r[1] / total, r[2] / total)


def _class_targets(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Integer image counts per part for a class of n images (largest remainder), every used part >= 1."""
    raw = [n * r for r in ratios]
    target = [math.floor(x) for x in raw]
    by_remainder = sorted(range(3), key=lambda s: (-(raw[s] - target[s]), s))
    for s in by_remainder[: n - sum(target)]:
        target[s] += 1
    used = [s for s in range(3) if ratios[s] > 0]
    if n >= len(used):
        for s in used:
            if target[s] == 0:  # borrow from the largest part so val and test are never empty for a class
                target[max(used, key=lambda t: target[t])] -= 1
                target[s] = 1
    return target


def split_dataset(dataset: Dataset, ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> Split:
    """Deterministic stratified train/val/test split that keeps every near-duplicate group in one part.

    Greedy: groups in seeded random order, largest first, each to the part where it overflows the per-class
    targets least, preferring the part that still needs the most images of its classes. Singletons come last
    and even out the counts, so class proportions end up within an image or two of the targets.
    """
    r = _check_ratios(ratios)
    n_classes = len(dataset.classes)
    counts = np.bincount(np.array(dataset.labels(), dtype=np.int64), minlength=n_classes)
    need = np.array([_class_targets(int(n), r) for n in counts], dtype=np.int64).T  # [part, class], remaining
    units = _units(dataset)
    rng = random.Random(seed)
    order = list(range(len(units)))
    rng.shuffle(order)
    order.sort(key=lambda u: -len(units[u]))  # stable sort: ties keep the seeded order
    parts: list[list[int]] = [[], [], []]
    for u in order:
        k = np.bincount([dataset.records[i].label for i in units[u]], minlength=n_classes)
        present = k > 0
        candidates = [s for s in range(3) if r[s] > 0]
        best = min(candidates, key=lambda s: (int(np.maximum(k - need[s], 0).sum()), -int(need[s][present].sum()), s))
        need[best] -= k
        parts[best].extend(units[u])
    return Split(sorted(parts[0]), sorted(parts[1]), sorted(parts[2]), seed, r)


def count_leaks(dataset: Dataset, train: Iterable[int], held_out: Iterable[int]) -> int:
    """How many held-out images have an exact or near copy (same near group) in `train`."""
    comp = _component_ids(dataset)
    train_comps = {comp[i] for i in train}
    return sum(1 for i in held_out if comp[i] in train_comps)


def naive_split_leaks(dataset: Dataset, ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> int:
    """Test images that a plain (duplicate-blind) stratified random split with these ratios/seed would leak."""
    r = _check_ratios(ratios)
    rng = random.Random(seed)
    train: list[int] = []
    test: list[int] = []
    for label in range(len(dataset.classes)):
        idx = [i for i, rec in enumerate(dataset.records) if rec.label == label]
        rng.shuffle(idx)
        n_train, n_val, _ = _class_targets(len(idx), r)
        train += idx[:n_train]
        test += idx[n_train + n_val:]
    return count_leaks(dataset, train, test)


def split_from_record(dataset: Dataset, record: Iterable[dict], *, seed: int = -1) -> Split:
    """Rebuild a Split from Split.to_record() output (e.g. stored in a checkpoint).

    Matches by sha256 first (files may have been renamed or moved), then by path. Images absent from the
    record (added since) are left out of every part. `ratios` are the realised fractions.
    """
    by_sha: dict[str, list[int]] = {}
    for i, rec in enumerate(dataset.records):
        by_sha.setdefault(rec.sha256, []).append(i)
    by_path = {rec.rel_path: i for i, rec in enumerate(dataset.records)}
    taken: set[int] = set()
    parts: dict[str, list[int]] = {p: [] for p in _PARTS}
    for entry in record:
        part = entry.get("split")
        if part not in parts:
            raise ValueError(f"split record entry has unknown split {part!r}: {entry}")
        same = [i for i in by_sha.get(str(entry.get("sha256", "")), []) if i not in taken]
        exact = [i for i in same if dataset.records[i].rel_path == entry.get("path")]
        path_i = by_path.get(str(entry.get("path", "")))
        i = (exact or same or ([path_i] if path_i is not None and path_i not in taken else [None]))[0]
        if i is not None:
            taken.add(i)
            parts[part].append(i)
    total = max(1, len(taken))
    ratios = tuple(len(parts[p]) / total for p in _PARTS)
    return Split(sorted(parts["train"]), sorted(parts["val"]), sorted(parts["test"]), seed, ratios)


# ----------------------------------------------------------------------------------------------- tensor cache


class _TensorLRU:
    """(sha256, size) -> uint8 [3, S, S], bounded by a byte budget, least recently used evicted first."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, int], value) -> None:
        size = value.numel() * value.element_size()
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.numel() * old.element_size()
            self._data[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, dropped = self._data.popitem(last=False)
                self._bytes -= dropped.numel() * dropped.element_size()

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._data), "bytes": self._bytes, "max_bytes": self.max_bytes}


_TENSORS = _TensorLRU(TENSOR_CACHE_BYTES)


def cached_tensors(dataset: Dataset, indices: Sequence[int], size: int) -> "torch.Tensor":
    """uint8 [N, 3, size, size] for dataset.records[indices]; each file decoded once per (sha256, size)."""
    import torch

    keys = [(dataset.records[i].sha256, size) for i in indices]
    found = {k: _TENSORS.get(k) for k in set(keys)}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        path_of = {(dataset.records[i].sha256, size): dataset.records[i].path for i in indices}
        with ThreadPoolExecutor(_workers()) as pool:
            for key, tensor in zip(missing, pool.map(lambda k: _decode_tensor(path_of[k], size), missing)):
                found[key] = tensor
                _TENSORS.put(key, tensor)
    if not keys:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    # np.stack, not torch.stack: same copy, but torch's multi-threaded version stalled for seconds on the
    # 2-vCPU machine this was written on, numpy takes ~20 ms for 933 x 224 px.
    return torch.from_numpy(np.stack([found[k].numpy() for k in keys]))


def _decode_tensor(path: Path, size: int) -> "torch.Tensor":
    _count_decode()
    return image_to_tensor(load_image(path), size)


def cache_info() -> dict[str, int]:
    """Counters for tests and the doctor report: decodes so far, tensor cache entries/bytes, facts entries."""
    with _STATS_LOCK:
        decodes = _STATS["decodes"]
    return {"decodes": decodes, "facts": len(_FACTS), **{f"tensor_{k}": v for k, v in _TENSORS.info().items()}}


def clear_caches() -> None:
    _FACTS.clear()
    _TENSORS.clear()


def set_tensor_cache_budget(max_bytes: int) -> None:
    _TENSORS.max_bytes = int(max_bytes)


# ----------------------------------------------------------------------------------------------- augmentation

# Per-sample torchvision v2 transforms cost ~27 ms (128 px) / ~51 ms (224 px) per batch of 32 on 2 idle CPU cores
# (~40 / ~110 ms with hue). The batched version below does crop + flip + rotation as ONE per-sample affine warp
# (affine_grid + grid_sample over the whole batch) and the colour jitter as one per-sample 3x3 colour matrix:
# ~8 ms (128 px) / ~25 ms (224 px) on the same idle cores, and still ahead when other processes load them.
AUGMENT_CROP_SCALE = 0.55      # RandomResizedCrop scale lower bound at strength 1 (area fraction)
AUGMENT_RATIO = 4 / 3          # RandomResizedCrop aspect ratio range (1/r, r) at strength 1
AUGMENT_DEGREES = 12.0         # RandomRotation range (+-) at strength 1
AUGMENT_JITTER = 0.25          # ColorJitter brightness/contrast/saturation at strength 1 (no hue: colour is
                               # what tells charmander from squirtle, shifting it would teach the wrong thing)


def make_train_augment(size: int, strength: float = 1.0, *,
                       generator: "torch.Generator | None" = None) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    """uint8 [N,3,H,W] -> uint8 [N,3,size,size]: per-sample RandomResizedCrop, horizontal flip, small
    rotation and colour jitter, all scaled by `strength` (0 = identity, 1 = the defaults above)."""
    st = max(0.0, float(strength))
    if st == 0.0:
        return _identity_augment(size)

    def augment(batch: "torch.Tensor") -> "torch.Tensor":
        import torch

        x = batch.float()
        # Random parameters are drawn on the CPU (a handful of numbers per image, reproducible with a CPU
        # generator) and moved to the batch's device, so a CUDA tensor cache is augmented on the GPU.
        x = _warp(x, _affine_params(x.shape[0], st, generator).to(x.device), size)
        x = _jitter(x, st, generator)
        return x.clamp_(0, 255).round_().to(torch.uint8)

    return augment


def _identity_augment(size: int) -> Callable[["torch.Tensor"], "torch.Tensor"]:
    def identity(batch: "torch.Tensor") -> "torch.Tensor":
        if batch.shape[-2:] == (size, size):
            return batch
        import torch.nn.functional as F  # only if the cache size differs from the training size

        x = F.interpolate(batch.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.clamp_(0, 255).round_().to(batch.dtype)

    return identity


def _uniform(n: int, lo: float, hi: float, generator) -> "torch.Tensor":
    import torch

    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _affine_params(n: int, st: float, generator) -> "torch.Tensor":
    """[n, 2, 3] affine matrices (output -> input, normalised coordinates) for crop + flip + rotation."""
    import torch

    area = _uniform(n, max(0.08, 1.0 - (1.0 - AUGMENT_CROP_SCALE) * st), 1.0, generator)
    log_r = math.log(AUGMENT_RATIO) * st
    ratio = torch.exp(_uniform(n, -log_r, log_r, generator))
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width/height as fractions of the input
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - w) * _uniform(n, -1.0, 1.0, generator)  # crop centre, kept inside the image
    cy = (1.0 - h) * _uniform(n, -1.0, 1.0, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5 * min(st, 1.0), -1.0, 1.0)
    angle = torch.deg2rad(_uniform(n, -AUGMENT_DEGREES * st, AUGMENT_DEGREES * st, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos * w * flip, -sin * h, cx], dim=1),
        torch.stack([sin * w * flip, cos * h, cy], dim=1),
    ], dim=1)
    return theta


def _warp(x: "torch.Tensor", theta: "torch.Tensor", size: int) -> "torch.Tensor":
    import torch.nn.functional as F

    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    # reflection: rotated corners show mirrored picture instead of black wedges the model could latch on to
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


def _jitter(x: "torch.Tensor", st: float, generator) -> "torch.Tensor":
    """Brightness, contrast, saturation (ColorJitter semantics) folded into one per-sample affine colour map."""
    import torch

    n, j = x.shape[0], AUGMENT_JITTER * st
    lo = max(0.0, 1.0 - j)
    b, c, s = (_uniform(n, lo, 1.0 + j, generator).to(x.device) for _ in range(3))
    luma = torch.tensor(_LUMA, device=x.device)
    gray_rows = luma.expand(3, 3)  # each output channel = luma of the input
    eye = torch.eye(3, device=x.device)
    # saturation: s*I + (1-s)*G ; brightness: *b ; contrast: c*x + (1-c)*mean(gray(x))
    m = (s[:, None, None] * eye + (1 - s)[:, None, None] * gray_rows) * (b * c)[:, None, None]
    mean_gray = torch.einsum("c,nc->n", luma, x.mean(dim=(2, 3))) * b
    offset = ((1 - c) * mean_gray)[:, None].expand(n, 3)
    return torch.einsum("nij,njhw->nihw", m, x) + offset[:, :, None, None]
