"""Where does a pokedemo training spend its time? The events of one run (opening the data included), with
seconds since it started.

    PYTHONPATH=. python scripts/gpu_timeline.py DATA BACKBONE PRETRAINED(0|1) [VARIANT] [--img-size N] [--epochs N]
        [--batch-size N] [--lr LR]

Variants change one choice of the execution plan (pokedemo/device_plan.py) so a GPU session can tell which one
the one-time cuDNN cost follows:
  default        the device's plan (CUDA: NCHW fp32 for depthwise nets, one batch shape)
  old            no CUDA-specific rules: channels_last, autocast, natural batch shapes, 128-image evaluation
  nchw-amp       NCHW with autocast          cl-fp32   channels_last without autocast
  natural        natural batch shapes (partial last batch, 128-image evaluation), layout/dtype as default
  nocudnn        cuDNN off                   bench     cudnn.benchmark on          nohead    no head fitting
  startup        no training: what building the backbone is made of, part by part, in this fresh process
                 (torch._dynamo, which torchvision.ops imports; the rest of torchvision; timm; reading the
                 weights and creating the model; moving it to the device, CUDA's start-up included)
Meant for a GPU machine (it synchronises CUDA before timing the first batch) but runs on the CPU too.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time

t_import = time.perf_counter()
import torch

import pokedemo.train as engine
from pokedemo.training_data import run_on
from pokedemo.config import TrainConfig, amp_dtype
from pokedemo.device_plan import CPU_EVAL_BATCH

VARIANTS = ("default", "old", "nchw-amp", "cl-fp32", "natural", "nocudnn", "bench", "nohead", "startup")


def plan_override(variant: str):
    """A replacement for engine.execution_plan that changes the variant's choice, or None."""
    real = engine.execution_plan
    changes = {
        "old": lambda d: {"channels_last": True, "autocast_dtype": amp_dtype(d), "fixed_shapes": False,
                          "eval_batch": CPU_EVAL_BATCH},
        "nchw-amp": lambda d: {"channels_last": False, "autocast_dtype": amp_dtype(d)},
        "cl-fp32": lambda d: {"channels_last": True, "autocast_dtype": None},
        "natural": lambda d: {"fixed_shapes": False, "eval_batch": CPU_EVAL_BATCH},
    }.get(variant)
    if changes is None:
        return None
    return lambda device, model, batch_size, n_train=None: dataclasses.replace(
        real(device, model, batch_size, n_train), **changes(device))


def startup_breakdown(backbone: str, pretrained: bool) -> None:
    """Seconds of each part of the engine's backbone build (``build_features`` and the move to the device), one
    after another in this process, which has imported torch and the engine but nothing of the backbones."""
    from pokedemo.config import resolve_device
    from pokedemo.models import build_features

    def timed(label: str, work):
        start = time.perf_counter()
        result = work()
        print(f"  {time.perf_counter() - start:6.2f}s {label}", flush=True)
        return result

    device = resolve_device("auto")
    timed("import torch._dynamo (torchvision.ops imports it)", lambda: importlib.import_module("torch._dynamo"))
    timed("import torchvision (the rest)", lambda: importlib.import_module("torchvision"))
    timed("import timm (the rest)", lambda: importlib.import_module("timm"))
    features = timed("build_features: read the weights, create the model", lambda: build_features(backbone, pretrained))

    def move():
        features.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    timed(f"move to {device} (CUDA start-up included)", move)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("backbone")
    parser.add_argument("pretrained", choices=["0", "1"])
    parser.add_argument("variant", nargs="?", default="default", choices=VARIANTS)
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="per-step overhead: fewer, larger steps")
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args()
    if args.variant == "startup":
        print(f"[startup] imports {time.perf_counter() - t_import:.1f}s (torch and the engine)", flush=True)
        startup_breakdown(args.backbone, args.pretrained == "1")
        return
    override = plan_override(args.variant)
    if override is not None:
        engine.execution_plan = override
    if args.variant == "nocudnn":
        torch.backends.cudnn.enabled = False
    elif args.variant == "bench":
        torch.backends.cudnn.benchmark = True
    sizes = {k: v for k, v in (("img_size", args.img_size), ("epochs", args.epochs),
                               ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    config = TrainConfig(backbone=args.backbone, pretrained=args.pretrained == "1",
                         head_warmup=args.variant != "nohead", **sizes)
    print(f"[{args.variant}] imports {time.perf_counter() - t_import:.1f}s", flush=True)
    t0, first_batch = time.perf_counter(), True
    for event in run_on(args.data, config, lambda data: engine.train(config, data, "/tmp/pokedemo-timeline")):
        name = type(event).__name__
        if name == "BatchProgress":
            if first_batch:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                print(f"  {time.perf_counter() - t0:6.2f}s first batch", flush=True)
                first_batch = False
            continue
        detail = getattr(event, "name", "") or getattr(event, "epoch", "") or getattr(event, "message", "")
        extra = f" val_acc {event.val_acc:.3f}" if name == "EpochEnd" else ""
        if name == "Finished":
            extra = f" test_acc {event.test_acc:.3f} engine_seconds {event.seconds:.1f}"
        print(f"  {time.perf_counter() - t0:6.2f}s {name} {detail}{extra}", flush=True)


if __name__ == "__main__":
    main()
