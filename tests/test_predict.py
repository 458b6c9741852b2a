"""Prediction and evaluation with a real (tiny) trained checkpoint."""

import io
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import probability_tolerance
from PIL import Image

from pokedemo import checkpoint as ckpt
from pokedemo.checkpoint import CheckpointError
from pokedemo.data import DatasetError
from pokedemo.images import ImageLoadError, image_to_tensor, load_image
from pokedemo.predict import Predictor, evaluate_folder, evaluate_split, get_predictor, predict_files


def test_predict_returns_sorted_topk_summing_to_one(tiny_checkpoint, tiny_data_dir):
    predictor = Predictor.load(tiny_checkpoint)
    image = next((tiny_data_dir / "b").iterdir())
    top = predictor.predict(image, top_k=5)
    assert len(top) == 3  # capped at the number of classes
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert set(predictor.predict_dict(image)) == {"a", "b", "c"}


def test_inputs_of_every_kind_give_the_same_answer(tiny_checkpoint, tiny_data_dir):
    predictor = Predictor.load(tiny_checkpoint)
    path = next((tiny_data_dir / "a").iterdir())
    data = path.read_bytes()
    results = [predictor.predict(src) for src in (path, str(path), data, io.BytesIO(data), Image.open(path))]
    for other in results[1:]:
        assert other[0][0] == results[0][0][0]
        assert other[0][1] == pytest.approx(results[0][0][1], abs=1e-6)


def test_predictions_match_training_time_evaluation(tiny_checkpoint):
    """The recorded test accuracy is reproduced from the split stored in the checkpoint."""
    predictor = Predictor.load(tiny_checkpoint)
    report = evaluate_split(predictor)
    assert report["accuracy"] == pytest.approx(predictor.checkpoint.config["metrics"]["test"]["accuracy"])
    assert report["n"] == predictor.checkpoint.config["metrics"]["test"]["n"]


def test_evaluate_folder_reports_everything(tiny_checkpoint, tiny_data_dir):
    report = evaluate_folder(Predictor.load(tiny_checkpoint), tiny_data_dir)
    assert report["n"] == 24 and report["classes"] == ["a", "b", "c"]
    assert len(report["confusion"]) == 3 and sum(map(sum, report["confusion"])) == 24
    assert set(report["per_class"]) == {"a", "b", "c"} and len(report["items"]) == 24


def test_evaluate_folder_with_a_subset_of_classes(tiny_checkpoint, tiny_data_dir, tmp_path):
    import shutil

    subset = tmp_path / "subset"
    shutil.copytree(tiny_data_dir / "c", subset / "c")
    report = evaluate_folder(Predictor.load(tiny_checkpoint), subset)
    assert report["n"] == 8 and report["per_class"]["c"]["support"] == 8


def test_unknown_class_folder_is_a_clear_error(tiny_checkpoint, tiny_data_dir, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_data_dir / "a", other / "zebra")
    with pytest.raises(DatasetError, match="zebra"):
        evaluate_folder(Predictor.load(tiny_checkpoint), other)


def test_edge_cases_predict_or_give_one_line(tiny_checkpoint, edge_cases_dir):
    predictor = Predictor.load(tiny_checkpoint)
    files = sorted(p for p in edge_cases_dir.iterdir() if p.suffix != ".md")
    results = {r.image.split("/")[-1]: r for r in predict_files(predictor, [str(p) for p in files])}
    # truncated.jpg is refused like the others: Pillow's default (LOAD_TRUNCATED_IMAGES off), see test_data
    must_fail = {"bomb-40000x40000.png": "decompression bomb", "empty.jpg": "empty file",
                 "not-an-image.jpg": "not a recognised image", "truncated.jpg": "truncated"}
    assert set(must_fail) <= set(results)
    for name, result in results.items():
        if name in must_fail:
            assert result.top_k is None and must_fail[name] in result.error and "\n" not in result.error, name
        else:
            assert result.error is None and len(result.top_k) == 3, (name, result.error)


def test_predictor_cache_reuses_and_reloads_when_the_weights_change(tiny_checkpoint, tiny_data_dir, tmp_path):
    run = Path(shutil.copytree(tiny_checkpoint, tmp_path / "run"))
    first = get_predictor(run)
    assert get_predictor(run) is first
    assert get_predictor(str(run / "config.json")) is first
    image = next((tiny_data_dir / "a").iterdir())
    # Rewrite the weights on disk (as a new training into the same folder would): the head now says "c".
    state = {k: v.detach().clone() for k, v in first.model.state_dict().items()}
    state["head.weight"].zero_()
    state["head.bias"].copy_(torch.tensor([0.0, 0.0, 20.0]))
    config = ckpt.read_config(run)
    ckpt.write_config(run, {**config, "weights_sha256": ckpt.save_weights(run, {**state, **first.open_set.tensors()})})
    second = get_predictor(run)
    assert second is not first
    label, prob = second.predict(image, top_k=1)[0]
    assert label == "c" and prob > 0.99
    assert get_predictor(run) is second


def _copy_data_without(source: Path, target: Path, rel_paths) -> Path:
    shutil.copytree(source, target)
    for rel in rel_paths:
        (target / rel).unlink()
    return target


def test_evaluate_split_refuses_what_it_cannot_reproduce(tiny_checkpoint, tiny_data_dir, tmp_path):
    predictor = Predictor.load(tiny_checkpoint)
    with pytest.raises(DatasetError, match="is not here; pass --data DIR"):
        evaluate_split(predictor, tmp_path / "gone")
    extra_class = Path(shutil.copytree(tiny_data_dir, tmp_path / "extra"))
    shutil.copytree(tiny_data_dir / "a", extra_class / "d")
    with pytest.raises(DatasetError, match="differ from the checkpoint's"):
        evaluate_split(predictor, extra_class)
    tested = [e["path"] for e in predictor.checkpoint.config["split"] if e["split"] == "test"]
    assert tested
    with pytest.raises(DatasetError, match="only 0 of the [0-9]+ recorded test images are in"):
        evaluate_split(predictor, _copy_data_without(tiny_data_dir, tmp_path / "no-test", tested))
    del predictor.checkpoint.config["split"]  # a checkpoint written before splits were recorded
    with pytest.raises(CheckpointError, match="no recorded split"):
        evaluate_split(predictor, tiny_data_dir)


def test_evaluate_split_defaults_to_the_recorded_data_folder(tiny_checkpoint, tiny_data_dir):
    predictor = Predictor.load(tiny_checkpoint)
    assert predictor.checkpoint.config["dataset"]["root"] == str(tiny_data_dir)
    validation = evaluate_split(predictor, part="val")
    recorded = sorted(e["path"] for e in predictor.checkpoint.config["split"] if e["split"] == "val")
    assert sorted(i["path"] for i in validation["items"]) == recorded


def test_requests_arriving_together_load_a_model_once(tiny_checkpoint, tmp_path, monkeypatch):
    import shutil
    import threading

    from pokedemo import predict

    copy = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, copy)  # a checkpoint no other test has loaded (cached) yet
    from conftest import wait_for

    loads, arrivals, release = [], [], threading.Event()
    real_load, real_resolve = predict.load_checkpoint, predict.resolve_model

    def slow_load(path):
        loads.append(path)
        release.wait(600)  # keep the first load in progress until every request has arrived (600 s: a hang guard)
        return real_load(path)

    def counted_resolve(spec, **where):
        arrivals.append(spec)
        return real_resolve(spec, **where)

    monkeypatch.setattr(predict, "load_checkpoint", slow_load)
    monkeypatch.setattr(predict, "resolve_model", counted_resolve)
    got = []
    threads = [threading.Thread(target=lambda: got.append(get_predictor(copy))) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: len(arrivals) == 4 and loads, timeout=600)  # a hang guard, not a speed limit
    finally:
        release.set()
    for thread in threads:
        thread.join(600)
    assert len(loads) == 1 and len(got) == 4 and all(p is got[0] for p in got)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Predictor.load(tmp_path / "nope")


