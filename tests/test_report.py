"""Evaluation reports: the files `evaluate --report` writes, the confusion picture, the errors gallery."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pokedemo import report as rep
from pokedemo.cli import main
from pokedemo.metrics import classification_report

CLASSES = ["a", "b", "c"]


@pytest.fixture
def known_report(tiny_data_dir):
    """9 predictions on tiny_data_dir files: 3 mistakes with known confidences (0.9, 0.55, 0.7)."""
    rows = [  # (path, true, pred, prob)
        ("a/000.png", "a", "a", 0.95), ("a/001.png", "a", "b", 0.55), ("a/002.png", "a", "a", 0.8),
        ("b/000.png", "b", "b", 0.9), ("b/001.png", "b", "c", 0.9), ("b/002.png", "b", "b", 0.6),
        ("c/000.png", "c", "c", 0.99), ("c/001.png", "c", "a", 0.7), ("c/002.png", "c", "c", 0.85),
    ]
    index = {c: i for i, c in enumerate(CLASSES)}
    report = classification_report([index[r[1]] for r in rows], [index[r[2]] for r in rows], CLASSES)
    report["items"] = [{"path": p, "true": t, "pred": q, "prob": pr} for p, t, q, pr in rows]
    return report


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_write_report_files_content(known_report, tiny_data_dir, tmp_path):
    out = tmp_path / "rep"
    written = rep.write_report(known_report, out, data_root=tiny_data_dir)
    assert sorted(p.name for p in written) == ["confusion.png", "metrics.json", "misclassified.csv", "per_class.csv"]
    assert json.loads((out / "metrics.json").read_text()) == known_report

    per_class = _read_csv(out / "per_class.csv")
    assert per_class[0] == ["class", "precision", "recall", "F1", "support"]
    assert [row[0] for row in per_class[1:]] == CLASSES
    a = per_class[1]  # a: 2 of 3 right; predicted a 3 times (one of them a true c)
    assert float(a[1]) == pytest.approx(2 / 3, abs=1e-3) and float(a[2]) == pytest.approx(2 / 3, abs=1e-3)
    assert a[4] == "3"

    mis = _read_csv(out / "misclassified.csv")
    assert mis[0] == ["path", "true", "predicted", "prob", "abs_path"]
    assert [row[:4] for row in mis[1:]] == [  # most confident wrong answer first
        ["b/001.png", "b", "c", "0.9"], ["c/001.png", "c", "a", "0.7"], ["a/001.png", "a", "b", "0.55"]]
    assert Path(mis[1][4]) == tiny_data_dir / "b/001.png"

    img = Image.open(out / "confusion.png")
    assert img.mode == "RGB" and img.width >= 200 and img.height >= 200


def _colour_pixels(img: Image.Image) -> tuple[int, int]:
    arr = np.asarray(img).astype(int)
    blue = int((arr[..., 2] > arr[..., 0] + 60).sum())
    red = int((arr[..., 0] > arr[..., 2] + 60).sum())
    return blue, red


def test_confusion_image_colours_follow_the_matrix(known_report):
    """Correct cells blue, mistakes red: a perfect report has no red, an all-wrong one no blue."""
    blue, red = _colour_pixels(rep.confusion_image(known_report))
    assert blue > 0 and red > 0
    blue, red = _colour_pixels(rep.confusion_image(classification_report([0, 1, 2], [0, 1, 2], CLASSES)))
    assert blue > 0 and red == 0
    blue, red = _colour_pixels(rep.confusion_image(classification_report([0, 1, 2], [1, 2, 0], CLASSES)))
    assert blue == 0 and red > 0


@pytest.mark.parametrize("names", [
    ["a_really_quite_long_class_name", "short", "middle_sized"],  # long names: rotated column labels
    ["cat", "dog"],  # tiny grid: the title is wider than the matrix
])
def test_confusion_image_is_never_clipped(names):
    n = len(names)
    report = classification_report(list(range(n)) * 400, [0] * (400 * n), names)
    img = rep.confusion_image(report)
    arr = np.asarray(img).astype(int)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    assert (border > 240).all()  # white margin all round: no text or cell touches an edge
    assert img.width > rep.font(18).getlength(f"accuracy {report['accuracy']:.1%} on {report['n']} images")


def test_per_class_table_rows_and_macro(known_report):
    rows = rep.per_class_table(known_report)
    assert [r[0] for r in rows] == ["a", "b", "c", "macro average"]
    assert rows[-1][3] == pytest.approx(known_report["macro_f1"], abs=1e-3)
    assert rows[-1][4] == 9
    assert len(rep.per_class_table(known_report, summary=False)) == 3


def test_errors_gallery_sorted_captioned_and_skips_missing(known_report, tiny_data_dir, tmp_path):
    gallery = rep.errors_gallery(known_report, tiny_data_dir)
    assert [caption for _, caption in gallery] == ["b → c (90%)", "c → a (70%)", "a → b (55%)"]
    assert all(isinstance(img, Image.Image) for img, _ in gallery)
    moved = json.loads(json.dumps(known_report))
    moved["items"][4]["path"] = "b/gone.png"
    assert len(rep.errors_gallery(moved, tiny_data_dir)) == 2
    with pytest.raises(ValueError):
        rep.errors_gallery(known_report)  # no data root given or recorded


def test_cli_evaluate_report(tiny_checkpoint, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_data_dir),
                 "--report", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == printed and saved["n"] == 24
    wrong = [i for i in saved["items"] if i["true"] != i["pred"]]
    mis = _read_csv(out / "misclassified.csv")
    assert len(mis) - 1 == len(wrong)
    assert [float(r[3]) for r in mis[1:]] == sorted((i["prob"] for i in wrong), reverse=True)
    assert len(_read_csv(out / "per_class.csv")) == 1 + 3
    assert Image.open(out / "confusion.png").size[0] > 100
