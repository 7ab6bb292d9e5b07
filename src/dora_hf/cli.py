"""`dora-hf` command line: thin wiring of the package's subcommands.

Each subcommand lives in its own module that exposes ``add_arguments(parser)`` and
``run(args) -> int``; this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DoraUserError

# name -> (module, one-line help). Modules are imported when the parser is built.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert-reference": ("dora_hf.convert", "convert a reference DoRA/DINO checkpoint (.pth) to a transformers folder"),
    "prepare-data": ("dora_hf.data.prepare", "decode long videos once into streamable parquet frame shards"),
    "verify-data": ("dora_hf.data.manifest", "check a prepared dataset's shards against its manifest (sizes, rows, sha256)"),
    "export": ("dora_hf.export", "export a training checkpoint's teacher as a transformers model folder"),
    "eval": ("dora_hf.evaluation.commands", "evaluate a frozen encoder: k-NN, linear probe, DAVIS-2017 J&F"),
    "visualize": ("dora_hf.evaluation.visualize", "draw the objects a model discovers and tracks through a video (GIF or PNG)"),
    "push": ("dora_hf.hub", "upload an exported model or a prepared dataset folder to the Hugging Face Hub"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dora-hf", description="DoRA for the Hugging Face stack")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
