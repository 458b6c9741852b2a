"""How fast an oversized Hub repo is refused, and that nothing is written: the real huggingface_hub client
against the local stand-in Hub (tests/hub_server.py), three calls per repo.

    python benchmarks/hub_limits_bench.py

Prints one line per repo: the seconds of each call, the files written in the Hub cache, and the refusal. The
stand-in serves on 127.0.0.1 from a process of its own (as the Hub is another machine), so a call's time is
the app's check plus the stand-in building the listing (~10 MB of JSON for 100,000 files) in Python.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

REPOS = {  # label: (repo type, the files its listing claims beside two small real ones, path: bytes)
    "dataset, one 100 GB file": ("dataset", {"data/train.parquet": 100_000_000_000}),
    "dataset, 100,003 files": ("dataset", {f"c{i % 5}/{i:06d}.png": 10 for i in range(100_000)}),
    "model, model.safetensors 2 GB": ("model", {"model.safetensors": 2_000_000_000}),
}


def files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def refuse(kind: str, repo_id: str, cache: Path) -> str:
    """The app's own call for this kind of repo, downloading into ``cache``; returns the refusal's one line."""
    from pokedemo.hub import DownloadTooLarge, download_checkpoint, open_data

    try:
        if kind == "dataset":
            open_data(f"hf://datasets/{repo_id}", cache_dir=cache)
        else:
            download_checkpoint(repo_id, cache_dir=cache)
    except DownloadTooLarge as err:
        return str(err)
    raise SystemExit(f"{repo_id} was not refused")


def serve(repos: dict[str, tuple[str, dict[str, int]]], conn) -> None:
    """The stand-in Hub with ``repos`` (repo id: kind, claimed files), until ``conn`` says stop."""
    from hub_server import FakeHub

    with FakeHub() as hub:
        for repo_id, (kind, listed) in repos.items():
            hub.create_repo(repo_id, kind=kind, files={"a/0.png": b"x" * 100, "b/0.png": b"y" * 100},
                            listed=listed)
        conn.send(hub.url)
        conn.recv()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hub-limits-bench-"))
    os.environ.update(HF_HOME=str(home / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        os.environ.pop(name, None)
    repos = {f"bench/repo{i}": spec for i, spec in enumerate(REPOS.values())}
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(repos, theirs), daemon=True)
    server.start()
    os.environ["HF_ENDPOINT"] = ours.recv()
    try:
        for label, (repo_id, (kind, _)) in zip(REPOS, repos.items()):
            seconds, message = [], ""
            for _ in range(args.calls):
                start = time.perf_counter()
                message = refuse(kind, repo_id, home / "cache")
                seconds.append(time.perf_counter() - start)
            print(f"{label}: {' / '.join(f'{s:.2f}' for s in seconds)} s; files written "
                  f"{files_under(home / 'cache')}; {message}")
    finally:
        ours.send("stop")
        server.join()


if __name__ == "__main__":
    main()
