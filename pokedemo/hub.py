"""Hugging Face Hub: push a checkpoint with a generated model card (``pokedemo.model_card``), pull a model back by
repo id.

A pushed repo holds pokedemo's own files (``model.safetensors``, ``config.json``, ``history.json``) plus a
``README.md`` model card. Its ``config.json`` serves two readers at once: pokedemo (which checks
``"format": "pokedemo-checkpoint"`` and ignores other keys) and timm's Hub loader (which reads
``architecture``, ``num_classes``, ``label_names`` and ``pretrained_cfg`` and ignores the rest). timm expects
its own tensor names, so for backbones that timm can build (resnet18, efficientnet_lite0) the same weights are
also stored under timm's names in ``timm_model.safetensors``; ``pretrained_cfg.hf_hub_filename`` points timm
there, so ``timm.create_model("hf-hub:NAMESPACE/NAME", pretrained=True)`` works. (The Hub's Xet storage
chunks files by content, so the identical tensor bytes of the two files are largely stored and sent once.)

Settings are read when a function is called, not when the module is imported: ``HF_ENDPOINT``,
``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN``. (huggingface_hub itself freezes them at its
own import, so they are passed to it explicitly.) The token comes from the caller, else ``HF_TOKEN``, else the
cached login, and never appears in any message, log or file: error texts are scrubbed before they leave.
Every failure a user can fix is a ``HubError`` whose message is one line. Functions return data or raise; the
CLI and the app word the outcome (``pokedemo.app.text``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pokedemo.checkpoint import CONFIG_FILE, HISTORY_FILE, WEIGHTS_FILE, CheckpointError
from pokedemo.hub_env import hub_cache_dir, hub_endpoint, offline_mode  # also what Hub callers import from here

CARD_FILE = "README.md"
TIMM_WEIGHTS_FILE = "timm_model.safetensors"
POKEDEMO_FILES = (CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE, CARD_FILE)  # what a pull downloads


class HubError(Exception):
    """A Hub problem the user can fix; the message is one line and never contains the token."""


@dataclass(frozen=True)
class TimmLayout:
    """How a pokedemo backbone maps onto a timm model: its name and where the classifier lives."""

    architecture: str
    classifier: str
    first_conv: str


TIMM_LAYOUTS = {
    "resnet18": TimmLayout("resnet18", classifier="fc", first_conv="conv1"),  # torchvision names == timm's
    "efficientnet_lite0": TimmLayout("tf_efficientnet_lite0", classifier="classifier", first_conv="conv_stem"),
}


@dataclass(frozen=True)
class RepoRef:
    repo_id: str
    revision: str | None = None

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


@dataclass(frozen=True)
class PushResult:
    url: str
    repo_id: str
    commit_oid: str
    commit_url: str
    timm_compatible: bool
    private: bool  # the repo's visibility after the push (an existing repo keeps its own)


# --------------------------------------------------------------------------------------------- settings


def _effective_token(token: str | None) -> str | None:
    """The explicit token, else huggingface_hub's own resolution (HF_TOKEN, then the cached login)."""
    if token and token.strip():
        return token.strip()
    from huggingface_hub import get_token

    return get_token()


def _host(endpoint: str) -> str:
    return endpoint.split("://", 1)[-1]


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
    text = str(spec or "").strip()
    if not text or os.path.exists(text) or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    try:
        parse_repo_ref(text)
    except HubError:
        return False
    return True