def test_bad_image_raises_image_load_error(tiny_checkpoint):
    with pytest.raises(ImageLoadError):
        Predictor.load(tiny_checkpoint).predict(b"definitely not an image")


def test_probabilities_are_batched(tiny_checkpoint, tiny_data_dir):
    """Images go through the model a batch per pass, and each row of the answer is its own image's, in order."""
    predictor = Predictor.load(tiny_checkpoint)
    files = [sorted((tiny_data_dir / name).iterdir())[i] for name, i in zip("abcab", (0, 0, 0, 1, 1))]
    images = torch.stack([image_to_tensor(load_image(path), predictor.image_size) for path in files])
    passes = []
    hook = predictor.inference_model.register_forward_pre_hook(lambda _m, inputs: passes.append(len(inputs[0])))
    try:
        probs = predictor.probabilities(images)
    finally:
        hook.remove()
    assert len(passes) == math.ceil(5 / predictor.plan.eval_batch) < 5  # not one pass per image
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5))
    alone = torch.cat([predictor.probabilities(image[None]) for image in images])
    tolerance = probability_tolerance(predictor.plan)
    torch.testing.assert_close(probs, alone, **tolerance)
    # Red, green and blue pictures get answers far apart, so rows mixed up or repeated would show above.
    assert torch.cdist(probs, probs, p=float("inf")).max() > 2 * tolerance["atol"]


# ------------------------------------------------------------------------------------ "none of these"


def without_open_set(run_dir: Path, out: Path) -> Path:
    """A copy of a checkpoint as saved before open-set rules existed: no "open_set" record, no statistics."""
    import json

    from safetensors.torch import load_file

    shutil.copytree(run_dir, out)
    tensors = {k: v for k, v in load_file(out / ckpt.WEIGHTS_FILE).items() if not k.startswith("open_set.")}
    config = json.loads((out / ckpt.CONFIG_FILE).read_text())
    config.pop("open_set")
    config["weights_sha256"] = ckpt.save_weights(out, tensors)
    (out / ckpt.CONFIG_FILE).write_text(json.dumps(config))
    return out


def noise_image(path: Path, size: int = 48, seed: int = 0) -> Path:
    import numpy as np

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_a_trained_checkpoint_records_its_open_set_rule(tiny_checkpoint):
    from pokedemo.openset import ADOPTED_RULE, ADOPTED_SCORE

    config = ckpt.read_config(tiny_checkpoint)
    record = config["open_set"]
    assert record["score"] == ADOPTED_SCORE and record["threshold_rule"] == ADOPTED_RULE.record()
    assert record["fitted"]["thresholds_from"] == "val" and 0 < record["fitted"]["val_accepted"] <= 1
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint / ckpt.WEIGHTS_FILE), framework="pt") as weights:
        assert {f"open_set.{name}" for name in record["statistics"]} <= set(weights.keys())
    assert 0 <= config["metrics"]["test"]["open_set"]["accepted"] <= 1
    rule = Predictor.load(tiny_checkpoint).open_set
    assert rule.score == ADOPTED_SCORE and rule.fitted == record["fitted"]


