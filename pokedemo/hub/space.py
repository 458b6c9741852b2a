"""Deploy the app as a Hugging Face Space: ``python -m pokedemo deploy-space --repo-id NAMESPACE/NAME``.

A plain ``git push`` of this repository to a Space is refused by the Hub, because the bundled images and the
starter's ``.safetensors`` are binary files outside LFS/Xet. ``huggingface_hub``'s ``upload_folder`` stores
them the Hub's way. The Space gets exactly what it needs to run with zero configuration: ``app.py``, the
``pokedemo`` package, ``requirements.txt``, a README with the Space's front matter, the bundled data and the
starter model; no tests, caches, local runs or git metadata. Files from an earlier deploy that are no longer
part of it are deleted in the same commit, so the Space always matches the checkout it was deployed from.

Hub settings, token handling and one-line errors are those of ``pokedemo.hub.client``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from pokedemo.config import BUNDLED_DATA, PROJECT_ROOT, STARTER_CHECKPOINT
from pokedemo.hub.client import HubError, check_can_write, hub_api, hub_errors, parse_repo_ref, write_context

SPACE_FILES = ("app.py", "requirements.txt")
SPACE_FOLDERS = ("pokedemo", BUNDLED_DATA, STARTER_CHECKPOINT)
_SKIPPED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".ipynb_checkpoints"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".pyi")
README = "README.md"


def space_files(root: str | os.PathLike = PROJECT_ROOT) -> dict[str, Path]:
    """Path in the Space → local file, for everything the Space needs (README excluded: it is generated)."""
    root = Path(root)
    files: dict[str, Path] = {}
    for name in SPACE_FILES:
        if not (root / name).is_file():
            raise HubError(f"cannot deploy: {root / name} is missing")
        files[name] = root / name
    for folder in SPACE_FOLDERS:
        if not (root / folder).is_dir():
            raise HubError(f"cannot deploy: {root / folder} is missing")
        for dirpath, dirnames, filenames in os.walk(root / folder):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith("."))
            for filename in sorted(filenames):
                if not filename.startswith(".") and not filename.endswith(_SKIPPED_SUFFIXES):
                    path = Path(dirpath) / filename
                    files[path.relative_to(root).as_posix()] = path
    return files


def gradio_version(root: str | os.PathLike = PROJECT_ROOT) -> str:
    """The gradio pin of requirements.txt (the Space installs sdk_version), else the installed version."""
    text = (Path(root) / "requirements.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^\s*gradio\s*==\s*([\w.]+)", text, flags=re.MULTILINE)
    if pinned:
        return pinned.group(1)

    return version("gradio")


def space_readme(repo_id: str, root: str | os.PathLike = PROJECT_ROOT) -> str:
    """The Space's README: the front matter the Hub reads to build it, and a few lines for visitors."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"""---
title: Pokédemo
emoji: ⚡
colorFrom: yellow
colorTo: red
sdk: gradio
sdk_version: {gradio_version(root)}
python_version: "{python}"
app_file: app.py
pinned: false
short_description: Train, compare and try an image classifier, in the browser
---

# Pokédemo

Transfer learning on images, live: train a classifier on the bundled Pokémon pictures (or your own `.zip`),
compare a pretrained network with one trained from scratch, and try any picture on the bundled starter model.

Deployed with `python -m pokedemo deploy-space --repo-id {repo_id}`. To serve your own model instead of the
starter, set the Space variable `POKEDEMO_MODEL` to its Hub repo id (a model pushed with
`python -m pokedemo push`); with many visitors, also set `POKEDEMO_THREADS=1`.
"""


def stage_space(folder: Path, repo_id: str, root: str | os.PathLike = PROJECT_ROOT) -> list[str]:
    """Write the Space's files into ``folder`` (hard links where possible); returns their paths in the Space."""
    files = space_files(root)
    for rel, source in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, target)
    (folder / README).write_text(space_readme(repo_id, root), encoding="utf-8")
    return sorted([*files, README])


def deploy_space(repo_id: str, *, private: bool = False, hardware: str | None = None, token: str | None = None,
                 root: str | os.PathLike = PROJECT_ROOT, commit_message: str | None = None) -> str:
    """Create the Space if needed (gradio SDK) and upload the app into it; returns the Space's URL.

    Raises HubError with one line for anything the user can fix (token, rights, network, visibility).
    """
    ref = parse_repo_ref(repo_id, allow_revision=False)
    ctx = write_context("deploy the Space", ref, token)
    with hub_errors(ctx), tempfile.TemporaryDirectory(prefix="pokedemo-space-") as staging:
        api = hub_api(ctx)
        check_can_write(api, ctx)
        url = _ensure_space(api, ref.repo_id, private)
        if hardware:
            api.request_space_hardware(ref.repo_id, hardware)
        stage_space(Path(staging), ref.repo_id, root)
        api.upload_folder(repo_id=ref.repo_id, repo_type="space", folder_path=staging, delete_patterns="*",
                          commit_message=commit_message or "Deploy pokedemo")
    return url


def _ensure_space(api, repo_id: str, private: bool) -> str:
    """The Space's URL, created when missing. An existing Space keeps its visibility: nothing is uploaded
    publicly that was meant to be private."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.space_info(repo_id)
    except RepositoryNotFoundError:  # missing, or someone else's private Space: creating it says which
        return str(api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True))
    if private and not info.private:
        raise HubError(f"the Space {repo_id} already exists and is public; nothing was uploaded because --private "
                       "was asked (make it private on the Hub, or deploy without --private)")
    return f"{api.endpoint}/spaces/{repo_id}"
