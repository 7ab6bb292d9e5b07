"""`dora-hf` command line: thin wiring of the package's subcommands.

Each subcommand lives in its own module that exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them. Only the module of the subcommand being run
is imported, and those modules import torch, transformers and the like inside the functions
that need them, so `dora-hf --help`, every subcommand's ``--help`` and the commands that need
neither start without importing either (tests/test_cli_speed.py checks it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import DoraUserError

# name -> (module, one-line help). A module is imported only when its subcommand is chosen.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert-reference": ("dora_hf.publish.convert", "convert a reference DoRA/DINO checkpoint (.pth) to a transformers folder"),
    "prepare-data": ("dora_hf.prepare.command", "decode long videos once into streamable parquet frame shards"),
    "verify-data": ("dora_hf.dataset.manifest", "check a prepared dataset's shards against its manifest (sizes, rows, sha256)"),
    "export": ("dora_hf.publish.export", "export a training checkpoint's teacher as a transformers model folder"),
    "eval": ("dora_hf.evaluation.commands", "evaluate a frozen encoder: k-NN, linear probe, DAVIS-2017 J&F, object discovery"),
    "visualize": ("dora_hf.evaluation.visualize.command", "draw the objects a model discovers and tracks through a video (GIF or PNG)"),
    "push": ("dora_hf.publish.push", "upload an exported model, a prepared dataset or a Space folder to the Hugging Face Hub"),
    "space": ("dora_hf.space.command", "serve the demo page: upload a clip, see the objects a model discovers and tracks"),
}


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: the first argument that is not an option.

    The top-level parser has no options but ``--help``, so the first other argument is the
    subcommand (or an error argparse reports).
    """
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of `commands` (default: all of them, importing each module).

    Every subcommand is listed, so `dora-hf --help` and argparse's errors name them all; only
    those in `commands` get their module's arguments and `run`.
    """
    selected = SUBCOMMANDS.keys() if commands is None else set(commands)
    parser = argparse.ArgumentParser(prog="dora-hf", description="DoRA for the Hugging Face stack")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in selected:
            module = importlib.import_module(module_name)
            p.description = (module.__doc__ or help_text).strip().splitlines()[0]
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = chosen_command(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DoraUserError as err:
        print(f"dora-hf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dora-hf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
