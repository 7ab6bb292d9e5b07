"""The options every `dora-hf eval` task takes to name and place the encoder, and the encoder they name.

Kept apart from `encoder` so that `dora-hf eval ... --help` imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .encoder import FrozenEncoder


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every `dora-hf eval` task takes to name and place the encoder."""
    parser.add_argument("--model", required=True, help="model folder or hub id (DoRA or a ViT-compatible encoder)")
    parser.add_argument("--model-revision", default=None, help="hub branch, tag or commit of the model")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def encoder_from_args(args: argparse.Namespace) -> FrozenEncoder:
    """The encoder the command line names, on its device (default: CUDA when there is one)."""
    import torch

    from .encoder import load_encoder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_encoder(args.model, revision=args.model_revision, device=device, progress=not args.no_progress)
