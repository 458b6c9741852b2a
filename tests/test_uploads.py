"""uploads.new_upload_dir: one fresh folder per upload, and old uploads cleaned away."""

from __future__ import annotations

import os
import time

from pokedemo.uploads import new_upload_dir

DAY = 24 * 3600


def _age(path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_each_upload_gets_its_own_fresh_folder(tmp_path):
    first, second = new_upload_dir(tmp_path), new_upload_dir(tmp_path)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.is_dir() and not any(first.iterdir()) and first.name.startswith("upload-")


def test_uploads_older_than_the_limit_are_removed_and_recent_ones_kept(tmp_path):
    old = new_upload_dir(tmp_path)
    (old / "class" / "img.png").parent.mkdir()
    (old / "class" / "img.png").write_bytes(b"x")
    recent = new_upload_dir(tmp_path)
    stray_file = tmp_path / "not-a-folder.txt"
    stray_file.write_text("left alone")
    _age(old, DAY + 60)
    _age(recent, DAY - 60)
    _age(stray_file, 10 * DAY)
    fresh = new_upload_dir(tmp_path)
    assert not old.exists()
    assert recent.is_dir() and fresh.is_dir() and stray_file.is_file()


def test_max_age_is_configurable(tmp_path):
    kept = new_upload_dir(tmp_path)
    _age(kept, 30)
    new_upload_dir(tmp_path, max_age_s=60)
    assert kept.exists()
    new_upload_dir(tmp_path, max_age_s=10)
    assert not kept.exists()


def test_default_location_is_under_the_temp_folder(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = new_upload_dir()
    assert folder.parent == tmp_path / "pokedemo-uploads"
