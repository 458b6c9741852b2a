"""Shared pytest fixtures.

Data comes with the repository: the bundled data/pokemon (or $POKEDEMO_TEST_DATA, to run the data tests on
another copy) and the edge-case files under tests/data/edge-cases (the one big file is generated here). A test
whose data folder is missing fails: nothing is skipped for missing data.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# One intra-op thread per process in tests: on a 2-core machine shared with other processes (browser, app
# server threads, subprocesses), 2 torch threads contend and run 10-40x slower. Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Gradio's file cache is content-addressed and shared by every app using one folder, and an app with
# delete_cache (the public mode) deletes all files it handed out when it closes: apps in the other xdist
# worker would lose the same picture's copy mid-test. Each test process gets a cache folder of its own.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="gradio-tests-", dir=os.environ.get("GRADIO_TEMP_DIR"))
atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) without an installed package
    sys.path.insert(0, str(REPO_ROOT))

from pokedemo.startup import set_thread_policy  # noqa: E402 - needs REPO_ROOT on sys.path

set_thread_policy()  # as the app, the CLI and the benchmark do when they start: before torch is imported

TEST_DATA_ENV = "POKEDEMO_TEST_DATA"
EDGE_CASES = REPO_ROOT / "tests" / "data" / "edge-cases"
HUGE_RGB = "huge-5000x5000-rgb.png"  # 25 Mpx: generated, too big to commit


def pytest_configure(config):
    config.addinivalue_line("markers", "app: needs gradio (the web app); skipped where gradio is not installed")


def gradio_installed() -> bool:
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in ("gradio", "gradio_client"))
    except (ImportError, ValueError):
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked ``app`` are skipped where gradio is not installed (e.g. a GPU machine set up for the engine
    only), so the engine and CLI tests run there. In CI gradio is a requirement, so they run (and must pass)."""
    if gradio_installed():
        return
    skip = pytest.mark.skip(reason="gradio is not installed: app test skipped (engine and CLI tests still run)")
    for item in items:
        if "app" in item.keywords:
            item.add_marker(skip)


def pokemon_data_path() -> Path:
    from pokedemo.config import bundled_data_dir

    return Path(os.environ.get(TEST_DATA_ENV) or bundled_data_dir())


def _required_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.fail(f"{what} not found at {path} (it ships with the repository; ${TEST_DATA_ENV} points the "
                    "tests at another copy)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def pokemon_dir() -> Path:
    return _required_dir(pokemon_data_path(), "pokemon dataset")


@pytest.fixture(scope="session")
def edge_cases_dir(tmp_path_factory) -> Path:
    """The committed edge-case files plus the generated 25 Mpx RGB PNG, in a session folder (read-only use)."""
    folder = tmp_path_factory.mktemp("edge-cases")
    for path in _required_dir(EDGE_CASES, "edge-case images").iterdir():
        shutil.copyfile(path, folder / path.name)
    blocks = np.random.default_rng(0).integers(0, 256, size=(50, 50, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize((5000, 5000), Image.Resampling.NEAREST).save(folder / HUGE_RGB, compress_level=1)
    return folder


# Class colours of the tiny dataset: a model tells the classes apart by colour alone (that is what training
# tests rely on), while each image's own random light/dark block pattern keeps the dhashes far apart.
TINY_COLOURS = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 40), (200, 50, 200), (40, 200, 210),
                (240, 130, 30), (120, 60, 170))


def make_tiny_dataset(root: Path, classes=("a", "b", "c"), per_class: int = 8, size: int = 24,
                      seed: int = 0) -> Path:
    """Write ROOT/<class>/<nnn>.png: per_class images of size x size px per class; returns ROOT.

    Class k is drawn in colour TINY_COLOURS[k] (learnable); every image is its own random 9x8 grid of
    brightness blocks (the grid dhash looks at), so no two images are exact or near duplicates (nearest
    dhash >= 12 bits apart over 90 trial datasets) and each class can be split when per_class >= 3.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for k, name in enumerate(classes):
        colour = np.array(TINY_COLOURS[k % len(TINY_COLOURS)], dtype=np.float64)
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shade = rng.uniform(0.4, 1.0, size=(8, 9, 1))
            blocks = np.clip(colour * shade + rng.uniform(-12, 12, size=(8, 9, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """Factory: tiny_dataset(root=None, **make_tiny_dataset kwargs) -> dataset folder (default: a fresh one
    under tmp_path). Defaults: classes a, b, c with 8 images each (24 images), 24 px PNGs."""
    made = []

    def make(root: Path | None = None, **kwargs) -> Path:
        made.append(root)
        return make_tiny_dataset(root if root is not None else tmp_path / f"tiny{len(made)}", **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A session-wide tiny dataset (3 classes × 8 images of 24 px); treat it as read-only."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny-data") / "data")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_data_dir: Path, tmp_path_factory) -> Path:
    """A real run directory: resnet18 from scratch, 2 epochs at 32 px on tiny_data_dir (a few seconds)."""
    from pokedemo.config import TrainConfig
    from pokedemo.events import Finished

    config = TrainConfig(backbone="resnet18", pretrained=False, epochs=2, batch_size=8, img_size=32, seed=0)
    events = list(train_folder(config, tiny_data_dir, tmp_path_factory.mktemp("tiny-runs")))
    assert isinstance(events[-1], Finished), events[-1]
    return Path(events[-1].run_dir)


def image_files(root: Path) -> list[Path]:
    """Image files under ROOT/<class>/ as a user sees them (visible files with an image suffix), counted
    independently of pokedemo's scanner so tests derive expected counts from the data instead of pinning them."""
    suffixes = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                  and len(p.relative_to(root).parts) > 1  # inside a class folder
                  and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts))


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def probability_tolerance(plan) -> dict:
    """``torch.testing.assert_close`` tolerances for probabilities the same model computes twice under one
    execution plan, e.g. in different batches: float32 rounding, or, under autocast (bfloat16/float16 on a CUDA
    GPU), that format's rounding (about 1e-3 on a probability)."""
    return {"rtol": 0, "atol": 1e-5} if plan.autocast_dtype is None else {"rtol": 0, "atol": 1e-2}


