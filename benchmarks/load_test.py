"""Load test (not a unit test): many concurrent gradio_client users predict while one training runs; or, with
``--public``, many visitors of a public-mode app at once, each in its own session.

    python benchmarks/load_test.py [--users 20] [--duration 60] [--data ../shared/data/pokemon]
    python benchmarks/load_test.py --public [--users 20] [--predictions 5] [--data ../shared/data/pokemon]

It starts the app (``app.py``) in a subprocess on a free port of 127.0.0.1 with a temporary checkpoints folder,
first making a checkpoint to predict with (a short efficientnet_lite0 training on the data, or ``--checkpoint``),
then, at once:
  * one client starts a training with the default options (efficientnet_lite0, pretrained) on the data;
  * USERS clients each predict images from the data in a loop for DURATION seconds.
It prints the number of predictions, the success rate, p50/p95/max latency, and whether the training finished
normally and how long it took. Bounded: only 127.0.0.1, at most --max-requests predictions, at most DURATION
seconds of load, and the training is given --train-timeout seconds before the app is shut down.

``--public`` starts the app in public mode (``POKEDEMO_PUBLIC=1``, the per-session folders in the temporary
folder) and lets USERS visitors in at once, each with its own ``gradio_client`` session (``public_visitor``):
train a short run of its own on the data (``--public-recipe``; the one training slot serves them in turn), then,
once every visitor's run exists, list its model pickers, try to predict with the next visitor's run, and predict
``--predictions`` pictures with its own. It prints the success rate (every request answered as it should be: the
run finished, the own run listed, the neighbour's run refused, the pictures labelled), p50/p95 of the requests
after training, the trainings' time in the queue and running, and the isolation count: how many visitors saw or
used another visitor's run (0 in a working public mode). ``drive_public`` runs it against any app URL (the tests
call it on an app in their own process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pokedemo.config import TrainConfig, resolve_device  # noqa: E402 - needs ROOT on sys.path
from pokedemo.events import Finished  # noqa: E402
from pokedemo.training_data import training_data  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pokemon"
HOST = "127.0.0.1"  # never anything else: this script must not load someone else's server
# A public visitor's run, as /train takes it after the data: backbone, pretrained, strategy, epochs, lr, batch size,
# image size, seed. Short (one epoch of the head at 64 px), so 20 visitors' runs in turn take minutes, not hours.
PUBLIC_RECIPE = ("efficientnet_lite0", True, "linear", 1, 0.002, 32, 64, 0)


@dataclass
class Results:
    users: int
    duration_s: float
    predictions: int = 0
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    training_finished: bool = False
    training_message: str = ""
    training_s: float | None = None
    predictions_during_training: int = 0
    app_cpu_s: float | None = None        # CPU seconds the app process used during the load phase
    clients_cpu_s: float | None = None    # CPU seconds this process (the 20 simulated users) used meanwhile

    def summary(self) -> dict:
        lat = sorted(self.latencies_s)
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
        return {
            "users": self.users, "load_seconds": round(self.duration_s, 1), "predictions": self.predictions,
            "success_rate": round(self.succeeded / self.predictions, 4) if self.predictions else None,
            "throughput_per_s": round(self.predictions / self.duration_s, 2) if self.duration_s else None,
            "latency_p50_s": _r(pick(0.50)), "latency_p95_s": _r(pick(0.95)), "latency_max_s": _r(lat[-1] if lat else None),
            "latency_mean_s": _r(statistics.fmean(lat) if lat else None),
            "predictions_during_training": self.predictions_during_training,
            "training_finished": self.training_finished, "training_seconds": _r(self.training_s),
            "training_result": self.training_message, "failures": self.failures[:5],
            "app_cpu_s": _r(self.app_cpu_s), "clients_cpu_s": _r(self.clients_cpu_s),
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (the value at rank q·n of the sorted list), None when empty."""
    ranked = sorted(values)
    return _r(ranked[min(len(ranked) - 1, int(q * len(ranked)))]) if ranked else None


