"""`dora-hf eval discovery`: label-free object discovery on a static-camera video (tracked masks
against the moving foreground, `scoring`)."""

from __future__ import annotations

import argparse
import sys

from ..._arguments import at_least, non_negative_float
from ...errors import DoraUserError
from ..model_arguments import add_model_arguments, encoder_from_args
from ..protocols import (
    DiscoverySettings,
)
from ..results import EvalTask, add_output_arguments, metric, task_results

DISCOVERY = EvalTask("discovery", "image-segmentation", "Object discovery against moving foreground (no labels)")


def add_discovery_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval discovery` and its options."""
    discovery = tasks.add_parser(
        "discovery", help="label-free object discovery: tracked masks against a static-camera video's moving foreground"
    )
    discovery.add_argument("video", metavar="VIDEO", help="a static-camera video file")
    add_model_arguments(discovery)
    defaults = DiscoverySettings()
    discovery.add_argument("--clip-frames", type=at_least(2), default=defaults.clip_frames, help="frames per clip (default: 8)")
    discovery.add_argument(
        "--clip-step", type=at_least(1), default=defaults.clip_step, help="a clip starts every N sampled frames (default: 8)"
    )
    discovery.add_argument("--frame-step", type=at_least(1), default=1, help="take every N-th frame of the video (default: 1)")
    discovery.add_argument(
        "--start", type=at_least(0), default=0, help="first video frame read, e.g. to score only frames held out of training"
    )
    discovery.add_argument("--max-clips", type=at_least(0), default=defaults.max_clips, help="at most N clips, 0 = all (default: 32)")
    discovery.add_argument(
        "--window", type=at_least(3), default=defaults.window,
        help="sampled frames whose per-pixel median is the background (default: 31)",
    )
    discovery.add_argument(
        "--threshold", type=non_negative_float, default=defaults.threshold,
        help="channel difference (0-255) from the median above which a pixel moves (default: 25)",
    )
    discovery.add_argument("--opening", type=at_least(0), default=defaults.opening, help="opening radius in pixels (default: 1)")
    discovery.add_argument("--closing", type=at_least(0), default=defaults.closing, help="closing radius in pixels (default: 2)")
    discovery.add_argument(
        "--side", type=at_least(0), default=defaults.side,
        help="short side the frames are downscaled to for the foreground and scores, 0 = as decoded (default: 224)",
    )
    discovery.add_argument(
        "--size", type=at_least(1), default=None, help="side of the centre crop the model sees (default: its image size)"
    )
    discovery.add_argument(
        "--objects", type=at_least(1), default=None, help="objects to discover (default: the model's num_objects, else 3)"
    )
    discovery.add_argument("--seed", type=int, default=0, help="heads drawn per clip and the random baseline")
    add_output_arguments(discovery, "eval-discovery.json")
    discovery.set_defaults(_eval=run_discovery)


def run_discovery(args: argparse.Namespace) -> dict:
    from .scoring import METRIC_NAMES
    from .video import discover_in_video

    try:
        settings = DiscoverySettings(
            clip_frames=args.clip_frames, clip_step=args.clip_step, max_clips=args.max_clips,
            window=args.window, threshold=args.threshold, opening=args.opening, closing=args.closing,
            side=args.side,
        )
    except ValueError as err:
        raise DoraUserError(str(err)) from err
    backbone = encoder_from_args(args)
    run = discover_in_video(
        {backbone.name: backbone}, args.video, settings, size=args.size, num_objects=args.objects,
        frame_step=args.frame_step, start=args.start, seed=args.seed, progress=not args.no_progress,
    )[backbone.name]
    scores, size = run.scores, run.size
    if run.nothing_to_find is not None:
        print(
            f"warning: {args.video}: {run.nothing_to_find}, so it has no foreground to discover and the figures "
            "below measure nothing about the model (precision, chance and best IoU are against an empty foreground: "
            "0); score a video with moving objects",
            file=sys.stderr,
        )
    names = {
        "precision": ("precision", "Foreground precision of tracked masks"),
        "chance": ("foreground_share", "Foreground share of the frame (chance precision)"),
        "best_iou": ("iou", "Best-matching foreground IoU per object"),
        "mutual_iou": ("mutual_iou", "Mean pairwise IoU of the objects (lower: more distinct)"),
        "temporal_iou": ("temporal_iou", "Mean IoU of masks in consecutive frames"),
    }
    metric_args = {"clip_frames": settings.clip_frames, "threshold": settings.threshold, "window": settings.window}
    metrics = [
        metric(names[key][0], names[key][1], scores["model"][key], metric_args)
        for key in METRIC_NAMES if scores["model"][key] is not None
    ]
    return task_results(
        DISCOVERY,
        backbone,
        dataset={
            "name": str(args.video), "config": None, "split": None, "revision": None,
            "num_frames": run.num_frames, "num_clips": len(scores["clips"]), "start_frame": args.start,
        },
        metrics=metrics,
        settings={
            **scores["settings"], "frame_step": args.frame_step, "size": size, "seed": args.seed,
            "num_objects": run.num_objects,
            "baseline": "random pixels with each object's area per frame",
        },
        details={
            "model": scores["model"], "random": scores["random"], "clips": scores["clips"],
            **({"nothing_to_find": run.nothing_to_find} if run.nothing_to_find is not None else {}),
        },
    )
