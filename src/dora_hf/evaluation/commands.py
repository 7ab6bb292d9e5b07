"""`dora-hf eval knn|linear|davis|discovery|corloc|segmentation`: downstream evaluation of an encoder.

Each task lives in its folder with its command (`classification/`, `davis/`, `discovery/`,
`corloc/`, `segmentation/`): this file lists them and writes what they return, one way for all,
as a results JSON (`results.py`) that can be added to a model card's results table.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._moved import moved_attribute
from .classification.command import add_knn_parser, add_linear_parser
from .corloc.command import add_corloc_parser
from .davis.command import add_davis_parser
from .discovery.command import add_discovery_parser
from .results import write_results
from .segmentation.command import add_segmentation_parser

# The evaluation itself (torch, transformers, datasets, evaluate) is imported by the functions
# that run it, so that `dora-hf eval ... --help` and argument errors need none of them.
TASKS = (
    add_knn_parser, add_linear_parser, add_davis_parser, add_discovery_parser, add_corloc_parser, add_segmentation_parser,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="eval_task", metavar="TASK")
    tasks.required = True
    for add_task in TASKS:
        add_task(tasks)


def run(args: argparse.Namespace) -> int:
    """Run the chosen task, then write and print its results."""
    results = args._eval(args)
    path = write_results(results, args.out)
    for row in results["metrics"]:
        print(f"{row['name']}: {100 * row['value']:.2f}")
    print(f"results: {path}")
    return 0


def __getattr__(name: str) -> Any:
    # Each task's `run_*` lives in its folder now.
    return moved_attribute(__name__, name)
