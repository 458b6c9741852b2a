"""Hub datasets as --data (hf://datasets/NS/NAME[@REV]) and push-dataset, against the local Hub stand-in with the
real huggingface_hub client: the three layouts, private repos, a missing revision, offline mode, a round trip."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from conftest import make_tiny_dataset

from pokedemo.data import DatasetError, scan_dataset, split_dataset
from pokedemo.hub import DataSource, HubError, build_model_card, open_data, part_of, push_dataset


def folder_files(root: Path, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(root.rglob("*.png"))}


def parts_by_class(source: DataSource) -> dict[str, dict[str, int]]:
    """{part: {class: images}} of the split a run would use."""
    dataset = scan_dataset(source.root)
    split = source.split(dataset, (0.6, 0.2, 0.2), 0)
    out: dict[str, dict[str, int]] = {}
    for part, indices in split.parts().items():
        for i in indices:
            name = dataset.classes[dataset.records[i].label]
            out.setdefault(part, {}).setdefault(name, 0)
            out[part][name] += 1
    return out


@pytest.fixture(scope="module")
def splits_data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("splits")
    return {part: make_tiny_dataset(base / part, per_class=n, seed=seed)
            for part, n, seed in (("train", 6, 1), ("validation", 3, 2), ("test", 3, 3))}


# ------------------------------------------------------------------------------------------ layout (a)


def test_image_folder_with_own_splits_under_one_folder(hub_env, splits_data):
    files = {}
    for part, root in splits_data.items():
        files.update(folder_files(root, f"pokemon/{part}/"))
    hub_env.create_repo("alice/split-folders", kind="dataset", files={**files, "README.md": b"# x\n"})
    source = open_data("hf://datasets/alice/split-folders")
    assert source.own_splits and source.layout == "image folder"
    assert "brings its own split" in source.note
    assert source.revision == hub_env.head("alice/split-folders", kind="dataset")
    assert parts_by_class(source) == {"train": {"a": 6, "b": 6, "c": 6}, "val": {"a": 3, "b": 3, "c": 3},
                                      "test": {"a": 3, "b": 3, "c": 3}}


def test_missing_validation_split_is_carved_from_train(hub_env, splits_data):
    files = {**folder_files(splits_data["train"], "train/"), **folder_files(splits_data["test"], "test/")}
    hub_env.create_repo("alice/train-test", kind="dataset", files=files)
    parts = parts_by_class(open_data("hf://datasets/alice/train-test"))
    assert parts["test"] == {"a": 3, "b": 3, "c": 3}  # the dataset's own test part, untouched
    assert sum(parts["train"].values()) + sum(parts["val"].values()) == 18
    assert all(n >= 1 for n in parts["val"].values()) and len(parts["val"]) == 3


def test_own_split_keeps_duplicate_report(hub_env, splits_data):
    """A test image copied from train: the dataset's split is used as it is, and the copy is still found."""
    files = {**folder_files(splits_data["train"], "train/"), **folder_files(splits_data["test"], "test/")}
    files["test/a/copy.png"] = (splits_data["train"] / "a" / "000.png").read_bytes()
    hub_env.create_repo("alice/leaky", kind="dataset", files=files)
    source = open_data("hf://datasets/alice/leaky")
    dataset = scan_dataset(source.root)
    assert len(dataset.exact_groups) == 1
    split = source.split(dataset, (0.6, 0.2, 0.2), 0)
    assert {part_of(dataset.records[i].rel_path) for i in split.test} == {"test"}


def test_image_folder_at_root_is_the_same_as_the_local_folder(hub_env, tiny_data_dir):
    hub_env.create_repo("alice/plain", kind="dataset", files=folder_files(tiny_data_dir))
    source = open_data("hf://datasets/alice/plain")
    assert not source.own_splits and source.layout == "image folder"
    hub_set, local = scan_dataset(source.root), scan_dataset(tiny_data_dir)
    assert split_dataset(hub_set).to_record(hub_set) == split_dataset(local).to_record(local)


# ------------------------------------------------------------------------------------------ layout (b)


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_one_zip_of_class_folders(hub_env, tiny_data_dir):
    hub_env.create_repo("alice/zipped", kind="dataset",
                        files={"pokemon.zip": zip_of(folder_files(tiny_data_dir, "pokemon/"))})
    source = open_data("hf://datasets/alice/zipped")
    assert source.layout == "zip" and not source.own_splits
    assert scan_dataset(source.root).class_counts() == {"a": 8, "b": 8, "c": 8}
    again = open_data("hf://datasets/alice/zipped")  # extracted once per commit, then reused
    assert again.root == source.root


