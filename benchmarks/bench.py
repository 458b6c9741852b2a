"""Training benchmark: the classic tutorial loop against pokedemo's default training, side by side.

    python benchmarks/bench.py --data ../shared/data/pokemon [--json bench.json] [--rows ...]
    python benchmarks/bench.py --accuracy [--seeds 0 1 2] [--recipes ...]   # recipe vs recipe, several seeds
    python benchmarks/bench.py --accuracy --recipes default --backbone efficientnet_lite0 efficientnet_lite1

(``python -m benchmarks.bench`` from the repository root works too.) A developer tool: it lives outside the
``pokedemo`` package, so it is neither imported by the app nor deployed to a Space.

Every row runs in its own subprocess (so peak memory is that row's own) on the same duplicate-aware split.
The reference loop is written out plainly here on purpose: it is what pokedemo is measured against, the way
the widely taught tutorial trains (PIL decode every epoch, Resize(280) → RandomRotation(15) → CenterCrop(224),
Adam 1e-3, batch 32, 10 epochs, full fine-tune, best-val checkpoint). On a CUDA machine the reference rows are
the same loop as a GPU user writes it (``reference-gpu-*``: model and batches on the GPU, DataLoader workers,
pinned memory, still fp32); on CPU machines the default rows are the CPU ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: the checkout's own pokedemo package
    sys.path.insert(0, str(REPO_ROOT))

from pokedemo.config import TrainConfig, resolve_device  # noqa: E402
from pokedemo.data import scan_dataset, split_dataset  # noqa: E402
from pokedemo.events import EpochEnd, Finished  # noqa: E402
from pokedemo.images import load_image  # noqa: E402
from pokedemo.startup import set_thread_policy  # noqa: E402 - needs REPO_ROOT on sys.path
from pokedemo.training_data import run_on  # noqa: E402

ROWS = {
    # name: (loop, backbone, pretrained)
    "reference-efficientnet_lite0-pretrained": ("reference", "efficientnet_lite0", True),
    "pokedemo-efficientnet_lite0-pretrained": ("pokedemo", "efficientnet_lite0", True),
    "reference-resnet18-scratch": ("reference", "resnet18", False),
    "pokedemo-resnet18-scratch": ("pokedemo", "resnet18", False),
    "reference-resnet18-pretrained": ("reference", "resnet18", True),
    "pokedemo-resnet18-pretrained": ("pokedemo", "resnet18", True),
    "reference-gpu-efficientnet_lite0-pretrained": ("reference-gpu", "efficientnet_lite0", True),
    "reference-gpu-resnet18-scratch": ("reference-gpu", "resnet18", False),
}
GPU_DEFAULT_ROWS = ["reference-gpu-efficientnet_lite0-pretrained", "pokedemo-efficientnet_lite0-pretrained",
                    "reference-gpu-resnet18-scratch", "pokedemo-resnet18-scratch"]


# Training recipes the accuracy benchmark compares: TrainConfig overrides on top of today's defaults, so every
# accuracy run measures a candidate against the current default side by side.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    # one training size throughout, the epoch with the best validation accuracy kept, no calibration
    "fixed-size-best-acc": {"select_epoch_by": "val_acc", "last_epoch_scale": 1.0, "label_smoothing": 0.1,
                            "calibrate": False},
    "smoothing-0.3": {"label_smoothing": 0.3},
    "fixed-size": {"last_epoch_scale": 1.0},  # the default's epoch selection and calibration, one training size
    "fixres": {"last_epoch_scale": 1.0, "eval_scale": 1.375},  # 128 px training, 176 px evaluation
    "eval-1.25": {"last_epoch_scale": 1.0, "eval_scale": 1.25},  # 128 px training, 160 px evaluation
}


def default_rows(cuda: bool) -> list[str]:
    """The rows a plain run benchmarks: pokedemo against the tutorial loop as users of this machine write it."""
    return list(GPU_DEFAULT_ROWS) if cuda else list(ROWS)[:4]


def gpu_loader_options() -> dict[str, Any]:
    """DataLoader options a GPU user adds: worker processes decoding in parallel, pinned host memory."""
    return {"num_workers": min(8, os.cpu_count() or 1), "pin_memory": True}


def reference_loop(data: str, backbone: str, pretrained: bool, epochs: int, seed: int, *,
                   gpu: bool = False) -> dict[str, Any]:
    """The tutorial's training loop, plainly: decode per epoch, 224 px, Adam, best-val checkpoint.

    ``gpu=True``: the same loop on the CUDA GPU (fp32, NCHW), with the loader options of ``gpu_loader_options``.
    """
    import torch
    from torch.utils.data import DataLoader, Dataset as TorchDataset
    from torchvision import transforms as T

    from pokedemo.models import build_classifier

    device, loader_options = torch.device("cpu"), {}
    if gpu:
        device, loader_options = resolve_device("auto"), gpu_loader_options()
        if device.type != "cuda":
            raise RuntimeError("the GPU reference row needs a CUDA GPU; this machine has none")
    torch.manual_seed(seed)
    dataset = scan_dataset(data)
    split = split_dataset(dataset, (0.6, 0.2, 0.2), seed)
    model = build_classifier(backbone, len(dataset.classes), pretrained).to(device)  # normalises inside
    train_tf = T.Compose([T.Resize((280, 280)), T.RandomRotation(15), T.CenterCrop(224), T.ToTensor()])
    eval_tf = T.Compose([T.Resize((280, 280)), T.CenterCrop(224), T.ToTensor()])

    class Folder(TorchDataset):
        def __init__(self, indices, transform):
            self.items = [(dataset.records[i].path, dataset.records[i].label) for i in indices]
            self.transform = transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            path, label = self.items[i]
            return self.transform(load_image(path)), label

    train_loader = DataLoader(Folder(split.train, train_tf), batch_size=32, shuffle=True, **loader_options)
    val_loader = DataLoader(Folder(split.val, eval_tf), batch_size=32, **loader_options)
    test_loader = DataLoader(Folder(split.test, eval_tf), batch_size=32, **loader_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()

    def accuracy(loader):
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        return correct / total

    start, best_acc, best_state, history, seen = time.perf_counter(), -1.0, None, [], 0
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
        val_acc = accuracy(val_loader)
        history.append({"epoch": epoch, "val_acc": val_acc, "elapsed": time.perf_counter() - start})
        if val_acc > best_acc:
            best_acc, best_state = val_acc, {k: v.clone() for k, v in model.state_dict().items()}
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    test_acc = accuracy(test_loader)
    return {"test_acc": test_acc, "best_val_acc": best_acc, "final_val_acc": history[-1]["val_acc"],
            "seconds": time.perf_counter() - start, "images_per_sec": seen / train_seconds, "history": history}


def pokedemo_loop(data: str, backbone: str, pretrained: bool, seed: int, out: str) -> dict[str, Any]:
    """pokedemo's default training, exactly what the app's Train button runs (TrainConfig defaults)."""
    from pokedemo.train import train

    config = TrainConfig(backbone=backbone, pretrained=pretrained, seed=seed)
    start, final, rates = time.perf_counter(), None, []
    for event in run_on(data, config, lambda opened: train(config, opened, out)):
        if isinstance(event, EpochEnd):
            rates.append(event.images_per_sec)
        final = event
    if not isinstance(final, Finished):
        return {"error": getattr(final, "message", "did not finish")}
    history = [{"epoch": h["epoch"], "val_acc": h["val_acc"], "elapsed": h["elapsed"]} for h in final.history]
    return {"test_acc": final.test_acc, "best_val_acc": final.best_val_acc, "final_val_acc": history[-1]["val_acc"],
            "seconds": time.perf_counter() - start, "images_per_sec": sum(rates) / len(rates), "history": history}


def run_row(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one row in a fresh subprocess so its peak memory and warm-up are its own."""
    cmd = [*bench_command(None), "--data", args.data, "--seed", str(args.seed),
           "--ref-epochs", str(args.ref_epochs), "--out", args.out, "--one-row", name]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"row": name, "error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return {"row": name, **json.loads(lines[-1])}


def one_row(name: str, args: argparse.Namespace) -> None:
    loop, backbone, pretrained = ROWS[name]
    try:
        if loop in ("reference", "reference-gpu"):
            result = reference_loop(args.data, backbone, pretrained, args.ref_epochs, args.seed,
                                    gpu=loop == "reference-gpu")
        else:
            result = pokedemo_loop(args.data, backbone, pretrained, args.seed, args.out)
    except Exception as exc:  # noqa: BLE001 - a row that cannot run (e.g. no weights offline) is reported
        result = {"error": " ".join(str(exc).split())}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def seconds_to_reach(history: list[dict[str, Any]], target: float) -> float | None:
    return next((h["elapsed"] for h in history if h["val_acc"] >= target), None)


def add_comparisons(rows: list[dict[str, Any]]) -> None:
    """Time to reach the matching reference row's final val accuracy, and speed-up over it (the GPU
    reference row when the run has one)."""
    by_name = {r["row"]: r for r in rows}
    for row in rows:
        if "error" in row or not row["row"].startswith("pokedemo-"):
            continue
        reference = by_name.get(row["row"].replace("pokedemo-", "reference-gpu-", 1)) or \
            by_name.get(row["row"].replace("pokedemo-", "reference-", 1))
        if reference and "error" not in reference:
            target = reference["final_val_acc"]
            row["target_val_acc"] = target
            row["seconds_to_target"] = seconds_to_reach(row["history"], target)
            row["speedup_vs_reference"] = round(reference["seconds"] / row["seconds"], 2)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (f"{'row':<46}{'test acc':>9}{'best val':>9}{'wall s':>8}{'s to ref val':>13}"
              f"{'img/s':>8}{'peak MB':>9}{'speed-up':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['row']:<46} skipped: {r['error'][:90]}")
            continue
        reach = r.get("seconds_to_target")
        lines.append(
            f"{r['row']:<46}{r['test_acc']:>9.1%}{r['best_val_acc']:>9.1%}{r['seconds']:>8.1f}"
            f"{(f'{reach:.1f}' if reach is not None else 'never' if 'target_val_acc' in r else '-'):>13}"
            f"{r['images_per_sec']:>8.1f}{r['peak_rss_mb']:>9.0f}"
            f"{(str(r['speedup_vs_reference']) + 'x') if 'speedup_vs_reference' in r else '-':>9}"
        )
    return "\n".join(lines)


