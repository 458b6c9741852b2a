"""Dataset doctor: known duplicates, conflicts and unreadable files are found exactly; the CLI prints one JSON
object on the real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pokedemo import doctor
from pokedemo.data import DatasetError, hamming_matrix, scan_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sorted_groups(groups):
    return sorted(sorted(g) for g in groups)


@pytest.fixture
def sick_dataset(tiny_dataset, tmp_path, edge_cases_dir):
    """a/b/c × 6 distinct pictures, plus: an exact copy inside a, a re-encoded (near) copy inside b, a copy of
    a c picture filed under a (label conflict), hostile files, an RGBA and a greyscale image, non-images."""
    root = tiny_dataset(tmp_path / "sick", per_class=6, size=32)
    shutil.copyfile(root / "a/000.png", root / "a/dup_exact.png")
    Image.open(root / "b/001.png").convert("RGB").save(root / "b/near.jpg", quality=92)
    shutil.copyfile(root / "c/002.png", root / "a/from_c.png")
    for name in ("not-an-image.jpg", "bomb-40000x40000.png"):
        shutil.copyfile(edge_cases_dir / name, root / "a" / name)
    (root / "b/empty.png").write_bytes(b"")
    rgba = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    rgba.paste(Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 90, 4), dtype=np.uint8)), (5, 5))
    rgba.save(root / "c/rgba_wide.png")
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (48, 40), dtype=np.uint8), "L").save(root / "c/grey.png")
    (root / "a/.DS_Store").write_bytes(b"\0\1")
    (root / "a/notes.txt").write_text("not an image extension: not listed at all")
    return root


def test_known_groups_and_unreadables_are_found_exactly(sick_dataset):
    report = doctor.diagnose(sick_dataset)

    assert report["classes"] == {"a": 8, "b": 7, "c": 8}
    assert _sorted_groups(report["exact_duplicate_groups"]) == [
        ["a/000.png", "a/dup_exact.png"], ["a/from_c.png", "c/002.png"]]
    assert _sorted_groups(report["near_duplicate_groups"]) == [
        ["a/000.png", "a/dup_exact.png"], ["a/from_c.png", "c/002.png"], ["b/001.png", "b/near.jpg"]]
    assert report["conflict_groups"] == [["a/from_c.png", "c/002.png"]]
    assert report["unreadable"] == ["a/bomb-40000x40000.png", "a/not-an-image.jpg", "b/empty.png"]
    reasons = report["unreadable_reasons"]
    assert "decompression bomb" in reasons["a/bomb-40000x40000.png"]
    assert "not a recognised image" in reasons["a/not-an-image.jpg"]
    assert "empty" in reasons["b/empty.png"]
    json.dumps(report)  # JSON-ready as promised


def test_groups_are_the_ones_the_split_uses(sick_dataset):
    """Same hashes as data.scan_dataset: the near copy really is near (not exact) and within the threshold."""
    report = doctor.diagnose(sick_dataset)
    dataset = scan_dataset(sick_dataset, require_splittable=False)
    by_path = {r.rel_path: r for r in dataset.records}
    near, original = by_path["b/near.jpg"], by_path["b/001.png"]
    assert near.sha256 != original.sha256
    assert hamming_matrix([near.dhash], [original.dhash])[0, 0] <= report["near_threshold_bits"]
    assert len(report["near_duplicate_groups"]) == len(dataset.near_groups)
    split = report["split"]
    assert split["test_leaks"] == 0 and split["val_leaks"] == 0
    assert split["groups_kept_whole"] == 3 and split["images_in_groups"] == 6
    assert sum(split["sizes"].values()) == report["n_images"] == 23


def test_formats_modes_sizes_and_warnings(sick_dataset):
    report = doctor.diagnose(sick_dataset)
    assert report["formats"] == {"PNG": 22, "JPEG": 1}
    assert report["modes"] == {"RGB": 21, "RGBA": 1, "L": 1}
    assert report["sizes"]["width"] == {"min": 32, "median": 32, "max": 100}
    assert report["sizes"]["height"] == {"min": 32, "median": 32, "max": 50}
    assert "c/rgba_wide.png" in report["small_images"]  # 50 px short side < 64
    text = " ".join(report["warnings"])
    assert "3 unreadable" in text and "label conflicts" in text
    assert not report["imbalanced"]  # 8 / 7 / 8


def test_imbalance_and_too_small_class_are_reported_not_raised(tiny_dataset, tmp_path):
    root = tiny_dataset(tmp_path / "skewed", per_class=8)
    for p in sorted((root / "c").iterdir())[2:]:
        p.unlink()  # c keeps 2 pictures: too few to split, a 4x imbalance
    report = doctor.diagnose(root)
    assert report["classes"] == {"a": 8, "b": 8, "c": 2}
    assert report["imbalanced"] and report["imbalance_ratio"] == 4.0
    assert "class 'c'" in report["split"]["error"]
    assert any("imbalanced" in w and "c has 2" in w for w in report["warnings"])
    assert "cannot split" in doctor.format_doctor(report)


def test_single_class_is_reported(tiny_dataset, tmp_path):
    report = doctor.diagnose(tiny_dataset(tmp_path / "one", classes=("only",)))
    assert report["classes"] == {"only": 8}
    assert "at least 2 class folders" in report["split"]["error"]
    assert any("at least 2 class folders" in w for w in report["warnings"])


def test_not_a_dataset_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError):
        doctor.diagnose(tmp_path / "missing")
    with pytest.raises(DatasetError):
        doctor.diagnose(tmp_path)  # exists but holds no class folders


def test_text_markdown_and_conflict_thumbnails(sick_dataset):
    report = doctor.diagnose(sick_dataset)
    text = doctor.format_doctor(report)
    assert "a/from_c.png = c/002.png" in text and "b/empty.png: empty" in text
    assert "leaks 0" in text
    from pokedemo.app.text import doctor_markdown
    from pokedemo.app.views import conflict_thumbnails

    md = doctor_markdown(report)
    assert "| a | 8 |" in md and "`a/not-an-image.jpg`" in md
    thumbs = conflict_thumbnails(report, sick_dataset)
    assert len(thumbs) == 1
    strip, caption = thumbs[0]
    assert caption == "a/from_c.png | c/002.png"
    assert strip.width >= 2 * 32 and strip.height > 32  # two pictures side by side, labels underneath


def test_cli_json_on_pokemon_data(pokemon_dir):
    from conftest import class_folders, image_files

    proc = subprocess.run([sys.executable, "-m", "pokedemo", "doctor", "--data", str(pokemon_dir), "--json"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert sorted(report["classes"]) == class_folders(pokemon_dir)
    assert sum(report["classes"].values()) == report["n_images"] == len(image_files(pokemon_dir))
    assert report["unreadable"] == []
    for key in ("exact_duplicate_groups", "near_duplicate_groups", "conflict_groups"):
        groups = report[key]
        assert groups and all(len(g) >= 2 for g in groups)
        assert all((pokemon_dir / p).is_file() for g in groups for p in g)  # relative to DIR
    exact = {frozenset(g) for g in report["exact_duplicate_groups"]}
    near = [set(g) for g in report["near_duplicate_groups"]]
    assert all(any(e <= n for n in near) for e in exact)  # exact copies sit inside near groups
    assert all(len({p.split("/")[0] for p in g}) >= 2 for g in report["conflict_groups"])
    assert report["split"]["test_leaks"] == 0 < report["split"]["naive_test_leaks"]
