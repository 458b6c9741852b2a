"""Safe extraction of an uploaded ``.zip`` of class folders.

An uploaded archive is untrusted: member names may point outside the target (``../``, absolute paths, drive
letters), entries may be symlinks, and a small file may inflate to gigabytes. ``extract_dataset_zip`` refuses
all of that, counts the bytes it actually writes (header sizes can lie) and returns the folder that holds the
class folders (a single wrapping top folder such as ``pokemon/`` is unwrapped).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IGNORED_PARTS = frozenset({"__MACOSX"})
_CHUNK = 1 << 20


class UploadError(ValueError):
    """An archive that cannot be used; str(e) is one line a user can act on."""


@dataclass(frozen=True)
class ZipLimits:
    max_files: int = 20_000
    max_total_bytes: int = 1 << 30          # uncompressed, all members together
    max_ratio: float = 200.0                # uncompressed / compressed, whole archive (bomb guard)
    ratio_floor_bytes: int = 16 << 20       # below this many uncompressed bytes the ratio is not checked


def safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None for entries to skip (folders, __MACOSX, hidden AppleDouble files).

    Raises UploadError for names that would land outside the target folder.
    """
    cleaned = name.replace("\\", "/")
    path = PurePosixPath(cleaned)
    if cleaned.startswith("/") or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        raise UploadError(f"the zip contains an unsafe path ({name!r}); it was not extracted")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or cleaned.endswith("/"):
        return None
    if any(p in IGNORED_PARTS for p in parts) or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_header_limits(infos: list[zipfile.ZipInfo], archive_bytes: int, limits: ZipLimits) -> None:
    files = [i for i in infos if not i.is_dir()]
    if len(files) > limits.max_files:
        raise UploadError(f"the zip holds {len(files)} files; at most {limits.max_files} are accepted")
    declared = sum(i.file_size for i in files)
    if declared > limits.max_total_bytes:
        raise UploadError(
            f"the zip would unpack to {declared / 2**20:.0f} MB; at most {limits.max_total_bytes / 2**20:.0f} MB "
            "are accepted")
    if declared > limits.ratio_floor_bytes and declared / max(archive_bytes, 1) > limits.max_ratio:
        raise UploadError("the zip is compressed suspiciously well (a zip bomb?); it was not extracted")


def _copy_limited(source, target: Path, budget: int) -> int:
    """Copy a member's bytes, stopping once more than ``budget`` bytes would be written; returns bytes copied."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > budget:
                raise UploadError("the zip unpacks to more data than its headers declare; it was not extracted")
            out.write(chunk)
    return written


def extract_dataset_zip(zip_path: str | os.PathLike, target: str | os.PathLike,
                        limits: ZipLimits = ZipLimits()) -> Path:
    """Extract ``zip_path`` into the (new or empty) folder ``target``; returns the dataset root inside it.

    Raises UploadError (one line) for anything that is not a usable, safe archive; nothing outside
    ``target`` is ever written.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(f"not a readable .zip file ({exc})") from None
    with archive:
        infos = archive.infolist()
        _check_header_limits(infos, Path(zip_path).stat().st_size, limits)
        budget = limits.max_total_bytes
        extracted = 0
        for info in infos:
            relative = safe_member_path(info.filename)
            if relative is None or info.is_dir():
                continue
            if _is_symlink(info):
                continue  # a link could point anywhere on the server; images are never links
            destination = target.joinpath(*relative.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source:
                    budget -= _copy_limited(source, destination, budget)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                raise UploadError(f"cannot extract {info.filename!r} from the zip: {exc}") from None
            extracted += 1
    if not extracted:
        raise UploadError("the zip contains no files; put one folder per class with its images inside")
    return dataset_root(target)


def dataset_root(folder: Path) -> Path:
    """Unwrap single wrapping folders: ``x/pokemon/<class>/...`` → ``x/pokemon`` (while that folder has folders)."""
    current = folder
    while True:
        children = [c for c in current.iterdir() if not c.name.startswith(".") and c.name not in IGNORED_PARTS]
        if len(children) != 1 or not children[0].is_dir():
            return current
        inner = children[0]
        if not any(c.is_dir() for c in inner.iterdir()):
            return current  # the single folder is a class folder itself, not a wrapper
        current = inner


def new_upload_dir(parent: str | os.PathLike | None = None, max_age_s: float = 24 * 3600) -> Path:
    """A fresh folder for one upload under ``<tmp>/pokedemo-uploads``; uploads older than a day are removed."""
    base = Path(parent) if parent else Path(tempfile.gettempdir()) / "pokedemo-uploads"
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(base, max_age_s)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=base))


def remove_stale_folders(base: str | os.PathLike, max_age_s: float, now: float | None = None) -> list[Path]:
    """Remove the folders in ``base`` not modified for more than ``max_age_s`` seconds; returns them."""
    now = time.time() if now is None else now
    removed = []
    for old in Path(base).iterdir() if Path(base).is_dir() else []:
        try:
            if old.is_dir() and not old.is_symlink() and now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
        except OSError:
            continue  # removed by a concurrent request
    return removed