def accuracy_run(data: str, recipe: str, seed: int, budget: dict[str, Any], out: str) -> dict[str, Any]:
    """One training of ``recipe`` with ``seed`` (which also re-draws the split); wall time includes decoding."""
    from pokedemo.train import train

    config = TrainConfig(**{**budget, **RECIPES[recipe], "seed": seed})
    start, cpu_start, final = time.perf_counter(), time.process_time(), None
    for event in run_on(data, config, lambda opened: train(config, opened, out)):
        final = event
    if not isinstance(final, Finished):
        return {"error": getattr(final, "message", "did not finish")}
    # CPU seconds (all threads of this process) change far less than wall seconds when other processes share
    # the cores, so they tell a recipe's cost apart from the machine's load.
    items = final.test_metrics["items"]
    return {"test_acc": final.test_acc, "best_val_acc": final.best_val_acc, "best_epoch": final.best_epoch,
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
            "eval_size": config.resolved(resolve_device(config.device)).eval_size,
            "confidence": sum(item["prob"] for item in items) / max(len(items), 1)}


def accuracy_rows(args: argparse.Namespace) -> list[tuple[str, str, str | None, str]]:
    """(row name, recipe, checkout, backbone) per row: the ``--baseline`` checkout's default recipe first (with the
    first backbone), then every ``--backbone`` with every ``--recipes`` with this checkout. With several backbones
    a row is named ``backbone/recipe``."""
    several = len(args.backbone) > 1
    rows = [(f"{backbone}/{recipe}" if several else recipe, recipe, None, backbone)
            for backbone in args.backbone for recipe in args.recipes]
    if args.baseline:
        rows.insert(0, (baseline_name(args.baseline), "default", str(Path(args.baseline).resolve()), args.backbone[0]))
    return rows


