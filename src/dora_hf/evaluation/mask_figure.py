"""A picture of the objects a DoRA model discovers in a clip's first frame and tracks through it.

One column per frame; the top row shows the frames, then one row per object with its mask tinted
in the object's colour, then all objects together, so a person can see at a glance whether each
track stays on the same thing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..modeling import DoraForPreTraining, DoraTrackingOutput

OBJECT_COLOURS = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)],
    dtype=np.float32,
)
IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def clip_to_pixel_values(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 frames `(T, 3, H, W)` to normalised `(1, T, 3, size, size)`: short side to `size`, centre crop."""
    video = frames.float() / 255.0
    height, width = video.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    resized = F.interpolate(video, size=new_size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
    crop = resized[..., top : top + size, left : left + size].clamp(0, 1)
    return ((crop - IMAGENET_MEAN) / IMAGENET_STD).unsqueeze(0)


def to_uint8_frames(pixel_values: torch.Tensor) -> np.ndarray:
    """Normalised `(T, 3, H, W)` back to `(T, H, W, 3)` uint8."""
    frames = (pixel_values.cpu().float() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
    return (frames.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def tint(frames: np.ndarray, masks: np.ndarray, colours: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend each mask `(k, T, H, W)` in its colour `(k, 3)` over frames `(T, H, W, 3)`."""
    out = frames.astype(np.float32)
    for mask, colour in zip(masks, colours):
        weight = mask[..., None].astype(np.float32) * alpha
        out = out * (1 - weight) + colour * weight
    return out.clip(0, 255).astype(np.uint8)


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
    k, count = masks.shape[0], masks.shape[1]
    colours = OBJECT_COLOURS[np.arange(k) % len(OBJECT_COLOURS)]
    heads = tracks.head_indices.tolist()
    rows = [("frames", originals, (0, 0, 0))]
    rows += [(f"object {j + 1}\n(head {heads[j]})", tint(originals, masks[j : j + 1], colours[j : j + 1]), colours[j]) for j in range(k)]
    rows.append(("all objects", tint(originals, masks, colours, alpha=0.45), (0, 0, 0)))

    label_w, header_h, gap = 84, 16, 3
    canvas = Image.new("RGB", (label_w + count * (size + gap), header_h + len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for t in range(count):
        draw.text((label_w + t * (size + gap) + 2, 2), f"t={t}", fill=(0, 0, 0))
    for r, (label, images, colour) in enumerate(rows):
        y = header_h + r * (size + gap)
        draw.multiline_text((4, y + size // 2 - 10), label, fill=tuple(int(c) for c in colour))
        for t in range(count):
            canvas.paste(Image.fromarray(images[t]), (label_w + t * (size + gap), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path, tracks
