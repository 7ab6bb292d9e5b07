"""`dora-hf prepare-data`: decode long videos once into streamable parquet frame shards."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from .frame_images import IMAGE_FORMATS
from .inputs import default_download_dir
from .options import TARGET_KEPT_PER_STEP, PrepareOptions
from .pipeline import prepare_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dora-hf prepare-data``."""
    parser.add_argument(
        "videos", nargs="*", metavar="VIDEO",
        help="source video files or http(s) URLs, in the order rows are written (then those of --source-list)",
    )
    parser.add_argument(
        "--source-list", action="append", default=[], metavar="FILE",
        help="a list of videos, one per line: PATH_OR_URL, optionally followed by ', NAME' (or ' NAME' after a URL), "
        "the name making the video_id; # comments allowed (the WTour.txt form). A local file, a hub file "
        "hf://datasets/ORG/NAME/FILE (cached, read offline from the cache) or an http(s) URL; repeatable",
    )
    parser.add_argument(
        "--part", default=None, metavar="I/N",
        help="prepare only the I-th of N parts of the videos (entry k, 0-based in list order, goes to part k %% N + 1), "
        "so that N machines each prepare one; train on the N folders together (--dataset PART1 ... PARTN)",
    )
    parser.add_argument(
        "--download-dir", type=Path, default=None, metavar="DIR",
        help=f"cache for downloaded videos, resumed across runs (default: {default_download_dir()})",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dataset folder (must not exist)")
    step = parser.add_mutually_exclusive_group()
    step.add_argument(
        "--clip-step", type=int, default=PrepareOptions.clip_step, metavar="FRAMES",
        help="source frames between a clip's frames (default: %(default)s, about 1 s at 60 fps)",
    )
    step.add_argument(
        "--clip-step-seconds", type=float, default=None, metavar="SECONDS",
        help="the clip step in seconds instead, rounded to frames for each video's frame rate",
    )
    parser.add_argument(
        "--keep-every", type=int, default=None, metavar="N",
        help=f"keep every N-th source frame; N must divide the clip step "
        f"(default: the divisor closest to step/{TARGET_KEPT_PER_STEP}, i.e. 10 for a 60-frame step)",
    )
    parser.add_argument(
        "--frames-per-clip", type=int, default=PrepareOptions.frames_per_clip, metavar="T",
        help="frames per clip; a video must hold T x clip-step frames (default: %(default)s)",
    )
    parser.add_argument(
        "--short-side", type=int, default=PrepareOptions.short_side, metavar="PX",
        help="shrink frames so their short side is PX, never enlarging (default: %(default)s)",
    )
    parser.add_argument(
        "--format", dest="image_format", choices=sorted(IMAGE_FORMATS), default="jpeg",
        help="frame compression (default: %(default)s)",
    )
    parser.add_argument(
        "--quality", type=int, default=PrepareOptions.quality, help="JPEG/WebP quality 1-100 (default: %(default)s)"
    )
    parser.add_argument(
        "--frames-per-shard", type=int, default=PrepareOptions.frames_per_shard, metavar="ROWS",
        help="rows per parquet shard (default: %(default)s)",
    )
    parser.add_argument(
        "--license", default=PrepareOptions.license,
        help="license in the dataset card (default: %(default)s, that of Walking Tours)",
    )
    parser.add_argument("--pretty-name", default=None, help="dataset title in the card")
    parser.add_argument(
        "--keep-blank", action="store_true",
        help="keep blank and frozen stretches in the dataset (they are still reported); by default they are left out",
    )
    parser.add_argument(
        "--min-gap-seconds", type=float, default=PrepareOptions.min_gap_seconds, metavar="SECONDS",
        help="shortest blank or frozen stretch that is reported and left out (default: %(default)s)",
    )
    parser.add_argument(
        "--blur-faces", action="store_true",
        help="blur the faces detected in each kept frame before it is stored (needs: pip install 'dora-hf[faces]')",
    )
    parser.add_argument(
        "--num-workers", type=int, default=1, metavar="N",
        help="decode in N processes: videos, and segments of one video cut at keyframes, in parallel, with the same "
        f"output as 1; an interrupted run resumes from its finished segments (default: %(default)s; this machine has "
        f"{os.cpu_count()} cores)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier prepare-data output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``dora-hf prepare-data``."""
    options = PrepareOptions(
        clip_step=args.clip_step,
        clip_step_seconds=args.clip_step_seconds,
        keep_every=args.keep_every,
        frames_per_clip=args.frames_per_clip,
        short_side=args.short_side,
        image_format=args.image_format,
        quality=args.quality,
        frames_per_shard=args.frames_per_shard,
        license=args.license,
        pretty_name=args.pretty_name,
        keep_blank=args.keep_blank,
        min_gap_seconds=args.min_gap_seconds,
        blur_faces=args.blur_faces,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so a killed run still removes its temporary folder
    try:
        prepare_dataset(
            args.videos,
            args.out,
            options,
            source_lists=args.source_list,
            download_dir=args.download_dir,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            num_workers=args.num_workers,
            part=args.part,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
