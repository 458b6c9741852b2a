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


def format_confusion(report: dict[str, Any]) -> str:
    """Plain-text confusion matrix with class names, for the CLI."""
    classes = report["classes"]
    width = max(6, *(len(c) for c in classes)) + 1
    lines = ["true \\ pred".ljust(width) + "".join(c[:width - 1].rjust(width) for c in classes)]
    for name, row in zip(classes, report["confusion"]):
        lines.append(name.ljust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
