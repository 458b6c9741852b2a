"""Public mode: what a visitor may do when the app is open to others.

On where a Space runs (``SPACE_ID`` or ``SYSTEM=spaces``), with ``--share`` and on any host other than loopback;
``POKEDEMO_PUBLIC=1`` / ``0`` forces it on or off. ``python app.py`` on 127.0.0.1 stays a local tool with the
freedom of one: every folder on the machine, the server's Hub login, no caps. In public mode:

- **data**: ``PublicPolicy.data_spec`` is THE gate every folder-taking input goes through. It lets through the
  shared data (the bundled data, the app's own dataset), the visitor's own uploads and Hub datasets
  (``hf://``), and refuses anything else with one message that is the same whether the path exists or not;
  a refused path is never looked at on disk.
- **files**: runs, uploads and Hub downloads go to a folder per browser session (``SessionFiles``), capped in
  size and deleted once the session has been idle for a stated time. A Hub download is checked against what is
  left of that share before its first byte (``download_options``: the budget) and stopped if it grows past it.
- **training**: caps on epochs and image size (refused above them) and on wall time (``time_limit`` stops
  the run; the engine keeps its best epoch).
- **Hub**: the visitor's own token only (``hub_token``), never the server's ``HF_TOKEN`` or cached login, for
  models and ``hf://datasets/...`` alike (the dataset box has no token: public datasets only). The Space's own
  ``POKEDEMO_MODEL`` is not a visitor's action: it loads at start with the server's token into the normal cache.

The limits come from the environment (``PublicLimits.from_env``). No Gradio here: the handlers pass the
request's session hash.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pokedemo.app import text
from pokedemo.config import BUNDLED_DATA, bundled_data_dir
from pokedemo.hub import is_hub_dataset, written_as_repo_id
from pokedemo.hub.client import TRUE_VALUES
from pokedemo.uploads import remove_stale_folders

PUBLIC_ENV = "POKEDEMO_PUBLIC"           # 1/true/yes/on forces public mode on, 0/false/no/off off
PUBLIC_DIR_ENV = "POKEDEMO_PUBLIC_DIR"   # where the per-session folders live (default: <tmp>/pokedemo-public)
FALSE_VALUES = frozenset({"0", "false", "no", "off"})
UPLOADS = "uploads"                     # what a visitor's upload is called in the dataset box: uploads/<folder>
HUB = "hub"                             # a visitor's Hub downloads (models and datasets), as the Hub cache lays out


def on_spaces() -> bool:
    return os.environ.get("SYSTEM") == "spaces" or bool(os.environ.get("SPACE_ID"))


def is_loopback(host: str | None) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    name = (host or "").strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other host name may be reachable by others


def public_mode(host: str | None = None, share: bool = False) -> bool:
    """Whether the app is open to others: POKEDEMO_PUBLIC when set, else on a Space, with ``share`` or when
    listening on ``host`` other than loopback (None: the host is left to Gradio, which listens on loopback
    unless GRADIO_SERVER_NAME says otherwise)."""
    forced = os.environ.get(PUBLIC_ENV, "").strip().lower()
    if forced in TRUE_VALUES | FALSE_VALUES:
        return forced in TRUE_VALUES
    if on_spaces() or share:
        return True
    host = host if host is not None else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    return not is_loopback(host)


class PublicRefusal(ValueError):
    """Something public mode does not allow; the message is the one line the visitor reads."""


@dataclass(frozen=True)
class PublicLimits:
    """Fair use of one server by many visitors; each field is set by ``POKEDEMO_PUBLIC_<FIELD>``."""

    max_epochs: int = 10
    max_img_size: int = 224
    max_run_minutes: float = 10.0  # wall time of one training or comparison
    session_mb: int = 500         # a visitor's runs and uploads together
    session_hours: float = 1.0    # a session's files are deleted this long after its last action

    @classmethod
    def from_env(cls) -> "PublicLimits":
        values: dict[str, Any] = {}
        for field in fields(cls):
            variable = f"POKEDEMO_PUBLIC_{field.name.upper()}"
            raw = os.environ.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[field.name] = type(field.default)(raw)
            except ValueError:
                raise ValueError(f"{variable}={raw!r} is not a number") from None
        limits = cls(**values)
        if limits.session_hours * 60 <= limits.max_run_minutes:
            raise ValueError("POKEDEMO_PUBLIC_SESSION_HOURS must be longer than POKEDEMO_PUBLIC_MAX_RUN_MINUTES: a "
                             "session's files are never deleted while one of its runs can still be training")
        return limits

    @property
    def session_bytes(self) -> int:
        return self.session_mb * 1_000_000


def session_key(session: str) -> str:
    """The folder name of a browser session: a digest, so whatever a client sends as its session hash never
    becomes part of a path."""
    return hashlib.sha256(str(session).encode()).hexdigest()[:24]


class SessionFiles:
    """One folder per browser session, ``<root>/<key>/{runs,uploads,hub}``: marked active on every use; folders
    idle for longer than ``limits.session_hours`` are deleted (checked at most once a minute)."""

    SWEEP_EVERY_S = 60.0

    def __init__(self, root: str | os.PathLike, limits: PublicLimits):
        self.root = Path(root).absolute()  # compared with paths a visitor sends, as text first
        self.limits = limits
        self._lock = threading.Lock()
        self._last_sweep = float("-inf")

    def folder(self, session: str) -> Path:
        self._sweep_now_and_then()
        folder = self.root / session_key(session)
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)  # the last action: what the sweep measures idleness by
        return folder

    def runs(self, session: str) -> Path:
        return self._sub(session, "runs")

    def uploads(self, session: str) -> Path:
        return self._sub(session, UPLOADS)

    def hub(self, session: str) -> Path:
        """The visitor's Hub cache folder: the models and datasets they download, unpacked datasets included."""
        return self._sub(session, HUB)

    def _sub(self, session: str, name: str) -> Path:
        path = self.folder(session) / name
        path.mkdir(exist_ok=True)
        return path

    def used_bytes(self, session: str) -> int:
        folder = self.root / session_key(session)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    def space_left(self, session: str) -> int:
        """Bytes this session may still write; PublicRefusal (with the figures) when none are left."""
        used = self.used_bytes(session)
        if used >= self.limits.session_bytes:
            raise PublicRefusal(text.public_space_full(used, self.limits.session_bytes))
        return self.limits.session_bytes - used

    def bytes_left(self, session: str) -> int:
        """Bytes this session may still write, 0 when none (no refusal: a download of files already here adds
        nothing and may go ahead)."""
        return max(0, self.limits.session_bytes - self.used_bytes(session))

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete the folders of sessions idle for longer than ``limits.session_hours``; returns them."""
        return remove_stale_folders(self.root, self.limits.session_hours * 3600, now)

    def _sweep_now_and_then(self) -> None:
        with self._lock:
            if time.monotonic() - self._last_sweep < self.SWEEP_EVERY_S:
                return
            self._last_sweep = time.monotonic()
        self.sweep()


@dataclass
class PublicPolicy:
    """What the handlers ask before acting for a visitor. ``public`` False: everything passes as typed."""

    public: bool
    shared_data: dict[str, Path]          # what a visitor may type for the shared data → its folder
    sessions: SessionFiles

    @property
    def limits(self) -> PublicLimits:
        return self.sessions.limits

    @classmethod
    def create(cls, public: bool, data_dir: str | None = None, root: str | os.PathLike | None = None,
               limits: PublicLimits | None = None) -> "PublicPolicy":
        """The policy of an app whose own dataset is ``data_dir``; per-session folders under ``root``
        (default: ``$POKEDEMO_PUBLIC_DIR``, else ``<tmp>/pokedemo-public``)."""
        bundled = bundled_data_dir()
        shared = {os.path.normpath(BUNDLED_DATA): bundled, str(bundled): bundled}
        if data_dir and not is_hub_dataset(data_dir):
            shared[os.path.normpath(data_dir.strip())] = Path(data_dir.strip())
        root = root or os.environ.get(PUBLIC_DIR_ENV, "").strip() or Path(tempfile.gettempdir()) / "pokedemo-public"
        limits = limits or PublicLimits.from_env()
        return cls(public=public, shared_data=shared, sessions=SessionFiles(root, limits))

    # ---- data

    def data_spec(self, spec: str | None, session: str) -> str:
        """THE gate of every folder-taking input: the data spec to open for this visitor (stripped). Locally:
        as typed. Public: the shared data, a folder under this visitor's uploads or Hub downloads
        (``uploads/<folder>``, ``hub/<folder>`` or its full path) or a Hub address; PublicRefusal with the same
        words for anything else."""
        spec = (spec or "").strip()
        if not self.public or not spec or is_hub_dataset(spec):
            return spec  # hf:// addresses: the bounded Hub download decides
        shared = self.shared_data.get(os.path.normpath(spec))
        if shared is not None:
            return str(shared)
        own = self._own_folder(spec, session)
        if own is None:
            raise PublicRefusal(text.PUBLIC_DATA_REFUSED)
        return str(own)

    def _own_folder(self, spec: str, session: str) -> Path | None:
        """The existing folder ``spec`` names inside this session's uploads or Hub downloads (``uploads/...``,
        ``hub/...`` or its full path), else None."""
        owned = [self.sessions.uploads(session), self.sessions.hub(session)]
        written = Path(spec)
        if not written.is_absolute():
            if written.parts[:1] not in ((UPLOADS,), (HUB,)):
                return None
            written = owned[0].parent / written
        for folder in owned:
            found = inside(written, folder)
            if found is not None and found != folder and found.is_dir():
                return found
        return None

    def image_path(self, path: str | os.PathLike | None, folders: list[str | os.PathLike]) -> str | None:
        """THE gate of image inputs given as a path: locally as given; in public mode only a file inside
        ``folders`` (what the server itself received from the visitor: its upload folder, the examples),
        PublicRefusal with the same words for any other path."""
        if not self.public or not path:
            return str(path) if path else None
        found = next((f for f in (inside(path, folder) for folder in folders) if f is not None), None)
        if found is None or not found.is_file():
            raise PublicRefusal(text.PUBLIC_IMAGE_REFUSED)
        return str(found)

    def shown_upload(self, folder: str | os.PathLike, session: str) -> str:
        """How an uploaded dataset appears in the dataset box: ``uploads/<folder>`` in public mode (no server
        path shown), the folder itself locally."""
        if not self.public:
            return str(folder)
        return Path(folder).relative_to(self.sessions.uploads(session).parent).as_posix()

    def words(self, message: str, session: str) -> str:
        """A message for this visitor with the server's paths as the visitor names them (public mode): their
        uploads as ``uploads/...``, the bundled data as ``data/pokemon``."""
        if not self.public or not message:
            return message
        message = message.replace(f"{self.sessions.uploads(session).parent}{os.sep}", "")
        return message.replace(str(bundled_data_dir()), BUNDLED_DATA)

    def shown_data_dir(self, data_dir: str) -> str:
        """The app's dataset as the dataset box shows it: the bundled data as ``data/pokemon`` in public mode."""
        if self.public and data_dir and Path(data_dir) == bundled_data_dir():
            return BUNDLED_DATA
        return data_dir

    def upload_dir(self, session: str) -> Path | None:
        """Where this visitor's uploads go (None locally: the usual temporary folder)."""
        return self.sessions.uploads(session) if self.public else None

    def upload_budget(self, session: str) -> int | None:
        """Bytes an upload may unpack to (None locally: the upload's own limit); PublicRefusal when full."""
        return self.sessions.space_left(session) if self.public else None

    # ---- models

    def model_reference(self, reference: str | None, folders: list[str | os.PathLike],
                        root: str | os.PathLike) -> tuple[str, bool]:
        """THE gate of a model a visitor names: (reference, whether it is a Hub repo id). Locally as given (the
        model resolver decides). Public: a Hub repo id as written (never looked up on disk), an existing folder
        inside ``folders`` or a run name under ``root``; PublicRefusal with the same words for anything else."""
        ref = (reference or "").strip()
        if not self.public:
            return ref, False
        if written_as_repo_id(ref):
            return ref, True
        written = Path(ref) if Path(ref).is_absolute() else Path(root).absolute() / ref
        found = next((f for f in (inside(written, folder) for folder in folders) if f is not None), None)
        if found is None or not found.is_dir():
            raise PublicRefusal(text.PUBLIC_MODEL_REFUSED)
        return str(found), False

    def own_model_folders(self, session: str) -> list[Path]:
        """Where a public-mode visitor's own models are: their runs and their Hub downloads."""
        return [self.sessions.runs(session), self.sessions.hub(session)]

    # ---- runs

    def runs_root(self, session: str, default_root: str | os.PathLike) -> Path:
        """Where this visitor's runs are written: the per-session folder in public mode."""
        return self.sessions.runs(session) if self.public else Path(default_root)

    def check_training(self, epochs: int, img_size: int, session: str) -> None:
        """PublicRefusal for a run above the caps, or when this visitor's disk share is used up."""
        if not self.public:
            return
        if int(epochs) > self.limits.max_epochs or int(img_size) > self.limits.max_img_size:
            raise PublicRefusal(text.public_caps_refused(self.limits))
        self.sessions.space_left(session)

    @property
    def run_seconds(self) -> float | None:
        """The wall-time limit of one job (None locally)."""
        return self.limits.max_run_minutes * 60.0 if self.public else None

    # ---- the Hub

    def hub_token(self, token: str | None) -> str | bool | None:
        """The token a visitor's Hub action uses: the one typed; when none, locally None (huggingface_hub's
        own fallback: HF_TOKEN, then the cached login), in public mode False (no token is sent at all)."""
        if token and token.strip():
            return token.strip()
        return False if self.public else None

    def download_options(self, token: str | None, session: str) -> dict[str, Any]:
        """How a visitor's Hub download is made (``download_checkpoint``/``open_data`` keyword arguments): with
        ``hub_token``; in public mode into the visitor's own folder, within what is left of their disk share.
        Locally: the normal Hub cache, the download limits only."""
        if not self.public:
            return {"token": self.hub_token(token)}
        return {"token": self.hub_token(token), "cache_dir": self.sessions.hub(session),
                "budget": self.sessions.bytes_left(session)}

    def push_refusal(self, token: str | None) -> str | None:
        """Why a push cannot go ahead with ``token`` (public mode without a token), else None."""
        return text.PUBLIC_PUSH_TOKEN_NEEDED if self.public and not (token and token.strip()) else None


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> Path | None:
    """``path`` (absolute) when it lies inside ``folder``, else None. Decided on the text first, so a path
    outside is never looked at on disk; then once more with links resolved."""
    folder = Path(folder).absolute()
    try:
        written = Path(path)
        if not written.is_absolute():
            return None
        lexical = Path(os.path.normpath(written))
        if not lexical.is_relative_to(folder):
            return None
        resolved = lexical.resolve()
    except (ValueError, OSError, TypeError):  # NUL bytes, names too long, not a path at all
        return None
    return lexical if resolved.is_relative_to(folder.resolve()) else None


@contextmanager
def time_limit(stop: threading.Event, seconds: float | None) -> Iterator[threading.Event]:
    """Set ``stop`` once ``seconds`` have passed (None: never); yields an event that tells whether the limit
    did. The engine checks ``stop`` every batch and ends the run as Cancelled, keeping its best epoch."""
    expired = threading.Event()
    if not seconds:
        yield expired
        return

    def expire() -> None:
        expired.set()
        stop.set()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()
        timer.join()