# --------------------------------------------------------------------------------------------- errors


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def scrub(text: str, *tokens: str | None) -> str:
    """Remove every known token (and any bearer credential) from a text, and make it one line."""
    known = [t for t in {*tokens, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")} if t]
    for token in sorted(known, key=len, reverse=True):
        text = text.replace(token, "***")
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
    return one_line(text)


@dataclass(frozen=True)
class _Context:
    action: str  # "push" or "download"
    ref: RepoRef
    endpoint: str
    cache_dir: str
    token: str | None


def _describe(err: BaseException, ctx: _Context) -> str:
    """One clear line for a failure of huggingface_hub / the network (the token is scrubbed later)."""
    from huggingface_hub import errors as hf

    host, label = _host(ctx.endpoint), ctx.ref.label
    if isinstance(err, hf.OfflineModeIsEnabled) or (isinstance(err, hf.LocalEntryNotFoundError) and offline_mode()):
        return _offline_message(ctx)
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
        return f"{label} is not a pokedemo model: a file it needs is missing ({first_line(err)})"
    if isinstance(err, hf.LocalTokenNotFoundError):
        return _no_token_message()
    if isinstance(err, hf.HfHubHTTPError) and err.response is not None:
        return _describe_http(err, ctx)
    if isinstance(err, hf.HFValidationError):
        return f"invalid Hub repo id {ctx.ref.label!r}: {first_line(err)}"
    if isinstance(err, ValueError) and "metadata" in str(err).lower():
        return f"the Hub refused the model card metadata: {first_line(err)}"
    if isinstance(err, OSError):
        return f"file error while trying to {ctx.action} {label} ({type(err).__name__}: {first_line(err)})"
    # Anything else (a malformed answer, a library change): still one line, never a traceback.
    return f"unexpected error while trying to {ctx.action} {label} ({type(err).__name__}: {first_line(err)})"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network failures (huggingface_hub 2.x uses httpx2)."""
    try:
        import httpx2
    except ImportError:
        return ()
    return (httpx2.TransportError,)


def _describe_http(err: Any, ctx: _Context) -> str:
    status = err.response.status_code
    namespace = ctx.ref.repo_id.split("/")[0]
    if status == 401:
        if ctx.token is None:
            return _no_token_message()
        return (f"the Hub at {_host(ctx.endpoint)} rejected the token (invalid or expired); pass a valid one with "
                "--token, set HF_TOKEN or run `hf auth login`")
    if status == 403:
        return (f"this token may not write to {ctx.ref.repo_id}: it needs write access to the {namespace!r} "
                "namespace (a 'write' token of that user or organisation)")
    server = err.server_message or first_line(err)
    return f"the Hub answered HTTP {status} while trying to {ctx.action} {ctx.ref.label}: {first_line(server)}"


def first_line(err: Any) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _no_token_message() -> str:
    return "no Hugging Face token: pass --token, set HF_TOKEN or log in with `hf auth login`"


def _offline_message(ctx: _Context) -> str:
    if ctx.action == "push":
        return "cannot push while offline mode is on (HF_HUB_OFFLINE=1); unset it to reach the Hub"
    return (f"offline mode is on (HF_HUB_OFFLINE=1) and {ctx.ref.label} is not in the local Hub cache "
            f"({ctx.cache_dir}); download it once while online")


@contextmanager
def _hub_errors(ctx: _Context) -> Iterator[None]:
    """Turn known huggingface_hub/network failures into one-line, token-free HubErrors."""
    try:
        yield
    except (HubError, CheckpointError):
        raise
    except Exception as err:  # noqa: BLE001 - every failure becomes one classified line
        raise HubError(scrub(_describe(err, ctx), ctx.token)) from None


def _context(action: str, ref: RepoRef, token: str | None) -> _Context:
    return _Context(action=action, ref=ref, endpoint=hub_endpoint(), cache_dir=hub_cache_dir(), token=token)


# --------------------------------------------------------------------------------------------- pull


def _quiet_bar_class():
    from tqdm.auto import tqdm

    class QuietBar(tqdm):
        """snapshot_download's "Fetching N files" bar, silenced: a few small files need no progress bar and
        the CLI's stderr is kept for its one-line messages."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietBar


def download_checkpoint(spec: str, *, token: str | None = None) -> Path:
    """``NAMESPACE/NAME[@REVISION]`` → the snapshot directory in the normal Hub cache, validated like a
    local checkpoint. Offline (HF_HUB_OFFLINE=1) a cached snapshot is used. Raises HubError (one line)."""
    from huggingface_hub import snapshot_download

    ref = parse_repo_ref(spec)
    token = _effective_token(token)
    ctx = _context("download", ref, token)
    with _hub_errors(ctx):
        folder = snapshot_download(
            ref.repo_id, revision=ref.revision, endpoint=ctx.endpoint, cache_dir=ctx.cache_dir, token=token,
            allow_patterns=list(POKEDEMO_FILES), local_files_only=offline_mode(), tqdm_class=_quiet_bar_class(),
        )
    return _validated_snapshot(Path(folder), ref)


def _validated_snapshot(folder: Path, ref: RepoRef) -> Path:
    """Refuse, in one line, a repo that is not a usable pokedemo model (weights are checked when loaded)."""
    from pokedemo.checkpoint import FORMAT, read_config

    not_ours = f"{ref.label} is not a pokedemo model"
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubError(f"{not_ours}: the repo has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise HubError(f"{not_ours}: its {CONFIG_FILE} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise HubError(f"{not_ours}: its {CONFIG_FILE} has no \"format\": \"{FORMAT}\"") from None
    try:
        read_config(folder)
    except CheckpointError as err:
        detail = str(err).replace(str(folder), ref.label)  # the cache path means nothing to the user
        raise HubError(f"{ref.label} has a broken pokedemo config: {detail}") from None
    if not (folder / WEIGHTS_FILE).is_file():
        raise HubError(f"{ref.label} is not a complete pokedemo model: the repo has no {WEIGHTS_FILE}")
    return folder


# --------------------------------------------------------------------------------------------- push


def push_checkpoint(checkpoint: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str | None = None) -> str:
    """Upload a run directory with a model card to a Hub model repo (created if needed); returns its URL."""
    return push_checkpoint_details(checkpoint, repo_id, private=private, token=token,
                                   commit_message=commit_message).url


def push_checkpoint_details(checkpoint: str | os.PathLike, repo_id: str, *, private: bool = False,
                            token: str | None = None, commit_message: str | None = None) -> PushResult:
    """push_checkpoint, returning the commit too. Raises HubError / CheckpointError (one line each)."""
    from pokedemo.checkpoint import load_checkpoint

    ref = parse_repo_ref(repo_id, allow_revision=False)
    loaded = load_checkpoint(_local_run_dir(checkpoint))
    ctx = write_context("push", ref, token)
    with _hub_errors(ctx), tempfile.TemporaryDirectory(prefix="pokedemo-push-") as staging:
        api = _api(ctx)
        _check_can_write(api, ctx)
        url, is_private = _ensure_repo(api, ctx, private)
        timm_ok = write_hub_folder(loaded, Path(staging), ref.repo_id)
        message = commit_message or f"Upload {loaded.config['backbone']} checkpoint {Path(loaded.path).name}"
        info = api.upload_folder(repo_id=ref.repo_id, folder_path=staging, commit_message=message)
    return PushResult(url=url, repo_id=ref.repo_id, commit_oid=info.oid, commit_url=info.commit_url,
                      timm_compatible=timm_ok, private=is_private)


def _local_run_dir(checkpoint: str | os.PathLike) -> Path:
    path = Path(checkpoint).expanduser()
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {checkpoint} is not a run directory")
    return path


def _api(ctx: _Context) -> Any:
    from huggingface_hub import HfApi

    from pokedemo import __version__

    return HfApi(endpoint=ctx.endpoint, token=ctx.token, library_name="pokedemo", library_version=__version__)


def _check_can_write(api: Any, ctx: _Context) -> None:
    """whoami first: tells a bad token apart from a missing repo, and a read-only token before any upload."""
    me = api.whoami()
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        namespace = ctx.ref.repo_id.split("/")[0]
        raise HubError(f"this token is read-only: pushing to {ctx.ref.repo_id} needs a 'write' token for {namespace!r}")


def _ensure_repo(api: Any, ctx: _Context, private: bool) -> tuple[str, bool]:
    """(URL, private) of the repo, created when it does not exist yet. An existing repo keeps its visibility,
    so never upload publicly what was meant to be private."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.model_info(ctx.ref.repo_id)
    except RepositoryNotFoundError:  # missing, or someone else's private repo: creating it says which
        return str(api.create_repo(ctx.ref.repo_id, private=private, exist_ok=True)), private
    if private and not info.private:
        raise HubError(f"{ctx.ref.repo_id} already exists and is public; nothing was uploaded because --private "
                       "was asked (make the repo private on the Hub, or push without --private)")
    return f"{ctx.endpoint}/{ctx.ref.repo_id}", bool(info.private)


def write_hub_folder(loaded: Any, folder: Path, repo_id: str) -> bool:
    """Write the files of a Hub repo for a loaded checkpoint into ``folder``; True when timm can load it."""
    run_dir = Path(loaded.path)
    shutil.copyfile(run_dir / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    history = _read_history(run_dir)
    (folder / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    layout = timm_weights(loaded, folder / TIMM_WEIGHTS_FILE)
    config = hub_config(loaded.config, layout)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    from pokedemo.model_card import build_model_card

    card = build_model_card(config, history, repo_id, timm_architecture=layout.architecture if layout else None)
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    return layout is not None


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    try:
        history = json.loads((run_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return history if isinstance(history, list) else []


# --------------------------------------------------------------------------------------------- timm


def hub_config(config: dict[str, Any], layout: TimmLayout | None) -> dict[str, Any]:
    """The checkpoint's config as published: local absolute paths reduced to names, plus timm's keys."""
    out = dict(config)
    dataset = dict(out.get("dataset") or {})
    if dataset.get("root"):
        dataset["root"] = Path(str(dataset["root"])).name  # a local path says nothing useful and leaks a username
    out["dataset"] = dataset
    train_config = dict(out.get("train_config") or {})
    if train_config.get("weights_file"):
        train_config["weights_file"] = Path(str(train_config["weights_file"])).name
    out["train_config"] = train_config
    if layout is not None:
        out.update(timm_config(config, layout))
    return out


def timm_config(config: dict[str, Any], layout: TimmLayout) -> dict[str, Any]:
    """The keys timm's ``load_model_config_from_hf`` reads. The rest of config.json is ignored by timm."""
    size = int(config["image_size"])
    return {
        "pokedemo_architecture": config.get("architecture", "pokedemo.models.Classifier"),
        "architecture": layout.architecture,
        "num_classes": int(config["num_classes"]),
        "num_features": int(config.get("feature_dim") or 0) or None,
        "label_names": list(config["class_names"]),
        "pretrained_cfg": {
            "tag": "pokedemo",
            "custom_load": False,
            "hf_hub_filename": TIMM_WEIGHTS_FILE,  # timm's tensor names; model.safetensors keeps pokedemo's
            "input_size": [3, size, size],
            "fixed_input_size": False,
            "interpolation": "bilinear",  # pokedemo's preprocessing: shorter side to size, centre crop
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(config["mean"]),
            "std": list(config["std"]),
            "num_classes": int(config["num_classes"]),
            "first_conv": layout.first_conv,
            "classifier": layout.classifier,
        },
    }


def timm_state_dict(state: dict[str, Any], layout: TimmLayout) -> dict[str, Any]:
    """pokedemo's ``features.*`` + ``head.*`` tensors under timm's names."""
    out = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    out[f"{layout.classifier}.weight"] = state["head.weight"]
    out[f"{layout.classifier}.bias"] = state["head.bias"]
    return out


def timm_weights(loaded: Any, path: Path) -> TimmLayout | None:
    """Write the weights in timm's layout when timm builds this backbone with exactly these tensors."""
    layout = TIMM_LAYOUTS.get(loaded.config["backbone"])
    if layout is None:
        return None
    try:
        import timm
    except ImportError:
        return None
    state = timm_state_dict(loaded.model.state_dict(), layout)
    expected = timm.create_model(layout.architecture, pretrained=False, num_classes=int(loaded.config["num_classes"]))
    shapes = {key: tuple(value.shape) for key, value in expected.state_dict().items()}
    if shapes != {key: tuple(value.shape) for key, value in state.items()}:
        return None  # a timm version with other names: publish pokedemo's files only
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path),
              metadata={"format": "pt", "producer": "pokedemo"})
    return layout


def write_context(action: str, ref, token: str | None):
    """The context of a write to the Hub (push, dataset push, Space deploy): refused at once, with one line,
    when offline or without a token, before anything is sent."""
    if offline_mode():
        raise HubError(_offline_message(_context(action, ref, None)))
    token = _effective_token(token)
    if not token:
        raise HubError(_no_token_message())
    return _context(action, ref, token)
