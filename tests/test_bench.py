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


def test_gpu_rows_are_the_default_only_on_cuda_machines():
    from pokedemo.bench import GPU_DEFAULT_ROWS, ROWS, default_rows

    assert default_rows(cuda=False) == list(ROWS)[:4] and not any("gpu" in r for r in default_rows(cuda=False))
    assert default_rows(cuda=True) == GPU_DEFAULT_ROWS and all(r in ROWS for r in GPU_DEFAULT_ROWS)
    assert {ROWS[r][0] for r in GPU_DEFAULT_ROWS} == {"reference-gpu", "pokedemo"}


def test_gpu_reference_row_says_it_needs_a_gpu_on_a_cpu_machine(tiny_data_dir):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        reference_loop(str(tiny_data_dir), "resnet18", False, epochs=1, seed=0, gpu=True)


def test_gpu_loader_options_use_workers_and_pinned_memory():
    from pokedemo.bench import gpu_loader_options

    options = gpu_loader_options()
    assert options["pin_memory"] is True and 1 <= options["num_workers"] <= 8


def test_pokedemo_rows_compare_with_the_gpu_reference_when_there_is_one():
    history = [{"epoch": 1, "val_acc": 0.9, "elapsed": 5.0}]
    row = lambda name, seconds: {"row": name, "test_acc": 0.9, "best_val_acc": 0.9, "final_val_acc": 0.9,
                                 "seconds": seconds, "images_per_sec": 1.0, "peak_rss_mb": 1, "history": history}
    rows = [row("reference-x", 400.0), row("reference-gpu-x", 12.0), row("pokedemo-x", 6.0)]
    add_comparisons(rows)
    assert rows[2]["speedup_vs_reference"] == 2.0
    assert "reference-gpu-x" in format_table(rows)
