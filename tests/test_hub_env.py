"""The one reader of the Hugging Face settings (pokedemo.hub.client), shared by the Hub code and the weights."""

from __future__ import annotations

import os

import pytest
from huggingface_hub import constants

from pokedemo import hub, models
from pokedemo.hub import client


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "POKEDEMO_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


def test_cache_dir_is_read_when_called(clean_env, tmp_path):
    assert client.hub_cache_dir() == constants.HF_HUB_CACHE
    clean_env.setenv("HF_HOME", str(tmp_path / "home"))
    assert client.hub_cache_dir() == os.path.join(str(tmp_path / "home"), "hub")
    clean_env.setenv("HF_HUB_CACHE", "~/hub-cache")
    assert client.hub_cache_dir() == os.path.expanduser("~/hub-cache")
    assert hub.hub_cache_dir is client.hub_cache_dir and models.hub_cache_dir is client.hub_cache_dir


@pytest.mark.parametrize("value, on", [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False),
                                       ("", False), ("no", False)])
def test_hub_offline_switches_hub_requests_and_weight_downloads(clean_env, value, on):
    clean_env.setenv("HF_HUB_OFFLINE", value)
    assert hub.offline_mode() is on and models.downloads_disabled() is on


def test_pokedemo_offline_stops_weight_downloads_only(clean_env):
    clean_env.setenv("POKEDEMO_OFFLINE", "1")
    assert models.downloads_disabled() and not hub.offline_mode()


def test_huggingface_hubs_own_offline_flag_counts(clean_env):
    clean_env.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE was set when huggingface_hub loaded
    assert hub.offline_mode() and models.downloads_disabled()


def test_one_line_is_the_one_way_to_quote_a_message_or_an_error():
    assert client.one_line("a  b\n c\t") == "a b c"
    assert client.one_line(OSError("\n  disk   full \nsecond line"), first=True) == "disk full"
    assert client.one_line(OSError("disk full\nmore"), first=True, typed=True) == "OSError: disk full"
    assert client.one_line(ValueError(), first=True) == "ValueError"  # no message: its type names it
    assert hub.one_line is client.one_line and models.one_line is client.one_line
