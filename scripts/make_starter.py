"""Make the starter model and the recorded comparison that ship with pokedemo.

    python scripts/make_starter.py

Runs one pretrained-vs-scratch comparison (``pokedemo.train.compare``) with pokedemo's default recipe on the
bundled data/pokemon, then writes checkpoints/pokemon-starter/:

- the pretrained run as a normal checkpoint (model.safetensors, config.json, history.json), its weights stored
  as float16 to stay small; its recorded test metrics are re-measured from the stored weights, so
  ``python -m pokedemo evaluate --checkpoint checkpoints/pokemon-starter`` reproduces them exactly;
- comparison.json: both runs' per-epoch curves and the side-by-side table, shown by the app's Compare tab as
  the recorded result until someone runs the comparison live;
- README.md: what it is and how to make it again.

Re-runnable: the new starter replaces the old one only once it is complete. Takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pokedemo import checkpoint as ckpt
from pokedemo.cli import ProgressPrinter, compare_with_progress, format_compare_table
from pokedemo.config import (
    PROJECT_ROOT,
    STARTER_COMPARISON,
    TrainConfig,
    bundled_data_dir,
    project_relative,
    resolve_device,
    starter_checkpoint,
)
from pokedemo.events import CompareFinished, Tagged
from pokedemo.options import command_line

# The default recipe with the one backbone that fits the size budget and trains offline: efficientnet_lite0 has
# 3.4 M parameters (6.8 MB in float16) and ImageNet weights from a pip package; resnet18 would be 22 MB.
STARTER_BACKBONE = "efficientnet_lite0"
README_FILE = "README.md"


def starter_config(args: argparse.Namespace) -> TrainConfig:
    """The default recipe with the starter's backbone, its device defaults filled in (they are recorded)."""
    overrides = {k: v for k, v in (("epochs", args.epochs), ("img_size", args.img_size)) if v is not None}
    config = dataclasses.replace(TrainConfig(), backbone=STARTER_BACKBONE, device=args.device, **overrides)
    return config.resolved(resolve_device(config.device))


def run_comparison(config: TrainConfig, data: Path, out_root: Path) -> Any:
    """pokedemo's compare with the CLI's progress printing; returns CompareFinished or exits."""
    final = compare_with_progress(config, data, out_root, ProgressPrinter())
    if not isinstance(final, CompareFinished):
        inner = final.event if isinstance(final, Tagged) else final
        sys.exit(f"error: the comparison did not finish: {getattr(inner, 'message', inner)}")
    print(format_compare_table(final.table))
    return final


def store_half_precision(run_dir: Path) -> None:
    """Rewrite the run's weights as float16 (half the bytes); loading casts them back to the model's dtype.
    The open-set statistics stay float32: they are small, and their thresholds were fitted on them as they are."""
    from safetensors.torch import load_file

    from pokedemo.openset import TENSOR_PREFIX

    tensors = load_file(str(run_dir / ckpt.WEIGHTS_FILE))
    half = {k: v.half() if v.is_floating_point() and not k.startswith(TENSOR_PREFIX) else v
            for k, v in tensors.items()}
    digest = ckpt.save_weights(run_dir, half)
    config = ckpt.read_config(run_dir)
    ckpt.write_config(run_dir, {**config, "weights_sha256": digest, "weights_dtype": "float16"})


def refit_open_set(run_dir: Path) -> dict[str, Any]:
    """Fit the open-set rule of the stored weights as training does (statistics of the recorded training images,
    thresholds on the recorded validation images, at the inference size) and record it; the weights stay as they
    are. Returns the rule's record."""
    import torch
    from safetensors.torch import load_file

    from pokedemo.data import cached_tensors
    from pokedemo.openset import fit_adopted_rule
    from pokedemo.predict import Predictor, recorded_split

    predictor = Predictor.load(run_dir, torch.device("cpu"))
    dataset, train = recorded_split(predictor, part="train")
    _, val = recorded_split(predictor, part="val")
    size = predictor.image_size
    labels = torch.tensor([dataset.records[i].label for i in train])
    rule = fit_adopted_rule(predictor.inference_model, cached_tensors(dataset, train, size), labels,
                            cached_tensors(dataset, val, size), predictor.device, predictor.plan)
    weights = {k: v for k, v in load_file(str(run_dir / ckpt.WEIGHTS_FILE)).items() if not k.startswith("open_set.")}
    digest = ckpt.save_weights(run_dir, {**weights, **rule.tensors()})
    config = ckpt.read_config(run_dir)
    ckpt.write_config(run_dir, {**config, "weights_sha256": digest, "open_set": rule.record()})
    return rule.record()


def remeasure_test(run_dir: Path) -> dict[str, Any]:
    """Evaluate the stored (float16) weights on the recorded test split and record that as the test metrics."""
    from pokedemo.predict import Predictor, evaluate_split

    config = ckpt.read_config(run_dir)
    report = evaluate_split(Predictor.load(run_dir))
    metrics = dict(config["metrics"])
    metrics.setdefault("test_accuracy_float32", metrics["test"]["accuracy"])  # as trained, before float16
    metrics["test"] = {k: v for k, v in report.items() if k != "root"}
    ckpt.write_config(run_dir, {**config, "metrics": metrics})
    return report


