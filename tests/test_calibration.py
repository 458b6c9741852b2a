"""Temperature scaling: the fit finds a known temperature, the head carries it, a run records and saves it."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pokedemo import events as ev
from pokedemo.calibration import MIN_CALIBRATION_IMAGES, MIN_TEMPERATURE, calibrated_state, fit_temperature
from pokedemo.checkpoint import read_config
from pokedemo.config import TrainConfig
from pokedemo.data import cached_tensors, scan_dataset, split_from_record
from pokedemo.hub import build_model_card
from pokedemo.models import build_classifier
from pokedemo.predict import Predictor

from conftest import train_folder


def sampled_labels(true_logits: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Labels drawn from softmax(true_logits): those logits are calibrated by construction."""
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)


@pytest.mark.parametrize("temperature", [0.3, 3.0])
def test_fit_recovers_the_temperature_that_was_applied(temperature):
    true_logits = torch.randn(20000, 5, generator=torch.Generator().manual_seed(1)) * 2
    labels = sampled_labels(true_logits)
    fitted = fit_temperature(true_logits * temperature, labels)  # over- (3.0) or underconfident (0.3)
    assert fitted.temperature == pytest.approx(temperature, rel=0.05)
    assert fitted.val_nll_after < fitted.val_nll_before
    assert fitted.val_nll_after == pytest.approx(F.cross_entropy(true_logits.double(), labels).item(), rel=0.01)


def test_fit_without_evidence_keeps_or_bounds_the_temperature():
    assert fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64)).temperature == 1.0
    overconfident = torch.randn(20000, 5, generator=torch.Generator().manual_seed(2)) * 2
    labels = sampled_labels(overconfident)
    few = MIN_CALIBRATION_IMAGES - 1
    too_few = fit_temperature(overconfident[:few] * 3, labels[:few])
    assert too_few.temperature == 1.0 and too_few.val_nll_after == too_few.val_nll_before
    assert too_few.skipped == f"only {few} validation images (fewer than {MIN_CALIBRATION_IMAGES})"
    assert too_few.record()["skipped"] == too_few.skipped and "fitted_on" not in too_few.record()
    enough = fit_temperature(overconfident[:2000] * 3, labels[:2000])
    assert enough.skipped is None and "skipped" not in enough.record() and enough.temperature > 2
    equal = fit_temperature(torch.zeros(10, 5), torch.arange(10) % 5)  # the loss does not depend on T
    assert equal.temperature == 1.0
    labels = torch.arange(50) % 5
    all_right = F.one_hot(labels, 5).float() * 2  # no mistakes: sharper is always better, up to the bound
    assert fit_temperature(all_right, labels).temperature == pytest.approx(MIN_TEMPERATURE)


def test_calibrated_state_divides_the_logits_and_keeps_predictions():
    torch.manual_seed(0)
    model = build_classifier("resnet18", 5, pretrained=False).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    before = model(images)
    state = model.state_dict()
    calibrated = build_classifier("resnet18", 5, pretrained=False).eval()
    calibrated.load_state_dict(calibrated_state(state, 0.25))
    after = calibrated(images)
    torch.testing.assert_close(after, before / 0.25, rtol=1e-4, atol=1e-4)
    assert torch.equal(after.argmax(1), before.argmax(1))
    changed = [k for k, v in calibrated.state_dict().items() if not torch.equal(v, state[k])]
    assert sorted(changed) == ["head.bias", "head.weight"]


def _val_nll_of_saved_model(run_dir, data_dir) -> float:
    config = read_config(run_dir)
    dataset = scan_dataset(data_dir)
    val = split_from_record(dataset, config["split"]).val
    images = cached_tensors(dataset, val, config["image_size"])
    labels = torch.tensor([dataset.records[i].label for i in val])
    # What predict, the app and evaluate show, on the device the run was trained and calibrated on.
    device = torch.device(config["train_config"]["device"])
    probabilities = Predictor.load(run_dir, device=device).probabilities(images)
    return F.nll_loss(probabilities.double().log(), labels).item()


def test_a_run_saves_the_calibrated_head_and_records_its_temperature(tiny_dataset, tmp_path):
    data = tiny_dataset(tmp_path / "d", per_class=20)  # validation split: 12 images, enough to fit T
    config = TrainConfig(backbone="efficientnet_lite0", pretrained=True, epochs=1, batch_size=8, img_size=32,
                         last_epoch_scale=1.0, seed=0, device="cpu")
    finished = list(train_folder(config, data, tmp_path / "r"))[-1]
    plain = list(train_folder(dataclasses.replace(config, calibrate=False), data, tmp_path / "r2"))[-1]
    assert isinstance(finished, ev.Finished) and isinstance(plain, ev.Finished), (finished, plain)
    record = read_config(finished.run_dir)["metrics"]["calibration"]
    assert "calibration" not in read_config(plain.run_dir)["metrics"]
    temperature = record["temperature"]
    assert record["fitted_on"] == "val" and temperature != pytest.approx(1.0, abs=0.05)
    assert record["val_nll_after"] < record["val_nll_before"]
    # The same training (same seed) saved twice: the calibrated head is the plain one divided by T, the rest equal.
    calibrated = load_file(f"{finished.run_dir}/model.safetensors")
    uncalibrated = load_file(f"{plain.run_dir}/model.safetensors")
    for key, value in uncalibrated.items():
        expected = value / temperature if key.startswith("head.") else value
        torch.testing.assert_close(calibrated[key], expected, rtol=1e-4, atol=1e-6, msg=key)
    assert _val_nll_of_saved_model(finished.run_dir, data) == pytest.approx(record["val_nll_after"], abs=1e-4)
    assert _val_nll_of_saved_model(plain.run_dir, data) == pytest.approx(record["val_nll_before"], abs=1e-4)
    card = build_model_card(read_config(finished.run_dir), [], "dora/calibrated", None)
    assert f"| probability temperature | {temperature:.3f} | fitted on the validation split" in card
