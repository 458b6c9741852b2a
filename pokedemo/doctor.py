"""Dataset doctor: is this folder OK to train on?

Everything comes from ``pokedemo.data.scan_dataset`` (the same hashes and duplicate groups the split uses, so
what the doctor shows is exactly what training will do) plus the duplicate-aware split itself. No torch: the
CLI's ``doctor`` and the app's panel only pay for PIL + numpy.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pokedemo import data
from pokedemo.config import TrainConfig

IMBALANCE_WARN_RATIO = 1.5  # largest class / smallest class above this gets a warning
SMALL_IMAGE_SIDE = 64       # images with a shorter side below this are upscaled a lot at training size
_EXTENSION_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".webp": "WEBP",
                      ".bmp": "BMP"}


def diagnose(root: str | os.PathLike) -> dict[str, Any]:
    """JSON-ready health report of ROOT/<class>/ images (see docs/ARCHITECTURE.md for the keys).

    Raises DatasetError only when ROOT is not a folder of class folders at all; everything else (too few
    images, unreadable files, conflicts) is reported, not raised.
    """
    t0 = time.perf_counter()
    dataset = data.scan_dataset(root, require_splittable=False)
    if not dataset.classes:
        raise data.DatasetError(f"{dataset.root} has no class folders (expected ROOT/<class>/<image>)")
    paths = [r.rel_path for r in dataset.records]
    report: dict[str, Any] = {
        "root": str(dataset.root),
        "n_images": len(dataset.records),
        "classes": dataset.class_counts(),
        **_balance(dataset.class_counts()),
        "formats": dict(Counter(r.format for r in dataset.records).most_common()),
        "modes": dict(Counter(r.mode for r in dataset.records).most_common()),
        "sizes": _size_ranges(dataset.records),
        "small_images": [r.rel_path for r in dataset.records if min(r.width, r.height) < SMALL_IMAGE_SIDE],
        "extension_mismatch": _extension_mismatches(dataset.records),
        "unreadable": [u.rel_path for u in dataset.unreadable],
        "unreadable_reasons": {u.rel_path: u.reason for u in dataset.unreadable},
        "near_threshold_bits": data.NEAR_DUPLICATE_BITS,
        "exact_duplicate_groups": _as_paths(dataset.exact_groups, paths),
        "near_duplicate_groups": _as_paths(dataset.near_groups, paths),
        "conflict_groups": _as_paths(dataset.conflict_groups, paths),
        "split": _split_summary(dataset),
    }
    report["warnings"] = _warnings(report)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _as_paths(groups: list[list[int]], paths: list[str]) -> list[list[str]]:
    return [[paths[i] for i in group] for group in groups]


def _balance(counts: dict[str, int]) -> dict[str, Any]:
    """Largest/smallest class ratio (None when a class is empty: the ratio is infinite, not JSON)."""
    if not counts:
        return {"imbalance_ratio": None, "imbalanced": False}
    low, high = min(counts.values()), max(counts.values())
    ratio = round(high / low, 3) if low > 0 else None
    return {"imbalance_ratio": ratio, "imbalanced": ratio is None or ratio > IMBALANCE_WARN_RATIO}


def _size_ranges(records: list[data.ImageRecord]) -> dict[str, dict[str, float]]:
    out = {}
    for axis in ("width", "height"):
        values = [getattr(r, axis) for r in records]
        out[axis] = ({"min": min(values), "median": statistics.median(values), "max": max(values)}
                     if values else {"min": 0, "median": 0, "max": 0})
    return out


def _extension_mismatches(records: list[data.ImageRecord]) -> list[str]:
    """Files whose content is another format than their name says (harmless here, confusing elsewhere)."""
    out = []
    for r in records:
        expected = _EXTENSION_FORMATS.get(Path(r.rel_path).suffix.lower())
        if expected and r.format and r.format != expected and not (expected == "JPEG" and r.format == "MPO"):
            out.append(r.rel_path)
    return out


def _split_summary(dataset: data.Dataset) -> dict[str, Any]:
    """What the duplicate-aware split (default ratios and seed, as training uses) does with the groups,
    against a plain random split with the same ratios and seed."""
    cfg = TrainConfig()
    summary: dict[str, Any] = {
        "ratios": [round(r, 3) for r in cfg.ratios], "seed": cfg.seed,
        "groups_kept_whole": len(dataset.near_groups),
        "images_in_groups": sum(len(g) for g in dataset.near_groups),
    }
    if len(dataset.classes) < 2:
        return {**summary, "error": "training needs at least 2 class folders"}
    try:
        data.check_splittable(dataset)  # the same check training applies, as a message instead of a raise
    except data.DatasetError as exc:
        return {**summary, "error": str(exc)}
    split = data.split_dataset(dataset, cfg.ratios, cfg.seed)
    summary.update(
        sizes={"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        naive_test_leaks=data.naive_split_leaks(dataset, cfg.ratios, cfg.seed),
        test_leaks=data.count_leaks(dataset, split.train, split.test),
        val_leaks=data.count_leaks(dataset, split.train, split.val),
    )
    return summary


def _warnings(report: dict[str, Any]) -> list[str]:
    counts, out = report["classes"], []
    if report["imbalanced"] and counts:
        low = min(counts, key=counts.get)
        high = max(counts, key=counts.get)
        out.append(f"classes are imbalanced: {high} has {counts[high]} images, {low} has {counts[low]}; "
                   "accuracy will favour the big classes (add images or look at per-class recall)")
    if report["unreadable"]:
        out.append(f"{len(report['unreadable'])} unreadable file(s) will be skipped")
    if report["conflict_groups"]:
        out.append(f"{len(report['conflict_groups'])} duplicate group(s) appear under more than one class "
                   "(label conflicts): the same picture cannot be two classes; fix or remove them")
    if report["small_images"]:
        out.append(f"{len(report['small_images'])} image(s) are smaller than {SMALL_IMAGE_SIDE}px on a side")
    if "error" in report["split"]:
        out.append(report["split"]["error"])
    return out


def format_doctor(report: dict[str, Any]) -> str:
    """Plain-text report for the terminal (the app words it in ``pokedemo.app.text.doctor_markdown``)."""
    lines = [(f"dataset {report['root']}: {report['n_images']} readable images in {len(report['classes'])} "
              f"classes ({report['seconds']:.2f}s)")]
    width = max([len(c) for c in report["classes"]] + [5])
    lines += [f"  {name:<{width}} {n:>6}" for name, n in report["classes"].items()]
    lines += _facts_lines(report)
    lines += _group_lines("exact duplicate groups", report["exact_duplicate_groups"])
    lines += _group_lines(f"near-duplicate groups (dhash <= {report['near_threshold_bits']} bits, "
                          "exact copies included)", report["near_duplicate_groups"])
    lines += _group_lines("label conflicts (groups spanning classes)", report["conflict_groups"], limit=20)
    lines.append(split_sentence(report["split"]))
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def _facts_lines(report: dict[str, Any]) -> list[str]:
    sizes = report["sizes"]
    lines = [
        "formats: " + format_counts(report["formats"]) + "   modes: " + format_counts(report["modes"]),
        "width  min/median/max: {min}/{median:g}/{max}".format(**sizes["width"]),
        "height min/median/max: {min}/{median:g}/{max}".format(**sizes["height"]),
    ]
    if report["imbalance_ratio"] is not None:
        lines.append(f"largest/smallest class: {report['imbalance_ratio']:.2f}")
    if report["extension_mismatch"]:
        lines.append(f"{len(report['extension_mismatch'])} file(s) whose content differs from their extension, "
                     f"e.g. {report['extension_mismatch'][0]}")
    lines.append(f"unreadable files: {len(report['unreadable'])}")
    lines += [f"  {p}: {report['unreadable_reasons'][p]}" for p in report["unreadable"]]
    return lines


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _group_lines(title: str, groups: list[list[str]], limit: int = 5) -> list[str]:
    lines = [f"{title}: {len(groups)} ({sum(len(g) for g in groups)} images)"]
    lines += [f"  {' = '.join(g)}" for g in groups[:limit]]
    if len(groups) > limit:
        lines.append(f"  ... {len(groups) - limit} more (use --json for all)")
    return lines


def split_sentence(split: dict[str, Any]) -> str:
    """One sentence on what the duplicate-aware split did."""
    if "error" in split:
        return f"split: cannot split this dataset yet: {split['error']}"
    sizes = split["sizes"]
    return (f"split (train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']}): "
            f"{split['groups_kept_whole']} duplicate group(s) ({split['images_in_groups']} images) kept whole "
            f"in one part; a plain random split would have leaked {split['naive_test_leaks']} test image(s) "
            f"with a copy in train, this one leaks {split['test_leaks']}")
