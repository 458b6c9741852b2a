"""The training engine on tiny synthetic data: events, checkpoints, stop, failures, compare."""

import dataclasses
import json
import math
import threading

import pytest
import torch

from pokedemo import events as ev
from pokedemo.checkpoint import WarmStart, load_checkpoint, read_config
from pokedemo.config import TrainConfig, resolve_device
from pokedemo.models import build_classifier
from pokedemo.train import Strategy, epochs_to_reach, make_optimizer, make_scheduler

from conftest import compare_folder, train_folder

TINY = TrainConfig(backbone="resnet18", pretrained=False, epochs=2, batch_size=8, img_size=32, seed=0)


def run(config, data, out, **kw):
    return list(train_folder(config, data, out, **kw))


def test_scratch_run_yields_ordered_events_and_a_valid_checkpoint(tiny_dataset, tmp_path):
    events = run(TINY, tiny_dataset(tmp_path / "data"), tmp_path / "runs")
    kinds = [type(e) for e in events]
    assert kinds.count(ev.RunStarted) == 1 and kinds.index(ev.RunStarted) < kinds.index(ev.BatchProgress)
    assert kinds.count(ev.EpochEnd) == 2
    assert isinstance(events[-1], ev.Finished), events[-1]
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.classes == ["a", "b", "c"] and started.device == str(resolve_device("auto"))
    assert sum(started.split_sizes.values()) == 24
    progress = [e for e in events if isinstance(e, ev.BatchProgress)]
    assert progress[-1].step == progress[-1].total_steps == started.total_steps
    assert all(isinstance(e.accuracy, float) and 0.0 <= e.accuracy <= 1.0 for e in progress)
    finished = events[-1]
    assert 0.0 <= finished.test_acc <= 1.0 and len(finished.history) == 2
    items = finished.test_metrics["items"]
    assert len(items) == started.split_sizes["test"] and finished.test_metrics["root"].endswith("data")
    assert sum(i["true"] == i["pred"] for i in items) / len(items) == pytest.approx(finished.test_acc)
    config = read_config(finished.run_dir)
    assert config["status"] == "complete" and config["class_names"] == ["a", "b", "c"]
    assert config["image_size"] == TINY.resolved(resolve_device("auto")).eval_size and len(config["mean"]) == 3
    assert config["train_config"]["epochs"] == 2 and config["metrics"]["test"]["n"] == started.split_sizes["test"]
    assert "root" not in config["metrics"]["test"] and len(config["metrics"]["test"]["items"]) == config["metrics"]["test"]["n"]
    assert {r["split"] for r in config["split"]} == {"train", "val", "test"}
    history = json.loads((tmp_path / "runs" / finished.run_dir.split("/")[-1] / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    loaded = load_checkpoint(finished.run_dir)
    assert loaded.classes == ["a", "b", "c"]


def test_pretrained_efficientnet_learns_tiny_colours(tiny_dataset, tmp_path):
    """Transfer learning works end to end with the offline weights: colour classes are easy. 20 pictures per
    class give several full training batches on any device's plan and a validation split where one picture is
    under a tenth of the accuracy."""
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", pretrained=True, epochs=1, img_size=64,
                                 last_epoch_scale=1.0)  # one epoch at 64 px, as this test was sized
    events = run(config, tiny_dataset(tmp_path / "data", per_class=20), tmp_path / "runs")
    assert any(isinstance(e, ev.Stage) and e.name == "head" for e in events)
    started, finished = next(e for e in events if isinstance(e, ev.RunStarted)), events[-1]
    assert isinstance(finished, ev.Finished), finished
    assert started.split_sizes["val"] >= 10 and started.total_steps >= 3
    assert finished.best_val_acc >= 0.75


def test_same_seed_gives_same_history(tiny_dataset, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    first = run(TINY, data, tmp_path / "r1")[-1]
    second = run(TINY, data, tmp_path / "r2")[-1]
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("elapsed", "images_per_sec")} for e in h]
    if resolve_device("auto").type == "cpu":
        assert strip(first.history) == strip(second.history)  # CPU kernels are deterministic: bit-identical
    else:  # cuDNN picks non-deterministic kernels: same split and order, numbers equal up to rounding
        for a, b in zip(strip(first.history), strip(second.history), strict=True):
            assert a.keys() == b.keys() and a["epoch"] == b["epoch"]
            assert a == pytest.approx(b, rel=0.05, abs=0.05)
    assert read_config(first.run_dir)["split"] == read_config(second.run_dir)["split"]


