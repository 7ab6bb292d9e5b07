"""`dora-hf space`: the demo Space's page, served on this machine.

The same page as the Hub's Space (`spaces/dora-tracks/app.py` calls the same `serve`): upload a
clip, pick a model, see the objects it discovers and tracks. The model defaults to
`$DORA_SPACE_MODEL`, else the main job's export `./dora-wt-vits16-demo`, else the published model.
Needs the `space` extra (gradio).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._arguments import at_least
from ..errors import DoraUserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="model folder or hub id shown first (default: $DORA_SPACE_MODEL, ./dora-wt-vits16-demo, else the published model)",
    )
    parser.add_argument("--example", type=Path, action="append", default=None, help="a video offered as an example (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=at_least(1), default=None, help="port (default: gradio's, 7860 or the next free one)")


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise DoraUserError("the page needs gradio: pip install 'dora-hf[space]'") from err
    from .app import serve

    serve(args.model, args.example, host=args.host, port=args.port)
    return 0
