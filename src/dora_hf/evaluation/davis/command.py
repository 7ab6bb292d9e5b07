"""`dora-hf eval davis`: DAVIS-2017 video object segmentation by label propagation, scored with J&F."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import DoraUserError
from ..model_arguments import add_model_arguments, encoder_from_args
from ..protocols import (
    DAVIS_SHORT_SIDE,
    PropagationSettings,
)
from ..results import EvalTask, add_output_arguments, metric, task_results

DAVIS = EvalTask("davis", "image-segmentation", "Video object segmentation (DAVIS-2017, label propagation)")


def add_davis_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval davis` and its options."""
    davis = tasks.add_parser("davis", help="DAVIS-2017 video object segmentation by label propagation (J&F)")
    add_model_arguments(davis)
    davis.add_argument("--davis-root", required=True, type=Path, help="folder with JPEGImages/, Annotations/, ImageSets/")
    davis.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default: val)")
    davis.add_argument("--resolution", default="480p")
    davis.add_argument("--sequences", nargs="+", default=None, help="evaluate only these sequences")
    davis.add_argument(
        "--short-side", type=int, default=DAVIS_SHORT_SIDE, help="frames are resized to this short side (default: 480)"
    )
    davis.add_argument(
        "--context-frames", type=int, default=PropagationSettings.context_frames,
        help="previous frames in the queue, besides the first (default: 20)",
    )
    davis.add_argument(
        "--top-k", type=int, default=PropagationSettings.top_k, help="source patches per target patch (default: 7)"
    )
    davis.add_argument(
        "--radius", type=int, default=PropagationSettings.radius,
        help="spatial neighbourhood in patches, 0 = none (default: 12)",
    )
    davis.add_argument("--temperature", type=float, default=PropagationSettings.temperature, help="(default: 0.7)")
    davis.add_argument("--save-masks", type=Path, default=None, help="also write the predicted masks as DAVIS PNGs here")
    add_output_arguments(davis, "eval-davis.json")
    davis.set_defaults(_eval=run_davis)


def run_davis(args: argparse.Namespace) -> dict:
    from .evaluate import BackbonePatchFeatures, evaluate_davis
    from .folder import read_davis

    try:
        settings = PropagationSettings(
            context_frames=args.context_frames, top_k=args.top_k, radius=args.radius, temperature=args.temperature
        )
    except ValueError as err:
        raise DoraUserError(str(err)) from err
    sequences = read_davis(args.davis_root, args.split, args.resolution, args.sequences)
    backbone = encoder_from_args(args)
    if args.short_side < backbone.patch_size:
        raise DoraUserError(f"--short-side {args.short_side} is smaller than the patch size {backbone.patch_size}")
    scores = evaluate_davis(
        sequences, BackbonePatchFeatures(backbone, args.short_side), settings, save_dir=args.save_masks,
        progress=not args.no_progress,
    )
    propagation = {
        "context_frames": settings.context_frames, "top_k": settings.top_k,
        "radius": settings.radius, "temperature": settings.temperature,
    }
    return task_results(
        DAVIS,
        backbone,
        dataset={
            "name": "davis-2017", "root": str(args.davis_root), "config": args.resolution,
            "split": args.split, "revision": None, "num_sequences": len(sequences),
        },
        metrics=[
            metric("jaccard_and_f", "J&F mean", scores["J&F"], propagation),
            metric("jaccard", "J mean", scores["J"], propagation),
            metric("f1", "F mean", scores["F"], propagation),
        ],
        settings={**propagation, "short_side": args.short_side, "features": "last-layer patch tokens"},
        details=scores,
    )
