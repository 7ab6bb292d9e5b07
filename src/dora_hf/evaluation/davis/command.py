"""`dora-hf eval davis`: DAVIS-2017 video object segmentation by label propagation, scored with J&F.

``--protocol dino`` (the default) is facebookresearch/dino ``eval_video_segmentation.py`` as
released; ``--protocol paper-text`` the earlier variant (see `protocols.DAVIS_PROTOCOLS`). The
parameter options override the chosen protocol's values one by one; the results' ``settings``
record the protocol, every value used and which were overridden.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import DoraUserError
from ..model_arguments import add_model_arguments, encoder_from_args
from ..protocols import DAVIS_PROTOCOLS, PropagationSettings
from ..results import EvalTask, add_output_arguments, metric, task_results

DAVIS = EvalTask("davis", "image-segmentation", "Video object segmentation (DAVIS-2017, label propagation)")

PARAMETERS = {
    "context_frames": ("--context-frames", int, "previous frames in the queue, besides the first"),
    "top_k": ("--top-k", int, "source patches per target patch"),
    "radius": ("--radius", int, "spatial neighbourhood in patches, 0 = none"),
    "temperature": ("--temperature", float, "affinity temperature"),
    "short_side": ("--short-side", int, "frames are resized to this short side"),
}
"""`PropagationSettings` field -> option, type, help; each defaults to the protocol's value."""


def add_davis_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval davis` and its options."""
    davis = tasks.add_parser("davis", help="DAVIS-2017 video object segmentation by label propagation (J&F)")
    add_model_arguments(davis)
    davis.add_argument("--davis-root", required=True, type=Path, help="folder with JPEGImages/, Annotations/, ImageSets/")
    davis.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default: val)")
    davis.add_argument("--resolution", default="480p")
    davis.add_argument("--sequences", nargs="+", default=None, help="evaluate only these sequences")
    davis.add_argument(
        "--protocol", choices=list(DAVIS_PROTOCOLS), default="dino",
        help="dino: DINO's released eval_video_segmentation.py, frame preparation and decoding included; "
        "paper-text: the text description's values with this project's own frame preparation (default: dino)",
    )
    for field, (option, kind, text) in PARAMETERS.items():
        values = ", ".join(f"{name} {protocol[field]}" for name, protocol in DAVIS_PROTOCOLS.items())
        davis.add_argument(option, type=kind, default=None, help=f"{text} (default: the protocol's: {values})")
    davis.add_argument("--save-masks", type=Path, default=None, help="also write the predicted masks as DAVIS PNGs here")
    add_output_arguments(davis, "eval-davis.json")
    davis.set_defaults(_eval=run_davis)


def settings_from_args(args: argparse.Namespace) -> PropagationSettings:
    """The chosen protocol with the options given on the command line overriding its values."""
    overrides = {field: getattr(args, field) for field in PARAMETERS if getattr(args, field) is not None}
    try:
        return PropagationSettings(args.protocol, **overrides)
    except ValueError as err:
        options = "".join(f" {PARAMETERS[field][0]} {value}" for field, value in overrides.items())
        raise DoraUserError(f"--protocol {args.protocol}{options}: {err}") from err


def run_davis(args: argparse.Namespace) -> dict:
    from .dino_frames import DINO_PIXEL_MEAN, DINO_PIXEL_STD, LONG_SIDE_MULTIPLE
    from .evaluate import BackbonePatchFeatures, evaluate_davis
    from .folder import read_davis

    settings = settings_from_args(args)
    sequences = read_davis(args.davis_root, args.split, args.resolution, args.sequences)
    backbone = encoder_from_args(args)
    if settings.short_side < backbone.patch_size:
        raise DoraUserError(f"--short-side {settings.short_side} is smaller than the patch size {backbone.patch_size}")
    scores = evaluate_davis(
        sequences, BackbonePatchFeatures(backbone, settings), settings, save_dir=args.save_masks,
        progress=not args.no_progress, patch_size=backbone.patch_size,
    )
    recorded = settings.as_dict()
    if settings.protocol == "dino":
        mean, std, long_side = list(DINO_PIXEL_MEAN), list(DINO_PIXEL_STD), LONG_SIDE_MULTIPLE
    else:
        mean, std = (values.flatten().tolist() for values in backbone.pixel_mean_std())
        long_side = backbone.patch_size
    propagation = {name: recorded[name] for name in ("protocol", "context_frames", "top_k", "radius", "temperature")}
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
        settings={
            **recorded,
            "long_side_multiple": long_side,
            "pixel_mean": mean,
            "pixel_std": std,
            "features": "last-layer patch tokens (after the final LayerNorm)",
        },
        details=scores,
    )
