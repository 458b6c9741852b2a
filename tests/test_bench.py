"""The benchmark's own logic on tiny data (the real figures come from running it, see BENCHMARKS.md)."""

from pokedemo.bench import add_comparisons, format_table, reference_loop, seconds_to_reach


def test_reference_loop_runs_and_reports(tiny_data_dir):
    result = reference_loop(str(tiny_data_dir), "resnet18", False, epochs=1, seed=0)
    assert 0 <= result["test_acc"] <= 1 and len(result["history"]) == 1
    assert result["images_per_sec"] > 0 and result["seconds"] > 0


def test_comparison_columns():
    history = [{"epoch": 1, "val_acc": 0.8, "elapsed": 10.0}, {"epoch": 2, "val_acc": 0.95, "elapsed": 20.0}]
    rows = [
        {"row": "reference-x", "test_acc": 0.9, "best_val_acc": 0.92, "final_val_acc": 0.9, "seconds": 400.0,
         "images_per_sec": 9.0, "peak_rss_mb": 900, "history": history},
        {"row": "pokedemo-x", "test_acc": 0.96, "best_val_acc": 0.95, "final_val_acc": 0.95, "seconds": 40.0,
         "images_per_sec": 60.0, "peak_rss_mb": 700, "history": history},
        {"row": "pokedemo-y", "error": "no weights"},
    ]
    add_comparisons(rows)
    assert rows[1]["seconds_to_target"] == 20.0 and rows[1]["speedup_vs_reference"] == 10.0
    assert "speedup_vs_reference" not in rows[0]  # a reference row is not compared with itself
    table = format_table(rows)
    assert "10.0x" in table and "skipped: no weights" in table
    assert seconds_to_reach(history, 0.99) is None
