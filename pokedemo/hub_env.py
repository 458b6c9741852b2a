"""The Hugging Face settings as they are now: Hub endpoint, Hub cache folder and the offline switches.

ONE reader for each, used by the Hub code (``hub.py``, ``hub_data.py``) and the backbone weights (``models.py``).
They are read when called, not at import: huggingface_hub freezes its own copies (``constants``) when it is
imported, while tests and users change ``HF_HOME``/``HF_HUB_CACHE``/``HF_HUB_OFFLINE`` afterwards; callers pass
the values to huggingface_hub explicitly. Importing this module imports nothing from huggingface_hub.
"""

from __future__ import annotations

import os

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})  # the spellings huggingface_hub accepts too
OFFLINE_ENV_VARS = ("POKEDEMO_OFFLINE", "HF_HUB_OFFLINE")


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
