"""The Gradio app over the pokedemo engine: Train, Predict and Compare tabs.

One module per job:

- ``layout.py``   tabs, panels, wiring, ``build_demo()``, ``launch_options()`` (imports Gradio)
- ``handlers.py`` ``DemoApp`` (the event handlers), ``JobRegistry``, streaming of engine events (imports Gradio)
- ``sources.py``  what the handlers read from the engine: datasets, checkpoints, backbones, Hub models
- ``views.py``    pure data: engine events → run state and plot frames, reports → pictures
- ``text.py``     every Markdown/HTML/caption/table the app shows

``views``, ``text`` and ``sources`` import without Gradio (tested), so this package's ``__init__`` imports no
Gradio either: ``build_demo`` and ``launch_options`` are loaded from ``layout`` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_demo", "launch_options"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pokedemo.app import layout

        return getattr(layout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
