"""The objects a loaded encoder discovers in a clip's first frame and tracks through it, ready to draw.

One function from uint8 frames to everything the pictures need (the frames as the model saw them,
each object's masks, the heads that found them, which object owns an overlapped pixel, and the
per-head [CLS] attention), shared by `dora-hf visualize` and the demo Space so that both show the
same tracks for the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DoraUserError

if TYPE_CHECKING:
    from ...modeling import DoraTrackingOutput
    from ..encoder import FrozenEncoder


@dataclass
class TrackedClip:
    """A clip's tracks as pictures are drawn from them."""

    frames: np.ndarray
    """`(T, S, S, 3)` uint8: the centre-cropped frames the model saw."""
    masks: np.ndarray
    """`(k, T, S, S)` bool: each object's mask in each frame."""
    heads: list[int]
    """The attention head that discovered each object."""
    scores: np.ndarray
    """`(k, T, S, S)` how strongly each object claims each pixel (see `tracking_scores`)."""
    attention: np.ndarray | None
    """`(T, h, S, S)` last-block [CLS] attention per head, when asked for."""
    tracks: DoraTrackingOutput
    size: int
    """Side of the frames the model saw."""


def track_clip(
    backbone: FrozenEncoder,
    frames: torch.Tensor,
    size: int | None = None,
    num_objects: int | None = None,
    head_indices: list[int] | None = None,
    seed: int = 0,
    attention: bool = False,
) -> TrackedClip:
    """Discover objects in the first of uint8 ``frames`` `(T, 3, H, W)` and track them through the rest.

    ``size`` (default: the model's image size) is the side the frames are resized and centre-cropped
    to; ``num_objects`` defaults to the model's own (`default_num_objects`); ``head_indices`` picks
    the discovering heads, else they are drawn with ``seed``.
    """
    from ..discovery.video import default_num_objects
    from ..tracker_features import read_tracker_features, tracking_head_for
    from .mask_figure import clip_to_pixel_values, to_uint8_frames, tracking_scores

    size = model_input_size(backbone, size)
    head = tracking_head_for(backbone.model.config, num_objects or default_num_objects(backbone))
    mean, std = backbone.pixel_mean_std()
    pixel_values = clip_to_pixel_values(frames, size, mean, std).to(backbone.device)  # (1, T, 3, S, S)
    interpolate = size != backbone.image_size
    flat = pixel_values.flatten(0, 1)
    features = read_tracker_features(backbone.model, flat, interpolate)
    try:
        with torch.inference_mode():
            tracks = head(features, pixel_values, head_indices, torch.Generator().manual_seed(seed))
    except ValueError as err:  # explicit head indices that do not fit the model
        raise DoraUserError(str(err)) from err
    return TrackedClip(
        frames=to_uint8_frames(pixel_values[0], mean, std),
        masks=tracks.masks[0].cpu().numpy(),
        heads=tracks.head_indices.tolist(),
        scores=tracking_scores(tracks),
        attention=attention_maps(backbone.model, flat, size, interpolate) if attention else None,
        tracks=tracks,
        size=size,
    )


def model_input_size(backbone: FrozenEncoder, size: int | None) -> int:
    """``size`` (default: the model's image size), refused unless the patches tile it."""
    size = size or backbone.image_size
    if size % backbone.patch_size:
        raise DoraUserError(f"--size {size}: must be a multiple of the patch size {backbone.patch_size}")
    return size


def attention_maps(model: torch.nn.Module, pixel_values: torch.Tensor, size: int, interpolate: bool) -> np.ndarray:
    """`(T, h, size, size)` last-block [CLS] attention of every head, upsampled to the frame."""
    from ..tracker_features import last_block_features

    features = last_block_features(model, pixel_values, interpolate)
    patch = int(model.config.patch_size)
    grid = (size // patch, size // patch)
    maps = features.cls_attention.reshape(*features.cls_attention.shape[:2], *grid).float()
    return F.interpolate(maps, size=(size, size), mode="nearest").cpu().numpy()
