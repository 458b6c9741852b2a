"""Tests for pokedemo.data: loader, scan, duplicate groups, split, tensor cache, augmentation."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFile, ImageOps

from pokedemo import augment, data, images
from pokedemo.data import DatasetError
from pokedemo.images import ImageLoadError

REPO_ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------- helpers


def _random_image(seed: int, size: int = 32) -> Image.Image:
    blocks = np.random.default_rng(1000 + seed).integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _index(ds: data.Dataset) -> dict[str, int]:
    return {r.rel_path: i for i, r in enumerate(ds.records)}


def _assert_one_line(exc: Exception) -> None:
    assert str(exc) and "\n" not in str(exc)


# ------------------------------------------------------------------------------------------------- loader

EDGE_OK = {  # file -> size after load_image() with the default max_side=1024
    "16bit-gray.png": (320, 320),
    "animated.gif": (120, 120),
    "cmyk.jpg": (320, 320),
    "exif-rotated.jpg": (320, 320),
    "grayscale.png": (320, 320),
    "huge-5000x5000-rgb.png": (1024, 1024),
    "huge-7000x5000-palette.png": (1024, 732),
    "tiny-8x8.png": (8, 8),
    "webp-image.webp": (320, 320),
}
EDGE_REFUSED = {  # file -> words the one-line reason must contain
    "bomb-40000x40000.png": "decompression bomb",
    "empty.jpg": "empty file",
    "not-an-image.jpg": "not a recognised image",
    "truncated.jpg": "truncated",  # refused (Pillow's default), never decoded partially
}


def test_edge_case_table_covers_every_file(edge_cases_dir):
    files = {p.name for p in edge_cases_dir.iterdir() if p.suffix != ".md"}
    assert files == set(EDGE_OK) | set(EDGE_REFUSED)


@pytest.mark.parametrize("name", sorted(EDGE_OK))
def test_edge_case_loads_as_rgb(edge_cases_dir, name):
    img = images.load_image(edge_cases_dir / name)
    assert img.mode == "RGB"
    assert abs(img.size[0] - EDGE_OK[name][0]) <= 1 and abs(img.size[1] - EDGE_OK[name][1]) <= 1
    t = images.image_to_tensor(img, 64)
    assert t.shape == (3, 64, 64) and t.dtype == torch.uint8


@pytest.mark.parametrize("name", sorted(EDGE_REFUSED))
def test_edge_case_refused_with_clear_message(edge_cases_dir, name):
    with pytest.raises(ImageLoadError) as info:
        images.load_image(edge_cases_dir / name)
    _assert_one_line(info.value)
    assert name in str(info.value)
    assert EDGE_REFUSED[name] in info.value.reason


def test_loading_edge_cases_leaves_pillow_state_alone(edge_cases_dir):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in sorted(edge_cases_dir.iterdir()):
            try:
                images.load_image(path)
            except ImageLoadError:
                pass
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))


def test_exif_rotated_edge_case_comes_out_upright(edge_cases_dir):
    path = edge_cases_dir / "exif-rotated.jpg"
    with Image.open(path) as raw:
        assert raw.getexif().get(0x0112) == 6
        stored = np.asarray(raw.convert("RGB"))
        upright = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    loaded = np.asarray(images.load_image(path))
    assert np.array_equal(loaded, upright)
    assert np.array_equal(loaded, np.rot90(stored, k=-1))  # orientation 6: stored turned 90 degrees clockwise


def test_exif_orientation_synthetic():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = images.load_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (20, 40)
    top, bottom = loaded.getpixel((10, 5)), loaded.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left side is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_corrupt_exif_tags_do_not_stop_the_orientation():
    # One corrupt tag (Make's type byte turned into RATIONAL) beside a readable orientation: Pillow's
    # exif_transpose raises while re-writing the EXIF block; the loader reads the orientation and turns the picture.
    img = Image.new("RGB", (20, 30), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110], exif[0x0131] = 6, "Maker", "Model X", "soft"
    exif[0x8769] = {0x9003: "2020:01:01 00:00:00", 0x920A: 4.5}
    raw = bytearray(exif.tobytes())
    raw[31] = 5
    data = _encode(img, "JPEG", exif=bytes(raw), quality=95)
    with Image.open(io.BytesIO(data)) as opened, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corrupt tag
        assert opened.getexif().get(0x0112) == 6
        with pytest.raises(AttributeError):  # Pillow 12: an IFDRational has no .encode
            ImageOps.exif_transpose(opened)
        assert images.load_image(data).size == (30, 20)


@pytest.mark.parametrize("mode", ["RGB", "P"])
def test_reducing_a_callers_image_leaves_it_as_it_was(mode):
    given = Image.new("RGB", (3000, 1000), (10, 200, 30)).convert(mode)
    before = given.tobytes()
    out = images.load_image(given, max_side=500)
    assert out.size == (500, 167) and out.mode == "RGB"
    assert given.size == (3000, 1000) and given.mode == mode and given.tobytes() == before


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 1
    return img


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)),
    lambda: Image.new("LA", (8, 8), (0, 0)),
    lambda: Image.new("PA", (8, 8), (3, 0)),
    _palette_with_transparency,
], ids=["RGBA", "LA", "PA", "P+transparency"])
def test_transparency_composited_onto_white(make):
    img = make()
    for source in (img, _encode(img) if img.mode != "PA" else img):
        out = images.load_image(source)
        assert out.mode == "RGB" and out.getpixel((3, 3)) == (255, 255, 255)


def test_half_transparent_blends_with_white():
    out = images.load_image(_encode(Image.new("RGBA", (4, 4), (0, 0, 0, 128))))
    assert all(abs(v - 127) <= 1 for v in out.getpixel((0, 0)))


def test_16bit_is_scaled_not_clipped(edge_cases_dir):
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    out = np.asarray(images.load_image(_encode(Image.fromarray(ramp))))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert np.abs(out[..., 0].astype(int) - np.rint(ramp / 257)).max() <= 1
    with Image.open(edge_cases_dir / "16bit-gray.png") as raw:
        expected = np.asarray(raw).astype(float) / 257
    loaded = np.asarray(images.load_image(edge_cases_dir / "16bit-gray.png"))[..., 0]
    assert np.abs(loaded - expected).max() <= 1
    assert loaded.min() < 100  # Pillow's own convert("RGB") would make it all white


def test_animation_uses_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    r, g, b = images.load_image(buf.getvalue()).getpixel((5, 5))
    assert r > 200 and b < 50


def test_all_source_kinds_agree(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(_encode(_random_image(1, 48), "JPEG", quality=90))
    expected = np.asarray(images.load_image(path))
    with open(path, "rb") as fh:
        from_file = images.load_image(fh)
    with Image.open(path) as pil:
        from_pil = images.load_image(pil)
        pil.getpixel((0, 0))  # the caller's image is still usable
    for img in (images.load_image(str(path)), images.load_image(path.read_bytes()),
                images.load_image(io.BytesIO(path.read_bytes())), from_file, from_pil):
        assert np.array_equal(np.asarray(img), expected)


def test_missing_file_and_directory_are_load_errors(tmp_path):
    for source in (tmp_path / "nope.png", tmp_path, b""):
        with pytest.raises(ImageLoadError) as info:
            images.load_image(source)
        _assert_one_line(info.value)


def test_large_jpeg_is_reduced_to_max_side():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 2400, 3), dtype=np.uint8))
    out = images.load_image(_encode(big, "JPEG", quality=80))
    assert out.size == (1024, 640)
    assert images.load_image(_encode(big, "JPEG"), max_side=None).size == (2400, 1500)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height (CRC fixed), i.e. a decompression bomb."""
    raw = bytearray(_encode(Image.new("L", (1, 1))))
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def test_bomb_refused_by_our_own_check_before_decoding(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # even with Pillow's guard switched off
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size) or real_load(im))
    with pytest.raises(ImageLoadError) as info:
        images.load_image(_png_claiming(40000, 40000))
    assert decoded == []  # refused from the header: no pixel data was ever decoded
    assert "decompression bomb" in info.value.reason and "40000x40000" in info.value.reason
    _assert_one_line(info.value)


