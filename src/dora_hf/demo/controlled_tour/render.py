"""A tour segment's frames and exact instance maps, composited in depth order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .objects import TourObject, object_sprite, simulate_objects
from .scene import CameraPath, build_canvas, camera_path, load_photo
from .settings import (
    CAMERA_STREAM,
    OBJECT_STREAM,
    PHOTOS,
    SEGMENT_STREAMS,
    SEGMENTS,
    TourSettings,
)


def sample_bilinear(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`(len(ys), len(xs), 3)` uint8: `canvas` read bilinearly at the grid of canvas coordinates
    ``xs`` x ``ys`` (pixel centres at half-integers)."""
    def corners(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shifted = coords - 0.5
        low = np.floor(shifted)
        weight = (shifted - low).astype(np.float32)
        low = low.astype(np.int64)
        return np.clip(low, 0, size - 1), np.clip(low + 1, 0, size - 1), weight

    x0, x1, wx = corners(xs, canvas.shape[1])
    y0, y1, wy = corners(ys, canvas.shape[0])
    top, bottom = canvas[y0], canvas[y1]
    wx = wx[None, :, None]
    row_top = top[:, x0] * (1 - wx) + top[:, x1] * wx
    row_bottom = bottom[:, x0] * (1 - wx) + bottom[:, x1] * wx
    wy = wy[:, None, None]
    return np.clip(np.rint(row_top * (1 - wy) + row_bottom * wy), 0, 255).astype(np.uint8)


@dataclass
class TourSegment:
    """One segment of the tour: its scene, camera, objects and their looks; renders any frame."""

    name: str
    seed: int
    settings: TourSettings
    num_frames: int
    canvas: np.ndarray
    camera: CameraPath
    objects: list[TourObject]
    sprites: dict[int, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    """Object id -> (RGB, outline) sprite."""

    def pixel_centres(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas coordinates of the frame's pixel centres: ``xs`` `(W,)` and ``ys`` `(H,)`."""
        cx, cy, scale = self.camera.at(frame)
        width, height = self.settings.width, self.settings.height
        xs = cx + (np.arange(width) + 0.5 - width / 2) * scale
        ys = cy + (np.arange(height) + 0.5 - height / 2) * scale
        return xs, ys

    def live_objects(self, frame: int) -> list[TourObject]:
        return [o for o in self.objects if o.live(frame)]

    def render(self, frame: int, objects: list[TourObject] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``frame``: RGB `(H, W, 3)` uint8 and instance ids `(H, W)` int32.

        Objects are painted from the farthest to the nearest. A pixel belongs to an object when
        its centre, taken into the object's frame (translated, turned by minus its angle), falls
        on a sprite pixel inside the outline; it then takes that sprite pixel's colour.
        """
        objects = self.live_objects(frame) if objects is None else objects
        xs, ys = self.pixel_centres(frame)
        rgb = sample_bilinear(self.canvas, xs, ys)
        ids = np.zeros((self.settings.height, self.settings.width), dtype=np.int32)
        _, _, scale = self.camera.at(frame)
        for obj in sorted(objects, key=lambda o: (-o.depth, -o.id)):
            x, y, angle = obj.pose(frame, self.settings.fps)
            columns = _window(xs, x, obj.reach / scale + 2, scale)
            rows = _window(ys, y, obj.reach / scale + 2, scale)
            if columns.start >= columns.stop or rows.start >= rows.stop:
                continue
            dx = xs[columns][None, :] - x
            dy = ys[rows][:, None] - y
            cos, sin = math.cos(angle), math.sin(angle)
            half = obj.size / 2
            ix = np.floor(cos * dx + sin * dy + half).astype(np.int64)
            iy = np.floor(-sin * dx + cos * dy + half).astype(np.int64)
            on = (ix >= 0) & (ix < obj.size) & (iy >= 0) & (iy < obj.size)
            sprite_rgb, alpha = self.sprites[obj.id]
            inside = np.zeros_like(on)
            inside[on] = alpha[iy[on], ix[on]]
            rgb[rows, columns][inside] = sprite_rgb[iy[inside], ix[inside]]
            ids[rows, columns][inside] = obj.id
        return rgb, ids

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`render` of frames ``start..stop-1`` in order, keeping the live objects as it goes."""
        stop = self.num_frames if stop is None else stop
        waiting = sorted(self.objects, key=lambda o: o.spawn_frame)
        live: list[TourObject] = []
        for frame in range(start, stop):
            while waiting and waiting[0].spawn_frame <= frame:
                live.append(waiting.pop(0))
            live = [o for o in live if o.live(frame)]
            yield self.render(frame, live)


def _window(centres: np.ndarray, position: float, radius_px: float, scale: float) -> slice:
    """The pixels along one axis whose centres may lie within `radius_px` frame pixels of `position`."""
    first = (position - centres[0]) / scale
    return slice(max(0, math.floor(first - radius_px)), min(len(centres), math.ceil(first + radius_px) + 1))


def build_segment(name: str, seed: int, num_frames: int, settings: TourSettings = TourSettings()) -> TourSegment:
    """Segment ``name`` (``train`` or ``held_out``) of the tour of ``seed``, ``num_frames`` long."""
    if name not in PHOTOS:
        raise ValueError(f"segment must be one of {', '.join(SEGMENTS)}, not {name!r}")

    def stream(index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SEGMENT_STREAMS[name], index)))

    photos = PHOTOS[name]
    camera_rng, object_rng = stream(CAMERA_STREAM), stream(OBJECT_STREAM)
    order = camera_rng.permutation(len(photos.scene))
    canvas = build_canvas([load_photo(photos.scene[i]) for i in order], settings)
    camera = camera_path((canvas.shape[1], canvas.shape[0]), settings, camera_rng)
    object_photos = {n: load_photo(n) for n in photos.objects}
    sizes = {n: p.shape[:2] for n, p in object_photos.items()}
    objects = simulate_objects(object_rng, camera, photos.objects, sizes, num_frames, settings)
    sprites = {o.id: object_sprite(o, object_photos[o.photo]) for o in objects}
    return TourSegment(name, seed, settings, num_frames, canvas, camera, objects, sprites)