# ---------------------------------------------------------------- helpers shared by the app's test modules


def launch_local(demo, **options) -> str:
    """Launch ``demo`` in this process on a port Gradio picks; returns its URL.

    No port is chosen here: Gradio tries its port range itself and keeps the first one its server actually
    binds, so two test processes cannot race for one port (a bind-then-release "free port" could be taken by
    another process in between)."""
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, **options)
    return demo.local_url


def unused_port() -> int:
    """A port that was free a moment ago, for an app started in another process (which must be told its port).
    Another process may take it before the app binds it: ``start_app_process`` starts the app again on a fresh
    port when its log says so (Gradio's "Cannot find empty port"), so the race costs a retry, never a failure."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refused_port():
    """A 127.0.0.1 port that refuses connections for as long as the block runs: a socket bound to it that does
    not listen. Holding it keeps every other process from listening there (a released port could be taken)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def start_app_process(command, logs: Path, **popen) -> tuple:
    """Start ``command(port)`` (an app.py process told its port) and wait until it serves; returns
    (process, url, its log).

    The port is picked here, and another process may take it before the app binds it: the app then exits
    ("Cannot find empty port") and is started again on another port, so the race costs a retry, never a failure.
    Each attempt logs to its own file under ``logs``, so a lost race's traceback is not the served app's log. The
    app counts as serving once its own log names its URL (Gradio prints it when the server is up), never because
    something answers on that port: that could be another process's app. The 600 s only guard a hang.
    """
    import subprocess

    logs.mkdir(parents=True, exist_ok=True)
    env = {**popen.pop("env", os.environ), "PYTHONUNBUFFERED": "1"}  # the URL line reaches the log at once
    for _ in range(5):
        port = unused_port()
        log = logs / f"app-{len(list(logs.iterdir()))}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(command(port), stdout=handle, stderr=subprocess.STDOUT, env=env, **popen)
        url = f"http://127.0.0.1:{port}"

        def serving_or_gone() -> bool:
            lines = log.read_text(errors="replace").splitlines()
            return process.poll() is not None or any(
                "Running on local URL" in line and line.rstrip().endswith(f":{port}") for line in lines)

        assert wait_for(serving_or_gone, timeout=600, every=0.2), log.read_text()[-3000:]
        if process.poll() is None:
            return process, url + "/", log
        if "empty port" not in log.read_text():
            break
    pytest.fail(f"the app did not start: {log.read_text()[-3000:]}", pytrace=False)


# Seconds any one HTTP request of a test's gradio_client may take (httpx's default is 5 s, which an app still
# importing torch on a loaded 2-core machine can miss). A safety net only: tests wait on answers and events, and
# the queue's event stream carries a heartbeat every 15 s, so a long training never trips it.
CLIENT_TIMEOUT_S = 120


def app_client(url: str, downloads: Path | str | None = None):
    """A gradio_client.Client for the app at ``url``: quiet, no analytics, generous request timeouts; files it
    receives go to ``downloads`` (default: gradio_client's temporary folder)."""
    from gradio_client import Client

    options = {"download_files": str(downloads)} if downloads is not None else {}
    return Client(url, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT_S},
                  **options)


