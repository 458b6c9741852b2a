"""Execution plans per device: layout, autocast dtype and the batch shapes the model sees (CPU-only tests;
a CUDA plan is simulated by building it for a CUDA device and running it on the CPU)."""

import dataclasses
import threading

import pytest
import torch
from torch import nn

import pokedemo.train as engine
from pokedemo import events as ev
from pokedemo.checkpoint import read_config
from pokedemo.config import TrainConfig
from pokedemo.device_plan import CPU_EVAL_BATCH, CPU_MICRO_BATCH, ExecutionPlan, execution_plan, has_depthwise_convs

from conftest import train_folder

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # constructing a device object needs no GPU


def depthwise_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def dense_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_depthwise_detection_on_the_real_backbones():
    from pokedemo.models import build_classifier

    assert has_depthwise_convs(build_classifier("efficientnet_lite0", 3, pretrained=False))
    assert not has_depthwise_convs(build_classifier("resnet18", 3, pretrained=False))


@pytest.mark.parametrize("net", [depthwise_net, dense_net])
def test_cpu_plan_keeps_natural_batches_in_small_passes(net):
    plan = execution_plan(CPU, net(), 32, n_train=559)
    assert (plan.channels_last, plan.autocast_dtype, plan.fixed_shapes) == (True, None, False)
    assert plan.batch_size == 32 and plan.eval_batch == CPU_EVAL_BATCH == 16 and plan.micro_batch == CPU_MICRO_BATCH == 16
    assert plan.steps_per_epoch(559, 10) == 18  # the partial last batch is trained on
    assert execution_plan(CPU, net(), 8).micro_batch == 8  # never more than the batch
    other = execution_plan(torch.device("mps"), net(), 32)  # Apple GPUs: not measured, whole batches as before
    assert (other.eval_batch, other.micro_batch, other.fixed_shapes) == (128, 32, False)


