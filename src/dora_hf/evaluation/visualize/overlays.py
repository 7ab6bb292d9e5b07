"""Drawing masks and attention over frames: one colour per object, outlines, heat maps.

Shared by the PNG grid (`mask_figure.py`) and the animation (`track_animation.py`) so an object
has the same colour in both.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

OBJECT_COLOURS = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
     (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40)],
    dtype=np.float32,
)
"""Distinct colours (Sasha Trubetskoy's list); object j gets colour j modulo its length."""

HEAT_STOPS = np.array([(0, 0, 0), (120, 0, 120), (230, 40, 40), (255, 200, 0), (255, 255, 230)], dtype=np.float32)
"""Black -> purple -> red -> yellow -> white: low to high attention."""


def object_colours(count: int) -> np.ndarray:
    """`(count, 3)` float colours, one per object."""
    return OBJECT_COLOURS[np.arange(count) % len(OBJECT_COLOURS)]


def tint(frames: np.ndarray, masks: np.ndarray, colours: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend each mask `(k, T, H, W)` in its colour `(k, 3)` over frames `(T, H, W, 3)`."""
    out = frames.astype(np.float32)
    for mask, colour in zip(masks, colours):
        weight = mask[..., None].astype(np.float32) * alpha
        out = out * (1 - weight) + colour * weight
    return out.clip(0, 255).astype(np.uint8)


def outline(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, width: int = 2) -> np.ndarray:
    """``image`` `(H, W, 3)` with the border pixels (``width`` thick) of ``mask`` `(H, W)` painted in ``colour``."""
    inside = mask.astype(bool)
    eroded = inside.copy()
    for _ in range(width):
        shrunk = eroded.copy()
        shrunk[1:, :] &= eroded[:-1, :]
        shrunk[:-1, :] &= eroded[1:, :]
        shrunk[:, 1:] &= eroded[:, :-1]
        shrunk[:, :-1] &= eroded[:, 1:]
        eroded = shrunk
    out = image.copy()
    out[inside & ~eroded] = colour.astype(np.uint8)
    return out


def heat_overlay(frame: np.ndarray, attention: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """An attention map `(H, W)` (any range; rescaled to [0, 1]) as colours over a greyed frame `(H, W, 3)`."""
    low, high = float(attention.min()), float(attention.max())
    level = (attention - low) / (high - low) if high > low else np.zeros_like(attention)
    position = level * (len(HEAT_STOPS) - 1)
    index = np.clip(position.astype(int), 0, len(HEAT_STOPS) - 2)
    fraction = (position - index)[..., None]
    heat = HEAT_STOPS[index] * (1 - fraction) + HEAT_STOPS[index + 1] * fraction
    grey = frame.astype(np.float32).mean(axis=-1, keepdims=True)
    return (grey * (1 - alpha) + heat * alpha).clip(0, 255).astype(np.uint8)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """`(N, H, W, 3)` uint8 pictures to `(N, size, size, 3)` (bicubic)."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in frames])


def resize_maps(maps: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """`(N, H, W)` masks (nearest, stay boolean) or float maps (bilinear unless ``nearest``) to `(N, size, size)`."""
    if maps.shape[1:3] == (size, size):
        return maps
    if maps.dtype == bool:
        return np.stack([np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST)) for m in maps]).astype(bool)
    method = Image.NEAREST if nearest else Image.BILINEAR
    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32)).resize((size, size), method)) for m in maps])


def exclusive(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Masks `(k, ...)` where a pixel covered by several objects keeps only the highest-scoring one.

    Tracked masks may overlap (each is thresholded on its own); drawing them in one picture
    needs one colour per pixel.
    """
    ranked = np.where(masks, scores, -np.inf)
    owner = ranked.argmax(axis=0)
    return masks & (np.arange(masks.shape[0]).reshape(-1, *([1] * owner.ndim)) == owner[None])
