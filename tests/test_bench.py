"""The benchmark's own logic on tiny data (the real figures come from running it, see BENCHMARKS.md)."""

import json

import pytest

from benchmarks import bench
from benchmarks.bench import (
    add_comparisons, bench_predict, format_accuracy_table, format_table, reference_loop, seconds_to_reach,
    summarise_accuracy,
)
from pokedemo.config import device_defaults, resolve_device


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
    from benchmarks.bench import GPU_DEFAULT_ROWS, ROWS, default_rows

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
    from benchmarks.bench import gpu_loader_options

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


@pytest.fixture
def in_process(monkeypatch):
    """Runs this checkout's accuracy runs in this process (real training, no new interpreter each) and another
    checkout's in its own process as the benchmark does; returns the (checkout, recipe, seed, backbone) calls."""
    calls = []
    real = bench.accuracy_process

    def run(checkout, data, out, recipe, seed, budget):
        calls.append((checkout, recipe, seed, budget["backbone"]))
        if checkout is None:
            return bench.accuracy_run(data, recipe, seed, budget, out)
        return real(checkout, data, out, recipe, seed, budget)

    monkeypatch.setattr(bench, "accuracy_process", run)
    return calls


def table_rows(table: str, *names: str) -> dict[str, str]:
    return {line.split()[0]: line for line in table.splitlines() if line.startswith(names)}


def test_accuracy_bench_trains_each_recipe_in_a_process_of_its_own_and_prints_the_table(tiny_data_dir, tmp_path,
                                                                                       capsys):
    code = bench.main(["--accuracy", "--data", str(tiny_data_dir), "--out", str(tmp_path), "--seeds", "0",
                       "--recipes", "default", "fixres", "--backbone", "resnet18", "--scratch", "--epochs", "1",
                       "--img-size", "32", "--batch-size", "8", "--json", str(tmp_path / "acc.json")])
    assert code == 0
    table = capsys.readouterr().out
    rows = table_rows(table, "default", "fixres")
    assert set(rows) == {"default", "fixres"}, table
    assert all("failed" not in row and "0:" in row for row in rows.values()), table
    assert "1.00x" in rows["default"]  # ratios are relative to the first recipe
    report = json.loads((tmp_path / "acc.json").read_text())
    assert [(r["recipe"], r["seed"]) for r in report["runs"]] == [("default", 0), ("fixres", 0)]
    # The default's last epoch and evaluation run at the device's last-epoch scale (1.25x on a CPU, 40 px; 1x on a
    # CUDA GPU); fixres trains at 32 px throughout and evaluates at 1.375x on any device.
    default_eval = round(32 * device_defaults(resolve_device("auto")).last_epoch_scale)
    assert {r["eval_size"] for r in report["runs"] if r["recipe"] == "default"} == {default_eval}
    assert {r["eval_size"] for r in report["runs"] if r["recipe"] == "fixres"} == {44}


def test_accuracy_bench_trains_each_recipe_and_seed_interleaved(tiny_data_dir, tmp_path, capsys, in_process):
    code = bench.main(["--accuracy", "--data", str(tiny_data_dir), "--out", str(tmp_path), "--seeds", "0", "1",
                       "--recipes", "default", "fixres", "--backbone", "resnet18", "--scratch", "--epochs", "1",
                       "--img-size", "32", "--batch-size", "8", "--json", str(tmp_path / "acc.json")])
    assert code == 0
    assert in_process == [(None, "default", 0, "resnet18"), (None, "fixres", 0, "resnet18"),
                          (None, "default", 1, "resnet18"), (None, "fixres", 1, "resnet18")]
    rows = table_rows(capsys.readouterr().out, "default", "fixres")
    assert set(rows) == {"default", "fixres"}, rows
    assert all("failed" not in row and "0:" in row and "1:" in row for row in rows.values()), rows
    report = json.loads((tmp_path / "acc.json").read_text())
    assert [(r["recipe"], r["seed"]) for r in report["runs"]] == [
        ("default", 0), ("fixres", 0), ("default", 1), ("fixres", 1)]
    assert all("error" not in r for r in report["runs"]), report["runs"]


def test_accuracy_bench_trains_every_backbone_with_every_recipe_interleaved(tiny_data_dir, tmp_path, capsys,
                                                                            in_process):
    code = bench.main(["--accuracy", "--data", str(tiny_data_dir), "--out", str(tmp_path), "--seeds", "0", "0",
                       "--recipes", "default", "--backbone", "resnet18", "efficientnet_lite0", "--scratch",
                       "--epochs", "1", "--img-size", "32", "--batch-size", "8", "--json", str(tmp_path / "acc.json")])
    assert code == 0
    table = capsys.readouterr().out
    rows = [line.split()[0] for line in table.splitlines() if "/default" in line.split(" ")[0]]
    assert rows == ["resnet18/default", "efficientnet_lite0/default"], table
    runs = json.loads((tmp_path / "acc.json").read_text())["runs"]
    assert [(r["recipe"], r["backbone"], r["seed"]) for r in runs] == [
        ("resnet18/default", "resnet18", 0), ("efficientnet_lite0/default", "efficientnet_lite0", 0)] * 2
    assert [backbone for *_, backbone in in_process] == ["resnet18", "efficientnet_lite0"] * 2
    assert all("error" not in r for r in runs), runs


