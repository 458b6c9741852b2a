"""What a pokedemo process sets when it starts (the app, the CLI, the benchmark), before torch is imported.

OpenMP threads that spin while waiting are disastrous when the cores are shared (the app serves predictions
while it trains; a Space shares its few vCPUs): training steps get several times slower under load, while
passive waiting costs nothing when idle (figures in BENCHMARKS.md). OpenMP reads the policy once, when torch
loads it, so each entry point calls ``set_thread_policy`` before anything imports torch; an explicit user
setting wins. Importing ``pokedemo`` itself changes nothing.
"""

from __future__ import annotations

import os


def set_thread_policy() -> None:
    """Passive OpenMP waiting for this process and its children, unless the user chose a policy."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
