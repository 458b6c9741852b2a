"""Classification metrics: accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_matrix(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def classification_report(
    targets: Sequence[int], predictions: Sequence[int], classes: Sequence[str]
) -> dict[str, Any]:
    """JSON-friendly report: accuracy, n, per-class precision/recall/F1/support, macro F1, confusion."""
    matrix = confusion_matrix(targets, predictions, len(classes))
    true_pos = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    # A class never predicted (or absent) gets precision/recall 0 rather than NaN, as scikit-learn's default.
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    n = int(matrix.sum())
    per_class = {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return {
        "accuracy": float(true_pos.sum() / n) if n else 0.0,
        "n": n,
        "macro_f1": round(float(f1[support > 0].mean()), 4) if (support > 0).any() else 0.0,
        "classes": list(classes),
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def report_with_items(
    probs: "np.ndarray | Sequence[Sequence[float]]", targets: Sequence[int], classes: Sequence[str],
    paths: Sequence[str], root: str,
) -> dict[str, Any]:
    """classification_report from class probabilities [N, C], plus ``root`` and one ``items`` entry per image
    (``path`` relative to root, ``true``, ``pred``, ``prob`` of the predicted class) for galleries and reports."""
    probs = np.asarray(probs, dtype=float)
    predictions = probs.argmax(axis=1).tolist() if len(probs) else []
    report = classification_report(targets, predictions, classes)
    report["root"] = root  # lets reports and galleries find the images again
    report["items"] = [
        {"path": path, "true": classes[t], "pred": classes[p], "prob": round(float(probs[j, p]), 6)}
        for j, (path, t, p) in enumerate(zip(paths, targets, predictions))
    ]
    return report


# Above this many classes a confusion matrix (picture or text) is unreadable; the most frequent mistakes,
# listed, say what matters.
MATRIX_MAX_CLASSES = 20


def top_confusions(report: dict[str, Any], limit: int = 15) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes: count, and share of that true class's images."""
    classes, matrix = report["classes"], np.asarray(report["confusion"], dtype=np.int64)
    if matrix.size == 0:
        return []
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    totals = matrix.sum(axis=1)
    pairs = sorted(zip(rows.tolist(), cols.tolist()), key=lambda rc: (-off[rc], -off[rc] / totals[rc[0]], rc))
    return [{"true": classes[r], "predicted": classes[c], "count": int(off[r, c]),
             "share": round(float(off[r, c] / totals[r]), 4)} for r, c in pairs[:limit]]


def format_top_confusions(report: dict[str, Any], limit: int = 15) -> str:
    """The top mistakes, one per line: ``true → predicted: n of m (share)``."""
    items = top_confusions(report, limit)
    if not items:
        return "no mistakes on these images"
    totals = dict(zip(report["classes"], np.asarray(report["confusion"]).sum(axis=1).tolist()))
    lines = [f"most frequent mistakes ({len(report['classes'])} classes, too many for a matrix):"]
    lines += [f"  {i['true']} → {i['predicted']}: {i['count']} of {totals[i['true']]} ({i['share']:.0%})" for i in items]
    return "\n".join(lines)


def format_confusion(report: dict[str, Any]) -> str:
    """Plain-text confusion matrix with class names, for the CLI (the top mistakes above MATRIX_MAX_CLASSES)."""
    classes = report["classes"]
    if len(classes) > MATRIX_MAX_CLASSES:
        return format_top_confusions(report)
    width = max(6, *(len(c) for c in classes)) + 1
    lines = ["true \\ pred".ljust(width) + "".join(c[:width - 1].rjust(width) for c in classes)]
    for name, row in zip(classes, report["confusion"]):
        lines.append(name.ljust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
