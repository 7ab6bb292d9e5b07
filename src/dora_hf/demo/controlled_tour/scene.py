"""The scene a tour pans over: scikit-image photographs tiled into one canvas, and the camera's slow pan and zoom."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...errors import DoraUserError
from .settings import TourSettings


def load_photo(name: str) -> np.ndarray:
    """`skimage.data` photograph ``name`` as `(H, W, 3)` uint8 (greyscale ones repeated)."""
    try:
        from skimage import data
    except ImportError as err:
        raise DoraUserError(
            "the controlled tour is made of scikit-image's sample photographs: pip install scikit-image"
        ) from err
    image = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def cover_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to cover ``width x height`` (aspect kept) and cropped to it about its centre."""
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    size = (max(width, math.ceil(w * scale)), max(height, math.ceil(h * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return resized[top : top + height, left : left + width]


def build_canvas(photos: list[np.ndarray], settings: TourSettings) -> np.ndarray:
    """The scene: `photos` as tiles of `tile_scale` frames, row by row, `(H, W, 3)` float32."""
    cols, rows = settings.tile_grid
    tile_w, tile_h = round(settings.tile_scale * settings.width), round(settings.tile_scale * settings.height)
    canvas = np.zeros((rows * tile_h, cols * tile_w, 3), dtype=np.float32)
    for i, photo in enumerate(photos):
        r, c = divmod(i, cols)
        canvas[r * tile_h : (r + 1) * tile_h, c * tile_w : (c + 1) * tile_w] = cover_resize(photo, tile_w, tile_h)
    return canvas


@dataclass(frozen=True)
class CameraPath:
    """The view's centre (canvas pixels) and scale (canvas pixels per frame pixel) over time.

    Each axis is a sum of two sinusoids with incommensurate periods around the canvas centre,
    amplitudes summing to the free range: the view sweeps the whole canvas, never leaves it, and
    moves at most ``camera_speed`` per axis. The scale is ``max_zoom ** sin(...)``.
    """

    centre: tuple[float, float]
    x_terms: tuple[tuple[float, float, float], ...]
    """(amplitude, period s, phase) of each sinusoid in x."""
    y_terms: tuple[tuple[float, float, float], ...]
    zoom_period_s: float
    zoom_phase: float
    max_zoom: float
    fps: int

    def at(self, frame: int) -> tuple[float, float, float]:
        """``(cx, cy, scale)`` at ``frame`` (negative frames: before the segment starts)."""
        t = frame / self.fps
        cx = self.centre[0] + sum(a * math.sin(2 * math.pi * t / p + phase) for a, p, phase in self.x_terms)
        cy = self.centre[1] + sum(a * math.sin(2 * math.pi * t / p + phase) for a, p, phase in self.y_terms)
        scale = math.exp(math.log(self.max_zoom) * math.sin(2 * math.pi * t / self.zoom_period_s + self.zoom_phase))
        return cx, cy, scale


def camera_path(canvas_size: tuple[int, int], settings: TourSettings, rng: np.random.Generator) -> CameraPath:
    """A random `CameraPath` over a canvas of ``(width, height)``."""
    speed = settings.camera_speed * settings.width  # canvas pixels per second, per axis

    def terms(free: float) -> tuple[tuple[float, float, float], ...]:
        half = max(free / 2 - 1.0, 0.0)  # one pixel kept for bilinear sampling
        share = rng.uniform(0.5, 0.8)
        amplitudes = (share * half, (1 - share) * half)
        # period >= 2 pi * half / speed keeps sum(a * 2 pi / period) <= speed
        base = 2 * math.pi * max(half, 1.0) / speed
        return tuple((a, base * rng.uniform(1.0, 2.0), rng.uniform(0, 2 * math.pi)) for a in amplitudes)

    width, height = canvas_size
    x_terms = terms(width - settings.width * settings.max_zoom)
    y_terms = terms(height - settings.height * settings.max_zoom)
    return CameraPath(
        centre=(width / 2, height / 2),
        x_terms=x_terms,
        y_terms=y_terms,
        zoom_period_s=float(rng.uniform(*settings.zoom_period_s)),
        zoom_phase=float(rng.uniform(0, 2 * math.pi)),
        max_zoom=settings.max_zoom,
        fps=settings.fps,
    )