def relocatable_dataset(run_dir: Path, data: Path) -> None:
    """Record the data folder relative to the project (no path of the machine it was made on)."""
    inside = project_relative(data)
    if inside is None:  # a folder outside the project: keep its path, there is nothing shorter to find it by
        return
    config = ckpt.read_config(run_dir)
    ckpt.write_config(run_dir, {**config, "dataset": {**config["dataset"], "root": inside}})


def add_reproduce(run_dir: Path, command: str, config: TrainConfig, data: Path) -> None:
    cli = command_line(config, project_relative(data) or str(data), command="compare")
    saved = ckpt.read_config(run_dir)
    ckpt.write_config(run_dir, {**saved, "reproduce": {
        "command": command,
        "equivalent": f"{cli}  (this model is its pretrained run; weights then stored as float16)",
        "machine": machine_description(config),
    }})


def machine_description(config: TrainConfig) -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, device {resolve_device(config.device)}"


def comparison_record(final: Any, command: str, config: TrainConfig, histories: dict[str, list]) -> dict:
    """What the Compare tab shows before anyone trains: both runs' curves and the table, marked as recorded."""
    results = {run: {k: v for k, v in summary.items() if k != "run_dir"} for run, summary in final.results.items()}
    return {
        "recorded": True,
        "note": "Recorded by scripts/make_starter.py; not re-run when the app starts. Times are from the machine "
                "below and differ elsewhere.",
        "command": command,
        "machine": machine_description(config),
        "created_at": ckpt.utc_now(),
        "train_config": config.to_dict(),
        "epochs": config.epochs,
        "results": results,
        "history": histories,
        "table": [{"run": run, **summary} for run, summary in results.items()],
    }


def write_readme(run_dir: Path, command: str) -> None:
    config = ckpt.read_config(run_dir)
    metrics = config["metrics"]
    size_mb = (run_dir / ckpt.WEIGHTS_FILE).stat().st_size / 1e6
    text = f"""# pokemon-starter

The model the pokedemo app and `python -m pokedemo predict` use before you train your own: {config['backbone']}
pretrained on ImageNet, fine-tuned with pokedemo's default recipe on the bundled `data/pokemon`
({', '.join(config['class_names'])}).

- test accuracy {metrics['test']['accuracy']:.1%} on the {metrics['test']['n']} images of its recorded test split
  (never trained on); reproduce with `python -m pokedemo evaluate --checkpoint checkpoints/pokemon-starter`
- weights stored as float16 ({size_mb:.1f} MB), computed in float32 when loaded
- `comparison.json`: the recorded pretrained-vs-scratch comparison shown in the app's Compare tab

Made with:

    {command}

(see `reproduce` in config.json for the equivalent `python -m pokedemo compare` command and the machine).
"""
    ckpt.atomic_write_bytes(run_dir / README_FILE, text.encode("utf-8"))


def replace_folder(new: Path, target: Path, scratch_space: Path) -> None:
    """Put ``new`` at ``target``; an existing starter is moved aside first and deleted only afterwards."""
    old = scratch_space / "previous"
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make checkpoints/pokemon-starter (see the module docstring).")
    parser.add_argument("--data", type=Path, default=bundled_data_dir(), help="dataset (default: data/pokemon)")
    parser.add_argument("--out", type=Path, default=starter_checkpoint(),
                        help="starter folder to write (default: checkpoints/pokemon-starter)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (tests only)")
    parser.add_argument("--img-size", type=int, default=None, help="override the recipe's image size (tests only)")
    parser.add_argument("--device", default="cpu", help="training device (default cpu, as recorded)")
    parser.add_argument("--open-set-only", action="store_true",
                        help="keep the starter's weights and comparison; fit and record its open-set rule and "
                             "re-measure its test metrics (for a starter made before open-set rules existed)")
    args = parser.parse_args(argv)
    if args.open_set_only:
        rule = refit_open_set(args.out)
        report = remeasure_test(args.out)
        print(json.dumps({"starter": str(args.out), "open_set": rule, "test_acc": report["accuracy"],
                          "open_set_test": report.get("open_set")}))
        return 0
    argv_used = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "scripts/make_starter.py", *argv_used])
    config = starter_config(args)
    data, out = args.data.resolve(), args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".starter-build-", dir=out.parent))  # hidden: never listed as a run
    try:
        final = run_comparison(config, data, build)
        run_dirs = {run: Path(summary["run_dir"]) for run, summary in final.results.items()}
        histories = {run: json.loads((d / ckpt.HISTORY_FILE).read_text()) for run, d in run_dirs.items()}
        starter = run_dirs["pretrained"]
        store_half_precision(starter)
        relocatable_dataset(starter, data)
        report = remeasure_test(starter)
        add_reproduce(starter, command, config, data)
        record = comparison_record(final, command, config, histories)
        ckpt.atomic_write_json(starter / STARTER_COMPARISON, record)
        write_readme(starter, command)
        replace_folder(starter, out, build)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(json.dumps({"starter": str(out), "test_acc": report["accuracy"], "n_test": report["n"],
                      "bytes": size, "project": str(PROJECT_ROOT)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