def baseline_name(checkout: str) -> str:
    """``base@<short commit>`` of another checkout (``base@<folder>`` when it is not a git work tree)."""
    found = subprocess.run(["git", "-C", checkout, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True,
                           check=False)  # not a git work tree: named by its folder
    return f"base@{found.stdout.strip() if found.returncode == 0 else Path(checkout).name}"


def run_accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (seed, recipe) in its own subprocess (no decode cache or warm-up carried over), recipes
    interleaved per seed so that load from other processes hits all recipes alike. A baseline row runs the
    other checkout's code (its own ``pokedemo`` package, started in that folder) on the same data."""
    results = []
    data, out = str(Path(args.data).resolve()), str(Path(args.out).resolve())
    for seed in args.seeds:
        for name, recipe, checkout, backbone in accuracy_rows(args):
            print(f"training {name} seed {seed} …", file=sys.stderr, flush=True)
            row = accuracy_process(checkout, data, out, recipe, seed, budget_from_args(args, backbone))
            results.append({"recipe": name, "backbone": backbone, "seed": seed, **row})
    return results


def accuracy_process(checkout: str | None, data: str, out: str, recipe: str, seed: int,
                     budget: dict[str, Any]) -> dict[str, Any]:
    """One ``accuracy_run`` in a fresh process of this checkout's benchmark (None) or another checkout's, started
    in that checkout; its result, or ``{"error": …}`` with the last line it wrote to stderr."""
    cmd = [*bench_command(checkout), "--data", data, "--out", out, "--one-accuracy", recipe, str(seed),
           json.dumps(budget)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


def bench_command(checkout: str | None) -> list[str]:
    """How to start the benchmark of this checkout (None) or of another one, which may be older and keep it
    as the ``pokedemo.bench`` module."""
    if checkout is None:
        return [sys.executable, str(Path(__file__).resolve())]
    script = Path(checkout) / "benchmarks" / "bench.py"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "pokedemo.bench"]


def budget_from_args(args: argparse.Namespace, backbone: str) -> dict[str, Any]:
    """The model and budget every recipe shares (recipes change only how it is trained/evaluated)."""
    budget = {"backbone": backbone, "pretrained": not args.scratch}
    for name in ("epochs", "img_size", "batch_size"):
        if getattr(args, name) is not None:
            budget[name] = getattr(args, name)
    return budget


def summarise_accuracy(results: list[dict[str, Any]], recipes: list[str]) -> list[dict[str, Any]]:
    """Per recipe: mean/std/min/max of test accuracy, mean top probability (where reported), wall and CPU seconds
    over the seeds that finished, and the ratios of mean wall and CPU time to the first recipe's."""
    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values), "max": max(values)}

    summary = []
    for recipe in recipes:
        done = [r for r in results if r["recipe"] == recipe and "error" not in r]
        failed = [r for r in results if r["recipe"] == recipe and "error" in r]
        row: dict[str, Any] = {"recipe": recipe, "runs": len(done), "failed": len(failed),
                               "per_seed": {r["seed"]: r["test_acc"] for r in done}}
        if failed:
            row["error"] = failed[0]["error"]
        if done:
            row["test_acc"] = spread([r["test_acc"] for r in done])
            row["seconds"] = spread([r["seconds"] for r in done])
            row["cpu_seconds"] = spread([r["cpu_seconds"] for r in done])
            row["eval_size"] = done[0]["eval_size"]
            confident = [r["confidence"] for r in done if "confidence" in r]  # older checkouts do not report it
            if confident:
                row["confidence"] = spread(confident)
        summary.append(row)
    base = summary[0] if summary and "seconds" in summary[0] else None
    for row in summary:
        if base and "seconds" in row:
            row["time_ratio"] = row["seconds"]["mean"] / base["seconds"]["mean"]
            row["cpu_ratio"] = row["cpu_seconds"]["mean"] / base["cpu_seconds"]["mean"]
    return summary


def format_accuracy_table(summary: list[dict[str, Any]]) -> str:
    width = max([20, *(len(r["recipe"]) + 1 for r in summary)])
    header = (f"{'recipe':<{width}}{'eval px':>8}{'runs':>5}{'test acc mean ± std':>21}{'min–max':>15}"
              f"{'mean conf':>10}{'wall s mean ± std':>19}{'time ratio':>11}{'cpu s mean':>11}{'cpu ratio':>10}  per seed")
    lines = [header, "-" * len(header)]
    for r in summary:
        if "test_acc" not in r:
            lines.append(f"{r['recipe']:<{width}} failed: {r.get('error', 'no runs')[:90]}")
            continue
        acc, sec = r["test_acc"], r["seconds"]
        accuracy = f"{acc['mean']:.2%} ± {acc['std']:.2%}"
        acc_range = f"{acc['min']:.1%}–{acc['max']:.1%}"
        wall = f"{sec['mean']:.1f} ± {sec['std']:.1f}"
        # The mean top probability next to the accuracy: calibrated probabilities put the two close together.
        confidence = f"{r['confidence']['mean']:.1%}" if "confidence" in r else "–"
        ratio = f"{r['time_ratio']:.2f}x"
        cpu, cpu_ratio = f"{r['cpu_seconds']['mean']:.1f}", f"{r['cpu_ratio']:.2f}x"
        seeds = " ".join(f"{seed}:{value:.1%}" for seed, value in r["per_seed"].items())
        failed = f"  ({r['failed']} failed: {r['error'][:60]})" if r["failed"] else ""
        lines.append(f"{r['recipe']:<{width}}{r['eval_size']:>8}{r['runs']:>5}{accuracy:>21}{acc_range:>15}"
                     f"{confidence:>10}{wall:>19}{ratio:>11}{cpu:>11}{cpu_ratio:>10}  {seeds}{failed}")
    return "\n".join(lines)