def test_cuda_plan_depthwise_nets_run_nchw_fp32_with_one_batch_shape(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    plan = execution_plan(CUDA, depthwise_net(), 32, n_train=559)
    assert (plan.channels_last, plan.autocast_dtype, plan.fixed_shapes) == (False, None, True)
    assert plan.eval_batch == plan.batch_size == plan.micro_batch == 32 and plan.steps_per_epoch(559, 10) == 17
    assert plan.memory_format == torch.contiguous_format


def test_cuda_plan_dense_nets_keep_channels_last_and_autocast(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    plan = execution_plan(CUDA, dense_net(), 32)
    assert (plan.channels_last, plan.autocast_dtype, plan.fixed_shapes) == (True, torch.bfloat16, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert execution_plan(CUDA, dense_net(), 32).autocast_dtype is torch.float16


def test_batch_is_capped_at_a_tiny_training_split():
    plan = execution_plan(CUDA, depthwise_net(), 32, n_train=20)
    assert plan.batch_size == plan.eval_batch == 20 and plan.steps_per_epoch(20, 10) == 1


def test_natural_batches_are_one_permutation_with_a_partial_last_batch():
    plan = execution_plan(CPU, dense_net(), 32)
    batches, carried = plan.epoch_batches(70, torch.Generator().manual_seed(0), None, 10)
    assert [len(b) for b in batches] == [32, 32, 6] and len(carried) == 0
    assert torch.equal(torch.cat(batches), torch.randperm(70, generator=torch.Generator().manual_seed(0)))


def test_fixed_batches_drop_the_remainder_and_open_the_next_epoch_with_it():
    plan = dataclasses.replace(execution_plan(CUDA, depthwise_net(), 32), device=CPU)
    generator = torch.Generator().manual_seed(0)
    first, carried = plan.epoch_batches(70, generator, None, 10)
    assert [len(b) for b in first] == [32, 32] and len(carried) == 6
    assert set(torch.cat(first).tolist()) | set(carried.tolist()) == set(range(70))
    second, _ = plan.epoch_batches(70, generator, carried, 10)
    assert [len(b) for b in second] == [32, 32]
    assert set(carried.tolist()) <= set(second[0].tolist())  # last epoch's left-overs are trained on first
    assert len(set(torch.cat(second).tolist())) == 64  # no image twice within an epoch
    assert set(torch.cat(first).tolist()) | set(torch.cat(second).tolist()) == set(range(70))


def test_padded_evaluation_sees_one_shape_and_returns_the_unpadded_results():
    model = depthwise_net().eval()
    plan = dataclasses.replace(execution_plan(CUDA, model, 8), device=CPU)
    images = torch.randint(0, 256, (19, 3, 12, 12), dtype=torch.uint8)
    shapes = []

    def fn(x):
        shapes.append(tuple(x.shape))
        return model(x)

    with torch.no_grad():
        out = plan.forward_in_batches(fn, images)
        expected = model(images.float() / 255)
    assert shapes == [(8, 3, 12, 12)] * 3 and out.shape == (19, 8)
    torch.testing.assert_close(out, expected)


def spy_runs(monkeypatch, simulate_cuda: bool, autocast: bool = True):
    """Record (batch size, channels_last?, dtype) of every input the backbone sees in a run. With
    ``autocast=False`` a simulated CUDA plan computes in float32: a dense net's CUDA plan autocasts to bfloat16,
    which the CPU runs about ten times slower, and tests of which images are trained need no reduced precision."""
    seen = []
    real_build, real_plan = engine.classifier_with, engine.execution_plan

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.features.register_forward_pre_hook(lambda module, inputs: seen.append((
            inputs[0].shape[0], inputs[0].is_contiguous(memory_format=torch.channels_last), inputs[0].dtype)))
        return model

    def plan(device, model, batch_size, n_train=None):
        if not simulate_cuda:
            return real_plan(device, model, batch_size, n_train)
        cuda_plan = dataclasses.replace(real_plan(CUDA, model, batch_size, n_train), device=device)
        return cuda_plan if autocast else dataclasses.replace(cuda_plan, autocast_dtype=None)

    monkeypatch.setattr(engine, "classifier_with", build)
    monkeypatch.setattr(engine, "execution_plan", plan)
    return seen


def test_a_simulated_cuda_run_shows_the_model_one_batch_shape_in_nchw(tiny_dataset, tmp_path, monkeypatch):
    seen = spy_runs(monkeypatch, simulate_cuda=True)
    config = TrainConfig(backbone="efficientnet_lite0", pretrained=True, epochs=2, batch_size=8, img_size=32)
    events = list(train_folder(config, tiny_dataset(tmp_path / "data", per_class=10), tmp_path / "runs"))
    final = events[-1]
    assert isinstance(final, ev.Finished), final
    assert {s for s, _, _ in seen} == {8}, seen  # head fitting, training, validation and test alike
    assert not any(channels_last for _, channels_last, _ in seen) and {d for _, _, d in seen} == {torch.float32}
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.total_steps == 2 * (started.split_sizes["train"] // 8)
    assert len(final.test_metrics["items"]) == started.split_sizes["test"]  # padding never reaches results
    execution = read_config(final.run_dir)["execution"]
    assert execution["fixed_batch_shapes"] and not execution["channels_last"] and execution["eval_batch"] == 8


def passes(n: int, size: int) -> list[int]:
    return [min(size, n - start) for start in range(0, n, size)]


def test_a_cpu_run_keeps_natural_batch_shapes_in_channels_last(tiny_dataset, tmp_path, monkeypatch):
    seen = spy_runs(monkeypatch, simulate_cuda=False)
    config = TrainConfig(backbone="efficientnet_lite0", pretrained=True, epochs=1, batch_size=8, img_size=32,
                         device="cpu")
    events = list(train_folder(config, tiny_dataset(tmp_path / "data", per_class=12), tmp_path / "runs"))
    assert isinstance(events[-1], ev.Finished), events[-1]
    sizes = next(e for e in events if isinstance(e, ev.RunStarted)).split_sizes
    train, val, test = sizes["train"], sizes["val"], sizes["test"]
    assert max(train, val, test) > CPU_EVAL_BATCH  # so the evaluation passes are split
    head = [2 * n for n in passes(train, CPU_EVAL_BATCH)]  # each pass with its mirror images
    open_set = passes(train, CPU_EVAL_BATCH) + passes(val, CPU_EVAL_BATCH)  # its statistics and threshold
    expected = head + passes(train, 8) + passes(val, CPU_EVAL_BATCH) + open_set + passes(test, CPU_EVAL_BATCH)
    assert sorted(s for s, _, _ in seen) == sorted(expected)
    assert all(channels_last for _, channels_last, _ in seen) and {d for _, _, d in seen} == {torch.float32}
    assert not read_config(events[-1].run_dir)["execution"]["fixed_batch_shapes"]


def test_predictor_chooses_its_device_once_and_follows_its_plan(tiny_checkpoint, monkeypatch):
    from pokedemo import predict
    from pokedemo.checkpoint import load_checkpoint

    asked = []
    real = predict.resolve_device
    monkeypatch.setattr(predict, "resolve_device", lambda preference: asked.append(preference) or real(preference))
    predictor = predict.Predictor(load_checkpoint(tiny_checkpoint))
    assert asked == ["auto"] and predictor.device == real("auto")  # the GPU where there is one
    assert predictor.plan == execution_plan(predictor.device, predictor.model, 8)  # the checkpoint's batch size
    # Padding and layout change no answer. Compared in float32 (on a CUDA GPU a dense net's plan autocasts to
    # bfloat16, and cuDNN convolutions may round to TF32: either moves probabilities by ~1e-3 between layouts).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    predictor.plan = dataclasses.replace(predictor.plan, autocast_dtype=None)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    planned = predictor.probabilities(images)
    predictor.plan = dataclasses.replace(predictor.plan, fixed_shapes=True, eval_batch=4,
                                         channels_last=not predictor.plan.channels_last)
    torch.testing.assert_close(predictor.probabilities(images), planned)


def test_a_run_records_the_resolved_device_defaults(tiny_dataset, tmp_path):
    from pokedemo.config import device_defaults, resolve_device

    defaults = device_defaults(resolve_device("auto"))
    size = defaults.img_size  # 128 on a CPU, 224 on a CUDA GPU
    last = round(size * defaults.last_epoch_scale)  # 160 on a CPU (its last epoch and evaluation), 224 on CUDA
    config = TrainConfig(backbone="resnet18", pretrained=False, batch_size=8, epochs=1)  # img_size: device's
    events = list(train_folder(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs"))
    assert isinstance(events[-1], ev.Finished), events[-1]
    recorded = read_config(events[-1].run_dir)
    assert recorded["train_config"]["img_size"] == size  # resolved, not None
    assert recorded["train_config"]["last_epoch_scale"] == defaults.last_epoch_scale
    assert recorded["image_size"] == last
    assert recorded["train_config"]["epochs"] == 1
    assert next(e for e in events if isinstance(e, ev.RunStarted)).config["img_size"] == size


def test_the_cli_says_which_device_defaults_apply(tiny_dataset, tmp_path, capsys):
    from pokedemo.cli import main

    data = tiny_dataset(tmp_path / "data")
    args = ["train", "--data", str(data), "--scratch", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    out = capsys.readouterr().out
    from pokedemo.config import defaults_note, resolve_device

    note = defaults_note(resolve_device("auto"), ("img_size",))  # epochs were given: only the size is the device's
    assert note in out and " px" in note and "because" in note
    assert main(args + ["--img-size", "32"]) == 0
    assert "Defaults on" not in capsys.readouterr().out  # nothing left to the device: no note


def test_the_backbone_is_built_while_the_image_tensors_are_built(tiny_dataset, tmp_path, monkeypatch):
    build_started, overlapped, build_threads = threading.Event(), [], []
    real_build, real_tensors = engine.build_features, engine.cached_tensors

    def build(*args, **kwargs):
        build_threads.append(threading.current_thread())
        build_started.set()
        return real_build(*args, **kwargs)

    def tensors(*args, **kwargs):
        overlapped.append(build_started.wait(timeout=120))  # set at once when the build runs alongside
        return real_tensors(*args, **kwargs)

    monkeypatch.setattr(engine, "build_features", build)
    monkeypatch.setattr(engine, "cached_tensors", tensors)
    config = TrainConfig(backbone="resnet18", pretrained=False, epochs=1, batch_size=8, img_size=32)
    final = list(train_folder(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs"))[-1]
    assert isinstance(final, ev.Finished), final
    assert overlapped == [True] * 3 and build_threads[0] is not threading.main_thread()  # train, val, test


def test_opening_the_data_starts_importing_the_backbone_before_the_scan(tiny_dataset, monkeypatch):
    from pokedemo import training_data

    calls = []
    real_scan = training_data.scan_dataset
    monkeypatch.setattr(training_data, "start_importing_backbone", lambda backbone: calls.append(backbone))
    monkeypatch.setattr(training_data, "scan_dataset", lambda *a, **k: calls.append("scan") or real_scan(*a, **k))
    training_data.training_data(tiny_dataset(), TrainConfig(backbone="resnet18", img_size=32))
    assert calls == ["resnet18", "scan"]


def test_the_backbone_import_runs_in_the_background_and_leaves_errors_to_the_build():
    """In a fresh interpreter: the imports happen in a thread of their own; an unknown backbone raises nothing
    there (the run's build reports it)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    # This process imports nothing of torchvision itself: if it appears, the background thread imported it.
    code = ("import sys, time\n"
            "from pokedemo.training_data import start_importing_backbone\n"
            "start_importing_backbone('no-such-net')\n"
            "start_importing_backbone('resnet18')\n"
            "deadline = time.monotonic() + 600  # guards a hang only\n"
            "while 'torchvision.models' not in sys.modules and time.monotonic() < deadline:\n"
            "    time.sleep(0.05)\n"
            "print('torchvision.models' in sys.modules)\n"
            "import threading\n"
            "for thread in threading.enumerate():  # let the import finish before the interpreter exits\n"
            "    if thread.name == 'pokedemo-backbone-imports':\n"
            "        thread.join(600)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split() == ["True"]


def test_a_dataset_error_still_wins_over_a_backbone_error(tiny_dataset, tmp_path, monkeypatch):
    from pokedemo.models import WeightsUnavailable

    def no_weights(*args, **kwargs):
        raise WeightsUnavailable("no weights here")

    monkeypatch.setattr(engine, "build_features", no_weights)
    final = list(train_folder(TrainConfig(backbone="resnet18"), tmp_path / "missing", tmp_path / "runs"))[-1]
    assert isinstance(final, ev.Failed) and "not found" in final.message
    final = list(train_folder(TrainConfig(backbone="resnet18", img_size=32),
                              tiny_dataset(tmp_path / "data"), tmp_path / "runs"))[-1]
    assert isinstance(final, ev.Failed) and final.message == "no weights here"


def training_passes(monkeypatch, tmp_path, data, **config) -> list[int]:
    """Batch sizes the backbone sees in training passes (grad enabled) of a one-epoch CPU run."""
    seen = []
    real_build = engine.classifier_with

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.features.register_forward_pre_hook(
            lambda module, inputs: seen.append(inputs[0].shape[0]) if torch.is_grad_enabled() else None)
        return model

    monkeypatch.setattr(engine, "classifier_with", build)
    config = TrainConfig(backbone="efficientnet_lite0", epochs=1, batch_size=32, img_size=32, device="cpu", **config)
    final = list(train_folder(config, data, tmp_path / "runs"))[-1]
    assert isinstance(final, ev.Finished), final
    return seen


def test_cpu_training_steps_run_in_micro_batches_only_where_batchnorm_is_frozen(tiny_dataset, tmp_path, monkeypatch):
    data = tiny_dataset(tmp_path / "data", per_class=20)
    frozen = training_passes(monkeypatch, tmp_path, data, pretrained=True)  # freeze_bn: BatchNorm in eval mode
    assert frozen and max(frozen) == CPU_MICRO_BATCH < 32
    # Batch statistics in training mode depend on the whole batch: a split step would be a different step.
    assert 32 in training_passes(monkeypatch, tmp_path, data, pretrained=False)
    assert 32 in training_passes(monkeypatch, tmp_path, data, pretrained=True, freeze_bn=False)


def test_a_split_step_computes_the_whole_batchs_gradient():
    from pokedemo.models import build_classifier

    torch.manual_seed(0)
    config = TrainConfig(backbone="efficientnet_lite0", pretrained=False, batch_size=12, device="cpu", label_smoothing=0.1)
    model = build_classifier("efficientnet_lite0", 3, pretrained=False)
    model.train()
    for module in model.modules():  # frozen BatchNorm, as a pretrained run trains
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    plan = execution_plan(CPU, model, 12)
    x, y = torch.rand(12, 3, 32, 32), torch.tensor([0, 1, 2] * 4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def gradients(in_passes: bool):
        model.zero_grad(set_to_none=True)
        loss, logits = engine.backward(model, model, x, y, plan=plan, scaler=scaler, linear=False,
                                       micro_batch=5 if in_passes else None,  # passes of 5, 5 and 2
                                       label_smoothing=config.label_smoothing)
        return loss, logits, [p.grad.clone() for p in model.parameters()]

    whole, split = gradients(False), gradients(True)
    torch.testing.assert_close(split[0], whole[0])
    torch.testing.assert_close(split[1], whole[1])
    for a, b in zip(split[2], whole[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ small datasets on the fixed-shape (CUDA) plan


def test_a_one_epoch_fixed_shape_epoch_trains_every_image_in_full_batches():
    plan = dataclasses.replace(execution_plan(CUDA, depthwise_net(), 32), device=CPU)
    assert plan.steps_per_epoch(70, 1) == 3 and plan.steps_per_epoch(64, 1) == 2 and plan.steps_per_epoch(70, 2) == 2
    batches, carried = plan.epoch_batches(70, torch.Generator().manual_seed(0), None, 1)
    assert [len(b) for b in batches] == [32, 32, 32] and len(carried) == 0
    seen = torch.cat(batches).tolist()
    assert set(seen) == set(range(70))  # real images only, every one of them
    assert len(set(batches[2].tolist())) == 32  # the top-up repeats no image within its batch
    assert set(batches[2].tolist()) - set(torch.cat(batches[:2]).tolist()) == set(batches[2][:6].tolist())


@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_a_simulated_cuda_run_trains_every_image_of_a_small_split_in_full_batches(tiny_dataset, tmp_path,
                                                                                   monkeypatch, epochs):
    """15 training images, batch 8: one-epoch runs top the remainder up, longer runs carry it over; either way
    every training image is trained on within the run, in full batches of real images."""
    spy_runs(monkeypatch, simulate_cuda=True, autocast=False)
    batches = []
    real_batches = ExecutionPlan.epoch_batches

    def epoch_batches(self, n, *args, **kwargs):
        made, carried = real_batches(self, n, *args, **kwargs)
        batches.extend((n, batch) for batch in made)
        return made, carried

    monkeypatch.setattr(ExecutionPlan, "epoch_batches", epoch_batches)
    config = TrainConfig(backbone="resnet18", pretrained=False, epochs=epochs, batch_size=8, img_size=32)
    events = list(train_folder(config, tiny_dataset(tmp_path / "data"), tmp_path / "runs"))
    assert isinstance(events[-1], ev.Finished), events[-1]
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    n = started.split_sizes["train"]
    assert n % 8 and {size for size, _ in batches} == {n}  # a remainder to look after
    assert all(len(batch) == 8 for _, batch in batches)
    assert set(torch.cat([batch for _, batch in batches]).tolist()) == set(range(n))
    assert started.total_steps == len(batches) == epochs * (n // 8) + (epochs == 1)


def test_a_split_smaller_than_one_batch_trains_every_epoch_on_all_of_it():
    plan = dataclasses.replace(execution_plan(CUDA, dense_net(), 32, n_train=5), device=CPU)
    generator, carried = torch.Generator().manual_seed(0), None
    for _ in range(3):
        batches, carried = plan.epoch_batches(5, generator, carried, 3)
        assert [sorted(b.tolist()) for b in batches] == [[0, 1, 2, 3, 4]] and len(carried) == 0


def test_padding_never_reaches_head_fitting_metrics_or_batchnorm_statistics(tiny_dataset):
    """Head features and evaluation under the padded (CUDA) plan equal those of one unpadded pass, and the
    model's BatchNorm statistics are untouched by both (they run on an eval-mode copy)."""
    from pokedemo.models import build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet18", 3, pretrained=False)
    images = torch.randint(0, 256, (19, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2] * 6 + [0])
    tensors = engine.SplitTensors(images, labels, images, labels, images, labels)
    padded = dataclasses.replace(execution_plan(CUDA, model, 8), device=CPU, autocast_dtype=None)
    whole = dataclasses.replace(padded, fixed_shapes=False, eval_batch=19)  # one pass, no padding
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert padded.fixed_shapes and 19 % padded.eval_batch

    features, feature_labels = engine.head_features(model, tensors, padded, lambda: None)
    expected, expected_labels = engine.head_features(model, tensors, whole, lambda: None)
    torch.testing.assert_close(features, expected)
    assert torch.equal(feature_labels, expected_labels) and len(features) == 2 * 19
    loss, accuracy, logits = engine.evaluate_tensors(model, images, labels, CPU, plan=padded)
    loss_whole, accuracy_whole, logits_whole = engine.evaluate_tensors(model, images, labels, CPU, plan=whole)
    torch.testing.assert_close(logits, logits_whole)
    assert logits.shape == (19, 3) and accuracy == accuracy_whole and loss == pytest.approx(loss_whole, rel=1e-5)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in statistics.items())
