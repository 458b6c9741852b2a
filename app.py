"""Launch the pokedemo app: ``python app.py [--host HOST] [--port PORT] [--share] [--data DIR] [--checkpoints DIR]
[--threads N]``.

On a Hugging Face Space (``SYSTEM=spaces`` or ``SPACE_ID`` set) the host and port are left to Gradio, which
reads ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` as set by the Space, and ``--share`` is ignored.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pokedemo.startup import set_thread_policy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Pokédemo: train, compare and try an image classifier.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for every interface); default 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port to listen on; default 7860")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--data", default=None,
                        help="dataset folder prefilled in the Train tab (default: $POKEDEMO_DATA, else the bundled "
                             "data/pokemon)")
    parser.add_argument("--checkpoints", default=None,
                        help="where runs are saved and listed (default: $POKEDEMO_CHECKPOINTS or checkpoints)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("POKEDEMO_THREADS", "0")),
                        help="torch threads per operation (default: all cores; 1 keeps predictions snappier "
                             "while a training runs with many users, see benchmarks/LOAD.md)")
    return parser.parse_args(argv)


def server_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch`` that decide where the app listens."""
    from pokedemo.app.public import on_spaces

    if on_spaces():
        return {}  # the Space sets GRADIO_SERVER_NAME/PORT; Gradio reads them
    return {"server_name": args.host, "server_port": args.port, "share": args.share}


def public_for(settings: dict[str, Any]) -> bool:
    """Public mode for these launch settings: on a Space, with --share, on a host other than loopback, or as
    POKEDEMO_PUBLIC says (``pokedemo.app.public.public_mode``)."""
    from pokedemo.app.public import public_mode

    return public_mode(settings.get("server_name"), bool(settings.get("share")))


def set_up_environment(args: argparse.Namespace) -> None:
    """Process-wide switches, set before Gradio, huggingface_hub and torch are imported (they read them then)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a teaching demo
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    set_thread_policy()
    if args.threads > 0:  # must happen before torch is imported (the engine loads in the background)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_up_environment(args)
    from pokedemo.app import build_demo, launch_options  # imports gradio: after --help has had its chance

    settings = server_settings(args)
    demo = build_demo(checkpoint_root=args.checkpoints, data_dir=args.data, public=public_for(settings))
    demo.launch(**launch_options(), **settings)


if __name__ == "__main__":
    main()
