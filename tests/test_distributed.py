"""torchrun data-parallel training on CPU (gloo): the same result as one process with the same global batch, one
checkpoint, rank 0 alone reporting; a rank that dies or a Ctrl-C on rank 0 ends every rank cleanly.

Setup chosen to be deterministic: pretrained efficientnet_lite0 with frozen BatchNorm statistics (no per-rank
batch statistics), no augmentation (the random crops would be drawn per rank), no dropout. Then two ranks with
4 images each compute the same averaged gradient as one process with 8, and losses agree to float rounding.
The one-process reference runs in the test's own process. Tests wait for the processes to exit; pytest-timeout
(pyproject) is the only guard against a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, make_tiny_dataset

from pokedemo.checkpoint import load_checkpoint
from pokedemo.cli import main
from pokedemo.distributed import FAULT_ENV, SINGLE, Parallel, from_env

# On the CPU (gloo) on any machine: with a single GPU, two ranks would ask for cuda:0 and cuda:1 (NCCL).
ARGS = ["train", "--backbone", "efficientnet_lite0", "--epochs", "2", "--img-size", "32", "--batch-size", "8",
        "--augment", "0", "--device", "cpu"]
TOLERANCE_IMAGES = 1  # test accuracy may differ by at most one test image (float summation order of all-reduce)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 30 images: 18 for training, an even number, so two ranks need no wrapped-around (repeated) image and
    # see exactly the images one process sees.
    return make_tiny_dataset(tmp_path_factory.mktemp("ddp") / "data", per_class=10)


def run(args: list[str], nproc: int | None = None, **env: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(nproc)] if nproc else [sys.executable]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run([*launcher, "-m", "pokedemo", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=environment, check=False)  # the tests read the exit status themselves


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def no_temp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_torchrun_two_ranks_match_one_process(data, tmp_path, capsys):
    # The one-process reference runs the CLI in this process (what `python -m pokedemo` runs); the ranks do not.
    code = main([*ARGS, "--data", str(data), "--out", str(tmp_path / "one")])
    single = capsys.readouterr()
    assert code == 0, single.err[-2000:]
    ddp = run([*ARGS, "--data", str(data), "--out", str(tmp_path / "two")], nproc=2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    # Rank 0 alone reports: one summary line, one run folder.
    json_lines = [line for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1
    assert "global batch 8 = 2 × 4 per process, peak lr 0.002" in ddp.stdout
    assert ddp.stdout.count("epoch 2/2") == 1
    [run_dir] = run_dirs(tmp_path / "two")
    assert load_checkpoint(run_dir).config["parallel"] == {"world_size": 2, "backend": "gloo"}

    one, two = json.loads(single.out.splitlines()[-1]), json.loads(json_lines[0])
    n_test = sum(1 for e in load_checkpoint(run_dir).config["split"] if e["split"] == "test")
    assert abs(one["test_acc"] - two["test_acc"]) <= TOLERANCE_IMAGES / n_test + 1e-9
    history_one = json.loads((Path(one["checkpoint"]) / "history.json").read_text())
    history_two = json.loads((run_dir / "history.json").read_text())
    for a, b in zip(history_one, history_two, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-3)


def test_a_rank_that_dies_ends_the_others_with_a_clear_message(data, tmp_path):
    out = tmp_path / "runs"
    # 18 training images, global batch 8: 3 steps per epoch; rank 1 dies at the first step of epoch 2.
    result = run([*ARGS, "--data", str(data), "--out", str(out)], nproc=2, **{FAULT_ENV: "1:4:exit"})
    assert result.returncode != 0
    assert "error: another process of this distributed run failed" in result.stderr
    assert "epoch 2/2" not in result.stdout
    assert no_temp_files(out)
    dirs = run_dirs(out)
    assert len(dirs) <= 1
    for run_dir in dirs:  # epoch 1's checkpoint: complete and consistent, but not a finished run
        loaded = load_checkpoint(run_dir, allow_incomplete=True)
        assert loaded.config["status"] == "training"


def test_ctrl_c_on_rank_0_stops_every_rank(data, tmp_path):
    out = tmp_path / "runs"
    result = run([*ARGS, "--data", str(data), "--out", str(out)], nproc=2, **{FAULT_ENV: "0:4:sigint"})
    assert result.returncode != 0  # the ranks end like an interrupted program (130); torchrun reports it
    assert "Training stopped in epoch 2; the best checkpoint so far (epoch 1" in result.stdout
    assert "(exitcode: 130)" in result.stderr  # a rank that saw the shared stop flag, not a crash
    [run_dir] = run_dirs(out)
    assert load_checkpoint(run_dir, allow_incomplete=True).config["status"] == "cancelled"
    assert no_temp_files(out)


# ------------------------------------------------------------------------------------------ without torchrun


def test_without_torchrun_there_is_no_process_group(monkeypatch, tiny_checkpoint):
    for name in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert from_env() is None
    assert not torch.distributed.is_initialized()  # tiny_checkpoint trained in this process
    assert "parallel" not in load_checkpoint(tiny_checkpoint).config
    batches = list(torch.arange(5).split(2))
    assert SINGLE.even_batches(batches) is batches and SINGLE.shard(batches[0]) is batches[0]


def test_shards_cover_each_global_batch_once():
    ranks = [Parallel(rank=r, world_size=2, backend="gloo") for r in range(2)]
    batches = ranks[0].even_batches(list(torch.tensor([4, 0, 3, 1, 2]).split(4)))
    assert [b.tolist() for b in batches] == [[4, 0, 3, 1], [2, 4]]  # the last one wrapped to a multiple of 2
    for batch in batches:
        shards = [r.shard(batch) for r in ranks]
        assert len(shards[0]) == len(shards[1])
        assert sorted(torch.cat(shards).tolist()) == sorted(batch.tolist())
    with pytest.raises(ValueError, match="global batch and must be divisible by the 2 processes"):
        ranks[0].check_batch(7)


def test_compare_refuses_to_run_under_torchrun(monkeypatch, tiny_data_dir, capsys):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "--data", str(tiny_data_dir)]) == 2
    assert "compare runs in one process" in capsys.readouterr().err
