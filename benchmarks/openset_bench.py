"""Open-set benchmark: how well each candidate score tells "none of these" apart, with no outside data.

    python benchmarks/openset_bench.py [--data DIR] [--seeds 0 1] [--out DIR] [--json FILE]
    python benchmarks/openset_bench.py --tiny      # the whole procedure on generated data, in seconds

Leave one class out: for each class of the dataset, the default recipe trains on the other classes (a temporary
folder of links to them); that class's pictures are then unknowns, the run's own test split the knowns. Generated
non-pictures (noise, flat colours, gradients, stripes, rendered text) are a second, easier set of unknowns.

Per candidate score (``pokedemo.openset.SCORES``), averaged over held-out classes and seeds:
  * AUROC and FPR@95TPR (the share of unknowns accepted when 95 % of known test pictures are), for the held-out
    class and for the generated pictures;
  * with the threshold fitted on the validation split by each threshold rule (global and per class): a quantile
    (an acceptance rate) or a spread (standard deviations below the mean validation score); the share of known
    test pictures accepted, of unknowns accepted, and the cost in known-class accuracy (test pictures right
    before, rejected now);
  * the top probability at fixed thresholds (the rule of checkpoints that record no score).
Every fold's features are kept under --out, so a second run scores them again without training (--reuse).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pokedemo import openset  # noqa: E402
from pokedemo.checkpoint import load_checkpoint  # noqa: E402
from pokedemo.config import TrainConfig, default_data_dir  # noqa: E402
from pokedemo.data import cached_tensors, scan_dataset, split_from_record  # noqa: E402
from pokedemo.device_plan import execution_plan  # noqa: E402
from pokedemo.events import Finished  # noqa: E402
from pokedemo.images import image_to_tensor  # noqa: E402
from pokedemo.inference import folded_for_inference  # noqa: E402
from pokedemo.train import train  # noqa: E402
from pokedemo.training_data import training_data  # noqa: E402

THRESHOLD_RULES = tuple([openset.ThresholdRule("quantile", rate) for rate in (0.95, 0.97, 0.98, 0.99)]
                        + [openset.ThresholdRule("spread", z) for z in (2.0, 2.5, 3.0, 3.5)])
FIXED_MAX_PROB = (0.5, 0.7, 0.8, 0.9)
SYNTHETIC_PER_KIND = 8
SHARED_DATA = ROOT.parent / "shared" / "data" / "pokemon"


# --------------------------------------------------------------------------------------------- data


def default_data() -> Path:
    return SHARED_DATA if SHARED_DATA.is_dir() else default_data_dir()


def synthetic_images(size: int, per_kind: int = SYNTHETIC_PER_KIND, seed: int = 0) -> dict[str, list[Image.Image]]:
    """Pictures that are no photo of anything: noise, flat colours, gradients, stripes, rendered text."""
    rng = np.random.default_rng(seed)
    colour = lambda: tuple(int(v) for v in rng.integers(0, 256, 3))  # noqa: E731
    kinds: dict[str, list[Image.Image]] = {"noise": [], "flat": [], "gradient": [], "stripes": [], "text": []}
    words = ["invoice", "total due", "hello world", "lorem ipsum", "page 3 of 7", "SALE 50%", "QR 0042", "meeting"]
    for i in range(per_kind):
        kinds["noise"].append(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        kinds["flat"].append(Image.new("RGB", (size, size), colour()))
        ramp = np.linspace(0, 1, size)[None, :, None] if i % 2 else np.linspace(0, 1, size)[:, None, None]
        start, end = np.array(colour()), np.array(colour())
        kinds["gradient"].append(Image.fromarray(
            (start + (end - start) * np.broadcast_to(ramp, (size, size, 1))).astype(np.uint8)))
        period = int(rng.integers(4, max(5, size // 4)))
        stripes = (np.arange(size)[:, None] // period + (np.arange(size)[None, :] // period) * (i % 2)) % 2
        a, b = np.array(colour()), np.array(colour())
        kinds["stripes"].append(Image.fromarray(np.where(stripes[..., None] == 1, a, b).astype(np.uint8)))
        page = Image.new("RGB", (size, size), (255, 255, 255) if i % 2 else colour())
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=max(8, size // 8))
        for line in range(4):
            draw.text((size // 16, size // 16 + line * size // 4), words[(i + line) % len(words)],
                      fill=(0, 0, 0) if i % 2 else colour(), font=font)
        kinds["text"].append(page)
    return kinds


def linked_subset(data_root: Path, classes: list[str], folder: Path) -> Path:
    """FOLDER/<class> links to DATA_ROOT/<class> for each of ``classes``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in classes:
        link = folder / name
        if not link.exists():
            link.symlink_to((data_root / name).resolve(), target_is_directory=True)
    return folder