@dataclass
class PublicResults:
    """What the visitors of a public-mode app met: every request's outcome, and who saw whose runs."""

    visitors: int
    requests: int = 0
    succeeded: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)     # of the requests after training
    training_s: list[float] = field(default_factory=list)      # /train, queue wait included
    runs: dict[int, str] = field(default_factory=dict)          # visitor → its run folder
    own_run_listed: int = 0                                     # visitors whose picker lists their own run
    saw_others: set[int] = field(default_factory=set)           # visitors who saw or used another's run
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ok: bool, problem: str = "", seconds: float | None = None) -> None:
        with self.lock:
            self.requests += 1
            self.succeeded += ok
            if seconds is not None:
                self.latencies_s.append(seconds)
            if not ok:
                self.failures.append(problem[:200])

    def summary(self) -> dict:
        return {
            "mode": "public", "visitors": self.visitors, "requests": self.requests,
            "success_rate": round(self.succeeded / self.requests, 4) if self.requests else None,
            "latency_p50_s": percentile(self.latencies_s, 0.50), "latency_p95_s": percentile(self.latencies_s, 0.95),
            "latency_max_s": _r(max(self.latencies_s, default=None)),
            "training_p50_s": percentile(self.training_s, 0.50), "training_max_s": _r(max(self.training_s, default=None)),
            "runs_trained": len(self.runs), "own_run_listed": self.own_run_listed,
            "isolation_breaches": len(self.saw_others), "failures": self.failures[:5],
        }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class-folder dataset (default: shared pokemon)")
    parser.add_argument("--users", type=int, default=20, help="concurrent predicting clients (max 64)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of prediction load (max 600)")
    parser.add_argument("--max-requests", type=int, default=5000, help="hard cap on predictions in total")
    parser.add_argument("--train-timeout", type=float, default=900.0, help="seconds the training may take in all")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="existing run to predict with (default: train efficientnet_lite0 for 1 epoch first)")
    parser.add_argument("--no-training", action="store_true", help="predictions only (a baseline)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    parser.add_argument("--public", action="store_true",
                        help="USERS visitors of a public-mode app at once, each in its own session (see above)")
    parser.add_argument("--predictions", type=int, default=5, help="--public: pictures each visitor predicts")
    args = parser.parse_args()
    if not 1 <= args.users <= 64 or not 1 <= args.duration <= 600 or args.max_requests < 1:
        parser.error("--users must be 1..64, --duration 1..600 s, --max-requests >= 1")
    if args.predictions < 0:
        parser.error("--predictions must be >= 0")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def make_checkpoint(data: Path, root: Path) -> Path:
    """A short real training (efficientnet_lite0, pretrained, 1 epoch) to predict with."""
    from pokedemo.train import train

    started = time.monotonic()
    config = TrainConfig(backbone="efficientnet_lite0", epochs=1)
    final = list(train(config, training_data(data, config), root))[-1]
    if not isinstance(final, Finished):
        sys.exit(f"could not make the checkpoint to predict with: {getattr(final, 'message', final)}")
    print(f"checkpoint for predictions: {final.run_dir} (test acc {final.test_acc:.1%}, "
          f"{time.monotonic() - started:.0f}s)", flush=True)
    return Path(final.run_dir)


def start_app(data: Path, checkpoints: Path, port: int, log: Path, **extra_env: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_TOKEN", "HUGGING_FACE"))}
    env.update(POKEDEMO_CHECKPOINTS=str(checkpoints), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               **extra_env)
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", HOST, "--port", str(port),
                                 "--data", str(data), "--checkpoints", str(checkpoints)],
                                cwd=ROOT, env=env, stdout=handle, stderr=handle, start_new_session=True)


