import json

import pytest
import torch

from pokedemo.config import TrainConfig, amp_dtype, resolve_device


def test_defaults_are_valid_and_json_round_trip():
    config = TrainConfig()
    config.validate()
    restored = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_from_dict_ignores_unknown_keys():
    assert TrainConfig.from_dict({"epochs": 3, "from_the_future": 1}).epochs == 3


@pytest.mark.parametrize("change", [
    {"epochs": 0}, {"lr": 0}, {"warm_start_lr_scale": 0}, {"warm_start_lr_scale": 1.5}, {"strategy": "nope"},
    {"img_size": 8}, {"val_ratio": 0.5, "test_ratio": 0.5},
    {"pretrained": False, "strategy": "linear"}, {"device": "tpu"},
])
def test_invalid_values_are_refused_with_one_line(change):
    with pytest.raises(ValueError) as info:
        TrainConfig(**change).validate()
    assert "\n" not in str(info.value)


def test_every_field_has_help_text():
    import dataclasses

    for field in dataclasses.fields(TrainConfig):
        assert TrainConfig.help_for(field.name), field.name


def test_device_resolution_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError):
        resolve_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_autocast_only_on_cuda(monkeypatch):
    assert amp_dtype(torch.device("cpu")) is None
    assert amp_dtype(torch.device("mps")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_dtype(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_dtype(torch.device("cuda")) is torch.float16


def test_device_is_only_chosen_in_the_device_helper():
    """CUDA/MPS placement goes through resolve_device; no module hard-codes .cuda() or a device string."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "pokedemo"
    offenders = []
    for path in package.glob("*.py"):
        if path.name == "config.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.cuda\(|\.mps\(|device\(\s*[\"'](cuda|mps)", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_augmentation_stays_on_the_batch_device():
    """A CUDA tensor cache is augmented on the GPU: every tensor the augmentation makes follows the batch's
    device. The meta device stands in for CUDA here (a CPU tensor mixed in raises, as it would on a GPU)."""
    from pokedemo.augment import make_train_augment

    batch = torch.zeros(4, 3, 32, 32, dtype=torch.uint8, device="meta")
    out = make_train_augment(24)(batch)
    assert out.device.type == "meta" and out.shape == (4, 3, 24, 24) and out.dtype == torch.uint8


def test_image_size_and_epochs_default_per_device():
    from pokedemo.config import DEVICE_DEFAULTS

    config = TrainConfig()
    assert config.unset_device_defaults() == ("img_size", "epochs")
    cpu, cuda, mps = (config.resolved(torch.device(kind)) for kind in ("cpu", "cuda", "mps"))
    assert (cpu.img_size, cpu.epochs) == (128, 4)  # unchanged CPU defaults
    assert (cuda.img_size, cuda.epochs) == (224, 10) == (DEVICE_DEFAULTS["cuda"].img_size, DEVICE_DEFAULTS["cuda"].epochs)
    assert (mps.img_size, mps.epochs) == (128, 4)  # unmeasured devices keep the CPU's
    assert cuda.unset_device_defaults() == () and cuda.resolved("cpu") == cuda  # resolved once, then fixed
    explicit = TrainConfig(img_size=96).resolved("cuda")
    assert (explicit.img_size, explicit.epochs) == (96, 10)  # only unset fields take the device's value
    assert TrainConfig.from_dict(cpu.to_dict()) == cpu  # resolved configs round-trip through config.json


def test_a_continued_run_defaults_to_a_quarter_of_the_epochs():
    continued = TrainConfig(init_from="runs/one")
    assert continued.resolved("cpu").epochs == 1 and continued.resolved("cuda").epochs == 3
    assert TrainConfig(init_from="runs/one", epochs=5).resolved("cpu").epochs == 5  # an explicit value stays
    assert continued.resolved("cpu").img_size == TrainConfig().resolved("cpu").img_size  # only the epochs change


def test_defaults_note_says_which_values_and_why():
    from pokedemo.config import defaults_note

    note = defaults_note("cuda:0")
    assert "CUDA GPU" in note and "224 px and 10 epochs" in note and "because" in note
    assert "128 px" in defaults_note("cpu", ("img_size",)) and "epochs" not in defaults_note("cpu", ("img_size",))
    assert "CPU defaults apply" in defaults_note("mps") and defaults_note("cpu", ()) == ""
    continuing = defaults_note("cpu", continuing=True)
    assert "1 epoch (a run that continues from a model)" in continuing and "4 epochs" not in continuing
    assert "on a CUDA GPU" in TrainConfig.help_for("epochs") and "on a CPU" in TrainConfig.help_for("img_size")


def test_a_saved_config_without_eval_scale_evaluates_at_its_training_size():
    """Checkpoints from before eval_scale existed were evaluated at img_size; from_dict keeps that."""
    old = TrainConfig.from_dict({"img_size": 96, "epochs": 3})
    assert old.eval_scale == 1.0 and old.eval_size == 96
    assert TrainConfig(img_size=128, eval_scale=1.25).eval_size == 160
    assert TrainConfig(img_size=128, pretrained=True).eval_size == 128  # default: evaluate at the training size
    assert TrainConfig(img_size=128, pretrained=True, eval_scale=1.375).eval_size == 176
    with pytest.raises(ValueError, match="eval_scale"):
        TrainConfig(eval_scale=5.0).validate()
