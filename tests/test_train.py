"""The training engine on tiny synthetic data: events, checkpoints, stop, failures, compare."""

import dataclasses
import json
import threading

import pytest
import torch

from pokedemo import events as ev
from pokedemo.checkpoint import load_checkpoint, read_config
from pokedemo.config import TrainConfig
from pokedemo.train import compare, epochs_to_reach, make_scheduler, train

TINY = TrainConfig(backbone="resnet18", pretrained=False, epochs=2, batch_size=8, img_size=32, seed=0)


def run(config, data, out, **kw):
    return list(train(config, data, out, **kw))


def test_scratch_run_yields_ordered_events_and_a_valid_checkpoint(tiny_dataset, tmp_path):
    events = run(TINY, tiny_dataset(tmp_path / "data"), tmp_path / "runs")
    kinds = [type(e) for e in events]
    assert kinds.count(ev.RunStarted) == 1 and kinds.index(ev.RunStarted) < kinds.index(ev.BatchProgress)
    assert kinds.count(ev.EpochEnd) == 2
    assert isinstance(events[-1], ev.Finished), events[-1]
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.classes == ["a", "b", "c"] and started.device == "cpu"
    assert sum(started.split_sizes.values()) == 24
    progress = [e for e in events if isinstance(e, ev.BatchProgress)]
    assert progress[-1].step == progress[-1].total_steps == started.total_steps
    finished = events[-1]
    assert 0.0 <= finished.test_acc <= 1.0 and len(finished.history) == 2
    items = finished.test_metrics["items"]
    assert len(items) == started.split_sizes["test"] and finished.test_metrics["root"].endswith("data")
    assert sum(i["true"] == i["pred"] for i in items) / len(items) == pytest.approx(finished.test_acc)
    config = read_config(finished.run_dir)
    assert config["status"] == "complete" and config["class_names"] == ["a", "b", "c"]
    assert config["image_size"] == 32 and len(config["mean"]) == 3
    assert config["train_config"]["epochs"] == 2 and config["metrics"]["test"]["n"] == started.split_sizes["test"]
    assert "root" not in config["metrics"]["test"] and len(config["metrics"]["test"]["items"]) == config["metrics"]["test"]["n"]
    assert {r["split"] for r in config["split"]} == {"train", "val", "test"}
    history = json.loads((tmp_path / "runs" / finished.run_dir.split("/")[-1] / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    loaded = load_checkpoint(finished.run_dir)
    assert loaded.classes == ["a", "b", "c"]


def test_pretrained_efficientnet_learns_tiny_colours(tiny_dataset, tmp_path):
    """Transfer learning works end to end with the offline weights: colour classes are easy."""
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", pretrained=True, epochs=1, img_size=64)
    events = run(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs")
    assert any(isinstance(e, ev.Stage) and e.name == "head" for e in events)
    finished = events[-1]
    assert isinstance(finished, ev.Finished), finished
    assert finished.best_val_acc >= 0.75


def test_same_seed_gives_same_history(tiny_dataset, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    first = run(TINY, data, tmp_path / "r1")[-1]
    second = run(TINY, data, tmp_path / "r2")[-1]
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("elapsed", "images_per_sec")} for e in h]
    assert strip(first.history) == strip(second.history)


def test_stop_flag_is_honoured_within_one_batch(tiny_dataset, tmp_path):
    stop = threading.Event()
    config = dataclasses.replace(TINY, epochs=3, batch_size=4)
    seen_after_stop = []
    for event in train(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs", stop=stop):
        if stop.is_set():
            seen_after_stop.append(event)
        if isinstance(event, ev.EpochEnd) and event.epoch == 1:
            stop.set()
    # the epoch-1 checkpoint event may follow; then no training batch runs before Cancelled
    assert not any(isinstance(e, ev.BatchProgress) for e in seen_after_stop)
    final = seen_after_stop[-1]
    assert isinstance(final, ev.Cancelled) and final.run_dir
    assert "stopped" in final.message
    assert read_config(final.run_dir)["status"] == "cancelled"
    assert load_checkpoint(final.run_dir).classes == ["a", "b", "c"]


def test_stop_before_first_epoch_leaves_nothing(tiny_dataset, tmp_path):
    stop = threading.Event()
    stop.set()
    events = run(TINY, tiny_dataset(tmp_path / "data"), tmp_path / "runs", stop=stop)
    assert isinstance(events[-1], ev.Cancelled) and events[-1].run_dir is None
    assert not any((tmp_path / "runs").glob("*/config.json"))


@pytest.mark.parametrize("problem, words", [
    ("missing", "not found"), ("one_class", "2 classes"),
])
def test_dataset_problems_end_in_failed_event(tmp_path, problem, words):
    from conftest import make_tiny_dataset

    data = tmp_path / "data"
    if problem == "one_class":
        make_tiny_dataset(data, classes=("only",))
    events = run(TINY, data, tmp_path / "runs")
    assert isinstance(events[-1], ev.Failed)
    assert words in events[-1].message.lower() or "class" in events[-1].message.lower()
    assert "\n" not in events[-1].message


def test_unknown_backbone_fails_cleanly(tiny_dataset, tmp_path):
    events = run(dataclasses.replace(TINY, backbone="vgg99"), tiny_dataset(tmp_path / "d"), tmp_path / "r")
    assert isinstance(events[-1], ev.Failed) and "vgg99" in events[-1].message


def test_missing_pretrained_weights_fail_with_advice(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("POKEDEMO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = dataclasses.replace(TINY, pretrained=True)
    events = run(config, tiny_dataset(tmp_path / "d"), tmp_path / "r")
    assert isinstance(events[-1], ev.Failed)
    assert "resnet18-f37072fd.pth" in events[-1].message and "efficientnet_lite0" in events[-1].message


def test_training_fault_ends_run_with_message_and_hides_it(tiny_dataset, tmp_path, monkeypatch):
    import pokedemo.train as engine

    calls = {"n": 0}
    real = engine.evaluate_tensors

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_tensors", flaky)
    events = run(TINY, tiny_dataset(tmp_path / "d"), tmp_path / "r")
    assert isinstance(events[-1], ev.Failed) and "out of memory" in events[-1].message
    from pokedemo.checkpoint import list_checkpoints

    assert list_checkpoints(tmp_path / "r") == []


def test_linear_strategy_keeps_backbone_frozen(tiny_dataset, tmp_path):
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", pretrained=True, strategy="linear", epochs=1)
    final = run(config, tiny_dataset(tmp_path / "d"), tmp_path / "r")[-1]
    assert isinstance(final, ev.Finished)
    from pokedemo.models import build_classifier

    reference = build_classifier("efficientnet_lite0", 3, pretrained=True).state_dict()
    trained = load_checkpoint(final.run_dir).model.state_dict()
    for key, value in reference.items():
        if key.startswith("features.") and value.dtype.is_floating_point:
            assert torch.equal(value, trained[key]), key


def test_scheduler_warms_up_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = make_scheduler(optimizer, dataclasses.replace(TINY, epochs=4, warmup_epochs=1), steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[5] < lrs[10] and max(lrs) == pytest.approx(1.0, abs=0.1)
    assert lrs[-1] < 0.01


def test_epochs_to_reach():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.91}, {"epoch": 3, "val_acc": 0.95}]
    assert epochs_to_reach(history, 0.9) == 2 and epochs_to_reach(history, 0.99) is None


def test_compare_trains_both_on_the_same_split(tiny_dataset, tmp_path):
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", epochs=1, img_size=32)
    events = list(compare(config, tiny_dataset(tmp_path / "d"), tmp_path / "r"))
    final = events[-1]
    assert isinstance(final, ev.CompareFinished), final
    assert set(final.results) == {"pretrained", "scratch"}
    splits = [read_config(final.results[k]["run_dir"])["split"] for k in ("pretrained", "scratch")]
    assert splits[0] == splits[1]
    tags = {e.run for e in events if isinstance(e, ev.Tagged)}
    assert tags == {"pretrained", "scratch"}
    configs = [read_config(final.results[k]["run_dir"]) for k in ("pretrained", "scratch")]
    assert [c["pretrained"] for c in configs] == [True, False]
    assert configs[0]["train_config"]["epochs"] == configs[1]["train_config"]["epochs"]
