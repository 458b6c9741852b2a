"""pokedemo: an interactive demo of transfer learning on images.

Importing the package does nothing: it imports neither torch nor gradio, loads no model and changes no
environment variable. Process-wide settings are made where a process starts (``pokedemo.startup``).
"""

__version__ = "0.1.0"