def wait_until_serving(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the app exited with status {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit("the app did not start serving in time")


def client(url: str, folder: Path):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=str(folder))


def user_loop(url: str, images: list[Path], checkpoint: str, results: Results, lock: threading.Lock,
              deadline: float, training: threading.Event, workdir: Path, seed: int) -> None:
    """One user: predict random images until the deadline or the request cap; records every outcome."""
    from gradio_client import handle_file

    rng = random.Random(seed)
    try:
        me = client(url, workdir)
    except Exception as exc:  # noqa: BLE001 - a user that cannot connect is a failure to report
        with lock:
            results.predictions += 1
            results.failures.append(f"connect: {type(exc).__name__}: {exc}")
        return
    while time.monotonic() < deadline:
        with lock:
            if results.predictions >= MAX_REQUESTS[0]:
                return
            results.predictions += 1
        started = time.monotonic()
        try:
            label, caption, *_ = me.predict(handle_file(str(rng.choice(images))), checkpoint, api_name="/predict")
            ok, problem = bool(label and label.get("confidences")), caption
        except Exception as exc:  # noqa: BLE001
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        with lock:
            results.latencies_s.append(elapsed)
            results.succeeded += ok
            results.predictions_during_training += training.is_set()
            if not ok:
                results.failures.append(str(problem)[:200])


MAX_REQUESTS = [5000]


def run_training(url: str, data: Path, results: Results, training: threading.Event, workdir: Path,
                 timeout: float) -> None:

    # The values the app's sliders show on this machine (the device's defaults for size and epochs).
    cfg = TrainConfig(backbone="efficientnet_lite0").resolved(resolve_device("auto"))
    trainer = client(url, workdir)
    started = time.monotonic()
    training.set()
    try:
        job = trainer.submit(str(data), cfg.backbone, cfg.pretrained, cfg.strategy, cfg.epochs, cfg.lr,
                             cfg.batch_size, cfg.img_size, cfg.seed, api_name="/train")
        while not job.done() and time.monotonic() - started < timeout:
            time.sleep(0.5)
        if not job.done():
            results.training_message = f"did not finish within {timeout:.0f}s"
            trainer.predict(api_name="/stop")
            return
        text = job.outputs()[-1][4]
        results.training_finished = "Test accuracy" in text
        results.training_message = " ".join(text.split())[:200]
        results.training_s = time.monotonic() - started
    except Exception as exc:  # noqa: BLE001
        results.training_message = f"{type(exc).__name__}: {exc}"
    finally:
        training.clear()


# ------------------------------------------------------------------------------------------------ --public


def public_visitor(url: str, k: int, data: str, images: list[Path], results: PublicResults,
                   all_trained: threading.Barrier, predictions: int, recipe: tuple, workdir: Path) -> None:
    """Visitor ``k``: its own run, then (once every visitor has one) its pickers, the next visitor's run, and
    ``predictions`` pictures with its own run. Reaches ``all_trained`` whatever happens, so no visitor waits on
    one that failed."""
    try:
        me = client(url, workdir)
        train_own_run(me, k, data, recipe, results)
    except Exception as exc:  # noqa: BLE001 - a visitor that cannot connect or train is a failure to report
        results.record(False, f"visitor {k}: {type(exc).__name__}: {exc}")
        me = None
    finally:
        all_trained.wait()  # Barrier.timeout guards a hang; a broken barrier ends every visitor in error
    if me is not None and k in results.runs:
        check_isolation(me, k, images[0], results)
        predict_own(me, k, images, predictions, results)


def train_own_run(me, k: int, data: str, recipe: tuple, results: PublicResults) -> None:
    started = time.monotonic()
    outputs = me.predict(data, *recipe, api_name="/train")
    seconds = time.monotonic() - started
    finished = "Test accuracy" in (outputs[4] or "")
    results.record(finished, f"visitor {k}: training: {' '.join(str(outputs[4]).split())}")
    with results.lock:
        results.training_s.append(seconds)
        if finished:
            results.runs[k] = outputs[-3]["value"]  # the Predict picker, set to the new run


def check_isolation(me, k: int, picture: Path, results: PublicResults) -> None:
    """The visitor's pickers list its own run and no other visitor's; predicting ``picture`` with the next
    visitor's run is refused."""
    from gradio_client import handle_file

    others = {run for visitor, run in results.runs.items() if visitor != k}
    started = time.monotonic()
    picker, *_ = me.predict(None, None, None, api_name="/refresh_checkpoints")
    listed = {value for _, value in picker["choices"]}
    results.record(results.runs[k] in listed, f"visitor {k}: own run not listed", time.monotonic() - started)
    neighbour = next((results.runs[v] for v in sorted(results.runs) if v > k), next(iter(others), None))
    used = False
    if neighbour is not None:
        started = time.monotonic()
        label, caption, *_ = me.predict(handle_file(str(picture)), neighbour, api_name="/predict")
        used = bool(label)
        results.record(not used, f"visitor {k}: predicted with another visitor's run", time.monotonic() - started)
    with results.lock:
        results.own_run_listed += results.runs[k] in listed
        if listed & others or used:
            results.saw_others.add(k)


def predict_own(me, k: int, images: list[Path], predictions: int, results: PublicResults) -> None:
    from gradio_client import handle_file

    rng = random.Random(k)
    for _ in range(predictions):
        started = time.monotonic()
        try:
            label, caption, *_ = me.predict(handle_file(str(rng.choice(images))), results.runs[k], api_name="/predict")
            ok, problem = bool(label and label.get("confidences")), str(caption)
        except Exception as exc:  # noqa: BLE001
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        results.record(ok, f"visitor {k}: {problem}", time.monotonic() - started)


def drive_public(url: str, visitors: int, data: str, images: list[Path], *, predictions: int = 5,
                 recipe: tuple = PUBLIC_RECIPE, workdir: Path, timeout: float = 3600.0) -> PublicResults:
    """``visitors`` public visitors at once against the app at ``url`` (in public mode), each in its own session
    and download folder under ``workdir``; ``data`` as a visitor types it. Returns when every visitor is done
    (``timeout``: a guard against a hang, never a pace)."""
    results = PublicResults(visitors=visitors)
    all_trained = threading.Barrier(visitors, timeout=timeout)
    threads = [threading.Thread(target=public_visitor, daemon=True, name=f"visitor-{k}", args=(
        url, k, data, images, results, all_trained, predictions, recipe, workdir / f"visitor{k}"))
        for k in range(visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results


def start_public_app(data: Path, workdir: Path, port: int, log: Path) -> subprocess.Popen:
    """app.py in public mode: as on a Space, with its per-session folders under ``workdir``."""
    return start_app(data, workdir / "checkpoints", port, log, POKEDEMO_PUBLIC="1",
                     POKEDEMO_PUBLIC_DIR=str(workdir / "sessions"))


def main_public(args: argparse.Namespace) -> None:
    images = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:200]
    with tempfile.TemporaryDirectory(prefix="pokedemo-load-public-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        url = f"http://{HOST}:{port}/"
        proc = start_public_app(args.data, workdir, port, workdir / "app.log")
        try:
            wait_until_serving(url, proc)
            started = time.monotonic()
            results = drive_public(url, args.users, str(args.data), images, predictions=args.predictions,
                                   workdir=workdir, timeout=args.train_timeout * args.users)
            print(f"{args.users} visitors done after {time.monotonic() - started:.0f}s", flush=True)
        finally:
            stop_app(proc)
        log = (workdir / "app.log").read_text(errors="replace")
    report(summary_with_log(results, log), args.json)


# ------------------------------------------------------------------------------------------------ CPU


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive(url: str, args: argparse.Namespace, checkpoint: Path, workdir: Path, app_pid: int) -> Results:
    images = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:200]
    results, lock, training = Results(users=args.users, duration_s=args.duration), threading.Lock(), threading.Event()
    trainer = None
    if not args.no_training:
        trainer = threading.Thread(target=run_training, args=(url, args.data, results, training, workdir / "trainer",
                                                              args.train_timeout), daemon=True)
        trainer.start()
        time.sleep(1.0)  # the training is queued first, as when a class starts one and then tries Predict
    started = time.monotonic()
    cpu_before = (process_cpu_s(app_pid), own_cpu_s())
    deadline = started + args.duration
    users = [threading.Thread(target=user_loop, daemon=True, args=(
        url, images, str(checkpoint), results, lock, deadline, training, workdir / f"user{k}", k))
        for k in range(args.users)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join(timeout=args.duration + 120)
    results.duration_s = time.monotonic() - started
    results.app_cpu_s = process_cpu_s(app_pid) - cpu_before[0]
    results.clients_cpu_s = own_cpu_s() - cpu_before[1]
    print(f"load phase over after {results.duration_s:.0f}s; waiting for the training…", flush=True)
    if trainer is not None:
        trainer.join(timeout=args.train_timeout + 60)
    return results


def main() -> None:
    args = parse_args()
    MAX_REQUESTS[0] = args.max_requests
    if not args.data.is_dir():
        sys.exit(f"data folder not found: {args.data}")
    if args.public:
        main_public(args)
        return
    with tempfile.TemporaryDirectory(prefix="pokedemo-load-") as tmp:
        workdir = Path(tmp)
        checkpoints = workdir / "checkpoints"
        checkpoint = args.checkpoint.resolve() if args.checkpoint else make_checkpoint(args.data, checkpoints)
        if args.checkpoint:  # the app only loads checkpoints under its own folder

            checkpoint = Path(shutil.copytree(checkpoint, checkpoints / checkpoint.name))
        port = free_port()
        url = f"http://{HOST}:{port}/"
        proc = start_app(args.data, checkpoints, port, workdir / "app.log")
        try:
            wait_until_serving(url, proc)
            results = drive(url, args, checkpoint, workdir, proc.pid)
        finally:
            stop_app(proc)
        log = (workdir / "app.log").read_text(errors="replace")
    report(summary_with_log(results, log), args.json)


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def report(summary: dict, json_path: Path | None = None) -> None:
    """Print the summary as JSON (and write it to ``json_path``)."""
    print(json.dumps(summary, indent=2), flush=True)
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2) + "\n")


def summary_with_log(results: Results | PublicResults, log: str) -> dict:
    summary = results.summary()
    summary["cpu_cores"] = os.cpu_count()
    summary["tracebacks_in_app_log"] = log.count("Traceback")
    return summary


if __name__ == "__main__":
    main()
