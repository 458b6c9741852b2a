"""Editing a dataset folder in place: move a picture to another class, set it aside, add pictures or a class,
and undo, with every change written to a log in the folder.

The log (``.pokedemo/changes.jsonl`` in the dataset root) is the only record of what happened: undo reads it, so
undo works after a restart too. Nothing is ever deleted: a picture set aside moves to ``.pokedemo/set-aside/``
(a hidden folder, so the dataset scan skips it), and undoing an addition sets the added picture aside. A move
never overwrites: onto a taken name it picks the next free ``name-N.ext``. Every change holds one lock per
dataset folder (``fcntl.flock`` on ``.pokedemo/lock``), which serialises threads and processes alike, so two
browser sessions editing one working copy take turns and each reads the other's changes from the folder.

Folders pokedemo must not change (the bundled data, the Hub cache, anything not writable) are edited through a
working copy made on the first edit (``working_copy``); ``.pokedemo/origin.json`` there names the original.
A dataset downloaded from the Hub, in whatever cache folder (a public-mode visitor's own included), is one of
them, and a ``Curator`` asked to change one in place refuses in one line: the files of a download are links
into its cache, shared by its every snapshot, and the next download would not know they had changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from pokedemo.checkpoint import sha256_file, utc_now
from pokedemo.config import bundled_data_dir
from pokedemo.hub import hub_cache_dir, is_hub_download
from pokedemo.images import IMAGE_EXTENSIONS, ImageLoadError, load_image

STATE_DIR = ".pokedemo"
LOG_NAME = "changes.jsonl"
SET_ASIDE_DIR = "set-aside"
ORIGIN_NAME = "origin.json"
MAX_CLASS_NAME = 64
ACTIONS = ("move", "set_aside", "add")


class CurationError(ValueError):
    """A change that cannot be made; str(e) is one line a user can act on."""


@dataclass(frozen=True)
class Change:
    """One line of the change log. Paths are posix, relative to the dataset root."""

    id: int
    action: str                 # "move" | "set_aside" | "add" | "undo"
    source: str | None          # where the picture was ("add": None)
    target: str                 # where it is now
    sha256: str
    when: str                   # ISO 8601, UTC
    undoes: int | None = None   # for "undo": the id of the change it reverts

    @property
    def class_from(self) -> str | None:
        return _class_of(self.source)

    @property
    def class_to(self) -> str | None:
        return _class_of(self.target)


def validate_class_name(name: str) -> str:
    """``name`` stripped, or CurationError: a class name is one visible folder name."""
    cleaned = (name or "").strip()
    problem = None
    if not cleaned:
        problem = "is empty"
    elif len(cleaned) > MAX_CLASS_NAME:
        problem = f"is longer than {MAX_CLASS_NAME} characters"
    elif any(sep in cleaned for sep in ("/", "\\", "\x00")) or cleaned in (".", ".."):
        problem = "may not contain path separators or be '.' or '..'"
    elif cleaned.startswith("."):
        problem = "may not start with '.' (hidden folders are not classes)"
    elif any(ord(ch) < 32 for ch in cleaned):
        problem = "may not contain control characters"
    if problem:
        raise CurationError(f"the class name {cleaned[:MAX_CLASS_NAME]!r} {problem}")
    return cleaned


def is_read_only(root: str | os.PathLike) -> bool:
    """True for folders pokedemo does not edit in place: the bundled data, the Hub cache, Hub downloads in any
    other cache folder, unwritable folders."""
    path = Path(root).resolve()
    protected = (bundled_data_dir().resolve(), Path(hub_cache_dir()).resolve())
    if any(path == p or p in path.parents for p in protected) or is_hub_download(path):
        return True
    return not os.access(path, os.W_OK)


def working_copy(root: str | os.PathLike, workspace: str | os.PathLike) -> Path:
    """An editable copy of ``root`` under ``workspace``: the existing one for the same origin, else a new one.

    Only visible class folders and their files are copied (hidden files and ``.pokedemo`` are not). One lock per
    workspace: two sessions editing the same read-only folder at once end up with one copy."""
    source = Path(root).resolve()
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    with _flock(workspace / ".lock"):
        return existing_copy(source, workspace) or _make_copy(source, _free_copy_name(workspace, source.name))


def existing_copy(root: str | os.PathLike, workspace: str | os.PathLike) -> Path | None:
    """The working copy of ``root`` already under ``workspace``, or None."""
    source = Path(root).resolve()
    for candidate in _copy_names(Path(workspace), source.name):
        if not candidate.exists():
            return None
        if recorded_origin(candidate) == str(source):
            return candidate
    raise AssertionError("unreachable: _copy_names is endless")


def editable_root(root: str | os.PathLike, workspace: str | os.PathLike) -> tuple[Path, bool]:
    """(the folder an edit of ``root`` goes to, whether a working copy was made for it just now): ``root`` itself
    when pokedemo may change it, else its working copy under ``workspace``."""
    if not is_read_only(root):
        return Path(root).resolve(), False
    found = existing_copy(root, workspace)
    return (found, False) if found else (working_copy(root, workspace), True)


def _free_copy_name(workspace: Path, name: str) -> Path:
    return next(candidate for candidate in _copy_names(workspace, name) if not candidate.exists())


def recorded_origin(root: str | os.PathLike) -> str | None:
    """The folder a working copy was made from, or None for a folder that is not a working copy."""
    try:
        return json.loads((Path(root) / STATE_DIR / ORIGIN_NAME).read_text())["origin"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _copy_names(workspace: Path, name: str) -> Iterator[Path]:
    yield workspace / name
    n = 2
    while True:
        yield workspace / f"{name}-{n}"
        n += 1


def _make_copy(source: Path, target: Path) -> Path:
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns(".*"))
    state = partial / STATE_DIR
    state.mkdir()
    (state / ORIGIN_NAME).write_text(json.dumps({"origin": str(source), "made": utc_now()}))
    partial.rename(target)
    return target


class Curator:
    """The changes of one dataset folder. Cheap to create: every call reads the log and the folder afresh."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise CurationError(f"{self.root} is not a folder")

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_NAME

    def classes(self) -> list[str]:
        return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))

    def history(self) -> list[Change]:
        """Every change so far, oldest first."""
        if not self.log_path.exists():
            return []
        with self.log_path.open(encoding="utf-8") as f:
            return [Change(**json.loads(line)) for line in f if line.strip()]

    def move(self, rel_path: str, to_class: str) -> Change:
        """Move a picture into ``to_class`` (an existing class folder)."""
        to_class = validate_class_name(to_class)
        with self._locked():
            source = self._existing_picture(rel_path)
            if to_class not in self.classes():
                raise CurationError(f"there is no class '{to_class}'; add it first")
            if _class_of(self._rel(source)) == to_class:
                raise CurationError(f"{self._rel(source)} is already in '{to_class}'")
            target = self._place(source, self.root / to_class, source.name)
            return self._record("move", self._rel(source), target, sha256_file(target))

    def set_aside(self, rel_path: str) -> Change:
        """Move a picture out of the dataset into ``.pokedemo/set-aside/<class>/``, never deleting it."""
        with self._locked():
            source = self._existing_picture(rel_path)
            folder = self.state_dir / SET_ASIDE_DIR / (_class_of(self._rel(source)) or "")
            target = self._place(source, folder, source.name)
            return self._record("set_aside", self._rel(source), target, sha256_file(target))

    def add_pictures(self, class_name: str, files: list[str | os.PathLike], *, create: bool = True) -> list[Change]:
        """Copy picture files into ``class_name`` (made if missing and ``create``); the originals stay."""
        class_name = validate_class_name(class_name)
        pictures = [Path(f) for f in files]
        for picture in pictures:
            if picture.suffix.lower() not in IMAGE_EXTENSIONS:
                raise CurationError(f"{picture.name} is not a picture file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            try:
                load_image(picture, max_side=64)  # a file training could not read is refused now, not skipped later
            except ImageLoadError as exc:
                raise CurationError(str(exc)) from None
        with self._locked():
            folder = self.root / class_name
            if not folder.is_dir() and not create:
                raise CurationError(f"there is no class '{class_name}'")
            folder.mkdir(exist_ok=True)
            return [self._add_one(picture, folder) for picture in pictures]

    def undo(self) -> Change | None:
        """Revert the newest change not yet undone (None when there is nothing to undo)."""
        with self._locked():
            change = self._last_undoable()
            if change is None:
                return None
            current = self.root / change.target
            if not current.is_file() or sha256_file(current) != change.sha256:
                raise CurationError(f"cannot undo: {change.target} was changed outside pokedemo")
            if change.action == "add":
                folder = self.state_dir / SET_ASIDE_DIR / (change.class_to or "")
                back = self._place(current, folder, current.name)
            else:
                wanted = self.root / change.source
                back = self._place(current, wanted.parent, wanted.name)
            return self._record("undo", change.target, back, change.sha256, undoes=change.id)

    def _add_one(self, picture: Path, folder: Path) -> Change:
        if not picture.is_file():
            raise CurationError(f"{picture.name} is not a file")
        target = _free_name(folder, picture.name)
        with open(picture, "rb") as src, open(target, "xb") as dst:  # "x": never overwrites
            shutil.copyfileobj(src, dst)
        return self._record("add", None, target, sha256_file(target))

    def _last_undoable(self) -> Change | None:
        history = self.history()
        undone = {c.undoes for c in history if c.action == "undo"}
        pending = [c for c in history if c.action != "undo" and c.id not in undone]
        return pending[-1] if pending else None

    def _existing_picture(self, rel_path: str) -> Path:
        parts = PurePosixPath(str(rel_path).replace("\\", "/")).parts
        if not parts or ".." in parts or parts[0].startswith(".") or Path(rel_path).is_absolute():
            raise CurationError(f"{rel_path!r} is not a picture of this dataset")
        path = self.root.joinpath(*parts)
        if not path.is_file() or len(parts) != 2:
            raise CurationError(f"{rel_path} is not a picture of this dataset (it may have moved already)")
        return path

    def _place(self, source: Path, folder: Path, name: str) -> Path:
        """Move ``source`` into ``folder`` under ``name`` or the next free variant; never overwrites."""
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            target = _free_name(folder, name)
            try:
                os.link(source, target)  # fails if target exists: no overwrite even in a race
            except FileExistsError:
                continue
            source.unlink()
            return target

    def _record(self, action: str, source: str | None, target: Path, sha: str, undoes: int | None = None) -> Change:
        history = self.history()
        change = Change(id=(history[-1].id + 1) if history else 1, action=action, source=source,
                        target=self._rel(target), sha256=sha, when=utc_now(), undoes=undoes)
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(change)) + "\n")
        return change

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """The folder's lock, taken by every change; CurationError, before anything is written, for a download."""
        if is_hub_download(self.root):
            raise CurationError("this dataset is a download from the Hugging Face Hub, which pokedemo never changes "
                                "in place: make the change in a working copy of it (the app makes one on the first "
                                "change)")
        self.state_dir.mkdir(exist_ok=True)
        return _flock(self.state_dir / "lock")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path``: threads and processes alike wait for each other."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _class_of(rel_path: str | None) -> str | None:
    if rel_path is None:
        return None
    parts = PurePosixPath(rel_path).parts
    if parts[0] == STATE_DIR:
        return parts[2] if len(parts) > 3 else None
    return parts[0] if len(parts) > 1 else None


def _free_name(folder: Path, name: str) -> Path:
    stem, suffix = os.path.splitext(name)
    candidate, n = folder / name, 1
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate
