"""Bounded Hub downloads: a repo's file list and sizes are read from the Hub before anything is downloaded.

A dataset or model over the limits is refused in one line before the first byte is written. A download that
grows past the size limit anyway (a listing that understates the files) is stopped at the chunk that would
cross it, and every file it had written into its cache folder is removed again; files cached before stay.

The limits are read when a download starts, from the environment (bytes, or a number with a unit: ``2GB``,
``500MB``), with defaults that fit a free Space's disk:

=============================  ========  =============================
variable                       default   counts
=============================  ========  =============================
``POKEDEMO_MAX_DATASET_BYTES`` 2GB       the files a dataset download fetches
``POKEDEMO_MAX_DATASET_FILES`` 50000     the files a dataset download fetches
``POKEDEMO_MAX_MODEL_BYTES``   1GB       the files a model download fetches
``POKEDEMO_MAX_MODEL_FILES``   1000      the files a model download fetches
=============================  ========  =============================

Only the files a download would fetch count (``allow_patterns``): a model repo with other large files is fine.

A caller may also give a ``budget``: the bytes a download may add to its folder (a public-mode visitor's disk
share left, say). Files of the listed commit already in that folder add nothing; the rest must fit, checked from
the listing (``DownloadTooLarge``, nothing written) and while downloading (stopped, its files removed).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pokedemo.hub.client import HubContext, HubError, hub_api, library_token, quiet_progress_bar

DEFAULT_LIMITS = {"dataset": ("2GB", "50000"), "model": ("1GB", "1000")}


class DownloadTooLarge(HubError):
    """A Hub download over this app's limits; the message is one line (what, how big, the limit, the variable)."""


@dataclass(frozen=True)
class DownloadLimits:
    kind: str  # "dataset" or "model"
    max_bytes: int
    max_files: int

    @property
    def bytes_variable(self) -> str:
        return f"POKEDEMO_MAX_{self.kind.upper()}_BYTES"

    @property
    def files_variable(self) -> str:
        return f"POKEDEMO_MAX_{self.kind.upper()}_FILES"


def download_limits(repo_type: str) -> DownloadLimits:
    """The limits of a ``"dataset"`` or ``"model"`` download as the environment sets them now."""
    from huggingface_hub.utils._parsing import parse_size  # huggingface_hub's own "2GB" parser (pinned version)

    kind = "dataset" if repo_type == "dataset" else "model"
    default_bytes, default_files = DEFAULT_LIMITS[kind]
    limits = DownloadLimits(kind, 0, 0)
    values = {}
    for field, variable, default in (("max_bytes", limits.bytes_variable, default_bytes),
                                     ("max_files", limits.files_variable, default_files)):
        raw = os.environ.get(variable, "").strip() or default
        try:
            values[field] = parse_size(raw)
        except ValueError:
            raise HubError(f"{variable}={raw!r} is not a size (bytes, or a number with a unit such as 2GB)") from None
    return DownloadLimits(kind, **values)


