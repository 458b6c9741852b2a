"""Scale sanity: 150 classes (a Pokédex-sized class count) × 10 small images train one epoch and predict a
correctly shaped top-5. What scales here is the class count (head, split, confusion matrix, top-5): 10 images a
class give every class training, validation and test images (60/20/20 split) at a quarter of the cost of 40."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tiny_dataset, train_folder

CLASSES = [f"species{k:03d}" for k in range(150)]
PER_CLASS = 10


@pytest.fixture(scope="module")
def pokedex_like(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("scale") / "data", classes=CLASSES, per_class=PER_CLASS, size=16)


def test_150_classes_train_one_epoch_and_predict_top5(pokedex_like, tmp_path):
    from pokedemo.config import TrainConfig
    from pokedemo.events import Finished, RunStarted
    from pokedemo.predict import Predictor, predict_files
    
    config = TrainConfig(backbone="resnet18", pretrained=False, epochs=1, batch_size=64, img_size=16)
    events = list(train_folder(config, pokedex_like, tmp_path))
    started = next(e for e in events if isinstance(e, RunStarted))
    assert len(started.classes) == 150 and sum(started.class_counts.values()) == 150 * PER_CLASS
    assert started.duplicate_groups == 0
    final = events[-1]
    assert isinstance(final, Finished), final
    assert len(final.test_metrics["confusion"]) == 150 and len(final.test_metrics["per_class"]) == 150

    predictor = Predictor.load(final.run_dir)
    images = [pokedex_like / CLASSES[0] / "000.png", pokedex_like / CLASSES[149] / f"{PER_CLASS - 1:03d}.png"]
    for result in predict_files(predictor, images, top_k=5):
        assert result.error is None
        labels = [t["label"] for t in result.top_k]
        probs = [t["prob"] for t in result.top_k]
        assert len(labels) == 5 == len(set(labels)) and set(labels) <= set(CLASSES)
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6

