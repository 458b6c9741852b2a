"""pokedemo: an interactive demo of transfer learning on images.

Keep this module light: importing the package must not import torch, gradio or load any model.
"""

import os as _os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting are disastrous when the cores are shared (the app serves predictions
# while it trains; a Space shares its few vCPUs): training steps get several times slower under load, and
# passive waiting costs nothing when idle (figures in BENCHMARKS.md). Only effective if set before torch is
# imported, which is why it lives here; an explicit user setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