def test_stop_flag_is_honoured_within_one_batch(tiny_dataset, tmp_path):
    stop = threading.Event()
    config = dataclasses.replace(TINY, epochs=3, batch_size=4)
    seen_after_stop = []
    for event in train_folder(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs", stop=stop):
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
    ("missing", "dataset folder not found: {data}"), ("one_class", "needs at least 2 class folders"),
])
def test_dataset_problems_end_in_failed_event(tmp_path, problem, words):
    from conftest import make_tiny_dataset

    data = tmp_path / "data"
    if problem == "one_class":
        make_tiny_dataset(data, classes=("only",))
    events = run(TINY, data, tmp_path / "runs")
    assert isinstance(events[-1], ev.Failed)
    assert words.format(data=data) in events[-1].message, events[-1].message
    assert "\n" not in events[-1].message and events[-1].run_dir is None
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


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


def _warmup_cosine_reference(step: int, warmup: int, total: int) -> float:
    """The recipe's lr factor per step, as the hand-written LambdaLR computed it before the torch schedulers."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(1, total - warmup), 1.0)))


@pytest.mark.parametrize("epochs, warmup_epochs, steps_per_epoch", [
    (4, 1, 10), (2, 0.5, 3), (3, 0, 7), (1, 0.5, 1), (2, 50, 5), (30, 0.5, 24), (1, 0.1, 1),
])
def test_scheduler_follows_the_warmup_cosine_curve_per_step(epochs, warmup_epochs, steps_per_epoch):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    base = (1e-4, 3e-3)  # two groups (backbone, head) with their own lr
    optimizer = torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, base)])
    config = dataclasses.replace(TINY, epochs=epochs, warmup_epochs=warmup_epochs)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    total = steps_per_epoch * epochs
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    for step in range(total + 1):  # the lr each batch trains with, and after the last one
        expected = [lr * _warmup_cosine_reference(step, warmup, total) for lr in base]
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected, rel=1e-9, abs=1e-15), step
        optimizer.step()
        scheduler.step()


def test_epochs_to_reach():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.91}, {"epoch": 3, "val_acc": 0.95}]
    assert epochs_to_reach(history, 0.9) == 2 and epochs_to_reach(history, 0.99) is None


def test_compare_trains_both_on_the_same_split(tiny_dataset, tmp_path):
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", epochs=1, img_size=32)
    events = list(compare_folder(config, tiny_dataset(tmp_path / "d"), tmp_path / "r"))
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


# ------------------------------------------------------------------------------ optimizer and recipe switches


def test_optimizer_groups_follow_strategy_and_backbone_lr_scale():
    model = build_classifier("resnet18", 3, pretrained=False)
    features, head = list(model.features.parameters()), list(model.head.parameters())
    config = dataclasses.replace(TINY, pretrained=True, lr=0.01, backbone_lr_scale=0.25)
    finetune = make_optimizer(model, config, Strategy.of(config))
    assert isinstance(finetune, torch.optim.AdamW)
    assert [g["lr"] for g in finetune.param_groups] == [0.0025, 0.01]
    assert [list(map(id, g["params"])) for g in finetune.param_groups] == [list(map(id, features)),
                                                                           list(map(id, head))]
    assert all(g["weight_decay"] == TINY.weight_decay for g in finetune.param_groups)
    config = dataclasses.replace(TINY, pretrained=False, lr=0.01, backbone_lr_scale=0.25)
    scratch = make_optimizer(model, config, Strategy.of(config))
    assert [g["lr"] for g in scratch.param_groups] == [0.01, 0.01]  # a random backbone has nothing to protect

    linear_model = build_classifier("resnet18", 3, pretrained=False)
    config = dataclasses.replace(TINY, pretrained=True, strategy="linear", lr=0.01)
    linear = make_optimizer(linear_model, config, Strategy.of(config))
    assert [list(map(id, g["params"])) for g in linear.param_groups] == [list(map(id, linear_model.head.parameters()))]
    assert linear_model.features_frozen and all(p.requires_grad for p in linear_model.head.parameters())


@pytest.mark.parametrize("pretrained, strategy, freeze_bn, head_warmup, expected", [
    (True, "finetune", True, True, Strategy(linear=False, head_first=True, frozen_batchnorm=True)),
    (True, "finetune", False, False, Strategy(linear=False, head_first=False, frozen_batchnorm=False)),
    (True, "linear", False, False, Strategy(linear=True, head_first=True, frozen_batchnorm=True)),
    (False, "finetune", True, True, Strategy(linear=False, head_first=False, frozen_batchnorm=False)),
])
def test_strategy_decides_what_trains_once(pretrained, strategy, freeze_bn, head_warmup, expected):
    config = dataclasses.replace(TINY, pretrained=pretrained, strategy=strategy, freeze_bn=freeze_bn,
                                 head_warmup=head_warmup)
    assert Strategy.of(config) == expected
    model = build_classifier("resnet18", 3, pretrained=False)
    model.keeps_batchnorm_statistics = expected.frozen_batchnorm
    model.train()  # BatchNorm kept in eval mode: its running statistics do not drift
    assert model.features.bn1.training != expected.frozen_batchnorm and model.head.training


@pytest.mark.parametrize("added, refines", [([], True), (["d"], False)])
def test_a_continued_run_refines_a_model_that_knows_every_class(added, refines):
    config = dataclasses.replace(TINY, pretrained=True, head_warmup=True, lr=0.01, backbone_lr_scale=0.25,
                                 warm_start_lr_scale=0.1)
    warm = WarmStart(source="start", kept=["a", "b", "c"], added=added, dropped=[])
    strategy = Strategy.of(config, warm)
    assert strategy.refines == refines
    assert strategy.head_first == (not refines), "a known head is kept; added rows need the head fit"
    model = build_classifier("resnet18", 3 + len(added), pretrained=False)
    lrs = [g["lr"] for g in make_optimizer(model, config, strategy).param_groups]
    assert lrs == pytest.approx([0.00025, 0.001] if refines else [0.0025, 0.01])
    assert not Strategy.of(config).refines, "a fresh run is not a continued one"


PRETRAINED_TINY = dataclasses.replace(TINY, backbone="efficientnet_lite0", pretrained=True, epochs=1,
                                      head_warmup=False)


def _features_state(run_dir) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(run_dir).model.state_dict().items() if k.startswith("features.")}


def _batchnorm_stat(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.parametrize("backbone_lr_scale, freeze_bn", [(0.0, True), (0.0, False), (0.25, True)])
def test_backbone_lr_scale_and_freeze_bn_decide_what_the_backbone_learns(tiny_dataset, tmp_path,
                                                                         backbone_lr_scale, freeze_bn):
    config = dataclasses.replace(PRETRAINED_TINY, backbone_lr_scale=backbone_lr_scale, freeze_bn=freeze_bn)
    final = run(config, tiny_dataset(tmp_path / "d"), tmp_path / "r")[-1]
    assert isinstance(final, ev.Finished), final
    reference = build_classifier("efficientnet_lite0", 3, pretrained=True).state_dict()
    trained = _features_state(final.run_dir)
    weights_same = all(torch.equal(v, reference[k]) for k, v in trained.items() if not _batchnorm_stat(k))
    stats_same = all(torch.equal(v, reference[k]) for k, v in trained.items() if _batchnorm_stat(k))
    assert weights_same == (backbone_lr_scale == 0.0)  # scale 0: the backbone's lr (and weight decay) is zero
    assert stats_same == freeze_bn                      # freeze_bn: ImageNet BatchNorm statistics are kept


@pytest.mark.parametrize("pretrained, strategy, head_warmup, fitted", [
    (True, "finetune", True, True), (True, "finetune", False, False), (True, "linear", False, True),
    (False, "finetune", True, False),
])
def test_head_is_fitted_first_only_for_pretrained_warmup_or_linear(tiny_dataset, tmp_path, monkeypatch,
                                                                   pretrained, strategy, head_warmup, fitted):
    import pokedemo.train as engine

    calls = []
    real = engine.fit_head_on_features
    monkeypatch.setattr(engine, "fit_head_on_features", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    config = dataclasses.replace(PRETRAINED_TINY, pretrained=pretrained, strategy=strategy, head_warmup=head_warmup)
    stop = threading.Event()
    events = []
    for event in train_folder(config, tiny_dataset(tmp_path / "d"), tmp_path / "r", stop=stop):
        events.append(event)
        if isinstance(event, ev.RunStarted):
            stop.set()  # what follows RunStarted is the decision under test; no need to train
    assert isinstance(events[-1], ev.Cancelled), events[-1]
    assert bool(calls) == fitted
    assert any(isinstance(e, ev.Stage) and e.name == "head" for e in events) == fitted


def test_head_fit_on_frozen_features_learns_the_classes(tiny_data_dir):
    """The warm-up's point: the new head already separates the classes before any fine-tuning step."""
    from pokedemo.data import scan_dataset, split_dataset
    from pokedemo.device_plan import execution_plan
    from pokedemo.train import SplitTensors, evaluate_tensors, fit_head_on_features

    device = resolve_device("auto")
    dataset = scan_dataset(tiny_data_dir, image_size=32)
    data = SplitTensors.build(dataset, split_dataset(dataset, PRETRAINED_TINY.ratios, 0), 32, 32, device)
    model = build_classifier("efficientnet_lite0", 3, pretrained=True)
    plan = execution_plan(device, model, PRETRAINED_TINY.batch_size, len(data.train_y))
    plan.place_model(model)
    features_before = {k: v.clone() for k, v in model.features.state_dict().items()}
    head_before = model.head.weight.detach().clone()
    fit_head_on_features(model, data, PRETRAINED_TINY, plan, check_stop=lambda: None)
    assert not torch.equal(model.head.weight.detach(), head_before)
    assert all(torch.equal(v, features_before[k]) for k, v in model.features.state_dict().items())
    _, train_acc, _ = evaluate_tensors(model, data.train_x, data.train_y, device, plan=plan)
    assert train_acc == 1.0  # colour classes are linearly separable in ImageNet features


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_label_smoothing_reaches_every_loss(tiny_dataset, tmp_path, monkeypatch, smoothing):
    import pokedemo.train as engine

    seen = []
    real = engine.F.cross_entropy

    def spy(*args, **kwargs):
        seen.append(kwargs.get("label_smoothing", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.F, "cross_entropy", spy)
    # Without calibration, whose temperature fit scores plain (unsmoothed) likelihoods with the same function.
    config = dataclasses.replace(TINY, epochs=1, label_smoothing=smoothing, calibrate=False)
    events = run(config, tiny_dataset(tmp_path / "d"), tmp_path / "r")
    assert isinstance(events[-1], ev.Finished), events[-1]
    steps = next(e for e in events if isinstance(e, ev.RunStarted)).total_steps
    assert len(seen) == steps + 1 and set(seen) == {smoothing}  # every training batch, then validation


# ------------------------------------------------------------------------------ best epoch and what is saved

# (val_acc, val_loss) of epochs 1..5: epoch 3 ties epoch 2's accuracy with a lower loss (wins); epoch 4 has the
# lowest loss but a lower accuracy; epoch 5 equals epoch 3 exactly (an equal result does not replace the best).
SCRIPTED_VAL = [(0.5, 1.0), (0.8, 0.9), (0.8, 0.7), (0.6, 0.2), (0.8, 0.7)]  # (val acc, val loss) per epoch
# select_epoch_by -> (kept epoch, epochs that were a new best) for SCRIPTED_VAL
KEPT_EPOCH = {"val_acc": (3, [1, 2, 3]), "val_loss": (4, [1, 2, 3, 4])}
BEST_EPOCH = 3


def scripted_validation(monkeypatch, script):
    """Replace the engine's validation pass with scripted results; returns a copy of the model's weights as they
    were at each epoch's validation (index 0 = epoch 1)."""
    import pokedemo.train as engine

    snapshots = []

    def evaluate(model, images, labels, device, label_smoothing=0.0, **kwargs):
        snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        accuracy, loss = script[len(snapshots) - 1]
        return loss, accuracy, torch.zeros(len(labels), model.head.out_features)  # equal logits: temperature 1

    monkeypatch.setattr(engine, "evaluate_tensors", evaluate)
    return snapshots


def _saved_weights(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(f"{run_dir}/model.safetensors").items() if not k.startswith("open_set.")}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("rule", sorted(KEPT_EPOCH))
def test_the_kept_epoch_follows_select_epoch_by_and_its_weights_are_saved(rule, tiny_dataset, tmp_path, monkeypatch):
    """val_acc: highest accuracy, ties to the lower loss; val_loss: lowest loss (the default)."""
    snapshots = scripted_validation(monkeypatch, SCRIPTED_VAL)
    config = dataclasses.replace(TINY, epochs=len(SCRIPTED_VAL), select_epoch_by=rule)
    events = run(config, tiny_dataset(tmp_path / "d"), tmp_path / "r")
    final = events[-1]
    assert isinstance(final, ev.Finished), final
    kept, new_bests = KEPT_EPOCH[rule]
    acc, loss = SCRIPTED_VAL[kept - 1]
    assert [e.epoch for e in events if isinstance(e, ev.NewBest)] == new_bests
    assert (final.best_epoch, final.best_val_acc) == (kept, acc)
    metrics = read_config(final.run_dir)["metrics"]
    assert (metrics["best_epoch"], metrics["best_val_acc"], metrics["best_val_loss"]) == (kept, acc, loss)
    saved = _saved_weights(final.run_dir)
    assert not _same(snapshots[kept - 1], snapshots[-1])  # premise: later epochs changed the weights
    assert _same(saved, snapshots[kept - 1])
    # finish() restored the kept weights before testing: the recorded test result is the saved model's
    from pokedemo.predict import Predictor, evaluate_split

    report = evaluate_split(Predictor.load(final.run_dir, device=resolve_device("auto")))
    assert [i["pred"] for i in report["items"]] == [i["pred"] for i in final.test_metrics["items"]]


def test_runs_keep_the_lowest_validation_loss_by_default_and_older_checkpoints_read_as_accuracy():
    assert TrainConfig().select_epoch_by == "val_loss"
    assert TrainConfig.from_dict({"backbone": "resnet18"}).select_epoch_by == "val_acc"  # saved before the field
    with pytest.raises(ValueError, match="select_epoch_by"):
        TrainConfig(select_epoch_by="val_f1").validate()


# Epoch 3 is the best so far after epoch 4 under either rule: epoch 4 has the best accuracy but a higher loss in
# the second script.
STOP_SCRIPTS = {"val_acc": SCRIPTED_VAL, "val_loss": [(0.5, 1.0), (0.8, 0.9), (0.8, 0.7), (0.9, 0.8), (0.8, 0.7)]}


@pytest.mark.parametrize("rule", sorted(STOP_SCRIPTS))
def test_a_stopped_run_saves_the_best_epoch_not_the_last(rule, tiny_dataset, tmp_path, monkeypatch):
    snapshots = scripted_validation(monkeypatch, STOP_SCRIPTS[rule])
    stop = threading.Event()
    config = dataclasses.replace(TINY, epochs=len(SCRIPTED_VAL), select_epoch_by=rule)
    events = []
    for event in train_folder(config, tiny_dataset(tmp_path / "d"), tmp_path / "r", stop=stop):
        events.append(event)
        if isinstance(event, ev.EpochEnd) and event.epoch == 4:
            stop.set()
    final = events[-1]
    assert isinstance(final, ev.Cancelled) and final.epoch == 5, final  # stopped before epoch 5's first batch
    assert f"epoch {BEST_EPOCH}, val acc 80.0%" in final.message
    assert read_config(final.run_dir)["status"] == "cancelled"
    assert _same(_saved_weights(final.run_dir), snapshots[BEST_EPOCH - 1])
    assert not _same(snapshots[BEST_EPOCH - 1], snapshots[3])


# ------------------------------------------------------------------------------ compare when a run does not finish


def test_compare_stops_when_the_pretrained_run_fails(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no resnet18 weights, no download
    monkeypatch.setenv("POKEDEMO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    events = list(compare_folder(dataclasses.replace(TINY, epochs=1), tiny_dataset(tmp_path / "d"), tmp_path / "r"))
    final = events[-1]
    assert isinstance(final, ev.Tagged) and final.run == "pretrained" and isinstance(final.event, ev.Failed)
    assert "resnet18-f37072fd.pth" in final.event.message
    assert {e.run for e in events if isinstance(e, ev.Tagged)} == {"pretrained"}  # scratch never started
    assert not any(isinstance(e, ev.CompareFinished) for e in events)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_compare_stopped_during_the_pretrained_run_never_starts_scratch(tiny_dataset, tmp_path):
    stop = threading.Event()
    config = dataclasses.replace(TINY, backbone="efficientnet_lite0", epochs=2)
    events = []
    for event in compare_folder(config, tiny_dataset(tmp_path / "d"), tmp_path / "r", stop=stop):
        events.append(event)
        if isinstance(event, ev.Tagged) and isinstance(event.event, ev.EpochEnd):
            stop.set()
    final = events[-1]
    assert isinstance(final, ev.Tagged) and final.run == "pretrained" and isinstance(final.event, ev.Cancelled)
    assert final.event.run_dir and read_config(final.event.run_dir)["status"] == "cancelled"
    assert {e.run for e in events if isinstance(e, ev.Tagged)} == {"pretrained"}
    assert not any(isinstance(e, ev.CompareFinished) for e in events)


# ------------------------------------------------------------------------------ autocast in training batches


@pytest.mark.parametrize("forced_dtype", [None, torch.bfloat16])
def test_training_batches_run_under_the_autocast_dtype_of_the_device(tiny_dataset, tmp_path, monkeypatch,
                                                                     forced_dtype):
    """The training step itself (not only inference) runs inside the execution plan's autocast, whose dtype
    amp_dtype decides. bfloat16 forced on the current device stands in for a CUDA GPU; None is the device's own
    choice (resnet18 here: the plan keeps autocast for it on CUDA too)."""
    import pokedemo.device_plan as plans
    import pokedemo.train as engine
    from pokedemo.config import amp_dtype

    device = resolve_device("auto")
    expected = forced_dtype if forced_dtype is not None else amp_dtype(device)
    if forced_dtype is not None:
        monkeypatch.setattr(plans, "amp_dtype", lambda d: forced_dtype)
    seen = []
    real_build = engine.classifier_with

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.head.register_forward_hook(
            lambda module, inputs, output: seen.append((module.training, torch.is_autocast_enabled(device.type),
                                                        output.dtype)) if module.training else None)
        return model

    monkeypatch.setattr(engine, "classifier_with", build)
    events = run(dataclasses.replace(TINY, epochs=1), tiny_dataset(tmp_path / "d"), tmp_path / "r")
    assert isinstance(events[-1], ev.Finished), events[-1]
    steps = next(e for e in events if isinstance(e, ev.RunStarted)).total_steps
    assert len(seen) == steps
    assert {(enabled, dtype) for _, enabled, dtype in seen} == {
        (expected is not None, expected or torch.float32)}


@pytest.mark.parametrize("scale, sizes", [(1.5, {1: 32, 2: 32, 3: 48}), (1.0, {1: 32, 2: 32, 3: 32})])
def test_the_last_epoch_trains_at_last_epoch_scale_and_evaluation_runs_at_that_size(scale, sizes, tiny_dataset,
                                                                                      tmp_path, monkeypatch):
    import pokedemo.train as engine

    epoch, seen = {"now": 0}, set()
    monkeypatch.setattr(engine, "before_batch", lambda e, step: epoch.__setitem__("now", e))
    real = engine.make_train_augment

    def recording(size, *args, **kwargs):
        augment = real(size, *args, **kwargs)

        def run_and_record(batch):
            out = augment(batch)
            seen.add((epoch["now"], out.shape[-1]))
            return out
        return run_and_record

    monkeypatch.setattr(engine, "make_train_augment", recording)
    config = dataclasses.replace(TINY, epochs=3, last_epoch_scale=scale)
    finished = run(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs")[-1]
    assert isinstance(finished, ev.Finished), finished
    assert dict(seen) == sizes and len(seen) == 3  # one training size per epoch
    recorded = read_config(finished.run_dir)
    assert recorded["image_size"] == sizes[3] and recorded["train_config"]["img_size"] == 32


def test_evaluation_size_is_one_path_recorded_in_the_checkpoint(tiny_dataset, tmp_path):
    """Training-time test, evaluate, predict and Grad-CAM all run at img_size x eval_scale, as recorded."""
    from pokedemo.gradcam import grad_cam
    from pokedemo.predict import Predictor, evaluate_split

    data = tiny_dataset(tmp_path / "data")
    finished = run(dataclasses.replace(TINY, last_epoch_scale=1.0, eval_scale=1.5), data, tmp_path / "runs")[-1]
    assert isinstance(finished, ev.Finished), finished
    config = read_config(finished.run_dir)
    assert config["image_size"] == 48 and config["train_config"]["img_size"] == 32
    predictor = Predictor.load(finished.run_dir)
    assert predictor.image_size == 48
    report = evaluate_split(predictor)
    assert [i["pred"] for i in report["items"]] == [i["pred"] for i in finished.test_metrics["items"]]
    assert report["accuracy"] == pytest.approx(finished.test_acc)
    image = next((data / "a").iterdir())
    top = predictor.predict(image, top_k=3)
    assert grad_cam(predictor, image).label == top[0][0]
