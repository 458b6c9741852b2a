"""Open-set scores, thresholds and their storage, on scripted numbers; the benchmark on generated tiny data."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from pokedemo import openset
from pokedemo.openset import OpenSet

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- thresholds


def test_threshold_accepts_the_stated_share_and_no_higher_threshold_does():
    scores = torch.arange(1.0, 101.0)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    for rate in (0.9, 0.95, 0.97, 0.99, 1.0):
        threshold = openset.acceptance_threshold(scores, rate)
        assert (scores >= threshold).double().mean() >= rate
        assert (scores > threshold).double().mean() < rate  # the next value up would accept too few
    assert openset.acceptance_threshold(scores, 0.97) == 4.0  # 1, 2, 3 rejected: 97 of 100 accepted


def test_threshold_of_no_scores_accepts_everything_and_bad_rates_are_refused():
    assert openset.acceptance_threshold(torch.zeros(0), 0.97) == -math.inf
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="acceptance"):
            openset.acceptance_threshold(torch.ones(3), bad)


def test_per_class_thresholds_follow_each_class_and_small_classes_keep_the_global_one():
    # Class 0's validation scores lie in [10, 110), class 1's in [0, 100), class 2 has 3 pictures only.
    scores = torch.cat([torch.arange(10.0, 110.0), torch.arange(0.0, 100.0), torch.tensor([50.0, 60.0, 70.0])])
    predicted = torch.cat([torch.zeros(100), torch.ones(100), torch.full((3,), 2)]).long()
    rule = openset.ThresholdRule("quantile", 0.95)
    overall = openset.fit_thresholds(scores, predicted, 3, rule, per_class=False)
    assert torch.equal(overall, torch.full((3,), openset.acceptance_threshold(scores, 0.95)))
    per_class = openset.fit_thresholds(scores, predicted, 3, rule, per_class=True)
    assert per_class.tolist() == [15.0, 5.0, overall[2].item()]


def test_a_spread_threshold_sits_the_stated_deviations_below_the_mean():
    scores = torch.tensor([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])  # mean 5, population standard deviation 2
    assert openset.spread_threshold(scores, 0.0) == 5.0
    assert openset.spread_threshold(scores, 1.5) == 2.0
    rule = openset.ThresholdRule("spread", 3.0)
    assert rule.threshold(scores) == -1.0 and (scores >= rule.threshold(scores)).all()
    assert openset.spread_threshold(torch.tensor([3.0]), 3.0) == -math.inf  # one score: no spread known
    # per class: class 0's own scores once it has enough pictures, the global value for a class with three
    many = torch.cat([scores.repeat(3), torch.tensor([50.0, 60.0, 70.0])])
    predicted = torch.cat([torch.zeros(24), torch.full((3,), 1)]).long()
    per_class = openset.fit_thresholds(many, predicted, 2, rule, per_class=True)
    assert per_class.tolist() == pytest.approx([-1.0, rule.threshold(many)])


def test_threshold_rules_refuse_what_they_cannot_mean_and_read_back_from_a_record():
    for kind, value in (("quantile", 0.0), ("quantile", 1.2), ("spread", -1.0), ("median", 0.5)):
        with pytest.raises(ValueError):
            openset.ThresholdRule(kind, value)
    rule = openset.ThresholdRule("spread", 2.5)
    assert openset.ThresholdRule.from_record({"threshold_rule": rule.record()}) == rule
    # checkpoints made before spread rules record their quantile as "acceptance"
    assert openset.ThresholdRule.from_record({"acceptance": 0.99}) == openset.ThresholdRule("quantile", 0.99)
    assert "2.5 standard deviations below the mean" in rule.words()


def test_a_picture_is_accepted_against_its_predicted_class_threshold():
    thresholds = torch.tensor([0.5, 0.9])
    scores = torch.tensor([0.6, 0.6, 0.95, 0.4])
    predicted = torch.tensor([0, 1, 1, 0])
    assert openset.accepts(scores, predicted, thresholds).tolist() == [True, False, True, False]


# --------------------------------------------------------------------------------------------- scores


def _clusters(n_per_class=40, dim=16, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 4
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    features = centres[labels] + torch.randn(len(labels), dim, generator=generator)
    return features, labels, centres


def test_logit_scores_are_the_top_probability_and_the_logsumexp():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
    features = torch.zeros(2, 4)
    assert torch.allclose(openset.compute_scores("max_prob", logits, features, {}), logits.softmax(1).amax(1))
    assert torch.allclose(openset.compute_scores("energy", logits, features, {}), torch.logsumexp(logits, 1))


def test_mahalanobis_is_the_distance_under_the_shrunk_shared_covariance():
    features, labels, _ = _clusters()
    stats = openset.fit_statistics("mahalanobis", features, labels, 3)
    queries = torch.randn(5, 16, generator=torch.Generator().manual_seed(1)) * 3
    means = torch.stack([features[labels == c].mean(0) for c in range(3)])
    precision = torch.linalg.inv(openset.ledoit_wolf((features - means[labels]).double())).float()
    expected = torch.stack([
        torch.stack([(q - m) @ precision @ (q - m) for m in means]).min() for q in queries])
    got = openset.compute_scores("mahalanobis", torch.zeros(5, 3), queries, stats)
    assert torch.allclose(-got, expected, rtol=1e-3)


def test_ledoit_wolf_is_invertible_with_fewer_pictures_than_dimensions_and_close_to_the_sample_with_many():
    few = torch.randn(10, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.linalg.matrix_rank(openset.ledoit_wolf(few - few.mean(0))) == 50
    many = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    centred = many - many.mean(0)
    assert torch.allclose(openset.ledoit_wolf(centred), centred.T @ centred / len(many), rtol=0.02, atol=0.02)


def test_feature_scores_rank_pictures_near_the_training_data_above_far_ones():
    features, labels, centres = _clusters()
    near = centres + 0.5 * torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    # Far: random points at the scale of the whole data, near no class in particular.
    far = torch.randn(3, 16, generator=torch.Generator().manual_seed(3)) * 6
    for name in ("mahalanobis", "cosine", "knn1", "knn10"):
        stats = openset.fit_statistics(name, features, labels, 3)
        scores = openset.compute_scores(name, torch.zeros(6, 3), torch.cat([near, far]), stats)
        assert scores[:3].min() > scores[3:].max(), name


def test_knn_scores_a_training_picture_one_and_cosine_its_class_direction_one():
    features, labels, _ = _clusters()
    stats = openset.fit_statistics("knn1", features, labels, 3)
    assert torch.allclose(openset.compute_scores("knn1", torch.zeros(4, 3), features[:4], stats), torch.ones(4))
    tenth = openset.compute_scores("knn10", torch.zeros(4, 3), features[:4], stats)
    assert (tenth < 1).all() and (tenth > 0).all()
    cosine = openset.fit_statistics("cosine", features, labels, 3)
    centre = features.mean(0)
    class_mean = features[labels == 1].mean(0)
    assert torch.allclose(openset.compute_scores("cosine", torch.zeros(1, 3), class_mean[None], cosine),
                          torch.ones(1), atol=1e-5)
    assert torch.allclose(cosine["centre"], centre, atol=1e-5)


def test_unknown_score_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="max_prob, energy"):
        openset.fit_statistics("entropy", torch.zeros(2, 2), torch.zeros(2).long(), 2)


# --------------------------------------------------------------------------------------------- measures


def test_auroc_and_fpr_at_95_tpr_on_scripted_scores():
    known = torch.arange(100.0)
    assert openset.auroc(known + 1000, known) == 1.0
    assert openset.auroc(known, known) == 0.5
    assert openset.auroc(known, known + 1000) == 0.0
    # 95 % of known accepted: threshold 5; unknowns 0..99 at or above it: 95.
    assert openset.fpr_at_tpr(known, known) == 0.95
    assert openset.fpr_at_tpr(known + 1000, known) == 0.0
    assert math.isnan(openset.auroc(known, torch.zeros(0)))


# --------------------------------------------------------------------------------------------- checkpoint parts


def test_a_fitted_rule_round_trips_through_safetensors_and_json(tmp_path):
    features, labels, _ = _clusters()
    logits = F.one_hot(labels, 3).float() * 5
    rule = OpenSet.fit("knn10", features, labels, logits, features, openset.ThresholdRule("quantile", 0.95))
    assert rule.fitted["val_images"] == len(labels) and rule.fitted["val_accepted"] >= 0.95
    save_file({"head.weight": torch.zeros(3, 16), **rule.tensors()}, tmp_path / "model.safetensors")
    record = rule.record()
    assert record["statistics"] == ["centre", "train_directions"] and len(record["thresholds"]) == 3
    again = OpenSet.from_checkpoint(record, load_file(tmp_path / "model.safetensors"), num_classes=3)
    assert again.score == "knn10" and torch.allclose(again.thresholds, rule.thresholds) and again.rule == rule.rule
    assert again.how_fitted() == OpenSet.how_fitted_from_record(record) == \
        f"fitted on {len(labels)} validation pictures, to accept 95% of known-class validation pictures"
    assert torch.equal(again.scores(logits, features), rule.scores(logits, features))


def test_a_checkpoint_without_a_rule_falls_back_to_the_top_probability():
    rule = OpenSet.from_checkpoint(None, {}, num_classes=4)
    assert rule.score == "max_prob" and rule.fitted is None and rule.how_fitted() is None
    assert rule.thresholds.tolist() == pytest.approx([openset.DEFAULT_MAX_PROB_THRESHOLD] * 4)
    logits = torch.tensor([[4.0, 0, 0, 0], [0.1, 0, 0, 0]])
    scores = rule.scores(logits, torch.zeros(2, 8))
    assert rule.accepts(scores, logits.argmax(1)).tolist() == [True, False]


def test_a_record_that_does_not_fit_its_tensors_is_refused():
    features, labels, _ = _clusters()
    rule = OpenSet.fit("cosine", features, labels, F.one_hot(labels, 3).float(), features, openset.ADOPTED_RULE)
    with pytest.raises(ValueError, match="open_set.class_directions missing"):
        OpenSet.from_checkpoint(rule.record(), {"open_set.centre": rule.stats["centre"]}, num_classes=3)
    with pytest.raises(ValueError, match="3 thresholds for 4 classes"):
        OpenSet.from_checkpoint(rule.record(), rule.tensors(), num_classes=4)


def test_logits_and_features_come_from_one_pass_and_match_the_usual_inference():
    from pokedemo.device_plan import execution_plan
    from pokedemo.inference import infer_logits
    from pokedemo.models import build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet18", 3, pretrained=False).eval()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    plan = execution_plan(torch.device("cpu"), model, 4)
    logits, features = openset.logits_and_features(model, images, torch.device("cpu"), plan)
    assert logits.shape == (5, 3) and features.shape == (5, model.feature_dim)
    assert torch.allclose(logits, infer_logits(model, images, torch.device("cpu"), plan=plan), atol=1e-5)
    assert torch.allclose(model.head(features), logits, atol=1e-5)


# --------------------------------------------------------------------------------------------- the benchmark


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("openset_bench", REPO_ROOT / "benchmarks" / "openset_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_runs_on_tiny_generated_data(tmp_path, capsys):
    bench = _benchmark_module()
    assert bench.main(["--tiny", "--out", str(tmp_path), "--json", str(tmp_path / "result.json")]) == 0
    printed = capsys.readouterr().out
    for score in openset.SCORES:
        assert f"| {score} |" in printed
    import json

    result = json.loads((tmp_path / "result.json").read_text())
    assert [fold["held_out"] for fold in result["folds"]] == ["class0", "class1", "class2"]
    for score, entry in result["summary"].items():
        assert 0 <= entry["auroc"] <= 1 and 0 <= entry["fpr95"] <= 1, score
        assert {"accept 99% global", "mean - 3 sd global", "mean - 3 sd per_class"} <= set(entry["fitted"])
        for rule in entry["fitted"].values():
            assert 0 <= rule["known_accepted"] <= 1 and 0 <= rule["accuracy_cost"] <= 1
    # Scoring the kept features again gives the same numbers without training.
    runs = sorted((tmp_path / "runs").iterdir())
    assert bench.main(["--tiny", "--out", str(tmp_path), "--reuse", "--json", str(tmp_path / "again.json")]) == 0
    assert sorted((tmp_path / "runs").iterdir()) == runs
    assert json.loads((tmp_path / "again.json").read_text())["summary"] == result["summary"]
