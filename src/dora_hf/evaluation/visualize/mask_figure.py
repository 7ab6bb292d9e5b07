"""A picture of the objects a DoRA model discovers in a clip's first frame and tracks through it.

One column per frame; the top row shows the frames, then one row per object with its mask tinted
in the object's colour, then all objects together, so a person can see at a glance whether each
track stays on the same thing. Optionally, one more row per attention head shows the last
block's [CLS] attention (DINO's attention maps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ...modeling import DoraForPreTraining, DoraTrackingOutput
from .overlays import (
    exclusive,
    heat_overlay,
    object_colours,
    resize_frames,
    resize_maps,
    tint,
)

IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def clip_to_pixel_values(
    frames: torch.Tensor, size: int, mean: torch.Tensor = IMAGENET_MEAN, std: torch.Tensor = IMAGENET_STD
) -> torch.Tensor:
    """uint8 frames `(T, 3, H, W)` to normalised `(1, T, 3, size, size)`: short side to `size`, centre crop."""
    video = frames.float() / 255.0
    height, width = video.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    resized = F.interpolate(video, size=new_size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
    crop = resized[..., top : top + size, left : left + size].clamp(0, 1)
    return ((crop - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).unsqueeze(0)


def to_uint8_frames(
    pixel_values: torch.Tensor, mean: torch.Tensor = IMAGENET_MEAN, std: torch.Tensor = IMAGENET_STD
) -> np.ndarray:
    """Normalised `(T, 3, H, W)` back to `(T, H, W, 3)` uint8."""
    frames = (pixel_values.cpu().float() * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)).clamp(0, 1)
    return (frames.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def render_tracking_figure(
    model: DoraForPreTraining,
    frames: torch.Tensor,
    path: str | Path,
    head_indices: list[int] | None = None,
    seed: int = 0,
) -> tuple[Path, DoraTrackingOutput]:
    """Track objects through one clip of uint8 frames `(T, 3, H, W)` and write the PNG figure."""
    size = model.config.image_size
    pixel_values = clip_to_pixel_values(frames, size)
    with torch.no_grad():
        tracks = model.discover_and_track(
            pixel_values.to(model.device), head_indices=head_indices, generator=torch.Generator().manual_seed(seed)
        )
    originals = to_uint8_frames(pixel_values[0])
    masks = tracks.masks[0].cpu().numpy()  # (k, T, H, W)
    canvas = draw_tracking_grid(originals, masks, tracks.head_indices.tolist(), scores=tracking_scores(tracks))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path, tracks


def tracking_scores(tracks: DoraTrackingOutput) -> np.ndarray:
    """`(k, T, H, W)` how strongly each object of the first clip claims each pixel.

    The objects' attention, L2-normalised over patches as the masks were thresholded, repeated
    over each patch's pixels like the masks; used to colour pixels that several masks cover.
    """
    attention = tracks.cross_attention[0].float()
    normalized = attention / attention.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    maps = normalized.reshape(*normalized.shape[:2], *tracks.patch_masks.shape[-2:])
    return F.interpolate(maps, size=tuple(tracks.masks.shape[-2:]), mode="nearest").cpu().numpy()


def draw_tracking_grid(
    frames: np.ndarray,
    masks: np.ndarray,
    heads: list[int],
    attention: np.ndarray | None = None,
    tile: int | None = None,
    scores: np.ndarray | None = None,
) -> Image.Image:
    """The figure: frames `(T, S, S, 3)` uint8, masks `(k, T, S, S)` bool, the heads that found them.

    Args:
        attention: optional `(T, h, S, S)` [CLS] attention maps, one extra row per head.
        tile: side of each picture in the figure (default: the frames' size).
        scores: optional `(k, T, S, S)` (see `tracking_scores`): in the "all objects" row a pixel
            covered by several masks takes the colour of its strongest object only.
    """
    size = tile or frames.shape[1]
    originals = resize_frames(frames, size)
    k, count = masks.shape[0], masks.shape[1]
    masks = resize_maps(masks.reshape(k * count, *masks.shape[2:]), size).reshape(k, count, size, size)
    combined = masks
    if scores is not None:
        scores = resize_maps(scores.reshape(k * count, *scores.shape[2:]), size, nearest=True)
        combined = exclusive(masks, scores.reshape(k, count, size, size))
    colours = object_colours(k)
    rows = [("frames", originals, (0, 0, 0))]
    rows += [
        (f"object {j + 1}\n(head {heads[j]})", tint(originals, masks[j : j + 1], colours[j : j + 1]), colours[j])
        for j in range(k)
    ]
    rows.append(("all objects", tint(originals, combined, colours, alpha=0.5 if scores is not None else 0.45), (0, 0, 0)))
    if attention is not None:
        rows += _attention_rows(originals, attention, size)
    return _grid(rows, count, size)


def draw_attention_grid(frames: np.ndarray, attention: np.ndarray, tile: int | None = None) -> Image.Image:
    """The frames `(T, S, S, 3)` over one row per head of their [CLS] attention `(T, h, S, S)`."""
    size = tile or frames.shape[1]
    originals = resize_frames(frames, size)
    return _grid([("frames", originals, (0, 0, 0)), *_attention_rows(originals, attention, size)], frames.shape[0], size)


Row = tuple[str, np.ndarray, tuple[int, int, int]]
"""A figure row: its label, `(T, size, size, 3)` pictures, the label's colour."""


def _attention_rows(originals: np.ndarray, attention: np.ndarray, size: int) -> list[Row]:
    """One row per head: its [CLS] attention `(T, h, S, S)` as heat over the frames."""
    rows = []
    for head in range(attention.shape[1]):
        maps = resize_maps(attention[:, head], size)
        rows.append((f"attention\nhead {head}", np.stack([heat_overlay(f, m) for f, m in zip(originals, maps)]), (0, 0, 0)))
    return rows


def _grid(rows: list[Row], count: int, size: int) -> Image.Image:
    """The rows one under the other, a labelled column per frame."""
    label_w, header_h, gap = 84, 16, 3
    canvas = Image.new("RGB", (label_w + count * (size + gap), header_h + len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for t in range(count):
        draw.text((label_w + t * (size + gap) + 2, 2), f"t={t}", fill=(0, 0, 0))
    for r, (label, images, colour) in enumerate(rows):
        y = header_h + r * (size + gap)
        fill = tuple(int(c) for c in colour)
        if any(fill):  # an object's row: a swatch of its colour, the key to the tinted pictures
            draw.rectangle((4, y + size // 2 - 9, 13, y + size // 2), fill=fill)
        draw.multiline_text((18 if any(fill) else 4, y + size // 2 - 10), label, fill=fill)
        for t in range(count):
            canvas.paste(Image.fromarray(images[t]), (label_w + t * (size + gap), y))
    return canvas
