"""A frozen encoder as a discovery tracker, and its scores on a video.

`discovery.py` scores any function from a clip to masks; this module makes that function from a
loaded `FrozenEncoder` (the last block's queries and keys through DoRA's tracking head, heads drawn
per clip) and reads the video, so that the `eval discovery` command, the main job and the
learning benchmark all score models the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import DoraUserError
from ..encoder import FrozenEncoder
from ..protocols import DiscoverySettings
from .scoring import Tracker, evaluate_discovery, foreground_reference


@dataclass
class DiscoveryRun:
    """What was scored: the per-model summary and clips, and how the frames were read."""

    scores: dict
    """`evaluate_discovery`'s result: ``{"model", "random", "clips", "settings", ...}``."""
    num_frames: int
    size: int
    num_objects: int
    nothing_to_find: str | None = None
    """Why the video holds no foreground to discover (every frame blank, or none moving); None when it may."""


def backbone_tracker(backbone: FrozenEncoder, size: int, num_objects: int, seed: int = 0) -> Tracker:
    """uint8 clip `(T, 3, H, W)` -> the `(k, T, size, size)` masks the backbone's tracker gives.

    The clip is resized to ``size`` on its short side and centre-cropped, as `mask_figure` does;
    heads are drawn per clip from one seeded generator, so a run is reproducible.
    """
    from ..tracker_features import read_tracker_features, tracking_head_for
    from ..visualize.clip_tracks import model_input_size
    from ..visualize.mask_figure import clip_to_pixel_values

    size = model_input_size(backbone, size)
    head = tracking_head_for(backbone.model.config, num_objects)
    mean, std = backbone.pixel_mean_std()
    generator = torch.Generator().manual_seed(seed)

    def track(clip: torch.Tensor) -> torch.Tensor:
        pixel_values = clip_to_pixel_values(clip, size, mean, std).to(backbone.device)
        features = read_tracker_features(backbone.model, pixel_values.flatten(0, 1), size != backbone.image_size)
        with torch.inference_mode():
            return head(features, pixel_values, None, generator).masks[0]

    return track


def default_num_objects(backbone: FrozenEncoder) -> int:
    """The model's ``num_objects`` (a DoRA model), else 3 heads or all of them when fewer."""
    return int(getattr(backbone.model.config, "num_objects", min(3, backbone.num_heads)))


def discover_in_video(
    backbones: Mapping[str, FrozenEncoder],
    video: str | Path,
    settings: DiscoverySettings,
    *,
    size: int | None = None,
    num_objects: int | None = None,
    frame_step: int = 1,
    start: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, DiscoveryRun]:
    """Score each backbone's discovered tracks on the clips of ``video`` from frame ``start`` on.

    The frames are read, and the foreground they are scored against computed, once for all the
    backbones. Reads only the frames the clips need, plus half a median window after the last
    one so that its background estimate is as good as the others'. ``size`` and ``num_objects``
    default to each backbone's own.
    """
    from ..frame_input import read_frames

    last = (settings.max_clips - 1) * settings.clip_step + settings.clip_frames if settings.max_clips else 1 << 20
    frames = read_frames(video, last + settings.window // 2, frame_step, start)
    if frames.shape[0] < settings.clip_frames:
        raise DoraUserError(f"{video}: {frames.shape[0]} frames, fewer than --clip-frames {settings.clip_frames}")
    reference = foreground_reference(frames, settings)
    nothing = nothing_to_find(frames)
    runs = {}
    for name, backbone in backbones.items():
        side = size or backbone.image_size
        objects = num_objects or default_num_objects(backbone)
        track = backbone_tracker(backbone, side, objects, seed)
        scores = evaluate_discovery(frames, track, settings, seed=seed, progress=progress, reference=reference)
        runs[name] = DiscoveryRun(
            scores=scores, num_frames=int(frames.shape[0]), size=side, num_objects=objects, nothing_to_find=nothing
        )
    return runs


def nothing_to_find(frames: torch.Tensor) -> str | None:
    """Why uint8 frames `(T, 3, H, W)` hold no foreground, by `prepare-data`'s blank and frozen rules:
    every frame blank (no structure anywhere), or none changing from the one before (the foreground
    is what moves); None otherwise."""
    from PIL import Image

    from ...prepare.blank_frozen import BLANK, BLANK_STD, FROZEN_MAX_CHANGE, frame_kind, grey_thumbnail

    kinds, previous = [], None
    for frame in frames:
        grey = grey_thumbnail(Image.fromarray(frame.permute(1, 2, 0).numpy()))
        kinds.append(frame_kind(grey, previous))
        previous = grey
    if all(kind == BLANK for kind in kinds):
        return f"every frame read is blank (its grey spread is under {BLANK_STD:g} levels: no structure anywhere)"
    if all(kind is not None for kind in kinds[1:]):
        return f"no frame read differs from the one before by {FROZEN_MAX_CHANGE:g} grey levels anywhere (nothing moves)"
    return None
