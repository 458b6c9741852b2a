"""Continue from the starter after fixing the bundled data's label conflicts vs a fresh default run, side by side.

    python scripts/continue_bench.py --epochs 1 --rounds 1
    python scripts/continue_bench.py --only fresh --threads 1 & python scripts/continue_bench.py --only continue --threads 1

Makes a working copy of the bundled data, fixes the label conflicts the doctor lists as a user would (pictures
showing several Pokémon set aside, a single Pokémon filed under the wrong class moved, look-alikes that are
different pictures left alone), then trains alternately: a fresh default run (efficientnet_lite0, the recipe the
app's Train button runs) and the starter continued for each ``--epochs`` value. Both train and test on the split a
continued run draws (every picture the starter trained on kept in training), so their test pictures are the same
and new to all three models. Prints one JSON line per run: wall and CPU seconds, test accuracy, and the accuracy on
the test pictures that were in the starter's own test split.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pokedemo.checkpoint import read_config  # noqa: E402 - needs the repository root on sys.path
from pokedemo.config import TrainConfig, bundled_data_dir, starter_checkpoint  # noqa: E402
from pokedemo.curation import Curator, working_copy  # noqa: E402
from pokedemo.doctor import diagnose  # noqa: E402
from pokedemo.events import Finished  # noqa: E402
from pokedemo.train import train  # noqa: E402
from pokedemo.training_data import continuing_from, run_on  # noqa: E402

# Decisions per conflict group of the bundled data (the doctor's list), as a user viewing the strips makes them.
SET_ASIDE = [  # group pictures of several Pokémon: no single right class
    "bulbasaur/00000139.jpg", "bulbasaur/00000159.jpg", "squirtle/00000080.jpg",
    "bulbasaur/00000181.jpg", "squirtle/00000214.jpg",
    "bulbasaur/00000209.jpg", "charmander/00000228.jpg", "squirtle/00000204.jpg",
    "bulbasaur/00000210.jpg", "squirtle/00000203.jpg",
    "bulbasaur/00000234.jpg", "charmander/00000219.jpg",
    "charmander/00000125.jpg", "squirtle/00000164.jpg",
    "charmander/00000173.jpg", "squirtle/00000079.jpg",
    "charmander/00000179.jpg", "squirtle/00000212.jpg",
    "charmander/00000189.jpg", "squirtle/00000201.jpg",
    "charmander/00000240.jpg", "squirtle/00000224.jpg",
]
MOVE = {"bulbasaur/00000217.jpg": "squirtle", "charmander/00000183.jpg": "squirtle"}  # a lone Squirtle
# Left alone: charmander/00000139.jpg ↔ mewtwo/... (dark backgrounds, different Pokémon) and
# charmander/00000208.jpg ↔ squirtle/00000158.jpg (two different plush toys).


def fixed_copy(workspace: Path) -> Path:
    root = working_copy(bundled_data_dir(), workspace)
    curator = Curator(root)
    for path in SET_ASIDE:
        curator.set_aside(path)
    for path, to_class in MOVE.items():
        curator.move(path, to_class)
    return root


def run(config: TrainConfig, data: Path, out: Path, starter: dict, split_of: TrainConfig) -> dict:
    """One run of ``config`` on the split a run of ``split_of`` draws (a continued run's split when ``split_of``
    continues from the starter); its figures as a JSON-able dict."""
    cpu, wall = time.process_time(), time.perf_counter()
    final = list(run_on(data, config, lambda opened: train(config, continuing_from(opened, starter, split_of), out)))[-1]
    assert isinstance(final, Finished), final
    items = final.test_metrics["items"]
    saved = read_config(final.run_dir)
    sha = {e["path"]: e["sha256"] for e in saved["split"]}
    starter_test = {e["sha256"] for e in starter["split"] if e["split"] == "test"}
    unseen = [it for it in items if sha[it["path"]] in starter_test]
    changed = {k: v for k, v in config.to_dict().items() if v != getattr(TrainConfig(), k) and k not in ("seed", "init_from", "epochs")}
    return {"run": "continue" if config.init_from else "fresh", **changed,
            "split": "continued" if split_of.init_from else "plain", "seed": config.seed, "epochs": saved["train_config"]["epochs"],
            "seconds": final.seconds, "wall_seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1),
            "test_acc": round(final.test_acc, 4), "test_n": len(items),
            "unseen_acc": round(sum(it["true"] == it["pred"] for it in unseen) / len(unseen), 4),
            "unseen_n": len(unseen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[None],
                        help="Epochs of the continued runs (default: a continued run's default epochs).")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Split seeds; each round runs each.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["fresh", "continue"], default=None,
                        help="Only this kind of run (two processes side by side, one each).")
    parser.add_argument("--fresh-split", choices=["continued", "plain"], default="continued",
                        help="Split of the fresh runs: the continued runs' (default: both test on the same pictures, "
                             "none of which the starter trained on) or the one a fresh run draws on its own.")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="TrainConfig values of the continued runs, e.g. warmup_epochs=0.1 (JSON values).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)}
    work = Path(tempfile.mkdtemp(prefix="continue-bench-"))
    data = fixed_copy(work / "datasets")
    conflicts = diagnose(data)["conflict_groups"]
    print(json.dumps({"data": str(data), "conflicts_left": len(conflicts)}), flush=True)
    starter = read_config(starter_checkpoint())
    for _, seed in itertools.product(range(args.rounds), args.seeds):
        continued = [TrainConfig(backbone="efficientnet_lite0", epochs=epochs, seed=seed,
                                 init_from=str(starter_checkpoint()), **overrides) for epochs in args.epochs]
        if args.only != "continue":
            fresh = TrainConfig(backbone="efficientnet_lite0", seed=seed)
            split_of = continued[0] if args.fresh_split == "continued" else fresh
            print(json.dumps(run(fresh, data, work / "runs", starter, split_of)), flush=True)
        for config in continued if args.only != "fresh" else []:
            print(json.dumps(run(config, data, work / "runs", starter, config)), flush=True)


if __name__ == "__main__":
    main()
