"""Which checkpoint a model reference means: the one place a run folder, a run name or a Hub repo id becomes a
local checkpoint folder. The CLI (``--checkpoint``), ``Predictor.load``/``get_predictor`` and the app's model
pickers all ask ``resolve_model``, once per reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pokedemo.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from pokedemo.hub import download_checkpoint, hub_cache_dir, looks_like_repo_id


def resolve_model(reference: str | os.PathLike, *, root: str | os.PathLike | None = None,
                  only_inside: Sequence[str | os.PathLike] = (), hub: bool = True,
                  token: str | None = None) -> Path:
    """The local checkpoint folder ``reference`` names, in this order:

    - a run folder (or its ``config.json`` / ``model.safetensors``), absolute or relative to the working
      directory;
    - a run name under ``root`` (the checkpoint root);
    - a Hub repo id ``NAMESPACE/NAME[@REVISION]``: downloaded into the Hub cache (a cached snapshot offline)
      and checked to be a pokedemo model.

    ``only_inside``: local folders must lie inside one of these folders (the app loads nothing else); a Hub
    download is allowed unless ``hub`` is False. Raises CheckpointError (one line) or HubError.
    """
    text = str(reference).strip()
    found = _local_folders(text, root)
    allowed = [f for f in found if _inside(f, only_inside)] if only_inside else found
    if allowed:
        return allowed[0]
    if hub and looks_like_repo_id(text):
        return download_checkpoint(text, token=token)
    named = found + ([Path(text)] if Path(text).is_absolute() else [])
    if only_inside and any(not _inside(path, only_inside) for path in named):
        raise CheckpointError(f"{text} is not one of this app's checkpoints")
    raise CheckpointError(
        f"checkpoint not found: {text} (give a run directory, a run name or a Hub repo id NAMESPACE/NAME)")


def in_hub_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model downloaded from the Hub (a snapshot in the Hub cache)."""
    return _inside(Path(path), [hub_cache_dir()])


def _local_folders(text: str, root: str | os.PathLike | None) -> list[Path]:
    """Existing folders ``text`` may name: itself (the run folder of a named config.json or weights file), then
    the run of that name under ``root``."""
    if not text:
        return []
    path = Path(text).expanduser()
    candidates = [path.parent if path.name in (CONFIG_FILE, WEIGHTS_FILE) and path.is_file() else path]
    if root is not None and not path.is_absolute():
        candidates.append(Path(root) / path)
    return [c for c in candidates if c.is_dir()]


def _inside(path: Path, folders: Sequence[str | os.PathLike]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(folder).resolve()) for folder in folders)