def test_accuracy_summary_reports_mean_spread_and_failures():
    results = [
        {"recipe": "a", "seed": 0, "test_acc": 0.90, "seconds": 10.0, "cpu_seconds": 18.0, "eval_size": 128,
         "confidence": 0.80},
        {"recipe": "a", "seed": 1, "test_acc": 0.94, "seconds": 14.0, "cpu_seconds": 22.0, "eval_size": 128,
         "confidence": 0.90},
        {"recipe": "b", "seed": 0, "test_acc": 0.96, "seconds": 12.0, "cpu_seconds": 21.0, "eval_size": 160},
        {"recipe": "b", "seed": 1, "error": "out of memory"},
    ]
    a, b = summarise_accuracy(results, ["a", "b"])
    assert a["test_acc"]["mean"] == pytest.approx(0.92) and a["test_acc"]["min"] == 0.90
    assert b["runs"] == 1 and b["failed"] == 1 and b["time_ratio"] == pytest.approx(1.0)
    assert b["cpu_ratio"] == pytest.approx(1.05)
    table = format_accuracy_table([a, b])
    assert "92.00% ±" in table and "90.0%–94.0%" in table and "1 failed: out of memory" in table
    assert a["confidence"]["mean"] == pytest.approx(0.85) and "85.0%" in table.splitlines()[2]
    assert "confidence" not in b and "–" in table.splitlines()[3]  # a checkout that does not report it


FAKE_OLD_BENCH = '''
import json, os, sys
args = sys.argv[1:]
recipe, seed, budget = args[args.index("--one-accuracy") + 1:][:3]
data = args[args.index("--data") + 1]
with open(os.path.join(os.path.dirname(__file__), "calls.jsonl"), "a") as calls:
    calls.write(json.dumps({"recipe": recipe, "seed": seed, "data": data, "cwd": os.getcwd()}) + "\\n")
print(json.dumps({"test_acc": 0.5, "best_val_acc": 0.5, "best_epoch": 1, "seconds": 1.0, "cpu_seconds": 1.0,
                  "eval_size": 32}))
'''


@pytest.mark.parametrize("bench_file", ["benchmarks/bench.py", "pokedemo/bench.py"])  # today's layout, an older one
def test_accuracy_bench_runs_a_baseline_checkouts_own_code_first(tiny_data_dir, tmp_path, capsys, monkeypatch,
                                                                 bench_file):
    """The other checkout's benchmark (a stand-in script) runs in its own process, in its own folder; this
    checkout's rows are not what is tested here and get a fixed result instead of a training."""
    real = bench.accuracy_process
    monkeypatch.setattr(bench, "accuracy_process", lambda checkout, *args: real(checkout, *args) if checkout else {
        "test_acc": 0.75, "best_val_acc": 0.75, "best_epoch": 1, "seconds": 2.0, "cpu_seconds": 2.0, "eval_size": 40})
    old = tmp_path / "old-checkout"  # stands in for a worktree of an older commit: its own benchmark
    (old / bench_file).parent.mkdir(parents=True)
    (old / bench_file).parent.joinpath("__init__.py").write_text("")
    (old / bench_file).write_text(FAKE_OLD_BENCH)
    monkeypatch.chdir(tiny_data_dir.parent)  # a relative --data must reach the other checkout as the same folder
    code = bench.main(["--accuracy", "--data", tiny_data_dir.name, "--out", str(tmp_path / "out"), "--seeds", "0", "1",
                 "--recipes", "default", "--baseline", str(old), "--backbone", "resnet18", "--scratch",
                 "--epochs", "1", "--img-size", "32", "--batch-size", "8"])
    assert code == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith(("base@old-checkout", "default"))]
    assert [line.split()[0] for line in lines] == ["base@old-checkout", "default"], table
    assert "1.00x" in lines[0] and "50.00%" in lines[0]  # ratios are relative to the baseline
    assert "2.00x" in lines[1] and "75.00%" in lines[1]
    calls = [json.loads(line) for line in (old / bench_file).with_name("calls.jsonl").read_text().splitlines()]
    assert [(c["recipe"], c["seed"]) for c in calls] == [("default", "0"), ("default", "1")]
    assert all(c["cwd"] == str(old) and c["data"] == str(tiny_data_dir.resolve()) for c in calls)


def test_predict_mode_times_the_predictor_and_the_onnx_export_side_by_side(tiny_checkpoint):
    result = bench_predict(str(tiny_checkpoint), repeats=3)
    assert result["n"] == 3
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert 0 < result["onnxruntime_p50_ms"] <= result["onnxruntime_p95_ms"]
