"""Run pokedemo in a subprocess with training held at one batch, for tests that kill or interrupt a run.

    python tests/hold_at_batch.py HOLD_FILE EPOCH STEP SCRIPT [ARGS...]

SCRIPT is ``-m pokedemo`` style (``pokedemo``, run as ``python -m pokedemo ARGS``) or a path such as ``app.py``.
Before training batch (EPOCH, STEP) (1-based epoch, 0-based step) this process writes ``HOLD_FILE.reached`` and
then waits for as long as HOLD_FILE exists; later batches run freely. The test creates HOLD_FILE before starting
the process, waits for ``.reached`` (the run is now certainly in progress, on any machine), does what it tests
(SIGKILL, SIGINT, ...) and removes HOLD_FILE to let training go on. This is the subprocess form of the
``batch_gate`` fixture (conftest.py); both replace the engine's ``pokedemo.train.before_batch`` test hook.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path


def install(hold: Path, epoch: int, step: int) -> None:
    import pokedemo.train as engine

    def before_batch(at_epoch: int, at_step: int) -> None:
        if (at_epoch, at_step) != (epoch, step):
            return
        hold.with_name(hold.name + ".reached").write_text(f"{at_epoch} {at_step}\n")
        while hold.exists():  # a plain sleep loop: signal handlers (SIGINT → stop flag) still run meanwhile
            time.sleep(0.02)

    engine.before_batch = before_batch


def main() -> None:
    hold, epoch, step, script, *args = sys.argv[1:]
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    install(Path(hold), int(epoch), int(step))
    if script == "pokedemo":
        sys.argv = ["pokedemo", *args]
        runpy.run_module("pokedemo", run_name="__main__", alter_sys=True)
    else:
        sys.argv = [script, *args]
        runpy.run_path(str(repo / script), run_name="__main__")


if __name__ == "__main__":
    main()
