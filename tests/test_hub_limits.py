"""Bounded Hub downloads against the local Hub stand-in with the real huggingface_hub client: a repo over the
limits is refused from its listing before any byte is written, a listing that understates the files is caught
while downloading (stopped, its files removed, earlier cached files kept), the limits come from the environment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from pokedemo.hub import (
    DownloadLimits, DownloadTooLarge, HubError, download_checkpoint, download_limits, hub_cache_dir, human_size,
    open_data,
)
from pokedemo.hub.datasets import download_dataset
from pokedemo.hub.client import RepoRef, read_context
from pokedemo.hub.limits import bounded_snapshot_download, check_listing


def fetch(repo_id: str, repo_type: str = "dataset", revision: str | None = None, **kwargs) -> Path:
    ctx = read_context("download", RepoRef(repo_id, revision), False)
    return bounded_snapshot_download(ctx, repo_type=repo_type, label=f"{repo_type} {repo_id}", **kwargs)


def cached_files(repo_id: str, repo_type: str = "dataset") -> list[str]:
    """Every file and link of the repo in the Hub cache, and its lock files (relative paths)."""
    name = f"{repo_type}s--{repo_id.replace('/', '--')}"
    cache = Path(hub_cache_dir())
    return sorted(str(p.relative_to(cache)) for folder in (cache / name, cache / ".locks" / name)
                  if folder.exists() for p in folder.rglob("*") if not p.is_dir())


def downloads_of(hub, repo_id: str) -> list[str]:
    return [r.path for r in hub.requests if "/resolve/" in r.path and repo_id in r.path]


SMALL = {"a/0.png": b"x" * 100, "b/0.png": b"y" * 100}


def test_dataset_over_the_size_limit_is_refused_from_its_listing(hub_env):
    hub_env.create_repo("alice/huge", kind="dataset", files=SMALL, listed={"data/train.parquet": 3_000_000_000})
    with pytest.raises(DownloadTooLarge) as err:
        fetch("alice/huge")
    message = str(err.value)
    assert "\n" not in message and "holds 3.0 GB, over this app's limit of 2.0 GB" in message
    assert "POKEDEMO_MAX_DATASET_BYTES" in message
    assert "nothing was downloaded" in message
    assert downloads_of(hub_env, "alice/huge") == [] and cached_files("alice/huge") == []


def test_dataset_over_the_file_limit_is_refused_from_its_listing(hub_env):
    listed = {f"c{i % 5}/{i:06d}.png": 10 for i in range(50_001)}  # 500 kB in all: only the count is too much
    hub_env.create_repo("alice/many", kind="dataset", files=SMALL, listed=listed)
    with pytest.raises(DownloadTooLarge, match="has 50,004 files, over this app's limit of 50,000"):
        fetch("alice/many")
    assert downloads_of(hub_env, "alice/many") == [] and cached_files("alice/many") == []


def test_model_limit_counts_only_the_files_the_download_fetches(hub_env):
    hub_env.create_repo("alice/model", files={"config.json": b"{}"}, listed={"model.safetensors": 1_500_000_000,
                                                                          "other/huge.bin": 9_000_000_000})
    with pytest.raises(DownloadTooLarge, match="holds 1.5 GB, over .* 1.0 GB for a model .*POKEDEMO_MAX_MODEL_BYTES"):
        fetch("alice/model", repo_type="model", allow_patterns=["config.json", "model.safetensors"])
    folder = fetch("alice/model", repo_type="model", allow_patterns=["config.json"])  # the big files are not asked
    assert (folder / "config.json").read_bytes() == b"{}"
    assert downloads_of(hub_env, "huge.bin") == []


def test_limits_come_from_the_environment(hub_env, monkeypatch):
    hub_env.create_repo("alice/small", kind="dataset", files=SMALL)
    monkeypatch.setenv("POKEDEMO_MAX_DATASET_BYTES", "150")
    with pytest.raises(DownloadTooLarge, match=r"holds 2\d\d B, over this app's limit of 150 B"):
        fetch("alice/small")
    monkeypatch.setenv("POKEDEMO_MAX_DATASET_BYTES", "1kb")
    monkeypatch.setenv("POKEDEMO_MAX_DATASET_FILES", "1")
    with pytest.raises(DownloadTooLarge, match="has 3 files, over this app's limit of 1 "):
        fetch("alice/small")
    monkeypatch.setenv("POKEDEMO_MAX_DATASET_FILES", "3")  # with the stand-in's .gitattributes
    assert (fetch("alice/small") / "a" / "0.png").read_bytes() == SMALL["a/0.png"]
    monkeypatch.setenv("POKEDEMO_MAX_MODEL_BYTES", "lots")
    with pytest.raises(HubError, match="POKEDEMO_MAX_MODEL_BYTES='lots' is not a size"):
        download_limits("model")


def test_defaults_fit_a_free_space(monkeypatch):
    for name in ("DATASET", "MODEL"):
        for what in ("BYTES", "FILES"):
            monkeypatch.delenv(f"POKEDEMO_MAX_{name}_{what}", raising=False)
    assert download_limits("dataset") == DownloadLimits("dataset", 2_000_000_000, 50_000)
    assert download_limits("model") == DownloadLimits("model", 1_000_000_000, 1000)


def test_understated_listing_is_stopped_while_downloading_and_its_files_removed(hub_env, monkeypatch):
    """The listing claims 10 bytes per file, the files hold 1500: the download passes the check, is stopped at
    the chunk that crosses the limit, and what it wrote is removed; the snapshot cached earlier stays whole."""
    repo = hub_env.create_repo("alice/liar", kind="dataset", files=SMALL)
    first = fetch("alice/liar")
    kept = cached_files("alice/liar")
    big = {f"c{k}/{k}.png": bytes([k]) * 1500 for k in range(3)}
    repo.add_commit("main", "bigger", {**repo.resolve("main").files, **big})
    repo.listed.update({path: 10 for path in big})
    monkeypatch.setenv("POKEDEMO_MAX_DATASET_BYTES", "2000")
    with pytest.raises(DownloadTooLarge) as err:
        fetch("alice/liar")
    assert "stopped downloading" in str(err.value) and "partial files were removed" in str(err.value)
    assert downloads_of(hub_env, "/c") != []  # it did start downloading
    assert cached_files("alice/liar") == kept  # only the first snapshot's files, all of them
    assert (first / "a" / "0.png").read_bytes() == SMALL["a/0.png"]


def test_offline_uses_the_cache_without_asking_the_hub(hub_env, monkeypatch):
    hub_env.create_repo("alice/cached", kind="dataset", files=SMALL)
    folder = fetch("alice/cached")
    monkeypatch.setenv("POKEDEMO_MAX_DATASET_BYTES", "1")  # a listing check would refuse; offline none is made
    before = len(hub_env.requests)
    assert fetch("alice/cached", local_files_only=True, revision=folder.name) == folder
    assert len(hub_env.requests) == before


def test_human_size():
    assert [human_size(n) for n in (999, 12_345_678, 2_000_000_000)] == ["999 B", "12.3 MB", "2.0 GB"]


# ------------------------------------------------------------------------------- through pokedemo.hub's API


def test_hub_datasets_and_models_are_bounded(hub_env):
    hub_env.create_repo("alice/huge-set", kind="dataset", files=SMALL, listed={"train.parquet": 3_000_000_000})
    with pytest.raises(DownloadTooLarge, match=r"^hf://datasets/alice/huge-set holds 3.0 GB, over"):
        open_data("hf://datasets/alice/huge-set")
    hub_env.create_repo("alice/huge-model", files={"config.json": b"{}"}, listed={"model.safetensors": 2_000_000_000})
    with pytest.raises(DownloadTooLarge, match=r"^model repo alice/huge-model holds 2.0 GB, over"):
        download_checkpoint("alice/huge-model")
    assert downloads_of(hub_env, "/huge-") == []
    assert cached_files("alice/huge-set") == [] and cached_files("alice/huge-model", "model") == []


def test_token_false_never_sends_the_servers_token(hub_env, monkeypatch):
    owner = hub_env.add_user("owner")
    monkeypatch.setenv("HF_TOKEN", owner)  # the server's own token, e.g. a Space secret
    hub_env.create_repo("owner/private-set", private=True, kind="dataset", files=SMALL)
    hub_env.create_repo("owner/private-model", private=True, files={"config.json": b"{}"})
    start = len(hub_env.requests)
    with pytest.raises(HubError, match="dataset repo owner/private-set not found"):
        open_data("hf://datasets/owner/private-set", token=False)
    with pytest.raises(HubError, match="model repo owner/private-model not found"):
        download_checkpoint("owner/private-model", token=False)
    assert hub_env.requests[start:] and not any(r.authorized for r in hub_env.requests[start:])
    assert (download_dataset(RepoRef("owner/private-set")) / "a" / "0.png").is_file()  # None: HF_TOKEN is used


# ------------------------------------------------------------------------ a caller's own folder and disk share


def in_folder(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def test_a_download_goes_to_the_callers_folder_within_its_budget(hub_env, tmp_path):
    """A dataset given a cache folder and a budget lands there and nowhere else; files of the commit already
    there cost nothing the next time, so reopening a download never needs its size again."""
    hub_env.create_repo("alice/budget", kind="dataset", files=SMALL)
    mine = tmp_path / "visitor" / "hub"
    source = open_data("hf://datasets/alice/budget", token=False, cache_dir=mine, budget=1_000)
    assert source.root.is_relative_to(mine) and (source.root / "a" / "0.png").read_bytes() == SMALL["a/0.png"]
    assert cached_files("alice/budget") == []  # not in the normal Hub cache
    downloads = len(downloads_of(hub_env, "alice/budget"))
    again = open_data("hf://datasets/alice/budget", token=False, cache_dir=mine, budget=0)
    assert again.root == source.root and len(downloads_of(hub_env, "alice/budget")) == downloads


def test_a_download_bigger_than_the_budget_is_refused_from_its_listing(hub_env, tmp_path):
    hub_env.create_repo("alice/over-budget", kind="dataset", files=SMALL, listed={"c/big.png": 5_000_000})
    hub_env.create_repo("alice/model-over", files={"config.json": b"{}"}, listed={"model.safetensors": 3_000_000})
    mine = tmp_path / "hub"
    with pytest.raises(DownloadTooLarge) as err:
        open_data("hf://datasets/alice/over-budget", token=False, cache_dir=mine, budget=2_000_000)
    assert str(err.value) == ("hf://datasets/alice/over-budget needs 5.0 MB of disk space, more than the 2.0 MB left "
                              "of the share its downloads may use; nothing was downloaded")
    with pytest.raises(DownloadTooLarge, match=r"^model repo alice/model-over needs 3.0 MB .* the 1.0 MB left"):
        download_checkpoint("alice/model-over", token=False, cache_dir=mine, budget=1_000_000)
    assert downloads_of(hub_env, "-over") == [] and in_folder(mine) == []


def test_a_download_that_grows_past_the_budget_is_stopped_and_removed(hub_env, tmp_path):
    """The listing says 10 bytes a file, the files hold 1500: within the limits, not within a 2000-byte budget."""
    big = {f"c{k}/{k}.png": bytes([k]) * 1500 for k in range(3)}
    repo = hub_env.create_repo("alice/grows", kind="dataset", files={**SMALL, **big})
    repo.listed.update({path: 10 for path in big})
    mine = tmp_path / "hub"
    with pytest.raises(DownloadTooLarge) as err:
        open_data("hf://datasets/alice/grows", token=False, cache_dir=mine, budget=2_000)
    assert str(err.value).startswith("stopped downloading hf://datasets/alice/grows: it grew past the 2.0 kB left")
    assert downloads_of(hub_env, "alice/grows") != []  # it did start downloading
    assert in_folder(mine) == ["CACHEDIR.TAG"]  # huggingface_hub's tag of a cache folder; nothing of the repo


def test_a_listing_over_the_limits_is_refused_before_the_disk_is_looked_at():
    listing = [SimpleNamespace(rfilename=f"{i}.png", size=10, lfs=None) for i in range(5)]

    def present(name: str) -> bool:
        raise AssertionError(f"looked for {name} on disk")

    limits = download_limits("dataset")
    with pytest.raises(DownloadTooLarge, match="has 5 files"):
        check_listing(listing, replace(limits, max_files=4), "repo", budget=10**9, present=present)
    found = check_listing(listing, limits, "repo", budget=10**9, present=lambda name: name == "0.png")
    assert (found.files, found.bytes, found.new_bytes) == (5, 50, 40)