def test_zip_per_split(hub_env, splits_data):
    files = {f"{part}.zip": zip_of(folder_files(root)) for part, root in splits_data.items()}
    hub_env.create_repo("alice/zip-splits", kind="dataset", files=files)
    source = open_data("hf://datasets/alice/zip-splits")
    assert source.own_splits
    assert {part: sum(c.values()) for part, c in parts_by_class(source).items()} == {"train": 18, "val": 9, "test": 9}


def test_unsafe_zip_is_refused_in_one_line(hub_env):
    hub_env.create_repo("alice/evil-zip", kind="dataset", files={"x.zip": zip_of({"../evil/a.png": b"x"})})
    with pytest.raises(DatasetError, match="unsafe path") as info:
        open_data("hf://datasets/alice/evil-zip")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ layout (c)

CARD = """---
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
          '0': bulbasaur
          '1': charmander
          '2': squirtle
---
# a datasets-style Parquet dataset
"""


def parquet_bytes(root: Path, classes: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.png")):
            images.append({"bytes": path.read_bytes(), "path": None})
            labels.append(label)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(images, type=image_type), "label": pa.array(labels, type=pa.int64())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def test_parquet_as_written_by_datasets(hub_env, splits_data):
    files = {f"data/{part}-00000-of-00001.parquet": parquet_bytes(root, ["a", "b", "c"])
             for part, root in splits_data.items()}
    hub_env.create_repo("alice/parquet", kind="dataset", files={**files, "README.md": CARD.encode()})
    source = open_data("hf://datasets/alice/parquet")
    assert source.layout == "parquet" and source.own_splits
    assert parts_by_class(source) == {
        "train": {"bulbasaur": 6, "charmander": 6, "squirtle": 6},
        "val": {"bulbasaur": 3, "charmander": 3, "squirtle": 3},
        "test": {"bulbasaur": 3, "charmander": 3, "squirtle": 3}}


def test_parquet_without_image_column_says_what_it_found(hub_env):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["hi"], "label": [0]}), buffer)
    hub_env.create_repo("alice/text", kind="dataset", files={"data/train-00000-of-00001.parquet":
                                                                   buffer.getvalue()})
    with pytest.raises(DatasetError, match=r"columns: text \(string\), label \(int64\).*expected class folders"):
        open_data("hf://datasets/alice/text")


def test_anything_else_is_one_clear_line(hub_env):
    hub_env.create_repo("alice/csv", kind="dataset", files={"data.csv": b"a,b\n", "README.md": b"# x\n"})
    with pytest.raises(DatasetError) as info:
        open_data("hf://datasets/alice/csv")
    message = str(info.value)
    assert "(found: README.md, data.csv)" in message and "expected class folders" in message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------ access


def test_private_dataset_needs_a_token(hub_env, tiny_data_dir, monkeypatch):
    token = hub_env.add_user("carol")
    hub_env.create_repo("carol/secret", private=True, kind="dataset", files=folder_files(tiny_data_dir))
    with pytest.raises(HubError, match="dataset repo carol/secret not found .* private") as info:
        open_data("hf://datasets/carol/secret")
    assert token not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", token)
    assert scan_dataset(open_data("hf://datasets/carol/secret").root).class_counts() == {"a": 8, "b": 8, "c": 8}


def test_missing_revision(hub_env, tiny_data_dir):
    hub_env.create_repo("alice/revs", kind="dataset", files=folder_files(tiny_data_dir))
    with pytest.raises(HubError, match="revision 'v9' not found in alice/revs"):
        open_data("hf://datasets/alice/revs@v9")
    head = hub_env.head("alice/revs", kind="dataset")
    assert open_data(f"hf://datasets/alice/revs@{head}").revision == head


def test_offline_mode_uses_the_cached_copy(hub_env, tiny_data_dir, monkeypatch):
    hub_env.create_repo("alice/cached", kind="dataset", files=folder_files(tiny_data_dir))
    online = open_data("hf://datasets/alice/cached")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub_env.requests)
    offline = open_data("hf://datasets/alice/cached")
    assert len(hub_env.requests) == before, "offline mode must not touch the network"
    assert (offline.root, offline.revision) == (online.root, online.revision)
    with pytest.raises(HubError, match="offline mode is on .* not in the local Hub cache"):
        open_data("hf://datasets/alice/never-downloaded")


# ------------------------------------------------------------------------------------------ push + round trip