def make_tiny_data(root: Path, classes: int = 3, per_class: int = 10, size: int = 32) -> Path:
    """ROOT/<class>/<n>.png: each class a coloured disc of its own hue on a random grey background."""
    rng = np.random.default_rng(0)
    hues = [(230, 40, 40), (40, 190, 60), (50, 80, 230), (230, 210, 40)]
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(60, 200, (size, size, 3), dtype=np.uint8))
            r = int(rng.integers(size // 4, size // 2))
            cx, cy = (int(v) for v in rng.integers(r // 2, size - r // 2, 2))
            ImageDraw.Draw(image).ellipse((cx - r, cy - r, cx + r, cy + r), fill=hues[k % len(hues)])
            image.save(root / f"class{k}" / f"{i:02d}.png")
    return root


# --------------------------------------------------------------------------------------------- one fold


def fold_features(data_root: Path, held_out: str, seed: int, recipe: dict[str, Any], out: Path,
                  reuse: bool) -> dict[str, Any]:
    """Train without ``held_out``; logits and features of every part (train/val/test, the held-out class, the
    generated pictures), read from FOLD.pt under ``out`` when ``reuse`` and it is there."""
    cache = out / f"fold-{held_out}-seed{seed}"
    if reuse and cache.with_suffix(".json").is_file():
        return read_fold(cache)
    full = scan_dataset(data_root, require_splittable=False)
    known = [c for c in full.classes if c != held_out]
    subset = linked_subset(data_root, known, out / "data" / f"without-{held_out}")
    config = TrainConfig(**{**recipe, "seed": seed})
    started = time.perf_counter()
    final = list(train(config, training_data(subset, config), out / "runs"))[-1]
    if not isinstance(final, Finished):
        raise RuntimeError(f"training without {held_out} ended with {final}")
    seconds = time.perf_counter() - started
    checkpoint = load_checkpoint(final.run_dir)
    size, model = checkpoint.image_size, checkpoint.model
    device = torch.device("cpu")
    plan = execution_plan(device, model, config.batch_size)
    folded = folded_for_inference(plan.place_model(model))
    dataset = scan_dataset(subset, image_size=size)
    split = split_from_record(dataset, checkpoint.config["split"])
    labels = torch.tensor(dataset.labels())
    parts: dict[str, Any] = {}
    for part in ("train", "val", "test"):
        indices = getattr(split, part)
        logits, features = openset.logits_and_features(folded, cached_tensors(dataset, indices, size), device, plan)
        parts[part] = {"logits": logits, "features": features, "labels": labels[torch.tensor(indices)]}
    unknown = [i for i, r in enumerate(full.records) if full.classes[r.label] == held_out]
    logits, features = openset.logits_and_features(folded, cached_tensors(full, unknown, size), device, plan)
    parts["unknown"] = {"logits": logits, "features": features}
    synthetic = [image for images in synthetic_images(size, seed=seed).values() for image in images]
    pictures = torch.stack([image_to_tensor(image, size) for image in synthetic])
    logits, features = openset.logits_and_features(folded, pictures, device, plan)
    parts["synthetic"] = {"logits": logits, "features": features}
    fold = {"held_out": held_out, "seed": seed, "classes": known, "run_dir": final.run_dir,
            "train_seconds": round(seconds, 1), "test_acc": final.test_acc, "parts": parts}
    write_fold(cache, fold)
    return fold


def write_fold(path: Path, fold: dict[str, Any]) -> None:
    """FOLD.safetensors (every part's tensors, as PART.NAME) + FOLD.json (the rest)."""
    tensors = {f"{part}.{name}": t.contiguous().cpu() for part, p in fold["parts"].items() for name, t in p.items()}
    save_file(tensors, path.with_suffix(".safetensors"))
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in fold.items() if k != "parts"}, indent=2))


def read_fold(path: Path) -> dict[str, Any]:
    fold = json.loads(path.with_suffix(".json").read_text())
    fold["parts"] = {}
    for key, tensor in load_file(path.with_suffix(".safetensors")).items():
        part, name = key.split(".", 1)
        fold["parts"].setdefault(part, {})[name] = tensor
    return fold


# --------------------------------------------------------------------------------------------- measures


def candidate_measures(fold: dict[str, Any], score: str) -> dict[str, Any]:
    """Every measure of one score on one fold."""
    parts = fold["parts"]
    num_classes = parts["val"]["logits"].shape[1]
    stats = openset.fit_statistics(score, parts["train"]["features"], parts["train"]["labels"], num_classes)
    scores = {name: openset.compute_scores(score, p["logits"], p["features"], stats) for name, p in parts.items()}
    predicted = {name: p["logits"].argmax(dim=1) for name, p in parts.items()}
    test_right = predicted["test"] == parts["test"]["labels"]
    result: dict[str, Any] = {
        "auroc": openset.auroc(scores["test"], scores["unknown"]),
        "fpr95": openset.fpr_at_tpr(scores["test"], scores["unknown"], 0.95),
        "auroc_synthetic": openset.auroc(scores["test"], scores["synthetic"]),
        "fpr95_synthetic": openset.fpr_at_tpr(scores["test"], scores["synthetic"], 0.95),
        "test_acc": float(test_right.double().mean()),
        "fitted": {},
    }
    for rule in THRESHOLD_RULES:
        for per_class in (False, True):
            thresholds = openset.fit_thresholds(scores["val"], predicted["val"], num_classes, rule, per_class)
            accepted = {name: openset.accepts(scores[name], predicted[name], thresholds)
                        for name in ("test", "unknown", "synthetic")}
            result["fitted"][f"{rule_name(rule)} {'per_class' if per_class else 'global'}"] = {
                "known_accepted": float(accepted["test"].double().mean()),
                "unknown_accepted": float(accepted["unknown"].double().mean()),
                "synthetic_accepted": float(accepted["synthetic"].double().mean()),
                "accuracy_cost": float((test_right & ~accepted["test"]).double().mean()),
            }
    if score == "max_prob":
        result["fixed"] = {
            str(t): {"known_accepted": float((scores["test"] >= t).double().mean()),
                     "unknown_accepted": float((scores["unknown"] >= t).double().mean()),
                     "synthetic_accepted": float((scores["synthetic"] >= t).double().mean())}
            for t in FIXED_MAX_PROB
        }
    return result


def rule_name(rule: openset.ThresholdRule) -> str:
    return f"accept {rule.value:.0%}" if rule.kind == "quantile" else f"mean - {rule.value:g} sd"


def summarise(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over folds of every number (and the lowest known-class acceptance of each fitted rule)."""
    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return statistics.fmean(values) if values else math.nan

    summary: dict[str, Any] = {}
    for score in openset.SCORES:
        rows = [fold["scores"][score] for fold in per_fold]
        entry = {key: mean([r[key] for r in rows]) for key in ("auroc", "fpr95", "auroc_synthetic", "fpr95_synthetic")}
        entry["fitted"] = {
            rule: {**{key: mean([r["fitted"][rule][key] for r in rows]) for key in rows[0]["fitted"][rule]},
                   "known_accepted_min": min(r["fitted"][rule]["known_accepted"] for r in rows)}
            for rule in rows[0]["fitted"]
        }
        if "fixed" in rows[0]:
            entry["fixed"] = {t: {key: mean([r["fixed"][t][key] for r in rows]) for key in rows[0]["fixed"][t]}
                              for t in rows[0]["fixed"]}
        summary[score] = entry
    return summary


def format_tables(summary: dict[str, Any], folds: int) -> str:
    pct = lambda v: "–" if math.isnan(v) else f"{v:.1%}"  # noqa: E731
    lines = [f"Threshold-free, mean over {folds} folds (unknowns: the held-out class | generated pictures):", "",
             "| score | AUROC | FPR@95TPR | AUROC generated | FPR@95TPR generated |", "|---|---|---|---|---|"]
    for score, entry in summary.items():
        lines.append(f"| {score} | {entry['auroc']:.3f} | {pct(entry['fpr95'])} | {entry['auroc_synthetic']:.3f} | "
                     f"{pct(entry['fpr95_synthetic'])} |")
    lines += ["", "Threshold fitted on the validation split by a rule (mean; known accepted: mean, lowest fold):", "",
              "| score | rule | thresholds | known test accepted (lowest) | held-out class accepted | "
              "generated accepted | accuracy cost |", "|---|---|---|---|---|---|---|"]
    for score, entry in summary.items():
        for rule, row in entry["fitted"].items():
            name, kind = rule.rsplit(" ", 1)
            lines.append(f"| {score} | {name} | {kind.replace('_', ' ')} | {pct(row['known_accepted'])} "
                         f"({pct(row['known_accepted_min'])}) | {pct(row['unknown_accepted'])} | "
                         f"{pct(row['synthetic_accepted'])} | {pct(row['accuracy_cost'])} |")
    fixed = summary.get("max_prob", {}).get("fixed", {})
    if fixed:
        lines += ["", "Top probability at fixed thresholds (checkpoints that record no score):", "",
                  "| threshold | known test accepted | held-out class accepted | generated accepted |",
                  "|---|---|---|---|"]
        for t, row in fixed.items():
            lines.append(f"| {t} | {pct(row['known_accepted'])} | {pct(row['unknown_accepted'])} | "
                         f"{pct(row['synthetic_accepted'])} |")
    return "\n".join(lines)


def machine_description() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}")


# --------------------------------------------------------------------------------------------- main


def run(data_root: Path, seeds: list[int], recipe: dict[str, Any], out: Path, reuse: bool,
        held_out: list[str] | None = None,
        log=lambda line: print(line, file=sys.stderr, flush=True)) -> dict[str, Any]:
    classes = held_out or scan_dataset(data_root, require_splittable=False).classes
    per_fold = []
    for seed in seeds:
        for held_out in classes:
            fold = fold_features(data_root, held_out, seed, recipe, out, reuse)
            fold_scores = {score: candidate_measures(fold, score) for score in openset.SCORES}
            per_fold.append({"held_out": held_out, "seed": seed, "test_acc": fold["test_acc"],
                             "train_seconds": fold["train_seconds"], "scores": fold_scores})
            log(f"without {held_out}, seed {seed}: test acc {fold['test_acc']:.3f}, trained in "
                f"{fold['train_seconds']} s; AUROC " + ", ".join(
                    f"{s} {m['auroc']:.3f}" for s, m in fold_scores.items()))
    return {"folds": per_fold, "summary": summarise(per_fold)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="Class folders (default: the shared copy of the "
                        "Pokémon data beside the project, else the bundled data/pokemon).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--out", type=Path, default=Path("openset-bench-out"),
                        help="Where the runs and each fold's features are kept.")
    parser.add_argument("--reuse", action="store_true", help="Score the features kept under --out again.")
    parser.add_argument("--held-out", nargs="+", default=None, metavar="CLASS",
                        help="Leave out only these classes (default: each class in turn).")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="Also write every number as JSON.")
    parser.add_argument("--tiny", action="store_true",
                        help="Generated tiny data and a tiny recipe (resnet18 from scratch, 1 epoch, 32 px).")
    args = parser.parse_args(argv)
    recipe: dict[str, Any] = {"backbone": args.backbone}
    data_root = args.data or default_data()
    if args.tiny:
        data_root = make_tiny_data(args.out / "tiny-data")
        recipe = {"backbone": "resnet18", "pretrained": False, "epochs": 1, "img_size": 32, "batch_size": 8}
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(Path(data_root), args.seeds, recipe, args.out, args.reuse, args.held_out)
    command = f"python benchmarks/openset_bench.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    print(f"machine: {machine_description()}")
    print(f"command: {command}")
    print(f"data: {data_root}; recipe: {json.dumps(recipe)} (else the defaults); seeds: {args.seeds}")
    print(format_tables(results["summary"], len(results["folds"])))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_description(), "command": command, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
