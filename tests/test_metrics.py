import numpy as np
import pytest

from pokedemo.metrics import classification_report, confusion_matrix, format_confusion


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_report_matches_hand_computed_values():
    report = classification_report([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["n"] == 5
    a, b, c = (report["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (0.5, 0.5, 2)
    assert (b["precision"], b["recall"]) == (0.5, 1.0)
    assert b["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5, abs=1e-4)
    assert (c["precision"], c["recall"]) == (1.0, 0.5)
    assert report["macro_f1"] == pytest.approx(np.mean([0.5, 2 / 3, 2 / 3]), abs=1e-3)


def test_never_predicted_class_scores_zero_not_nan():
    report = classification_report([0, 1], [0, 0], ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_format_confusion_names_classes():
    text = format_confusion(classification_report([0, 1], [0, 1], ["bulbasaur", "pikachu"]))
    assert "bulbasaur" in text and "pikachu" in text


def test_report_with_items_predicts_from_probabilities():
    from pokedemo.metrics import report_with_items

    probs = [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]
    report = report_with_items(probs, [0, 1, 1], ["a", "b"], ["a/1.png", "b/1.png", "b/2.png"], "/data")
    assert report["accuracy"] == pytest.approx(2 / 3) and report["root"] == "/data"
    assert report["items"][2] == {"path": "b/2.png", "true": "b", "pred": "a", "prob": 0.6}


def test_top_confusions_list_the_most_frequent_mistakes():
    from pokedemo.metrics import format_confusion, top_confusions

    classes = [f"c{k:02d}" for k in range(30)]
    targets = [0] * 10 + [1] * 4 + list(range(2, 30))
    predictions = [0] * 7 + [5] * 3 + [2] * 4 + list(range(2, 30))
    report = classification_report(targets, predictions, classes)
    assert top_confusions(report) == [
        {"true": "c01", "predicted": "c02", "count": 4, "share": 1.0},
        {"true": "c00", "predicted": "c05", "count": 3, "share": 0.3},
    ]
    text = format_confusion(report)  # 30 classes: a list, not a 30 x 30 matrix
    assert text.splitlines()[1:] == ["  c01 → c02: 4 of 4 (100%)", "  c00 → c05: 3 of 10 (30%)"]
