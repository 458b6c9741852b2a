"""pokedemo: an interactive demo of transfer learning on images.

Keep this module light: importing the package must not import torch, gradio or load any model.
"""

__version__ = "0.1.0"
