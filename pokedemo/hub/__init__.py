"""Everything pokedemo does with the Hugging Face Hub, behind one public API.

- ``client``: settings (endpoint, cache, offline switches), token, repo ids, one-line token-free errors;
- ``models``: push a checkpoint (with its ``card``) and pull one back, in a layout timm also reads;
- ``datasets``: ``hf://datasets/...`` as a local folder of class folders, and pushing a dataset;
- ``space``: deploying the app as a Space.

Callers import from ``pokedemo.hub``; the submodules import each other's public names only. huggingface_hub
itself is imported when a function needs it, not here.
"""

from pokedemo.hub.card import CARD_FILE, TIMM_WEIGHTS_FILE, build_model_card
from pokedemo.hub.client import (
    HubError,
    RepoRef,
    downloads_disabled,
    hub_cache_dir,
    hub_endpoint,
    looks_like_repo_id,
    offline_mode,
    one_line,
    parse_repo_ref,
    scrub,
    written_as_repo_id,
)
from pokedemo.hub.limits import DownloadLimits, DownloadTooLarge, download_limits, human_size
from pokedemo.hub.datasets import DataSource, is_hub_dataset, is_hub_download, open_data, part_of, push_dataset
from pokedemo.hub.models import (
    OnnxExport,
    PushResult,
    download_checkpoint,
    push_checkpoint,
    push_checkpoint_details,
)
from pokedemo.hub.space import deploy_space

__all__ = [
    "CARD_FILE",
    "TIMM_WEIGHTS_FILE",
    "DataSource",
    "DownloadLimits",
    "DownloadTooLarge",
    "HubError",
    "OnnxExport",
    "PushResult",
    "RepoRef",
    "build_model_card",
    "deploy_space",
    "download_checkpoint",
    "download_limits",
    "downloads_disabled",
    "hub_cache_dir",
    "hub_endpoint",
    "human_size",
    "is_hub_dataset",
    "is_hub_download",
    "looks_like_repo_id",
    "offline_mode",
    "one_line",
    "open_data",
    "parse_repo_ref",
    "part_of",
    "push_checkpoint",
    "push_checkpoint_details",
    "push_dataset",
    "scrub",
    "written_as_repo_id",
]