def test_limit_is_just_over_max_image_pixels(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    side = int(images.MAX_IMAGE_PIXELS ** 0.5) + 1
    with pytest.raises(ImageLoadError):
        images.load_image(_png_claiming(side, side))
    assert images.MAX_IMAGE_PIXELS > 35_000_000  # the 35 Mpx edge case must stay loadable


_RSS_SCRIPT = """
import resource, sys, time
from pokedemo.images import load_image, ImageLoadError
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
load_image(sys.argv[3])  # warm up Pillow's plugins
base = rss()
try:
    load_image(sys.argv[1])
except ImageLoadError:
    pass
bomb = rss()
t = time.perf_counter()
img = load_image(sys.argv[2])
print(base, bomb, rss(), time.perf_counter() - t, *img.size)
"""


def test_bomb_and_huge_palette_png_cost_little_time_and_memory(edge_cases_dir):
    """Fresh process so ru_maxrss (peak RSS) reflects only these two loads."""
    args = [edge_cases_dir / n for n in ("bomb-40000x40000.png", "huge-7000x5000-palette.png", "tiny-8x8.png")]
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, *map(str, args)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=600, check=True).stdout.split()
    base, bomb, peak, seconds = map(float, out[:4])
    assert bomb - base < 10, "the bomb must be refused before anything big is allocated"
    assert peak - base < 150, f"35 Mpx palette PNG took {peak - base:.0f} MB"  # 35 MB of indices + a little
    print(f"35 Mpx palette PNG loaded in {seconds:.2f} s")  # a figure, not a pass/fail limit (machine speed)
    assert max(int(out[4]), int(out[5])) == 1024