def test_push_dataset_refuses_without_token(hub_env, tiny_data_dir):
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_dataset(tiny_data_dir, "alice/nope")


def test_push_train_evaluate_round_trip(hub_env, tiny_data_dir, tmp_path, monkeypatch, capsys):
    """push-dataset a folder, train from hf://datasets/..., same classes/counts/split as the folder; the run
    records the dataset and its commit, and `evaluate` without --data fetches that split again."""
    from pokedemo.cli import main

    token = hub_env.add_user("dora")
    assert main(["push-dataset", "--data", str(tiny_data_dir), "--repo-id", "dora/tiny", "--private",
                 "--token", token]) == 0
    assert capsys.readouterr().out.strip() == f"{hub_env.url}/datasets/dora/tiny"
    repo = hub_env.datasets["dora/tiny"]
    assert repo.private
    card = hub_env.file("dora/tiny", "README.md", kind="dataset").decode()
    assert "image-classification" in card and "| a | 8 |" in card and "label conflicts (groups spanning classes): 0" in card
    assert "exact duplicate groups: 0" in card and str(tiny_data_dir) not in card

    monkeypatch.setenv("HF_TOKEN", token)
    out = tmp_path / "runs"
    args = ["train", "--data", "hf://datasets/dora/tiny", "--backbone", "resnet18", "--scratch", "--epochs", "1",
            "--img-size", "32", "--batch-size", "8", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    config = json.loads((Path(summary["checkpoint"]) / "config.json").read_text())
    local = scan_dataset(tiny_data_dir)
    assert config["dataset"]["class_counts"] == local.class_counts()
    assert config["split"] == split_dataset(local).to_record(local)
    source = config["dataset"]["source"]
    assert source["hub_dataset"] == "dora/tiny" and source["revision"] == hub_env.head("dora/tiny", kind="dataset")
    # Its model card links the dataset (metadata `datasets:` and the model-index result), as the Hub expects.
    card = ModelCard(build_model_card(config, [], "dora/tiny-model", None))
    assert card.data.datasets == ["dora/tiny"]
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_revision) == ("dora/tiny", source["revision"])

    shutil.rmtree(tmp_path / "hf-home" / "hub")  # the recorded folder is gone: evaluate fetches it again
    before = len(hub_env.requests)
    assert main(["evaluate", "--checkpoint", summary["checkpoint"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(hub_env.requests) > before and Path(report["root"]).is_dir()
    assert report["n"] == len([e for e in config["split"] if e["split"] == "test"])
    assert report["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-5)  # the summary has 5 decimals


def test_doctor_on_a_hub_dataset(hub_env, splits_data, capsys):
    from pokedemo.cli import main

    files = {**folder_files(splits_data["train"], "train/"), **folder_files(splits_data["test"], "test/")}
    hub_env.create_repo("alice/doctor", kind="dataset", files=files)
    assert main(["doctor", "--data", "hf://datasets/alice/doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hf://datasets/alice/doctor (commit ")
    assert "27 readable images in 3 classes" in out and "brings its own split (test, train)" in out


# ------------------------------------------------------------------------------------------ the app's dataset box


def test_app_dataset_box_takes_a_hub_dataset(hub_env, splits_data):
    from pokedemo.app import sources

    files = {**folder_files(splits_data["train"], "train/"), **folder_files(splits_data["test"], "test/")}
    hub_env.create_repo("alice/app-box", kind="dataset", files=files)
    summary = sources.summarise_dataset("hf://datasets/alice/app-box", 0, 32)
    assert "brings its own split (test, train)" in summary and "⚠️" not in summary.split("ℹ️")[0]
    report, strips, _ = sources.doctor_panel("hf://datasets/alice/app-box")
    assert "27" in report and strips == []
    assert sources.summarise_dataset("hf://datasets/alice/missing", 0, 32).startswith(
        "⚠️ dataset repo alice/missing not found")


def test_evaluate_on_a_hub_dataset_with_its_own_split_uses_its_test_part(hub_env, splits_data, tiny_checkpoint):
    from pokedemo.predict import Predictor, evaluate_folder

    files = {}
    for part, root in splits_data.items():
        files.update(folder_files(root, f"{part}/"))
    hub_env.create_repo("alice/eval-split", kind="dataset", files=files)
    report = evaluate_folder(Predictor.load(tiny_checkpoint), "hf://datasets/alice/eval-split")
    assert report["n"] == 9 and all("/test/" in item["path"] for item in report["items"])
