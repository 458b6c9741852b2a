"""Dataset curation: move, set aside, add, undo (also after a restart), hostile names, collisions, two editors,
and the invariant that no original picture is ever lost."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from pokedemo.config import bundled_data_dir
from pokedemo.curation import (
    SET_ASIDE_DIR, STATE_DIR, CurationError, Curator, is_read_only, recorded_origin, validate_class_name,
    working_copy,
)
from pokedemo.data import scan_dataset


def _picture(path: Path, colour: tuple[int, int, int]) -> Path:
    """A distinct 24 px picture (seeded noise), so near-duplicate detection keeps pictures apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = random.Random(hash(colour)).randbytes(24 * 24 * 3)
    Image.frombytes("RGB", (24, 24), noise).save(path)
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for c, name in enumerate(["cat", "dog"]):
        for i in range(4):
            _picture(root / name / f"{i}.png", (60 * c + 10 * i, 20 * i, 100))
    return root


def _hashes(root: Path) -> Counter:
    """sha256 of every file under root, hidden state included (set-aside pictures count), logs excluded."""
    return Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
                   if p.is_file() and p.suffix == ".png")


def test_move_and_undo_round_trip(dataset: Path):
    curator = Curator(dataset)
    change = curator.move("cat/0.png", "dog")
    assert (change.source, change.class_to) == ("cat/0.png", "dog")
    assert (dataset / "dog" / "0-1.png").is_file(), "dog/0.png exists, so the move takes the next free name"
    assert not (dataset / "cat" / "0.png").exists()
    assert curator.undo().undoes == change.id
    assert (dataset / "cat" / "0.png").is_file() and not (dataset / "dog" / "0-1.png").exists()
    assert curator.undo() is None


def test_set_aside_is_hidden_from_the_scan_and_undo_after_restart(dataset: Path):
    Curator(dataset).set_aside("dog/3.png")
    aside = dataset / STATE_DIR / SET_ASIDE_DIR / "dog" / "3.png"
    assert aside.is_file()
    scanned = scan_dataset(dataset)
    assert len(scanned.records) == 7 and "dog/3.png" not in {r.rel_path for r in scanned.records}
    restarted = Curator(dataset)  # a new process reads the log from the folder
    assert restarted.undo().action == "undo"
    assert (dataset / "dog" / "3.png").is_file() and not aside.exists()


def test_add_class_then_undo_sets_the_added_picture_aside(dataset: Path, tmp_path: Path):
    upload = _picture(tmp_path / "upload" / "new.png", (1, 2, 3))
    changes = Curator(dataset).add_pictures("bird", [upload, upload])
    assert [c.target for c in changes] == ["bird/new.png", "bird/new-1.png"]
    assert upload.is_file(), "the uploaded original stays where it was"
    assert Curator(dataset).classes() == ["bird", "cat", "dog"]
    Curator(dataset).undo()
    assert not (dataset / "bird" / "new-1.png").exists()
    assert (dataset / STATE_DIR / SET_ASIDE_DIR / "bird" / "new-1.png").is_file()


@pytest.mark.parametrize("name", ["", "  ", "../evil", "a/b", "a\\b", ".hidden", "..", ".", "x" * 65, "tab\there"])
def test_hostile_class_names_are_refused(dataset: Path, tmp_path: Path, name: str):
    with pytest.raises(CurationError):
        validate_class_name(name)
    upload = _picture(tmp_path / "u.png", (0, 0, 0))
    with pytest.raises(CurationError):
        Curator(dataset).add_pictures(name, [upload])
    assert sorted(p.name for p in dataset.iterdir() if not p.name.startswith(".")) == ["cat", "dog"]
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("path", ["../ds/cat/0.png", "/etc/passwd", ".pokedemo/changes.jsonl", "cat", "cat/nope.png"])
def test_paths_outside_the_dataset_are_refused(dataset: Path, path: str):
    with pytest.raises(CurationError):
        Curator(dataset).set_aside(path)


def test_moves_never_overwrite(dataset: Path):
    before = _hashes(dataset)
    curator = Curator(dataset)
    targets, current = [], "cat/1.png"
    for to_class in ("dog", "cat", "dog"):
        current = curator.move(current, to_class).target
        targets.append(current)
    assert targets == ["dog/1-1.png", "cat/1-1.png", "dog/1-1.png"], "dog/1.png is taken: never overwritten"
    assert _hashes(dataset) == before


