"""The Hugging Face Hub client: settings, token, repo ids, one-line errors and the ``HfApi`` every Hub call uses.

Settings are read when a function is called, not at import: ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``,
``HF_HUB_OFFLINE`` and ``HF_TOKEN``. huggingface_hub freezes its own copies (``constants``) when it is imported,
while tests and users change them afterwards, so callers pass the values to huggingface_hub explicitly. The
same readers serve the backbone weights (``pokedemo.models``). Importing this module imports nothing from
huggingface_hub.

The token comes from the caller, else ``HF_TOKEN``, else the cached login, and never appears in any message,
log or file: error texts are scrubbed before they leave. Every failure a user can fix is a ``HubError`` whose
message is one line; ``one_line`` is the project's one way to make a message or an error one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pokedemo import __version__

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})  # the spellings huggingface_hub accepts too
OFFLINE_ENV_VARS = ("POKEDEMO_OFFLINE", "HF_HUB_OFFLINE")


class HubError(Exception):
    """A Hub problem the user can fix; the message is one line and never contains the token."""


@dataclass(frozen=True)
class RepoRef:
    repo_id: str
    revision: str | None = None

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


@dataclass(frozen=True)
class HubContext:
    """What one Hub operation is about: the words for its messages and the settings it runs with."""

    action: str  # "push", "download", "deploy the Space"
    ref: RepoRef
    endpoint: str
    cache_dir: str
    token: str | None

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[-1]


# --------------------------------------------------------------------------------------------- settings


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now, else huggingface_hub's own default."""
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def hub_cache_dir() -> str:
    """The normal Hugging Face Hub cache, resolved now: HF_HUB_CACHE, else HF_HOME/hub, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def offline_mode() -> bool:
    """Hub requests are off: HF_HUB_OFFLINE now, or as huggingface_hub read it at its import (it then refuses
    requests itself)."""
    if env_flag("HF_HUB_OFFLINE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def downloads_disabled() -> bool:
    """No pretrained-weight downloads either: POKEDEMO_OFFLINE (pokedemo's own switch) or Hub offline mode."""
    return env_flag("POKEDEMO_OFFLINE") or offline_mode()


def effective_token(token: str | bool | None) -> str | None:
    """The explicit token, else huggingface_hub's own resolution (HF_TOKEN, then the cached login); ``False``:
    no token at all, never the server's (a public app acting for a visitor who gave none)."""
    if token is False:
        return None
    if token and token.strip():
        return token.strip()
    from huggingface_hub import get_token

    return get_token()


# --------------------------------------------------------------------------------------------- repo ids


def parse_repo_ref(spec: str, *, allow_revision: bool = True) -> RepoRef:
    """``NAMESPACE/NAME`` or ``NAMESPACE/NAME@REVISION`` → RepoRef; HubError for anything else.

    THE repo-id parser (models, the app's picker, ``hf://datasets/`` addresses). The name rules are
    huggingface_hub's own (``validate_repo_id``); the namespace is required here because a bare ``NAME`` is
    indistinguishable from a local run folder's name.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(spec).strip()
    name, _, revision = text.partition("@")
    try:
        validate_repo_id(name)
        valid = name.count("/") == 1
    except HFValidationError:
        valid = False
    if not valid or ("@" in text and not revision.strip()):
        expected = "NAMESPACE/NAME or NAMESPACE/NAME@REVISION" if allow_revision else "NAMESPACE/NAME"
        raise HubError(f"invalid Hub repo id {one_line(text)!r}: expected {expected}")
    if revision and not allow_revision:
        raise HubError(f"pushing goes to the main branch of a repo: give {name} without '@{revision}'")
    return RepoRef(name, revision.strip() or None)


def looks_like_repo_id(spec: str | os.PathLike | None) -> bool:
    """True when ``spec`` reads as ``NAMESPACE/NAME[@REVISION]`` and is no local path (existing, or written as
    one: ``./``, ``/``, ``~``, backslashes)."""
    return written_as_repo_id(spec) and not os.path.exists(str(spec).strip())


def written_as_repo_id(spec: str | os.PathLike | None) -> bool:
    """True when ``spec`` is written as ``NAMESPACE/NAME[@REVISION]``, not as a path (``./``, ``/``, ``~``,
    backslashes); the disk is not looked at."""
    text = str(spec or "").strip()
    if not text or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    try:
        parse_repo_ref(text)
    except HubError:
        return False
    return True


# --------------------------------------------------------------------------------------------- one line


def one_line(value: Any, *, first: bool = False, typed: bool = False) -> str:
    """``value`` (a message or an exception) as one line, whitespace runs collapsed to single spaces.

    ``first`` keeps only its first non-empty line (how a library's error is quoted); ``typed`` puts an
    exception's type name in front (``OSError: ...``). An exception without a message reads as its type name.
    """
    text = str(value)
    if first:
        text = next((line for line in text.splitlines() if line.strip()), "")
    text = " ".join(text.split())
    if isinstance(value, BaseException) and (typed or (first and not text)):
        name = type(value).__name__
        return f"{name}: {text}" if text else name
    return text


def scrub(text: str, *tokens: str | None) -> str:
    """Remove every known token (and any bearer credential) from a text, and make it one line."""
    known = [t for t in {*tokens, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")} if t]
    for token in sorted(known, key=len, reverse=True):
        text = text.replace(token, "***")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return one_line(text)


# --------------------------------------------------------------------------------------------- errors


def describe_error(err: BaseException, ctx: HubContext) -> str:
    """One clear line for a failure of huggingface_hub / the network (the token is scrubbed later)."""
    from huggingface_hub import errors as hf

    host, label = ctx.host, ctx.ref.label
    if isinstance(err, hf.OfflineModeIsEnabled) or (isinstance(err, hf.LocalEntryNotFoundError) and offline_mode()):
        return offline_message(ctx)
    if isinstance(err, hf.RevisionNotFoundError):
        return (f"revision {ctx.ref.revision or 'main'!r} not found in {ctx.ref.repo_id} on {host} "
                "(give a branch, tag or full commit hash)")
    if isinstance(err, hf.RepositoryNotFoundError):
        hint = "check the name; if it is private, give a token that can read it (--token, HF_TOKEN or `hf auth login`)"
        return f"model repo {ctx.ref.repo_id} not found on {host}: {hint}"
    if isinstance(err, (hf.LocalEntryNotFoundError, *_transport_errors(), ConnectionError)):
        # Checked before EntryNotFoundError: LocalEntryNotFoundError is one, but means "unreachable and not cached".
        where = f" and {label} is not in the local Hub cache" if ctx.action == "download" else ""
        return f"cannot reach the Hugging Face Hub at {host}{where}; check your network connection"
    if isinstance(err, hf.EntryNotFoundError):
        return f"{label} is not a pokedemo model: a file it needs is missing ({one_line(err, first=True)})"
    if isinstance(err, hf.LocalTokenNotFoundError):
        return NO_TOKEN_MESSAGE
    if isinstance(err, hf.HfHubHTTPError) and err.response is not None:
        return _describe_http(err, ctx)
    if isinstance(err, hf.HFValidationError):
        return f"invalid Hub repo id {ctx.ref.label!r}: {one_line(err, first=True)}"
    if isinstance(err, ValueError) and "metadata" in str(err).lower():
        return f"the Hub refused the model card metadata: {one_line(err, first=True)}"
    if isinstance(err, OSError):
        return f"file error while trying to {ctx.action} {label} ({one_line(err, first=True, typed=True)})"
    # Anything else (a malformed answer, a library change): still one line, never a traceback.
    return f"unexpected error while trying to {ctx.action} {label} ({one_line(err, first=True, typed=True)})"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network failures (huggingface_hub 2.x uses httpx2)."""
    try:
        import httpx2
    except ImportError:
        return ()
    return (httpx2.TransportError,)


def _describe_http(err: Any, ctx: HubContext) -> str:
    status = err.response.status_code
    namespace = ctx.ref.repo_id.split("/")[0]
    if status == 401:
        if ctx.token is None:
            return NO_TOKEN_MESSAGE
        return (f"the Hub at {ctx.host} rejected the token (invalid or expired); pass a valid one with "
                "--token, set HF_TOKEN or run `hf auth login`")
    if status == 403:
        return (f"this token may not write to {ctx.ref.repo_id}: it needs write access to the {namespace!r} "
                "namespace (a 'write' token of that user or organisation)")
    server = err.server_message or one_line(err, first=True)
    return (f"the Hub answered HTTP {status} while trying to {ctx.action} {ctx.ref.label}: "
            f"{one_line(server, first=True)}")


NO_TOKEN_MESSAGE = "no Hugging Face token: pass --token, set HF_TOKEN or log in with `hf auth login`"


def offline_message(ctx: HubContext) -> str:
    if ctx.action == "push":
        return "cannot push while offline mode is on (HF_HUB_OFFLINE=1); unset it to reach the Hub"
    return (f"offline mode is on (HF_HUB_OFFLINE=1) and {ctx.ref.label} is not in the local Hub cache "
            f"({ctx.cache_dir}); download it once while online")


@contextmanager
def hub_errors(ctx: HubContext) -> Iterator[None]:
    """Turn known huggingface_hub/network failures into one-line, token-free HubErrors."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes one classified line
        raise HubError(scrub(describe_error(err, ctx), ctx.token)) from None


# --------------------------------------------------------------------------------------------- context and API


def read_context(action: str, ref: RepoRef, token: str | bool | None,
                 cache_dir: str | os.PathLike | None = None) -> HubContext:
    """The context of a read from the Hub (a download), with the token resolved now; its files go to
    ``cache_dir`` (a folder laid out like the Hub cache), else the normal Hub cache."""
    return _context(action, ref, effective_token(token), cache_dir)


def write_context(action: str, ref: RepoRef, token: str | bool | None) -> HubContext:
    """The context of a write to the Hub (push, dataset push, Space deploy): refused at once, with one line,
    when offline or without a token, before anything is sent."""
    if offline_mode():
        raise HubError(offline_message(_context(action, ref, None)))
    token = effective_token(token)
    if not token:
        raise HubError(NO_TOKEN_MESSAGE)
    return _context(action, ref, token)


def _context(action: str, ref: RepoRef, token: str | None, cache_dir: str | os.PathLike | None = None) -> HubContext:
    return HubContext(action=action, ref=ref, endpoint=hub_endpoint(), cache_dir=str(cache_dir or hub_cache_dir()),
                      token=token)


def hub_api(ctx: HubContext) -> Any:
    """huggingface_hub's HfApi for this context's endpoint and token, identifying pokedemo to the Hub."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=ctx.endpoint, token=library_token(ctx), library_name="pokedemo",
                 library_version=__version__)


def library_token(ctx: HubContext) -> str | bool:
    """The token to hand huggingface_hub: the context's, else ``False`` (send none). Never None, which would
    make huggingface_hub fall back to HF_TOKEN or the cached login on its own: the context has decided."""
    return ctx.token or False


def check_can_write(api: Any, ctx: HubContext) -> None:
    """whoami first: tells a bad token apart from a missing repo, and a read-only token before any upload."""
    me = api.whoami()
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        namespace = ctx.ref.repo_id.split("/")[0]
        raise HubError(f"this token is read-only: pushing to {ctx.ref.repo_id} needs a 'write' token for {namespace!r}")


def quiet_progress_bar() -> type:
    """A tqdm class that shows nothing, for snapshot_download's "Fetching N files" bar: a few small files need
    no progress bar and the CLI's stderr is kept for its one-line messages."""
    from tqdm.auto import tqdm

    class QuietBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietBar
