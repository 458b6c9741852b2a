"""Evaluation reports: confusion matrix picture, per-class table, misclassified images.

Input is a report from ``pokedemo.predict.evaluate_folder`` / ``evaluate_split``
(``pokedemo.metrics.classification_report`` plus ``items``: path, true, pred, prob per image). Pictures are
drawn with PIL only; paths in ``items`` are relative to the evaluated dataset root.
"""

from __future__ import annotations

import csv
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from pokedemo.images import ImageLoadError, load_image

PER_CLASS_HEADERS = ["class", "precision", "recall", "F1", "support"]
MISCLASSIFIED_HEADERS = ["path", "true", "predicted", "prob"]
GALLERY_THUMB_SIDE = 256
_FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where installed, else Pillow's bundled scalable font (same size, always available)."""
    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def misclassified(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Wrongly predicted items, most confident wrong answer first (ties by path, for stable output)."""
    wrong = [item for item in report.get("items", []) if item["true"] != item["pred"]]
    return sorted(wrong, key=lambda item: (-item["prob"], item["path"]))


def per_class_table(report: dict[str, Any], summary: bool = True) -> list[list[Any]]:
    """Rows [class, precision, recall, F1, support] (headers: PER_CLASS_HEADERS) for a gr.Dataframe; with
    summary, a last "macro average" row (unweighted mean over classes that have test images)."""
    rows = [[name, m["precision"], m["recall"], m["f1"], m["support"]] for name, m in report["per_class"].items()]
    present = [row for row in rows if row[4] > 0]
    if summary and present:
        mean = [round(sum(row[k] for row in present) / len(present), 4) for k in (1, 2, 3)]
        rows.append(["macro average", *mean, sum(row[4] for row in rows)])
    return rows


def _data_root(report: dict[str, Any], data_root: str | os.PathLike | None) -> Path | None:
    root = data_root or report.get("root")
    return Path(root) if root else None


def errors_gallery(report: dict[str, Any], data_root: str | os.PathLike | None = None,
                   limit: int = 60) -> list[tuple[Image.Image, str]]:
    """Misclassified images for a gr.Gallery, most confident mistakes first, captioned
    "true → predicted (p)". Thumbnails are PIL images (Gradio serves them from its cache; raw paths
    outside its allowed folders would be refused). Files missing since the evaluation are skipped."""
    return [(img, caption) for img, caption, _ in errors_gallery_items(report, data_root, limit)]


def errors_gallery_items(report: dict[str, Any], data_root: str | os.PathLike | None = None,
                         limit: int = 60) -> list[tuple[Image.Image, str, dict[str, Any]]]:
    """``errors_gallery`` with each tile's report item (path, true, pred, prob), in gallery order."""
    root = _data_root(report, data_root)
    if root is None:
        raise ValueError("errors_gallery needs the evaluated data folder (data_root) to find the images")
    out = []
    for item in misclassified(report)[:limit]:
        try:
            img = load_image(root / item["path"], max_side=2 * GALLERY_THUMB_SIDE)
        except ImageLoadError:
            continue
        img.thumbnail((GALLERY_THUMB_SIDE, GALLERY_THUMB_SIDE), Image.Resampling.LANCZOS)
        # Short enough for a gallery tile; the path stays in misclassified.csv and the image itself.
        out.append((img, f"{item['true']} → {item['pred']} ({item['prob']:.0%})", item))
    return out


def write_report(report: dict[str, Any], out_dir: str | os.PathLike,
                 data_root: str | os.PathLike | None = None) -> list[Path]:
    """Write confusion.png, metrics.json (the whole report), per_class.csv and misclassified.csv (most
    confident mistakes first; an `abs_path` column too when the data folder is known). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    confusion_image(report).save(out / "confusion.png")
    (out / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    _write_csv(out / "per_class.csv", PER_CLASS_HEADERS, per_class_table(report, summary=False))
    root = _data_root(report, data_root)
    rows = [[m["path"], m["true"], m["pred"], m["prob"]] + ([str(root / m["path"])] if root else [])
            for m in misclassified(report)]
    _write_csv(out / "misclassified.csv", MISCLASSIFIED_HEADERS + (["abs_path"] if root else []), rows)
    return [out / name for name in ("confusion.png", "metrics.json", "per_class.csv", "misclassified.csv")]


def _write_csv(path: Path, headers: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------- the picture


def _cell_colour(fraction: float, diagonal: bool) -> tuple[int, int, int]:
    """White → blue for correct predictions, white → red for mistakes, by share of the true class's images
    (so small and big classes compare); errors stand out even when counts are small."""
    end = (33, 102, 172) if diagonal else (203, 24, 29)
    f = max(0.0, min(1.0, fraction)) ** 0.7
    if fraction > 0:
        f = max(f, 0.3)  # lift small shares off white so a single mistake is visible
    return tuple(round(255 + (e - 255) * f) for e in end)


def _text_width(draw: ImageDraw.ImageDraw, text: str, fnt) -> float:
    return draw.textlength(text, font=fnt)


def confusion_image(report: dict[str, Any]) -> Image.Image:
    """The confusion matrix as a picture: rows true class, columns predicted class, counts in the cells
    (with the row share), colour by share, class names on both axes (never clipped), accuracy on top."""
    classes, matrix = report["classes"], report["confusion"]
    n = len(classes)
    cell = max(44, min(96, 640 // max(n, 1)))
    big, small, label_font = font(max(12, cell // 4)), font(max(9, cell // 7)), font(max(11, min(18, cell // 4)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(_text_width(probe, c, label_font) for c in classes)) + 12
    rotate = max(_text_width(probe, c, label_font) for c in classes) > cell - 8
    top_h = label_w if rotate else label_font.size + 12
    left, top = label_w + label_font.size + 16, top_h + 2 * label_font.size + 28
    title = f"accuracy {report.get('accuracy', 0):.1%} on {report.get('n', 0)} images"
    title_x = max(left + n * cell / 2, _text_width(probe, title, label_font) / 2 + 12)  # never off the left
    width = max(left + n * cell + 16, int(title_x + _text_width(probe, title, label_font) / 2) + 12)
    img = Image.new("RGB", (width, top + n * cell + 16), "white")
    draw = ImageDraw.Draw(img)
    _draw_titles(img, draw, title, title_x, top, n * cell, label_font)
    for j, name in enumerate(classes):  # predicted class names above the columns
        _column_label(img, name, left + j * cell + cell // 2, top - 6, label_font, rotate)
    for i, name in enumerate(classes):
        draw.text((left - 8, top + i * cell + cell // 2), name, fill="black", font=label_font, anchor="rm")
        row_total = sum(matrix[i]) or 1
        for j in range(n):
            _draw_cell(draw, (left + j * cell, top + i * cell), cell, matrix[i][j], matrix[i][j] / row_total,
                       i == j, big, small)
    return img


def _draw_titles(img: Image.Image, draw: ImageDraw.ImageDraw, title: str, centre_x: float, top: int,
                 grid: int, fnt) -> None:
    draw.text((centre_x, 6), title, fill="black", font=fnt, anchor="ma")
    draw.text((centre_x, fnt.size + 14), "predicted class", fill=(80, 80, 80), font=fnt, anchor="ma")
    axis = _text_image("true class", fnt, (80, 80, 80)).rotate(90, expand=True)
    img.paste(axis, (4, top + grid // 2 - axis.height // 2))


def _text_image(text: str, fnt, fill) -> Image.Image:
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=fnt)
    tile = Image.new("RGB", (int(x1 - x0) + 4, int(y1 - y0) + 4), "white")
    ImageDraw.Draw(tile).text((2 - x0, 2 - y0), text, fill=fill, font=fnt)
    return tile


def _column_label(img: Image.Image, name: str, centre_x: int, bottom: int, fnt, rotate: bool) -> None:
    """A column's class name, horizontal when it fits the cell, else reading upwards."""
    tile = _text_image(name, fnt, (0, 0, 0))
    if rotate:
        tile = tile.rotate(90, expand=True)
    img.paste(tile, (centre_x - tile.width // 2, bottom - tile.height))


def _draw_cell(draw: ImageDraw.ImageDraw, xy: tuple[int, int], cell: int, count: int, share: float,
               diagonal: bool, big, small) -> None:
    x, y = xy
    colour = _cell_colour(share, diagonal)
    draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(210, 210, 210))
    dark = sum(c * w for c, w in zip(colour, (0.299, 0.587, 0.114))) < 140  # white text on dark cells
    ink = "white" if dark else "black"
    draw.text((x + cell / 2, y + cell * 0.42), str(count), fill=ink if count else (170, 170, 170), font=big,
              anchor="mm")
    if count:
        draw.text((x + cell / 2, y + cell * 0.76), f"{share:.0%}", fill=ink, font=small, anchor="mm")