def human_size(size: float) -> str:
    """Bytes in the decimal units the limits are written in: 950 B, 12.3 MB, 2.0 GB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


# ----------------------------------------------------------------------------------------- before downloading


@dataclass(frozen=True)
class RepoSize:
    files: int
    bytes: int
    new_bytes: int  # of files not in the download folder yet: what the download adds to it


def sibling_size(sibling: Any) -> int:
    return sibling.lfs.size if sibling.lfs is not None else int(sibling.size or 0)


def check_listing(siblings: Iterable[Any], limits: DownloadLimits, label: str, *, budget: int | None = None,
                  present: Callable[[str], bool] = lambda name: False) -> RepoSize:
    """Count and sum the files of a repo listing (``RepoSibling`` with sizes); DownloadTooLarge over a limit, or
    when the files not ``present`` yet need more than ``budget`` bytes (None: no budget). The limits are checked
    first: a repo over them is refused without looking at the disk."""
    listed = [(sibling.rfilename, sibling_size(sibling)) for sibling in siblings]
    files, size = len(listed), sum(nbytes for _, nbytes in listed)
    if files > limits.max_files:
        raise DownloadTooLarge(
            f"{label} has {files:,} files, over this app's limit of {limits.max_files:,} for a {limits.kind} (set "
            f"by {limits.files_variable}); nothing was downloaded")
    if size > limits.max_bytes:
        raise DownloadTooLarge(
            f"{label} holds {human_size(size)}, over this app's limit of {human_size(limits.max_bytes)} for a "
            f"{limits.kind} (set by {limits.bytes_variable}); nothing was downloaded")
    new = sum(nbytes for name, nbytes in listed if not present(name))
    if budget is not None and new > budget:
        raise DownloadTooLarge(
            f"{label} needs {human_size(new)} of disk space, more than the {human_size(budget)} left of the share "
            "its downloads may use; nothing was downloaded")
    return RepoSize(files, size, new)


def check_repo_size(api: Any, repo_id: str, *, repo_type: str, revision: str | None, limits: DownloadLimits,
                    label: str, allow_patterns: list[str] | None = None, budget: int | None = None,
                    repo_folder: Path | None = None) -> RepoSize:
    """The files a download of ``repo_id`` at ``revision`` would fetch, checked against ``limits`` and
    ``budget`` (the files of the listed commit already in ``repo_folder``, the repo's folder in the download's
    cache, count against the limits but not the budget).

    One request: the repo's info with its files' sizes (``files_metadata``). The Hub lists at most 100,000
    files there, so a file limit above that is not seen from the listing (the size guard while downloading
    still holds)."""
    from huggingface_hub.utils import filter_repo_objects

    info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
    fetched = filter_repo_objects(info.siblings or [], allow_patterns=allow_patterns, key=lambda s: s.rfilename)
    snapshot = repo_folder / "snapshots" / str(info.sha) if repo_folder is not None and info.sha else None
    if snapshot is None or not snapshot.is_dir():
        return check_listing(fetched, limits, label, budget=budget)
    return check_listing(fetched, limits, label, budget=budget, present=lambda name: (snapshot / name).is_file())


# ------------------------------------------------------------------------------------------- while downloading


def byte_guard_bar_class(max_bytes: int, message: str) -> type:
    """The silent progress bar of ``snapshot_download``, guarding the size: each byte bar (the download's
    aggregate bars count every chunk before it is written) raises DownloadTooLarge when its count would pass
    ``max_bytes``."""

    class ByteGuardBar(quiet_progress_bar()):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._counts_bytes = kwargs.get("unit") == "B"
            self._seen = 0
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if self._counts_bytes:
                self._seen += int(n or 0)
                if self._seen > max_bytes:
                    raise DownloadTooLarge(message)
            return super().update(n)

    return ByteGuardBar


_repo_locks: dict[Path, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


def _repo_lock(folder: Path) -> threading.Lock:
    """One bounded download of a repo at a time in this process, so removing a stopped download's new files
    never removes the files of another download of the same repo."""
    with _repo_locks_guard:
        return _repo_locks.setdefault(folder, threading.Lock())


def _present(folders: Iterable[Path]) -> set[Path]:
    return {path for folder in folders if folder.exists() for path in [folder, *folder.rglob("*")]}


def _remove_new(folders: Iterable[Path], before: set[Path]) -> None:
    """Remove every file, link and folder under ``folders`` that is not in ``before`` (deepest first)."""
    for path in sorted(_present(folders) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stopped_message(label: str, limits: DownloadLimits, budget: int | None) -> str:
    """What a download stopped while downloading says: the limit or the budget it grew past."""
    if budget is not None and budget < limits.max_bytes:
        grew_past = f"the {human_size(budget)} left of the share its downloads may use"
    else:
        grew_past = (f"{human_size(limits.max_bytes)}, this app's limit for a {limits.kind} (set by "
                     f"{limits.bytes_variable})")
    return f"stopped downloading {label}: it grew past {grew_past}, although the Hub listed less; its partial " \
           "files were removed"


def bounded_snapshot_download(ctx: HubContext, *, repo_type: str, label: str, allow_patterns: list[str] | None = None,
                              local_files_only: bool = False, budget: int | None = None) -> Path:
    """``snapshot_download`` of ``ctx.ref`` into ``ctx.cache_dir`` within ``download_limits(repo_type)`` and
    ``budget`` (bytes it may add there; None: the limits only): the listing is checked first
    (DownloadTooLarge, nothing written), the bytes while downloading (stopped, its files removed).
    huggingface_hub's own errors propagate for the caller to word."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    repo_id, revision, cache_dir = ctx.ref.repo_id, ctx.ref.revision, ctx.cache_dir
    limits = download_limits(repo_type)
    name = repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    folders = [Path(cache_dir) / name, Path(cache_dir) / ".locks" / name]
    if not local_files_only:
        check_repo_size(hub_api(ctx), repo_id, repo_type=repo_type, revision=revision, limits=limits, label=label,
                        allow_patterns=allow_patterns, budget=budget, repo_folder=folders[0])
    max_bytes = limits.max_bytes if budget is None else min(limits.max_bytes, budget)
    with _repo_lock(folders[0].resolve()):
        before = _present(folders)
        try:
            folder = snapshot_download(
                repo_id, repo_type=repo_type, revision=revision, endpoint=ctx.endpoint, cache_dir=cache_dir,
                token=library_token(ctx), allow_patterns=allow_patterns, local_files_only=local_files_only,
                tqdm_class=byte_guard_bar_class(max_bytes, stopped_message(label, limits, budget)),
            )
        except DownloadTooLarge:
            _remove_new(folders, before)
            raise
    return Path(folder)