def test_image_to_tensor_resizes_shorter_side_and_centre_crops():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 0, 255), (100, 0, 200, 100))  # blue centre square
    t = images.image_to_tensor(img, 32)
    assert t.shape == (3, 32, 32) and t.dtype == torch.uint8
    assert t[2].float().mean() > 250 and t[0].float().mean() < 5
    tiny = images.image_to_tensor(Image.new("RGB", (8, 8), (10, 20, 30)), 64)
    assert tiny.shape == (3, 64, 64) and tiny[:, 30, 30].tolist() == [10, 20, 30]
    rgba = images.image_to_tensor(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), 16)
    assert int(rgba.min()) == 255  # non-RGB input goes through the loader's white compositing


# ------------------------------------------------------------------------------------------------- scan


def test_scan_skips_hidden_and_reports_unreadable(tiny_dataset):
    root = tiny_dataset(per_class=4)
    (root / "a" / "UPPER.PNG").write_bytes(_encode(_random_image(1)))
    (root / "b" / "nested" / "deeper").mkdir(parents=True)
    (root / "b" / "nested" / "deeper" / "photo.JPG").write_bytes(_encode(_random_image(2, 64), "JPEG"))
    (root / "c" / "anim.Gif").write_bytes(_encode(_random_image(3), "GIF"))
    for ignored in ("c/.hidden.png", "a/.thumbs/x.png", "a/__MACOSX/x.png", "__MACOSX/a/x.png",
                    ".git/x.png", "loose.png"):
        (root / ignored).parent.mkdir(parents=True, exist_ok=True)
        (root / ignored).write_bytes(_encode(_random_image(4)))
    (root / "c" / "._resource.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    (root / "a" / "notes.txt").write_text("not an image, ignored by extension")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "text.png").write_text("hello, I am text")
    noisy = Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    whole = _encode(noisy)
    (root / "c" / "trunc.png").write_bytes(whole[: len(whole) // 2])

    ds = data.scan_dataset(root)
    assert ds.classes == ["a", "b", "c"] and ds.root == root.resolve()
    rel = [r.rel_path for r in ds.records]
    assert rel == sorted(rel) and len(rel) == 15
    assert {"a/UPPER.PNG", "b/nested/deeper/photo.JPG", "c/anim.Gif"} <= set(rel)
    assert not [p for p in rel if "/." in p or "__MACOSX" in p or p.startswith(".")]
    assert all(r.path.is_absolute() and r.path.exists() for r in ds.records)
    reasons = {u.rel_path: u.reason for u in ds.unreadable}
    assert set(reasons) == {"a/empty.jpg", "b/text.png", "c/trunc.png"}
    assert "empty" in reasons["a/empty.jpg"] and "not a recognised image" in reasons["b/text.png"]
    assert "truncated" in reasons["c/trunc.png"]
    photo = ds.records[_index(ds)["b/nested/deeper/photo.JPG"]]
    assert (photo.label, photo.format, photo.mode, photo.width, photo.height) == (1, "JPEG", "RGB", 64, 64)
    assert ds.class_counts() == {"a": 5, "b": 5, "c": 5} and ds.labels().count(2) == 5
    assert ds.exact_groups == [] and ds.near_groups == [] and ds.conflict_groups == []


def test_tiny_dataset_fixture_defaults(tiny_dataset, tmp_path):
    root = tiny_dataset(tmp_path / "data")
    assert root == tmp_path / "data"
    ds = data.scan_dataset(root)
    assert ds.classes == ["a", "b", "c"] and ds.class_counts() == {"a": 8, "b": 8, "c": 8}
    assert ds.near_groups == [] and tiny_dataset() != tiny_dataset()  # fresh folders without a root


def test_tiny_dataset_has_no_near_duplicates(tiny_dataset):
    ds = data.scan_dataset(tiny_dataset(classes=("x", "y", "z", "w"), per_class=8, size=24))
    assert len(ds.records) == 32 and ds.near_groups == []
    d = data.hamming_matrix([r.dhash for r in ds.records], [r.dhash for r in ds.records])
    assert np.sort(d, axis=1)[:, 1].min() > data.NEAR_DUPLICATE_BITS


def test_scan_errors_are_one_line_dataset_errors(tiny_dataset, tmp_path):
    cases = []
    with pytest.raises(DatasetError) as info:
        data.scan_dataset(tmp_path / "does-not-exist")
    cases.append((info.value, "not found"))
    with pytest.raises(DatasetError) as info:
        data.scan_dataset(tiny_dataset(classes=("only",)))
    cases.append((info.value, "at least 2 class"))

    small = tiny_dataset(classes=("a", "b", "c"), per_class=5)
    for p in sorted((small / "c").iterdir())[2:]:
        p.unlink()
    with pytest.raises(DatasetError) as info:
        data.scan_dataset(small)
    cases.append((info.value, "'c' has 2"))

    copies = tiny_dataset(classes=("a", "b", "c"), per_class=5)
    for p in sorted((copies / "b").iterdir())[1:]:
        shutil.copyfile(copies / "b" / "000.png", p)  # 5 images, 1 distinct picture
    with pytest.raises(DatasetError) as info:
        data.scan_dataset(copies)
    cases.append((info.value, "'b' has 5 readable images but only 1 distinct"))

    broken = tiny_dataset(classes=("a", "b", "c"), per_class=5)
    for p in (broken / "a").iterdir():
        p.write_bytes(b"garbage")
    with pytest.raises(DatasetError) as info:
        data.scan_dataset(broken)
    cases.append((info.value, "(5 more unreadable)"))
    for exc, words in cases:
        _assert_one_line(exc)
        assert words in str(exc)


@pytest.fixture
def dup_dataset(tiny_dataset):
    """Tiny dataset plus an exact copy (same class), an exact copy in another class (conflict),
    a re-encoded JPEG and a brightened copy."""
    root = tiny_dataset(classes=("a", "b", "c"), per_class=5, size=64)
    shutil.copyfile(root / "a" / "000.png", root / "a" / "000-copy.png")
    shutil.copyfile(root / "a" / "000.png", root / "b" / "stolen.png")
    with Image.open(root / "b" / "001.png") as img:
        img.convert("RGB").save(root / "b" / "001-reencoded.jpg", quality=80)
    with Image.open(root / "c" / "002.png") as img:
        ImageEnhance.Brightness(img.convert("RGB")).enhance(1.08).save(root / "c" / "002-bright.png")
    return root


def test_duplicate_groups_exact_near_and_conflicts(dup_dataset):
    ds = data.scan_dataset(dup_dataset)
    ix = _index(ds)
    exact = sorted(ix[p] for p in ("a/000.png", "a/000-copy.png", "b/stolen.png"))
    assert ds.exact_groups == [exact]
    expected_near = sorted([exact, sorted([ix["b/001.png"], ix["b/001-reencoded.jpg"]]),
                            sorted([ix["c/002.png"], ix["c/002-bright.png"]])])
    assert ds.near_groups == expected_near
    assert ds.conflict_groups == [exact]
    # a threshold of 0 keeps the exact copies (distance 0) but loses the edited ones
    strict = data.scan_dataset(dup_dataset, near_threshold=0)
    assert exact in strict.near_groups and len(strict.near_groups) < 3


def test_split_keeps_groups_whole_and_is_deterministic(dup_dataset):
    ds = data.scan_dataset(dup_dataset)
    for seed in range(5):
        split = data.split_dataset(ds, seed=seed)
        parts = [split.train, split.val, split.test]
        assert sorted(split.train + split.val + split.test) == list(range(len(ds.records)))
        for group in ds.near_groups:
            assert sum(bool(set(group) & set(p)) for p in parts) == 1
        for label in range(3):  # every class reaches every part
            assert all(any(ds.records[i].label == label for i in p) for p in parts)
        assert data.count_leaks(ds, split.train, split.val + split.test) == 0
        again = data.split_dataset(ds, seed=seed)
        assert (again.train, again.val, again.test) == (split.train, split.val, split.test)
    splits = {tuple(data.split_dataset(ds, seed=s).test) for s in range(5)}
    assert len(splits) > 1, "the seed must matter"


def test_a_split_for_a_continued_run_keeps_what_the_start_model_learnt_in_training(dup_dataset):
    ds = data.scan_dataset(dup_dataset)
    ix = _index(ds)
    for seed in range(5):
        start = data.split_dataset(ds, seed=seed)
        # What the start model learnt: its training pictures outside groups, and one member of each group.
        grouped = {i for g in ds.near_groups for i in g}
        learnt = {ds.records[i].sha256 for i in start.train if i not in grouped}
        learnt |= {ds.records[g[-1]].sha256 for g in ds.near_groups}
        split = data.split_dataset(ds, seed=seed + 1, trained=learnt)
        held_out = split.val + split.test
        assert not {ds.records[i].sha256 for i in held_out} & learnt, "no held-out picture was learnt"
        assert grouped <= set(split.train), "a learnt picture takes its whole group to training"
        assert data.count_leaks(ds, split.train, held_out) == 0
        for label in range(3):
            assert any(ds.records[i].label == label for i in split.test), "every class is still tested"
    assert ix["a/000.png"] in data.split_dataset(ds, seed=0, trained={ds.records[ix["b/stolen.png"]].sha256}).train
    plain = data.split_dataset(ds, seed=2)
    assert data.split_dataset(ds, seed=2, trained={"0" * 64}).test == plain.test, "unknown pictures change nothing"


def test_split_ratios_validated_and_zero_val_allowed(tiny_dataset):
    ds = data.scan_dataset(tiny_dataset(per_class=10))
    split = data.split_dataset(ds, ratios=(0.8, 0.0, 0.2), seed=3)
    assert split.val == [] and len(split.train) == 24 and len(split.test) == 6
    for bad in ((0.5, 0.5), (0, 0.5, 0.5), (0.6, -0.2, 0.6)):
        with pytest.raises(ValueError):
            data.split_dataset(ds, ratios=bad)


def test_split_from_record_matches_by_sha_then_path(tiny_dataset):
    root = tiny_dataset(per_class=6)
    ds = data.scan_dataset(root)
    split = data.split_dataset(ds, seed=7)
    record = json.loads(json.dumps(split.to_record(ds)))  # as stored in a checkpoint
    assert {e["split"] for e in record} == {"train", "val", "test"}
    assert set(record[0]) == {"path", "sha256", "label", "split"}
    back = data.split_from_record(ds, record)
    assert (back.train, back.val, back.test) == (split.train, split.val, split.test)

    moved_from = ds.records[split.test[0]].rel_path
    (root / moved_from).rename(root / "b" / "renamed.png")  # same bytes, new path -> matched by sha256
    edited = ds.records[split.val[0]].rel_path
    _random_image(99).save(root / edited)  # same path, new bytes -> matched by path
    (root / "c" / "new.png").write_bytes(_encode(_random_image(98)))  # not in the record -> left out
    ds2 = data.scan_dataset(root)
    back2 = data.split_from_record(ds2, record)
    names = {part: {ds2.records[i].rel_path for i in idx} for part, idx in back2.parts().items()}
    assert "b/renamed.png" in names["test"] and edited in names["val"]
    assert "c/new.png" not in set().union(*names.values())
    assert sum(map(len, names.values())) == len(record)


# ------------------------------------------------------------------------------------------------- tensor cache


class DecodeCounter:
    """Counts decodes of the image files under ``root`` only, at pokedemo.data's two decode calls: other threads
    of this process (an app's warm-up, another test's server) may decode other files meanwhile, so the
    module's process-wide counter proves nothing about this folder."""

    def __init__(self, root: Path, patch: pytest.MonkeyPatch):
        self.ours = {hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(root).rglob("*") if p.is_file()}
        self.count = 0
        self._lock = threading.Lock()
        real_original, real_load = data.load_image_with_original, data.load_image

        def load_image_with_original(source, *args, **kwargs):  # the scan's decode: file bytes
            self._seen(hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else None)
            return real_original(source, *args, **kwargs)

        def load_image(source, *args, **kwargs):  # cached_tensors' decode: a path
            self._seen(hashlib.sha256(Path(source).read_bytes()).hexdigest() if isinstance(source, Path) else None)
            return real_load(source, *args, **kwargs)

        patch.setattr(data, "load_image_with_original", load_image_with_original)
        patch.setattr(data, "load_image", load_image)

    def _seen(self, sha: str | None) -> None:
        if sha in self.ours:
            with self._lock:
                self.count += 1


def test_scan_and_cached_tensors_decode_each_file_once(tiny_dataset, monkeypatch):
    root = tiny_dataset(per_class=4)
    shutil.copyfile(root / "a" / "000.png", root / "a" / "copy.png")  # exact copy: decoded once too
    data.clear_caches()
    decodes = DecodeCounter(root, monkeypatch)
    ds = data.scan_dataset(root, image_size=16)
    unique = len({r.sha256 for r in ds.records})
    assert unique == 12 and decodes.count == unique

    batch = data.cached_tensors(ds, list(range(len(ds.records))), 16)
    assert batch.shape == (13, 3, 16, 16) and batch.dtype == torch.uint8
    assert decodes.count == unique, "scan(image_size=16) already filled the cache"
    assert torch.equal(batch[3], images.image_to_tensor(images.load_image(ds.records[3].path), 16))

    data.scan_dataset(root)
    data.scan_dataset(root, image_size=16)
    assert decodes.count == unique, "re-scans are served from the sha256 cache"

    other = data.cached_tensors(ds, [0, 5, 5, 0], 20)
    assert other.shape == (4, 3, 20, 20) and torch.equal(other[0], other[3])
    assert decodes.count == unique + 2
    assert data.cached_tensors(ds, [], 20).shape == (0, 3, 20, 20)


def test_tensor_cache_is_bounded_lru():
    cache = data._TensorLRU(max_bytes=2 * 3 * 4 * 4)
    for key in ("a", "b"):
        cache.put((key, 4), torch.zeros(3, 4, 4, dtype=torch.uint8))
    cache.get(("a", 4))  # a is now the most recent
    cache.put(("c", 4), torch.zeros(3, 4, 4, dtype=torch.uint8))
    assert cache.get(("b", 4)) is None and cache.get(("a", 4)) is not None
    assert cache.info()["bytes"] <= cache.max_bytes


# ------------------------------------------------------------------------------------------------- augmentation


def _smooth_batch(n: int = 8, size: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([x * 255, y * 255, (1 - x) * 200 + 30])
    return img.round().to(torch.uint8).expand(n, 3, size, size).contiguous()


def test_augment_shapes_randomness_and_identity():
    batch = _smooth_batch()
    assert augment.make_train_augment(64, 0.0)(batch) is batch
    assert augment.make_train_augment(48, 0.0)(batch).shape == (8, 3, 48, 48)
    out = augment.make_train_augment(64)(batch)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    assert len({o.numpy().tobytes() for o in out}) == 8, "each sample gets its own transform"
    assert not torch.equal(out, augment.make_train_augment(64)(batch))
    assert augment.make_train_augment(40)(batch).shape == (8, 3, 40, 40)
    seeded = [augment.make_train_augment(64, generator=torch.Generator().manual_seed(1))(batch) for _ in range(2)]
    assert torch.equal(*seeded)


def test_augment_strength_scales_the_change():
    batch = _smooth_batch(32)
    diffs = []
    for strength in (0.1, 0.5, 1.0):
        gen = torch.Generator().manual_seed(0)
        out = augment.make_train_augment(64, strength, generator=gen)(batch)
        diffs.append((out.float() - batch.float()).abs().mean().item())
    assert 0 < diffs[0] < diffs[1] < diffs[2]


def test_augment_warps_the_whole_batch_at_once(monkeypatch):
    """Speed comes from one batched warp per batch (see augment.py; figures in BENCHMARKS.md): a per-sample loop
    creeping back in would show up here as one warp per image, on a machine of any speed."""
    import torch.nn.functional as F

    calls = []
    real = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda x, *a, **kw: calls.append(x.shape[0]) or real(x, *a, **kw))
    out = augment.make_train_augment(128)(torch.randint(0, 256, (32, 3, 128, 128), dtype=torch.uint8))
    assert calls == [32] and out.shape == (32, 3, 128, 128)


# ------------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real(pokemon_dir):
    """(dataset, decodes of the first scan, decodes of a second scan of the same folder)."""
    data.clear_caches()
    with pytest.MonkeyPatch.context() as patch:
        decodes = DecodeCounter(pokemon_dir, patch)
        ds = data.scan_dataset(pokemon_dir)
        cold = decodes.count
        data.scan_dataset(pokemon_dir)
    return ds, cold, decodes.count - cold


def test_real_scan_reads_every_image_and_decodes_each_file_once(real, pokemon_dir):
    from conftest import class_folders, image_files

    ds, cold, warm = real
    assert ds.classes == class_folders(pokemon_dir) and ds.unreadable == []
    assert len(ds.records) == len(image_files(pokemon_dir))
    assert cold == len({r.sha256 for r in ds.records})  # exact copies are decoded once
    assert warm == 0  # a re-scan is served from the cache


def test_real_duplicate_groups(real):
    ds, _, _ = real
    in_groups = sum(map(len, ds.near_groups)) / len(ds.records)
    assert 0.3 < in_groups < 0.55  # ~40 % of the Pokémon images have a copy
    assert len(ds.exact_groups) > 100
    near_sets = [set(g) for g in ds.near_groups]
    for g in ds.exact_groups:  # exact copies sit inside one near group
        assert any(set(g) <= s for s in near_sets)
    assert ds.conflict_groups and all(len({ds.records[i].label for i in g}) > 1 for g in ds.conflict_groups)
    by_sha = {}
    for i, r in enumerate(ds.records):
        by_sha.setdefault(r.sha256, set()).add(r.label)
    cross_class = {sha for sha, labels in by_sha.items() if len(labels) > 1}
    assert cross_class, "the Pokémon data has pictures under two classes"
    for sha in cross_class:
        members = {i for i, r in enumerate(ds.records) if r.sha256 == sha}
        assert any(members <= set(g) for g in ds.conflict_groups)


@pytest.mark.parametrize("seed", [0, 1])
def test_real_split_has_no_leaks_and_is_stratified(real, seed):
    ds, _, _ = real
    split = data.split_dataset(ds, seed=seed)
    train_sha = {ds.records[i].sha256 for i in split.train}
    held_out = split.val + split.test
    assert not [i for i in held_out if ds.records[i].sha256 in train_sha]
    dist = data.hamming_matrix([ds.records[i].dhash for i in held_out], [ds.records[i].dhash for i in split.train])
    assert dist.min() > data.NEAR_DUPLICATE_BITS, "a val/test image has a near copy in train"
    labels = np.array(ds.labels())
    for label in range(len(ds.classes)):
        n = int((labels == label).sum())
        for part, ratio in zip((split.train, split.val, split.test), (0.6, 0.2, 0.2)):
            assert abs(int((labels[part] == label).sum()) - n * ratio) <= 3
    assert data.naive_split_leaks(ds, (0.6, 0.2, 0.2), seed) > 20  # what the duplicate-aware split avoids


def test_real_split_record_round_trip(real):
    ds, _, _ = real
    split = data.split_dataset(ds, seed=0)
    back = data.split_from_record(ds, json.loads(json.dumps(split.to_record(ds))), seed=0)
    assert (back.train, back.val, back.test) == (split.train, split.val, split.test)
    assert all(abs(a - b) < 0.01 for a, b in zip(back.ratios, split.ratios))


@pytest.mark.parametrize("cores, threads", [(1, 2), (2, 3), (16, 17), (128, 32)])
def test_decode_threads_follow_the_usable_cores(monkeypatch, cores, threads):
    from pokedemo import data

    monkeypatch.setattr(data.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert data._workers() == threads