def bench_predict(checkpoint: str, repeats: int = 50) -> dict[str, Any]:
    """End-to-end predict latency (decode + preprocess + forward) on a ~1000 px JPEG, model loaded once: the torch
    Predictor and the ONNX export (predict_onnx.py's reading + onnxruntime) side by side, alternating call by call
    so that a loaded machine slows both alike."""
    from PIL import Image

    from pokedemo.predict import get_predictor

    start = time.perf_counter()
    predictor = get_predictor(checkpoint)
    load_seconds = time.perf_counter() - start
    gradient = Image.linear_gradient("L").resize((1000, 750)).convert("RGB")
    buffer = io.BytesIO()
    gradient.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as scratch:
        onnx_predict = onnx_predictor(checkpoint, Path(scratch))
        predictor.predict(data)  # warm-up: first call allocates
        onnx_predict(data)
        times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
        for _ in range(repeats):
            for name, predict in (("torch", predictor.predict), ("onnxruntime", onnx_predict)):
                t = time.perf_counter()
                predict(data)
                times[name].append((time.perf_counter() - t) * 1000)
    result: dict[str, Any] = {"load_s": round(load_seconds, 3), "image": "1000x750 JPEG", "n": repeats}
    for name, values in times.items():
        values.sort()
        prefix = "" if name == "torch" else f"{name}_"
        result[f"{prefix}p50_ms"] = round(statistics.median(values), 1)
        result[f"{prefix}p95_ms"] = round(values[int(0.95 * (len(values) - 1))], 1)
    return result


def onnx_predictor(checkpoint: str, folder: Path) -> Callable[[bytes], Any]:
    """Export ``checkpoint`` into ``folder`` (checked as ``python -m pokedemo export`` checks it) and return the
    exported script's way to classify one encoded picture: its reading, then onnxruntime with torch's threads."""
    import onnxruntime as ort
    import torch

    from pokedemo.export import INPUT_NAME, SCRIPT_FILE, export_checkpoint

    exported = export_checkpoint(checkpoint, folder / "onnx")
    spec = importlib.util.spec_from_file_location("predict_onnx", exported.out_dir / SCRIPT_FILE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(exported.onnx_path), options, providers=["CPUExecutionProvider"])
    size, max_side = int(exported.metadata["image_size"]), int(exported.metadata["max_side"])
    return lambda data: session.run(None, {INPUT_NAME: script.load_pixels(io.BytesIO(data), size, max_side)[None]})


def bench_batch_predict(checkpoint: str, data: str, rounds: int = 1) -> dict[str, Any]:
    """Pictures per second of a single-picture ``Predictor.predict`` loop and of ``predict_files`` (chunks) over
    every picture under ``data``, alternately in one process (model loaded once, warmed up)."""
    from pokedemo.predict import get_predictor, image_files, predict_files

    predictor = get_predictor(checkpoint)
    files = image_files([data])
    predictor.warm_up()
    rates: dict[str, list[float]] = {"single": [], "batch": []}
    for _ in range(rounds):
        for name, run in (("single", lambda: [predictor.predict(f) for f in files]),
                          ("batch", lambda: predict_files(predictor, files))):
            start = time.perf_counter()
            run()
            rates[name].append(round(len(files) / (time.perf_counter() - start), 1))
    ratios = [round(b / s, 2) for s, b in zip(rates["single"], rates["batch"])]
    return {"pictures": len(files), "single_per_s": rates["single"], "batch_per_s": rates["batch"],
            "ratio": ratios}


