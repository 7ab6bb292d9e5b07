"""`dora-hf visualize VIDEO_OR_FRAMES --model ID_OR_DIR --out FILE.gif|.png`: the objects a model tracks.

Discovers objects in the first frame with DoRA's tracking head (the [CLS] attention of distinct
heads, refined by Sinkhorn-Knopp), tracks them through the following frames, and draws each
object's mask in its own colour: an animated GIF, or a PNG grid with one row per object. Works
for DoRA and for any ViT-style encoder (the tracking head has no weights). ``--attention`` adds
the last block's per-head [CLS] attention maps.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..._arguments import at_least, positive_float
from ...errors import DoraUserError

# The drawing itself (torch, transformers, numpy) is imported by the functions that do it, so
# that `dora-hf visualize --help` and argument errors need none of them.
if TYPE_CHECKING:
    import torch

    from ...modeling import DoraTrackingOutput

OUTPUT_SUFFIXES = (".gif", ".png")


@dataclass
class Visualization:
    path: Path
    tracks: DoraTrackingOutput
    num_frames: int


def visualize(
    source: str | Path,
    model: str,
    out: str | Path,
    num_frames: int = 16,
    step: int = 2,
    start: int = 0,
    size: int | None = None,
    num_objects: int | None = None,
    head_indices: list[int] | None = None,
    seed: int = 0,
    attention: bool = False,
    fps: float = 4.0,
    display: int = 256,
    model_revision: str | None = None,
    device: str | torch.device = "cpu",
) -> Visualization:
    """Track objects through frames of ``source`` with ``model`` and draw them to ``out`` (.gif or .png)."""
    from ..encoder import load_encoder
    from ..frame_input import read_frames
    from .clip_tracks import model_input_size, track_clip
    from .mask_figure import draw_tracking_grid
    from .track_animation import draw_animation_frames, save_gif

    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DoraUserError(f"--out {out}: must end in .gif (animation) or .png (grid)")
    backbone = load_encoder(model, revision=model_revision, device=device)
    model_input_size(backbone, size)  # before decoding anything
    frames = read_frames(source, num_frames, step, start)
    clip = track_clip(backbone, frames, size, num_objects, head_indices, seed, attention)
    if out.suffix.lower() == ".gif":
        pictures = draw_animation_frames(
            clip.frames, clip.masks, clip.heads, clip.scores, clip.attention, display=display, title=Path(model).name
        )
        save_gif(pictures, out, fps)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_tracking_grid(clip.frames, clip.masks, clip.heads, clip.attention, tile=min(display, 160), scores=clip.scores).save(out)
    return Visualization(path=out, tracks=clip.tracks, num_frames=frames.shape[0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="VIDEO_OR_FRAMES", help="a video file or a folder of frame images")
    parser.add_argument("--model", required=True, help="model folder or hub id (DoRA or a ViT-style encoder)")
    parser.add_argument("--out", required=True, type=Path, help="FILE.gif (animation) or FILE.png (grid)")
    parser.add_argument("--num-frames", type=at_least(1), default=16, help="frames to track through (default: 16)")
    parser.add_argument("--step", type=at_least(1), default=2, help="take every N-th frame of the source (default: 2)")
    parser.add_argument("--start", type=at_least(0), default=0, help="index of the first frame (default: 0)")
    parser.add_argument(
        "--size", type=at_least(1), default=None,
        help="side the centre-cropped frames are resized to (default: the model's image size; larger gives finer masks)",
    )
    parser.add_argument(
        "--objects", type=at_least(1), default=None, help="objects to discover (default: the model's num_objects, else 3)"
    )
    parser.add_argument(
        "--heads", type=at_least(0), nargs="+", default=None,
        help="the attention heads that discover the objects (default: drawn with --seed)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attention", action="store_true", help="also draw each head's [CLS] attention map")
    parser.add_argument("--fps", type=positive_float, default=4.0, help="GIF frame rate (default: 4)")
    parser.add_argument("--display-size", type=at_least(16), default=256, help="side of each picture in the output (default: 256)")
    parser.add_argument("--model-revision", default=None)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.heads is not None and args.objects is None:
        args.objects = len(args.heads)
    result = visualize(
        args.source, args.model, args.out, num_frames=args.num_frames, step=args.step, start=args.start,
        size=args.size, num_objects=args.objects, head_indices=args.heads, seed=args.seed, attention=args.attention,
        fps=args.fps, display=args.display_size, model_revision=args.model_revision,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    k = result.tracks.masks.shape[1]
    print(f"tracked {k} objects (heads {result.tracks.head_indices.tolist()}) through {result.num_frames} frames: {result.path}")
    return 0
