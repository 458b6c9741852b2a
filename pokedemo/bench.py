"""Training benchmark: the classic tutorial loop against pokedemo's default training, side by side.

    python -m pokedemo.bench --data ../shared/data/pokemon [--json bench.json] [--rows ...]

Every row runs in its own subprocess (so peak memory is that row's own) on the same duplicate-aware split.
The reference loop is written out plainly here on purpose: it is what pokedemo is measured against, the way
the widely taught tutorial trains (PIL decode every epoch, Resize(280) → RandomRotation(15) → CenterCrop(224),
Adam 1e-3, batch 32, 10 epochs, full fine-tune, best-val checkpoint). On a CUDA machine the reference rows are
the same loop as a GPU user writes it (``reference-gpu-*``: model and batches on the GPU, DataLoader workers,
pinned memory, still fp32); on CPU machines the default rows are the CPU ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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

    from pokedemo.config import resolve_device
    from pokedemo.data import scan_dataset, split_dataset
    from pokedemo.images import load_image
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
    from pokedemo.config import TrainConfig
    from pokedemo.events import EpochEnd, Finished
    from pokedemo.train import train

    config = TrainConfig(backbone=backbone, pretrained=pretrained, seed=seed)
    start, final, rates = time.perf_counter(), None, []
    for event in train(config, data, out):
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
    cmd = [sys.executable, "-m", "pokedemo.bench", "--data", args.data, "--seed", str(args.seed),
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


def bench_predict(checkpoint: str, repeats: int = 50) -> dict[str, Any]:
    """End-to-end predict latency (decode + preprocess + forward) on a ~1000 px JPEG, model loaded once."""
    import io
    import statistics

    from PIL import Image

    from pokedemo.predict import get_predictor

    start = time.perf_counter()
    predictor = get_predictor(checkpoint)
    load_seconds = time.perf_counter() - start
    gradient = Image.linear_gradient("L").resize((1000, 750)).convert("RGB")
    buffer = io.BytesIO()
    gradient.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    predictor.predict(data)  # warm-up: first call allocates
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        predictor.predict(data)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"load_s": round(load_seconds, 3), "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1), "image": "1000x750 JPEG", "n": repeats}


def bench_app_start(port: int = 7861, timeout: float = 60.0) -> dict[str, Any]:
    """Seconds from `python app.py` to the first successful HTTP answer."""
    import urllib.request

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
    parser = argparse.ArgumentParser(prog="python -m pokedemo.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("POKEDEMO_DATA", "../shared/data/pokemon"))
    parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS),
                        help="Rows to run (default: the GPU rows on a CUDA machine, else the first four).")
    parser.add_argument("--ref-epochs", type=int, default=10, help="Epochs of the reference loop (tutorial: 10).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-out", help="Where the benchmark's runs are written.")
    parser.add_argument("--json", default=None, metavar="FILE", help="Also write the table as JSON.")
    parser.add_argument("--predict", metavar="CKPT", default=None,
                        help="Instead of training rows: predict latency with this checkpoint, and app start-up time.")
    parser.add_argument("--one-row", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.predict:
        print(f"machine: {machine_description()}")
        print(f"predict: {json.dumps(bench_predict(args.predict))}")
        print(f"app start: {json.dumps(bench_app_start())}")
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
    print(f"command: python -m pokedemo.bench {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
