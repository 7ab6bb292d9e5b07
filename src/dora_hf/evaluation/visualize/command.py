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
    import numpy as np
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
    import torch

    from ..encoder import load_encoder
    from ..frame_input import read_frames
    from ..tracker_features import read_tracker_features, tracking_head_for
    from .mask_figure import (
        clip_to_pixel_values,
        draw_tracking_grid,
        to_uint8_frames,
        tracking_scores,
    )
    from .track_animation import draw_animation_frames, save_gif

    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DoraUserError(f"--out {out}: must end in .gif (animation) or .png (grid)")
    backbone = load_encoder(model, revision=model_revision, device=device)
    config = backbone.model.config
    size = size or backbone.image_size
    if size % backbone.patch_size:
        raise DoraUserError(f"--size {size}: must be a multiple of the patch size {backbone.patch_size}")
    objects = num_objects or int(getattr(config, "num_objects", min(3, backbone.num_heads)))
    head = tracking_head_for(config, objects)
    frames = read_frames(source, num_frames, step, start)

    mean, std = backbone.pixel_mean_std()
    pixel_values = clip_to_pixel_values(frames, size, mean, std).to(backbone.device)  # (1, T, 3, S, S)
    interpolate = size != backbone.image_size
    flat = pixel_values.flatten(0, 1)
    features = read_tracker_features(backbone.model, flat, interpolate)
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.inference_mode():
            tracks = head(features, pixel_values, head_indices, generator)
    except ValueError as err:  # explicit head indices that do not fit the model
        raise DoraUserError(str(err)) from err

    originals = to_uint8_frames(pixel_values[0], mean, std)
    masks = tracks.masks[0].cpu().numpy()
    heads = tracks.head_indices.tolist()
    maps = attention_maps(backbone.model, flat, size, interpolate) if attention else None
    if out.suffix.lower() == ".gif":
        scores = tracking_scores(tracks)
        pictures = draw_animation_frames(originals, masks, heads, scores, maps, display=display, title=Path(model).name)
        save_gif(pictures, out, fps)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_tracking_grid(originals, masks, heads, maps, tile=min(display, 160), scores=tracking_scores(tracks)).save(out)
    return Visualization(path=out, tracks=tracks, num_frames=frames.shape[0])


def attention_maps(model: torch.nn.Module, pixel_values: torch.Tensor, size: int, interpolate: bool) -> np.ndarray:
    """`(T, h, size, size)` last-block [CLS] attention of every head, upsampled to the frame."""
    import torch.nn.functional as F

    from ..tracker_features import last_block_features

    features = last_block_features(model, pixel_values, interpolate)
    patch = int(model.config.patch_size)
    grid = (size // patch, size // patch)
    maps = features.cls_attention.reshape(*features.cls_attention.shape[:2], *grid).float()
    return F.interpolate(maps, size=(size, size), mode="nearest").cpu().numpy()


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
