"""An animation of tracked objects, one picture per frame: the frame beside the same frame with
every object's mask tinted and outlined in its own colour, then one small tile per object (its
mask alone, labelled with the head that discovered it), and optionally the per-head [CLS]
attention maps underneath.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .overlays import (
    exclusive,
    heat_overlay,
    object_colours,
    outline,
    resize_frames,
    resize_maps,
    tint,
)

GAP = 4
HEADER = 18


def draw_animation_frames(
    frames: np.ndarray,
    masks: np.ndarray,
    heads: list[int],
    scores: np.ndarray | None = None,
    attention: np.ndarray | None = None,
    display: int = 256,
    title: str = "",
) -> list[Image.Image]:
    """One picture per frame from frames `(T, S, S, 3)` uint8 and masks `(k, T, S, S)` bool.

    Args:
        scores: `(k, T, S, S)` how strongly each object claims each pixel; where masks overlap,
            the combined view colours a pixel by its strongest object (default: the first).
        attention: optional `(T, h, S, S)` [CLS] attention maps, drawn as a row of tiles per frame.
    """
    count, k = frames.shape[0], masks.shape[0]
    frames = resize_frames(frames, display)
    masks = resize_maps(masks.reshape(k * count, *masks.shape[2:]), display).reshape(k, count, display, display)
    if scores is None:
        scores = -np.arange(k, dtype=np.float32).reshape(k, 1, 1, 1) * np.ones((1, count, display, display), np.float32)
    else:
        scores = resize_maps(scores.reshape(k * count, *scores.shape[2:]).astype(np.float32), display, nearest=True)
        scores = scores.reshape(k, count, display, display)
    combined = exclusive(masks, scores)
    colours = object_colours(k)
    width = 2 * display + 3 * GAP
    object_tile, object_cols = _tile_layout(width, k)
    object_rows = -(-k // object_cols)
    height = HEADER + display + GAP + HEADER + object_rows * (object_tile + GAP)
    if attention is not None:
        attention_tile, attention_cols = _tile_layout(width, attention.shape[1])
        height += HEADER + -(-attention.shape[1] // attention_cols) * (attention_tile + GAP)

    pictures = []
    for t in range(count):
        overlay = tint(frames[t : t + 1], combined[:, t : t + 1], colours, alpha=0.5)[0]
        for j in range(k):
            overlay = outline(overlay, combined[j, t], colours[j])
        canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((GAP, 3), f"{title}  frame {t + 1}/{count}".strip(), fill=(0, 0, 0))
        draw.text((2 * GAP + display, 3), "all objects", fill=(0, 0, 0))
        canvas.paste(Image.fromarray(frames[t]), (GAP, HEADER))
        canvas.paste(Image.fromarray(overlay), (2 * GAP + display, HEADER))
        y = HEADER + display + GAP
        draw.text((GAP, y + 3), "each object (discovered by one attention head in frame 1, then tracked)", fill=(0, 0, 0))
        y += HEADER
        small = resize_frames(frames[t : t + 1], object_tile)[0]
        small_masks = resize_maps(masks[:, t], object_tile)
        for j in range(k):
            x, tile_y = GAP + (j % object_cols) * (object_tile + GAP), y + (j // object_cols) * (object_tile + GAP)
            picture = outline(tint(small[None], small_masks[j : j + 1, None], colours[j : j + 1])[0], small_masks[j], colours[j])
            canvas.paste(Image.fromarray(picture), (x, tile_y))
            _label(draw, (x, tile_y), f"object {j + 1} (head {heads[j]})", tuple(int(c) for c in colours[j]))
        if attention is not None:
            y += object_rows * (object_tile + GAP)
            draw.text((GAP, y + 3), "[CLS] attention of the last block, per head", fill=(0, 0, 0))
            y += HEADER
            maps = resize_maps(attention[t], attention_tile)
            small = resize_frames(frames[t : t + 1], attention_tile)[0]
            for head in range(attention.shape[1]):
                x = GAP + (head % attention_cols) * (attention_tile + GAP)
                tile_y = y + (head // attention_cols) * (attention_tile + GAP)
                canvas.paste(Image.fromarray(heat_overlay(small, maps[head])), (x, tile_y))
                _label(draw, (x, tile_y), f"head {head}", (0, 0, 0))
        pictures.append(canvas)
    return pictures


def _tile_layout(width: int, count: int) -> tuple[int, int]:
    """(tile side, tiles per row) for ``count`` tiles across ``width`` pixels, at most 4 per row."""
    columns = max(1, min(count, 4))
    return (width - (columns + 1) * GAP) // columns, columns


def _label(draw: ImageDraw.ImageDraw, corner: tuple[int, int], text: str, background: tuple[int, int, int]) -> None:
    """White text on a coloured box in a tile's top-left corner."""
    left, top, right, bottom = draw.textbbox((corner[0] + 3, corner[1] + 1), text)
    draw.rectangle((corner[0], corner[1], right + 3, bottom + 2), fill=background)
    draw.text((corner[0] + 3, corner[1] + 1), text, fill=(255, 255, 255))


def save_gif(pictures: list[Image.Image], path: str | Path, fps: float = 4.0) -> Path:
    """An endlessly looping GIF, one picture per frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = max(20, round(1000 / fps))
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=duration, loop=0, disposal=1)
    return path