def bench_app_start(port: int = 7861, timeout: float = 60.0) -> dict[str, Any]:
    """Seconds from `python app.py` to the first successful HTTP answer."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(root / "app.py"), "--port", str(port)], cwd=root, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return {"first_response_s": round(time.perf_counter() - start, 2)}
            except OSError:
                time.sleep(0.1)
        return {"error": f"no answer within {timeout:.0f}s"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def machine_description() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}, cuda {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")


def main(argv: list[str] | None = None) -> int:
    set_thread_policy()
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("POKEDEMO_DATA", "../shared/data/pokemon"))
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS),
                        help="Rows to run (default: the GPU rows on a CUDA machine, else the first four).")
    parser.add_argument("--ref-epochs", type=int, default=10, help="Epochs of the reference loop (tutorial: 10).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-out", help="Where the benchmark's runs are written.")
    parser.add_argument("--json", default=None, metavar="FILE", help="Also write the table as JSON.")
    parser.add_argument("--predict", metavar="CKPT", default=None,
                        help="Instead of training rows: predict latency with this checkpoint, and app start-up time.")
    parser.add_argument("--batch-predict", metavar="CKPT", default=None,
                        help="Instead of training rows: pictures/s of a single-picture predict loop vs batch "
                             "prediction over every picture under --data.")
    parser.add_argument("--rounds", type=int, default=1, help="Alternations of --batch-predict.")
    parser.add_argument("--one-row", default=None, help=argparse.SUPPRESS)
    accuracy = parser.add_argument_group("accuracy benchmark (--accuracy)")
    accuracy.add_argument("--accuracy", action="store_true",
                          help="Instead of the rows above: train each recipe with each seed (each seed also "
                               "re-draws the split) and report test accuracy and wall time, mean and spread.")
    accuracy.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    accuracy.add_argument("--recipes", nargs="+", default=["fixed-size-best-acc", "default"], choices=list(RECIPES),
                          help="Recipes to compare; time ratios are relative to the first.")
    accuracy.add_argument("--baseline", metavar="CHECKOUT", default=None,
                          help="Another checkout of pokedemo (e.g. a git worktree of an older commit): its default "
                               "recipe runs first for each seed, with its own code; time ratios are relative to it.")
    accuracy.add_argument("--backbone", nargs="+", default=["efficientnet_lite0"],
                          help="Backbone(s): each one trains with every recipe, interleaved per seed; time ratios "
                               "are relative to the first row.")
    accuracy.add_argument("--scratch", action="store_true", help="Train from random initialisation.")
    accuracy.add_argument("--epochs", type=int, default=None, help="Override the default epochs (all recipes).")
    accuracy.add_argument("--img-size", type=int, default=None, help="Override the training size (all recipes).")
    accuracy.add_argument("--batch-size", type=int, default=None, help="Override the batch size (all recipes).")
    accuracy.add_argument("--one-accuracy", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_accuracy:
        recipe, seed, budget = args.one_accuracy
        print(json.dumps(accuracy_run(args.data, recipe, int(seed), json.loads(budget), args.out)))
        return 0
    if args.accuracy:
        results = run_accuracy(args)
        summary = summarise_accuracy(results, [name for name, *_ in accuracy_rows(args)])
        print(f"machine: {machine_description()}")
        print(f"command: python benchmarks/bench.py {' '.join(sys.argv[1:] if argv is None else argv)}")
        print(f"budget: {json.dumps(budget_from_args(args, ' / '.join(args.backbone)))}, "
              f"seeds {' '.join(map(str, args.seeds))}")
        print(format_accuracy_table(summary))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": machine_description(), "runs": results, "summary": summary}, indent=2))
        return 0
    if args.predict:
        print(f"machine: {machine_description()}")
        predicted = bench_predict(args.predict)
        print(f"predict: {json.dumps(predicted)}")
        print(f"predict p50 per picture ({predicted['image']}, end to end): torch Predictor {predicted['p50_ms']} ms, "
              f"onnxruntime {predicted['onnxruntime_p50_ms']} ms")
        print(f"app start: {json.dumps(bench_app_start())}")
        return 0
    if args.batch_predict:
        print(f"machine: {machine_description()}")
        print(f"batch predict: {json.dumps(bench_batch_predict(args.batch_predict, args.data, args.rounds))}")
        return 0
    if args.one_row:
        one_row(args.one_row, args)
        return 0
    if args.rows is None:
        import torch

        args.rows = default_rows(torch.cuda.is_available())
    rows = []
    for name in args.rows:
        print(f"running {name} …", file=sys.stderr, flush=True)
        rows.append(run_row(name, args))
    add_comparisons(rows)
    print(f"machine: {machine_description()}")
    print(f"command: python benchmarks/bench.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