def test_two_editors_take_turns_and_see_each_others_changes(dataset: Path):
    a, b = Curator(dataset), Curator(dataset)
    errors: list[Exception] = []

    def edit(curator: Curator, paths: list[str]) -> None:
        try:
            for p in paths:
                curator.set_aside(p)
        except Exception as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=edit, args=(a, [f"cat/{i}.png" for i in range(4)])),
               threading.Thread(target=edit, args=(b, [f"dog/{i}.png" for i in range(4)]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    ids = [c.id for c in b.history()]
    assert ids == list(range(1, 9)), "one lock: ids are unique and in order"
    assert len(a.history()) == 8


def test_nothing_is_lost_for_a_random_sequence_of_actions(dataset: Path, tmp_path: Path):
    before = _hashes(dataset)
    upload = _picture(tmp_path / "up" / "x.png", (9, 9, 9))
    rng = random.Random(7)
    curator = Curator(dataset)
    for _ in range(60):
        pictures = sorted(p.relative_to(dataset).as_posix() for c in curator.classes()
                          for p in (dataset / c).glob("*.png"))
        action = rng.choice(["move", "set_aside", "add", "undo", "undo"])
        if action == "move" and pictures:
            path = rng.choice(pictures)
            others = [c for c in curator.classes() if c != path.split("/")[0]]
            curator.move(path, rng.choice(others))
        elif action == "set_aside" and pictures:
            curator.set_aside(rng.choice(pictures))
        elif action == "add":
            curator.add_pictures(rng.choice(["cat", "dog", "new"]), [upload])
        else:
            curator.undo()
    after = _hashes(dataset)
    assert all(after[h] >= n for h, n in before.items()), "every original picture is in place, moved or set aside"
    while curator.undo():
        pass
    assert Counter({h: n for h, n in _hashes(dataset).items() if h in before}) == before
    in_classes = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for c in ("cat", "dog")
                         for p in (dataset / c).glob("*.png"))
    assert in_classes == before, "undoing everything restores the original dataset"


def test_working_copy_of_a_read_only_folder(dataset: Path, tmp_path: Path):
    assert is_read_only(bundled_data_dir())
    assert not is_read_only(dataset)
    (dataset / ".DS_Store").write_text("x")
    workspace = tmp_path / "work"
    copy = working_copy(dataset, workspace)
    assert copy == workspace / "ds" and recorded_origin(copy) == str(dataset.resolve())
    assert _hashes(copy) == _hashes(dataset) and not (copy / ".DS_Store").exists()
    assert working_copy(dataset, workspace) == copy, "the same origin reuses its copy"
    other = tmp_path / "elsewhere" / "ds"
    _picture(other / "a" / "1.png", (1, 1, 1))
    assert working_copy(other, workspace) == workspace / "ds-2"


def test_the_log_is_json_lines_with_sha256(dataset: Path):
    Curator(dataset).move("cat/2.png", "dog")
    line = json.loads((dataset / STATE_DIR / "changes.jsonl").read_text().splitlines()[0])
    assert set(line) == {"id", "action", "source", "target", "sha256", "when", "undoes"}
    assert line["sha256"] == hashlib.sha256((dataset / line["target"]).read_bytes()).hexdigest()


def test_a_hub_download_is_never_changed_in_place(dataset: Path, tmp_path: Path, hub_env):
    """A dataset downloaded into any cache folder (a public-mode visitor's own, here) is read-only: a Curator
    refuses every change in one line before writing anything, and an edit goes to a working copy."""
    from pokedemo.curation import editable_root
    from pokedemo.hub import is_hub_download, open_data

    files = {p.relative_to(dataset).as_posix(): p.read_bytes() for p in dataset.rglob("*.png")}
    hub_env.create_repo("alice/pets", kind="dataset", files=files)
    download = open_data("hf://datasets/alice/pets", token=False, cache_dir=tmp_path / "visitor" / "hub").root
    before = {p: p.read_bytes() for p in download.rglob("*") if p.is_file()}
    assert is_hub_download(download) and is_read_only(download) and not is_hub_download(dataset)
    curator = Curator(download)
    assert curator.classes() == ["cat", "dog"]  # reading is fine
    for change in (lambda: curator.move("cat/0.png", "dog"), lambda: curator.set_aside("cat/0.png"),
                   lambda: curator.add_pictures("cat", [dataset / "dog" / "1.png"]), curator.undo):
        with pytest.raises(CurationError, match="^this dataset is a download from the Hugging Face Hub, which"):
            change()
    assert {p: p.read_bytes() for p in download.rglob("*") if p.is_file()} == before
    assert not (download / STATE_DIR).exists()
    copy, made = editable_root(download, tmp_path / "work")
    assert made and not is_read_only(copy)
    Curator(copy).set_aside("cat/0.png")
    assert {p: p.read_bytes() for p in download.rglob("*") if p.is_file()} == before
