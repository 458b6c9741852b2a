"""Datasets: folder scan (hashes, image facts), duplicate groups, duplicate-aware split, the uint8 tensor cache.

Images are read by ``pokedemo.images`` (the one loader and preprocessing); training augmentation lives in
``pokedemo.augment``. See docs/ARCHITECTURE.md ("data.py contract"). torch is imported lazily so that scanning
a folder does not pay torch's import time (the app and the CLI's `doctor` only need PIL + numpy for that).

Scan, duplicate groups, split and tensor cache live together because they all work on one ``ImageRecord`` list
and one pass over the files.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterable, Sequence

import numpy as np

from pokedemo.images import (
    DEFAULT_MAX_SIDE, IMAGE_EXTENSIONS, ImageLoadError, dhash, image_to_tensor, load_image, load_image_with_original,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

# dhash bits that may differ for two pictures to count as near-duplicates, chosen by looking at pairs of the
# shared pokemon data side by side (counts in BENCHMARKS.md): re-encodes, recolours, crops and watermarked copies
# of one picture sit at 0-8 bits. From 9 bits on, different pictures with the same composition (a figure centred
# on white or on a dark wallpaper, plush photos) are as common as copies, cross-class pairs jump and groups start
# to chain. A false merge only costs split granularity; a missed copy leaks into test.
NEAR_DUPLICATE_BITS: int = 8

IGNORED_DIR_NAMES = frozenset({"__MACOSX"})
TENSOR_CACHE_BYTES = 1 << 30  # LRU byte budget of the module-level tensor cache (224 px: ~7000 images)


class DatasetError(ValueError):
    """The dataset folder cannot be used (missing, <2 classes, a class too small to split...). One line."""


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


MAX_DECODE_THREADS = 32  # past this, the Python-level work per file (holding the GIL) dominates


def _workers() -> int:
    """Threads that read, hash and decode images: one per usable core, plus one to hide file I/O.

    PIL (decode, resize) and hashlib release the GIL, so threads scale with cores (3 on 2 cores, 17 on 16).
    Cores this process may use, not the machine's.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 2
    return max(2, min(MAX_DECODE_THREADS, cores + 1))


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
        check_splittable(dataset)
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
        img, orig = load_image_with_original(data, DEFAULT_MAX_SIDE)
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


def check_splittable(dataset: Dataset) -> None:
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


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
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


def split_dataset(dataset: Dataset, ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                  trained: Collection[str] = ()) -> Split:
    """Deterministic stratified train/val/test split that keeps every near-duplicate group in one part.

    ``trained``: sha256 of the pictures a model this split's run continues from trained on. Their groups go to
    train before anything else, so no validation or test picture is one that model has already learnt.

    Greedy: groups in seeded random order, largest first, each to the part where it overflows the per-class
    targets least, preferring the part that still needs the most images of its classes. Singletons come last
    and even out the counts, so class proportions end up within an image or two of the targets.
    """
    r = check_ratios(ratios)
    n_classes = len(dataset.classes)
    counts = np.bincount(np.array(dataset.labels(), dtype=np.int64), minlength=n_classes)
    need = np.array([_class_targets(int(n), r) for n in counts], dtype=np.int64).T  # [part, class], remaining
    units = _units(dataset)
    rng = random.Random(seed)
    order = list(range(len(units)))
    rng.shuffle(order)
    learnt = [any(dataset.records[i].sha256 in trained for i in units[u]) for u in range(len(units))]
    order.sort(key=lambda u: (not learnt[u], -len(units[u])))  # stable sort: ties keep the seeded order
    parts: list[list[int]] = [[], [], []]
    for u in order:
        k = np.bincount([dataset.records[i].label for i in units[u]], minlength=n_classes)
        present = k > 0
        candidates = [0] if learnt[u] else [s for s in range(3) if r[s] > 0]
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
    r = check_ratios(ratios)
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
    # np.stack, not torch.stack: the same copy, but torch's multi-threaded one can stall for seconds on a
    # small shared CPU (BENCHMARKS.md).
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