def wait_for(condition, timeout: float = 60.0, every: float = 0.1) -> bool:
    """Poll ``condition`` until it is true (True) or ``timeout`` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def train_folder(config, folder, out, **options):
    """Events of a run on a data folder as the CLI and the app start it: the folder's opening (its stages, or a
    Failed when it cannot be opened), then ``pokedemo.train.train`` on it."""
    from pokedemo.train import train
    from pokedemo.training_data import run_on

    return run_on(folder, config, lambda data: train(config, data, out, **options))


def compare_folder(config, folder, out, **options):
    """``train_folder`` for ``pokedemo.train.compare``."""
    from pokedemo.train import compare
    from pokedemo.training_data import run_on

    return run_on(folder, config, lambda data: compare(config, data, out, **options))


def tiny_run(data: Path, out: Path) -> Path:
    """A finished checkpoint trained directly with the engine (resnet18 scratch, 1 epoch at 32 px)."""
    from pokedemo.config import TrainConfig
    from pokedemo.events import Finished

    config = TrainConfig(backbone="resnet18", pretrained=False, epochs=1, batch_size=8, img_size=32)
    final = list(train_folder(config, data, out))[-1]
    assert isinstance(final, Finished), final
    return Path(final.run_dir)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, data folder, checkpoint root, first checkpoint, demo) of the app running in-process on a free port,
    one per test module."""
    from pokedemo.app import layout

    base = tmp_path_factory.mktemp("app")
    data = make_tiny_dataset(base / "data")
    root = base / "checkpoints"
    first = tiny_run(data, root)
    demo = layout.build_demo(checkpoint_root=root, data_dir=str(data))
    url = launch_local(demo, **layout.launch_options())
    try:
        yield url, data, root, first, demo
    finally:
        demo.close()


# ---------------------------------------------------------------- holding a training run at a batch


class BatchGate:
    """Stands in for the engine's ``pokedemo.train.before_batch`` hook: training that reaches batch
    (epoch, step) blocks there until ``release()``, so "a run is in progress" is a state the test controls on a
    slow CPU and a fast GPU alike. Once released, every batch runs freely (later runs included)."""

    # Guards against a hang only (a run that never reaches the batch): not a speed requirement.
    HANG_GUARD_S = 300

    def __init__(self, epoch: int = 1, step: int = 0):
        import threading

        self.at = (epoch, step)
        self.reached = threading.Event()
        self._released = threading.Event()
        self.arrivals = 0

    def __call__(self, epoch: int, step: int) -> None:
        if (epoch, step) != self.at:
            return
        self.arrivals += 1
        self.reached.set()
        self._released.wait()

    def wait_reached(self) -> None:
        assert self.reached.wait(self.HANG_GUARD_S), f"training never reached batch {self.at}"

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def batch_gate(monkeypatch):
    """Factory: batch_gate(epoch=1, step=0) -> an installed BatchGate; every gate is released at teardown so a
    failing test never leaves a training thread blocked."""
    import pokedemo.train as engine

    gates = []

    def install(epoch: int = 1, step: int = 0) -> BatchGate:
        gate = BatchGate(epoch, step)
        gates.append(gate)
        monkeypatch.setattr(engine, "before_batch", gate)
        return gate

    yield install
    for gate in gates:
        gate.release()


def hold_at_batch_command(hold: Path, epoch: int, step: int, *script_and_args: str) -> list[str]:
    """argv that runs ``python -m pokedemo ARGS`` ("pokedemo") or a script such as app.py in a subprocess held
    at batch (epoch, step) while the file ``hold`` exists (see tests/hold_at_batch.py); creates ``hold``."""
    hold.touch()
    return [sys.executable, str(Path(__file__).with_name("hold_at_batch.py")), str(hold), str(epoch), str(step),
            *script_and_args]


def reached_file(hold: Path) -> Path:
    return hold.with_name(hold.name + ".reached")


# ---------------------------------------------------------------- the local stand-in of the Hub API


@pytest.fixture(scope="module")
def fake_hub():
    from hub_server import FakeHub

    with FakeHub() as server:
        yield server
    assert server.errors == [], "the stand-in Hub failed on a request it should understand"


@pytest.fixture
def hub_env(fake_hub, tmp_path, monkeypatch):
    """Point pokedemo.hub at the stand-in with a fresh Hub cache and no ambient credentials."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # A login cached on a developer's machine must neither be used nor sent to the stand-in.
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return fake_hub