def test_classify_gives_label_or_none_with_the_closest_class_from_one_pass(tiny_checkpoint, tiny_data_dir, tmp_path):
    predictor = Predictor.load(tiny_checkpoint)
    split = ckpt.read_config(tiny_checkpoint)["split"]
    trained_on = tiny_data_dir / next(entry["path"] for entry in split if entry["split"] == "train")
    default = predictor.classify(trained_on)
    assert default.known == (default.score >= float(predictor.open_set.thresholds[0])) and default.default_threshold
    assert default.top(5) == predictor.predict(trained_on)
    known = predictor.classify(trained_on, threshold=-1.0)  # the least strict: every picture is a class
    assert known.known and known.label == known.closest and known.probs == default.probs
    picture = noise_image(tmp_path / "noise.png")
    strict = predictor.classify(picture, threshold=2.0)  # above any cosine similarity
    assert not strict.known and strict.label is None and strict.closest in predictor.classes
    as_json = strict.to_dict(top_k=2)
    assert as_json["label"] is None and as_json["closest"] == strict.closest and len(as_json["top_k"]) == 2
    assert as_json["open_set"]["default_threshold"] is False and as_json["prob"] == as_json["top_k"][0]["prob"]
    probs, scores = predictor.outputs(predictor.image_tensor(picture))
    assert probs[0].tolist() == list(strict.probs) and scores[0].item() == pytest.approx(strict.score)


def test_an_older_checkpoint_falls_back_to_the_top_probability(tiny_checkpoint, tiny_data_dir, tmp_path):
    from pokedemo.openset import DEFAULT_MAX_PROB_THRESHOLD

    old = Predictor.load(without_open_set(tiny_checkpoint, tmp_path / "old"))
    assert old.open_set.score == "max_prob" and old.open_set.fitted is None
    prediction = old.classify(tiny_data_dir / "a" / "000.png")
    assert prediction.threshold == pytest.approx(DEFAULT_MAX_PROB_THRESHOLD)
    assert prediction.known == (max(prediction.probs) >= DEFAULT_MAX_PROB_THRESHOLD)
    report = evaluate_split(old)
    assert report["open_set"]["fitted"] is False and 0 <= report["open_set"]["accepted"] <= 1


def test_a_record_without_its_statistics_is_a_clear_checkpoint_error(tiny_checkpoint, tmp_path):
    import json

    broken = without_open_set(tiny_checkpoint, tmp_path / "broken")
    config = json.loads((broken / ckpt.CONFIG_FILE).read_text())
    config["open_set"] = ckpt.read_config(tiny_checkpoint)["open_set"]
    (broken / ckpt.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="open_set.* missing"):
        ckpt.load_checkpoint(broken)


def test_evaluation_reports_the_share_of_known_images_accepted(tiny_checkpoint):
    report = evaluate_split(Predictor.load(tiny_checkpoint))
    rule = report["open_set"]
    assert rule["fitted"] is True and 0 <= rule["accepted"] <= 1
    assert rule["accuracy_when_rejections_count_as_wrong"] <= report["accuracy"]


def test_batch_prediction_matches_single_pictures_and_survives_bad_files(tmp_path, tiny_checkpoint):
    """Chunked batch prediction gives each picture the single-picture answer; a bad file is its own row."""
    import csv

    from pokedemo.predict import image_files, write_predictions_csv

    predictor = Predictor.load(tiny_checkpoint)
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30), (10, 10, 10)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (40, 30), colour).save(folder / ("sub" if i % 2 else ".") / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / ".hidden.png").write_bytes(b"skipped")
    files = image_files([folder])
    assert len(files) == 6 and not any(".hidden" in f for f in files)
    results = predict_files(predictor, files, top_k=3, chunk=2)  # chunks of 2: a bad file inside a chunk
    assert [r.image for r in results] == files
    bad = [r for r in results if r.error]
    assert len(bad) == 1 and bad[0].image.endswith("broken.jpg") and "\n" not in bad[0].error
    for r in results:
        if r.error:
            continue
        single = predictor.predict(r.image, top_k=3)
        assert [t["label"] for t in r.top_k] == [label for label, _ in single]
        assert [t["prob"] for t in r.top_k] == pytest.approx([p for _, p in single], abs=1e-5)
    out = tmp_path / "out.csv"
    write_predictions_csv(results, out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and rows[0].keys() == {"file", "label", "closest", "probability", "error"}
    assert sum(1 for row in rows if row["error"]) == 1
