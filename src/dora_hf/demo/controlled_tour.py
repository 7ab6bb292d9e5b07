"""A controlled walking tour: a long video whose objects, and every frame's object masks, are known.

A camera pans and zooms slowly over a large scene tiled from real photographs that
scikit-image ships (`skimage.data`, nothing is downloaded), while textured objects cut out of
other photographs move across it, in front of one another (each has a fixed depth), entering the
view at its edges and leaving it again. Every frame's ground-truth instance map is exact: ids
1..K for the segment's objects, stable across frames, in the order they are placed at the view's
edge; 0 for the background; each pixel the id of the nearest object covering it. Object-centric
learning checks discovery this way on CLEVRER and Kubric's MOVi; this scene resembles a walking
tour instead.

Two segments come from one seed: ``train`` (the video to prepare and pretrain on) and
``held_out`` (for evaluation). They share nothing: the scene photographs, the object photographs
and the random streams (camera path, objects) of the two are disjoint, so no object or scene part
of the held-out segment is ever trained on.

    python -m dora_hf.demo.controlled_tour --out DIR --seconds 3600 --seed 0

writes into DIR (which must not exist; it appears only once complete):

- ``train.mp4``, ``held_out.mp4``: H.264, 320x240, 10 fps, for ``dora-hf prepare-data``;
- ``held_out_davis/``: the held-out segment in DAVIS-2017's layout for ``dora-hf eval davis``,
  cut into sequences of `TourSettings.davis_frames` frames (ids renumbered per sequence: the
  objects visible in its first frame 1..k, the ones that enter later k+1.., so the
  semi-supervised protocol scores exactly the first frame's objects);
- ``truth.json``: the settings, each segment's photographs, objects (source photograph, crop,
  depth, first and last visible frame) and, per frame, each visible object's box
  ``[x1, y1, x2, y2]`` (exclusive ``x2, y2``) and area, and the DAVIS sequences' id maps.

Everything is deterministic given the seed: the same seed renders the same frames and masks, and
a longer tour begins with the frames of a shorter one (the simulation is causal). Rendering and
encoding take about 25 ms a frame on one core of a busy machine (1300 frames in 32 s): an hour
of tour, 36,000 frames, in about a quarter of an hour.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DoraUserError
from ..evaluation.discovery.known_objects import instance_boxes

SEGMENTS = ("train", "held_out")


@dataclass(frozen=True)
class SegmentPhotos:
    """The photographs (`skimage.data` names) one segment is made of."""

    scene: tuple[str, ...]
    """The tiles of its canvas, row by row: one colour photograph and five greyscale ones each."""
    objects: tuple[str, ...]
    """What its objects are cut out of: a face, a made thing and a specimen each."""


PHOTOS = {
    "train": SegmentPhotos(
        scene=("rocket", "camera", "brick", "grass", "page", "coins"),
        objects=("chelsea", "coffee", "immunohistochemistry"),
    ),
    "held_out": SegmentPhotos(
        scene=("hubble_deep_field", "moon", "gravel", "text", "clock", "cell"),
        objects=("astronaut", "motorcycle_left", "retina"),
    ),
}
"""Disjoint sets: no photograph appears in both segments, or as both scene and object. Only photos
that scikit-image ships in its wheel (no `pooch` download) are used."""


@dataclass(frozen=True)
class TourSettings:
    """The generator's fixed settings. Lengths are in frame sizes and speeds per second, so that a
    smaller frame or rate (the tests use them) gives the same tour at another resolution. These
    values are fixed before any method is run on the tour and are not to be tuned to favour one."""

    width: int = 320
    """Frame width. 320x240 (4:3): the short side exceeds DoRA's 224-pixel views, and the
    smallest object (5% of the frame) still spans about 3x3 patches of 16 at 224."""
    height: int = 240
    fps: int = 10
    """10 fps, as the main job's vtest.avi; DoRA's 1-second clip step is then 10 frames."""
    tile_scale: float = 1.5
    """Each photograph tile is 1.5 frames wide and high: photographs of about 500 pixels are
    shown near their own resolution, and a frame shows parts of one to four tiles."""
    tile_grid: tuple[int, int] = (3, 2)
    """Tiles across and down: a canvas of 4.5 x 3 frames per segment to pan over."""
    max_zoom: float = 1.15
    """The view spans 1/1.15 to 1.15 times the frame in canvas pixels: objects of 7-14% of the
    frame at zoom 1 stay within the 5-20% of the frame asked of them."""
    zoom_period_s: tuple[float, float] = (90.0, 180.0)
    """One zoom in-and-out cycle takes 1.5-3 min: at most 1% change per second, a slow zoom."""
    camera_speed: float = 0.02
    """At most 0.02 frame widths per second along each axis (6 pixels per second at 320): a slow
    pan that moves the view by a sixth of a frame over DoRA's 7-second clip. It is below the
    slowest object's speed into the view, so every object that appears also leaves."""
    slots: int = 4
    """At most four objects at once. Three are visible on average (3.0 and 3.1 over five minutes
    of seeds 0 and 1; a quarter of the frames show fewer, almost none shows none), as many as
    DoRA's three tracked objects, covering about a fifth of the frame: occlusion is frequent but
    partial."""
    area_fraction: tuple[float, float] = (0.07, 0.14)
    """Object area at zoom 1, as a share of the frame (between 5.3% and 18.5% over the zoom range)."""
    object_speed: tuple[float, float] = (0.05, 0.12)
    """Frame widths per second: an object stays in view for 10-30 s, longer than one DoRA clip
    (8 frames 1 s apart), as passers-by in a walking tour stay in view for several seconds."""
    entry_angle_deg: float = 30.0
    """Objects head into the view within 30 degrees of the edge's inward normal: their speed
    into the view (at least 0.043 frame widths/s) exceeds the camera's and the zoom's (at most
    0.034), so an object placed at the edge always enters and crosses."""
    spin_deg_per_s: float = 10.0
    """Objects turn at up to 10 degrees per second: their masks change shape, not only place."""
    shape_amplitude: float = 0.15
    """Outline radius 1 + sum of a_k cos(k phi + phase_k), k = 2, 3, 4, a_k up to 0.15: blobs from
    nearly round to clearly lobed (radius 0.55-1.45), never self-intersecting (star-convex)."""
    crop_fraction: tuple[float, float] = (0.4, 0.8)
    """An object's texture is a square crop of 40-80% of its photograph's short side: a
    recognisable part (a cat's face, a cup) rather than a flat patch."""
    grey_share: float = 0.5
    """Half the objects are shown in grey: most of the scene is greyscale, and colour alone must
    not single the objects out."""
    gap_s: tuple[float, float] = (0.0, 4.0)
    """A slot stays empty 0-4 s after its object has left before the next one enters."""
    warmup_s: float = 60.0
    """The simulation starts a minute before frame 0, so that frame 0 already shows objects in
    mid-crossing (three crossings' worth), not four objects about to enter together."""
    davis_frames: int = 50
    """Frames per held-out DAVIS sequence: 5 s, shorter than an object's time in view so most
    first-frame objects stay for most of it (DAVIS-2017 val averages 67 frames a sequence)."""
    crf: int = 18
    """x264 quality: visually lossless, so that compression does not blur the object edges."""


DEFAULT_HELD_OUT_SECONDS = 200.0
"""2000 frames, 40 DAVIS sequences: the size of DAVIS-2017 val (30 sequences, 1999 frames)."""

SEGMENT_STREAMS = {"train": 0, "held_out": 1}
"""Each segment's random streams are `SeedSequence(seed, spawn_key=(segment, stream))`."""
CAMERA_STREAM, OBJECT_STREAM = 0, 1

VIEW_MARGIN = 2.0
"""Canvas pixels added to an object's reach when testing whether it touches the view."""

TRUTH_FORMAT = "dora-hf controlled tour, version 1"
"""``truth.json``'s ``format``: readers check it before relying on the layout."""

JPEG_QUALITY = 95
"""The DAVIS folder's frames: near-lossless, as DAVIS's own JPEGs."""


# ----------------------------------------------------------------------------- photographs


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


# ----------------------------------------------------------------------------- camera


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


# ----------------------------------------------------------------------------- objects


@dataclass
class TourObject:
    """One object: its look, its straight path across the canvas and when it is in the segment."""

    photo: str
    crop: tuple[int, int, int]
    """``(x, y, side)`` of its texture's square in the photograph."""
    grey: bool
    harmonics: tuple[tuple[int, float, float], ...]
    """``(k, a_k, phase_k)`` of its outline."""
    radius: float
    """Outline scale in canvas pixels (the outline radius at a_k = 0)."""
    size: int
    """Its sprite's side in canvas pixels (even); the sprite's centre is the object's position."""
    spawn_frame: int
    start: tuple[float, float]
    """Canvas position at ``spawn_frame``."""
    velocity: tuple[float, float]
    """Canvas pixels per second."""
    angle: float
    """Rotation at ``spawn_frame`` (radians)."""
    spin: float
    """Radians per second."""
    depth: float
    """Distance from the camera: a nearer object (smaller depth) hides a farther one."""
    retire_frame: int | None = None
    """The first frame it is gone for good (None: still there at the segment's end)."""
    id: int = 0
    """1..K in the segment, in order of appearance; 0 for objects gone before frame 0."""

    @property
    def reach(self) -> float:
        """A bound on the distance from its centre to any point of it: the outline's largest possible
        radius, ``radius * (1 + sum a_k)``, plus one pixel for the sprite pixels the outline cuts."""
        return object_reach(self.radius, self.harmonics)

    def pose(self, frame: int, fps: int) -> tuple[float, float, float]:
        """``(x, y, angle)`` on the canvas at ``frame``."""
        t = (frame - self.spawn_frame) / fps
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t, self.angle + self.spin * t

    def live(self, frame: int) -> bool:
        return self.spawn_frame <= frame and (self.retire_frame is None or frame < self.retire_frame)


def object_reach(radius: float, harmonics: tuple[tuple[int, float, float], ...]) -> float:
    """See `TourObject.reach`."""
    return radius * (1 + sum(a for _, a, _ in harmonics)) + 1.0


def outline_radius(harmonics: tuple[tuple[int, float, float], ...], phi: np.ndarray) -> np.ndarray:
    """``1 + sum a_k cos(k phi + phase_k)``."""
    return 1.0 + sum(a * np.cos(k * phi + phase) for k, a, phase in harmonics)


def new_object(
    rng: np.random.Generator,
    frame: int,
    camera: CameraPath,
    photo_names: tuple[str, ...],
    photo_sizes: dict[str, tuple[int, int]],
    settings: TourSettings,
) -> TourObject:
    """A fresh object just outside the view at ``frame``, heading in (the draws are in a fixed order)."""
    photo = photo_names[int(rng.integers(len(photo_names)))]
    ph, pw = photo_sizes[photo]
    side = max(8, round(rng.uniform(*settings.crop_fraction) * min(ph, pw)))
    crop = (int(rng.integers(pw - side + 1)), int(rng.integers(ph - side + 1)), side)
    grey = bool(rng.random() < settings.grey_share)
    amplitudes = rng.uniform(0, settings.shape_amplitude, 3)
    phases = rng.uniform(0, 2 * math.pi, 3)
    harmonics = tuple((k, float(a), float(p)) for k, a, p in zip((2, 3, 4), amplitudes, phases))
    area = rng.uniform(*settings.area_fraction) * settings.width * settings.height
    # the outline R r(phi) encloses pi R^2 (1 + sum a_k^2 / 2)
    radius = math.sqrt(area / (math.pi * (1 + 0.5 * float(np.sum(amplitudes**2)))))
    size = 2 * math.ceil(radius * (1 + float(amplitudes.sum()))) + 2

    cx, cy, scale = camera.at(frame)
    half_w, half_h = settings.width / 2 * scale, settings.height / 2 * scale
    along = rng.uniform(0, 4 * (half_w + half_h))  # a point on the view's perimeter, uniformly
    edges = (  # (length, start point, direction along the edge, inward normal)
        (2 * half_w, (cx - half_w, cy - half_h), (1.0, 0.0), (0.0, 1.0)),  # top
        (2 * half_h, (cx + half_w, cy - half_h), (0.0, 1.0), (-1.0, 0.0)),  # right
        (2 * half_w, (cx + half_w, cy + half_h), (-1.0, 0.0), (0.0, -1.0)),  # bottom
        (2 * half_h, (cx - half_w, cy + half_h), (0.0, -1.0), (1.0, 0.0)),  # left
    )
    for length, origin, direction, normal in edges:
        if along <= length:
            break
        along -= length
    reach = object_reach(radius, harmonics) + VIEW_MARGIN + 1.0  # one pixel farther out than `touches_view` sees
    start = (origin[0] + direction[0] * along - normal[0] * reach, origin[1] + direction[1] * along - normal[1] * reach)
    turn = math.radians(rng.uniform(-settings.entry_angle_deg, settings.entry_angle_deg))
    cos, sin = math.cos(turn), math.sin(turn)
    heading = (normal[0] * cos - normal[1] * sin, normal[0] * sin + normal[1] * cos)
    speed = rng.uniform(*settings.object_speed) * settings.width
    angle = rng.uniform(0, 2 * math.pi)
    spin = math.radians(rng.uniform(-settings.spin_deg_per_s, settings.spin_deg_per_s))
    depth = float(rng.random())
    return TourObject(
        photo=photo,
        crop=crop,
        grey=grey,
        harmonics=harmonics,
        radius=radius,
        size=size,
        spawn_frame=frame,
        start=start,
        velocity=(heading[0] * speed, heading[1] * speed),
        angle=angle,
        spin=spin,
        depth=depth,
    )


def touches_view(obj: TourObject, frame: int, camera: CameraPath, settings: TourSettings) -> bool:
    """Whether the disc that holds the object reaches into the view (its mask is empty otherwise)."""
    x, y, _ = obj.pose(frame, settings.fps)
    cx, cy, scale = camera.at(frame)
    dx = max(abs(x - cx) - settings.width / 2 * scale, 0.0)
    dy = max(abs(y - cy) - settings.height / 2 * scale, 0.0)
    return dx * dx + dy * dy <= (obj.reach + VIEW_MARGIN) ** 2


def simulate_objects(
    rng: np.random.Generator,
    camera: CameraPath,
    photo_names: tuple[str, ...],
    photo_sizes: dict[str, tuple[int, int]],
    num_frames: int,
    settings: TourSettings,
) -> list[TourObject]:
    """The objects present in frames ``0..num_frames-1``, with ids 1..K in the order they were placed
    (one placed near the end may not have come into view yet: it has an id and no pixel).

    Frame by frame from ``-warmup_s``: each of the `slots` holds one object, which is retired at
    the first frame it is outside the view after having been inside it; the slot then waits
    `gap_s` and places a new object at the view's edge. Causal: the first frames do not depend
    on ``num_frames``.
    """
    fps = settings.fps

    def gap() -> int:
        return round(rng.uniform(*settings.gap_s) * fps)

    first = -round(settings.warmup_s * fps)
    active: list[TourObject | None] = [None] * settings.slots
    entered = [False] * settings.slots
    next_spawn = [first + gap() for _ in range(settings.slots)]
    made: list[TourObject] = []
    for frame in range(first, num_frames):
        for slot in range(settings.slots):
            obj = active[slot]
            if obj is not None:
                if touches_view(obj, frame, camera, settings):
                    entered[slot] = True
                elif entered[slot]:
                    obj.retire_frame = frame
                    active[slot] = None
                    next_spawn[slot] = frame + gap()
            if active[slot] is None and frame >= next_spawn[slot]:
                obj = new_object(rng, frame, camera, photo_names, photo_sizes, settings)
                active[slot], entered[slot] = obj, False
                made.append(obj)
    kept = [o for o in made if o.retire_frame is None or o.retire_frame > 0]
    for index, obj in enumerate(kept, start=1):
        obj.id = index
    return kept


def object_sprite(obj: TourObject, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object's look on a `(size, size)` grid of canvas pixels: RGB uint8 and its outline (bool)."""
    x, y, side = obj.crop
    texture = Image.fromarray(photo[y : y + side, x : x + side]).resize((obj.size, obj.size), Image.Resampling.LANCZOS)
    rgb = np.asarray(texture.convert("L").convert("RGB") if obj.grey else texture).copy()
    centres = np.arange(obj.size) + 0.5 - obj.size / 2
    gx, gy = np.meshgrid(centres, centres)
    alpha = np.hypot(gx, gy) <= obj.radius * outline_radius(obj.harmonics, np.arctan2(gy, gx))
    return rgb, alpha


# ----------------------------------------------------------------------------- rendering


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


# ----------------------------------------------------------------------------- output


X264_PRESET = "veryfast"
"""2.6x the encoding speed of x264's default ``medium`` on these frames (3.9 against 10.2 ms per
320x240 frame), with a file 5% smaller at the same CRF: the rate factor, not the preset, sets the quality."""


class VideoWriter:
    """H.264 frames into an mp4 with PyAV (yuv420p, `crf`, a keyframe every 10 s)."""

    def __init__(self, path: Path, settings: TourSettings):
        import av

        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(settings.fps))
        self.stream.width, self.stream.height = settings.width, settings.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(settings.crf), "preset": X264_PRESET, "g": str(10 * settings.fps)}

    def write(self, rgb: np.ndarray) -> None:
        import av

        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def davis_palette() -> list[int]:
    """DAVIS's (PASCAL VOC's) 256-colour palette: id i gets the colour made of i's bits, spread."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


class DavisLabels:
    """Per-sequence DAVIS ids of the segment's objects: those visible in the first frame 1..k (by
    id), then the ones that appear later in order of appearance (by id within a frame)."""

    def __init__(self) -> None:
        self.labels: dict[int, int] = {}

    def start(self, ids: np.ndarray) -> None:
        self.labels = {}
        self.add(ids)

    def add(self, ids: np.ndarray) -> np.ndarray:
        """Labels `(H, W)` uint8 of the instance map `ids`, numbering the objects new to this sequence."""
        for object_id in np.unique(ids[ids > 0]):
            self.labels.setdefault(int(object_id), len(self.labels) + 1)
        if len(self.labels) > 254:
            raise DoraUserError("a DAVIS sequence of the controlled tour would need more than 254 object ids")
        lut = np.zeros(int(ids.max(initial=0)) + 1, dtype=np.uint8)
        for object_id, label in self.labels.items():
            if object_id < len(lut):
                lut[object_id] = label
        return lut[ids]


def write_segment(
    segment: TourSegment,
    folder: Path,
    davis: Path | None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write ``<name>.mp4`` (and, for ``davis``, its DAVIS folder) into ``folder``; returns its truth record."""
    settings = segment.settings
    writer = VideoWriter(folder / f"{segment.name}.mp4", settings)
    first_seen: dict[int, int] = {}
    last_seen: dict[int, int] = {}
    frames: list[dict] = []
    sequences: list[dict] = []
    labels = DavisLabels()
    palette = davis_palette()
    num_sequences = segment.num_frames // settings.davis_frames if davis is not None else 0
    try:
        for frame, (rgb, ids) in enumerate(segment.frames()):
            writer.write(rgb)
            object_ids, boxes, _ = instance_boxes(ids[None])
            areas = np.bincount(ids.reshape(-1), minlength=int(ids.max(initial=0)) + 1)
            for object_id in object_ids:
                first_seen.setdefault(int(object_id), frame)
                last_seen[int(object_id)] = frame
            frames.append(
                {
                    "boxes": {str(int(i)): [int(v) for v in b] for i, b in zip(object_ids, boxes[0])},
                    "areas": {str(int(i)): int(areas[i]) for i in object_ids},
                }
            )
            sequence, position = divmod(frame, settings.davis_frames)
            if sequence < num_sequences:
                name = f"tour{sequence:03d}"
                if position == 0:
                    labels.start(ids)
                    sequences.append({"name": name, "first_frame": frame, "num_frames": settings.davis_frames})
                label_map = labels.add(ids)
                _write_davis_frame(davis, name, position, rgb, label_map, palette)
                if position == settings.davis_frames - 1:
                    sequences[-1]["labels"] = {str(label): object_id for object_id, label in labels.labels.items()}
            if progress is not None:
                progress(1)
    finally:
        writer.close()
    if davis is not None:
        listing = davis / "ImageSets" / "2017"
        listing.mkdir(parents=True, exist_ok=True)
        (listing / "val.txt").write_text("".join(f"{s['name']}\n" for s in sequences))
    objects = [
        {
            "id": o.id,
            "photo": o.photo,
            "crop": list(o.crop),
            "grey": o.grey,
            "harmonics": [list(h) for h in o.harmonics],
            "radius": o.radius,
            "depth": o.depth,
            "speed": math.hypot(*o.velocity) / settings.width,
            "spawn_frame": o.spawn_frame,
            "retire_frame": o.retire_frame,
            "first_visible_frame": first_seen.get(o.id),
            "last_visible_frame": last_seen.get(o.id),
        }
        for o in segment.objects
    ]
    record = {
        "video": f"{segment.name}.mp4",
        "num_frames": segment.num_frames,
        "scene_photos": list(PHOTOS[segment.name].scene),
        "object_photos": list(PHOTOS[segment.name].objects),
        "objects": objects,
        "frames": frames,
    }
    if davis is not None:
        record["davis"] = {"folder": davis.name, "sequences": sequences}
    return record


def _write_davis_frame(
    root: Path, sequence: str, position: int, rgb: np.ndarray, labels: np.ndarray, palette: list[int]
) -> None:
    images = root / "JPEGImages" / "480p" / sequence
    annotations = root / "Annotations" / "480p" / sequence
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(images / f"{position:05d}.jpg", quality=JPEG_QUALITY)
    label_image = Image.fromarray(labels)  # greyscale "L"; the palette makes it DAVIS's "P" PNG
    label_image.putpalette(palette)
    label_image.save(annotations / f"{position:05d}.png")


def frame_count(seconds: float, fps: int, option: str) -> int:
    """Frames in ``seconds`` (rounded), at least one; ``option`` names the value in the error."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise DoraUserError(f"{option} must be a positive number of seconds (got {seconds:g})")
    frames = round(seconds * fps)
    if frames < 1:
        raise DoraUserError(f"{option} {seconds:g} is under one frame at {fps} fps")
    return frames


def write_tour(
    out: str | Path,
    seconds: float,
    seed: int = 0,
    held_out_seconds: float = DEFAULT_HELD_OUT_SECONDS,
    settings: TourSettings = TourSettings(),
    progress: bool = False,
) -> Path:
    """Write the tour of ``seed`` into the new folder ``out`` (see the module doc); returns it.

    The folder is written under a temporary sibling name and renamed when complete.
    """
    train_frames = frame_count(seconds, settings.fps, "--seconds")
    held_out_frames = frame_count(held_out_seconds, settings.fps, "--held-out-seconds")
    if held_out_frames < settings.davis_frames:
        raise DoraUserError(
            f"--held-out-seconds {held_out_seconds:g} is shorter than one DAVIS sequence "
            f"({settings.davis_frames} frames, {settings.davis_frames / settings.fps:g} s)"
        )
    if not isinstance(seed, int) or seed < 0:
        raise DoraUserError(f"--seed must be a non-negative integer (got {seed!r})")
    if settings.width % 2 or settings.height % 2:
        raise DoraUserError(f"frame size {settings.width}x{settings.height}: H.264 (yuv420p) needs even sides")
    out = Path(os.path.abspath(out))
    if out.exists() or out.is_symlink():
        raise DoraUserError(f"--out {out}: already exists; give a folder that does not exist yet (nothing is replaced)")
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as err:
        raise DoraUserError(f"--out {out}: cannot create it ({err.strerror or err})") from err
    try:
        truth = {"format": TRUTH_FORMAT, "seed": seed, "settings": asdict(settings), "segments": {}}
        bar = _progress_bar(train_frames + held_out_frames, progress)
        try:
            for name, num_frames in (("train", train_frames), ("held_out", held_out_frames)):
                segment = build_segment(name, seed, num_frames, settings)
                davis = staging / "held_out_davis" if name == "held_out" else None
                truth["segments"][name] = write_segment(segment, staging, davis, bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
        (staging / "truth.json").write_text(json.dumps(truth, separators=(",", ":")))
        os.rename(staging, out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        reason = err.strerror or err
        raise DoraUserError(f"--out {out}: writing the tour failed ({reason}); nothing was written") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _progress_bar(total: int, enabled: bool):  # tqdm or None
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="controlled tour")


def main(argv: list[str] | None = None) -> int:
    """``python -m dora_hf.demo.controlled_tour --out DIR --seconds N --seed S``."""
    parser = argparse.ArgumentParser(
        prog="python -m dora_hf.demo.controlled_tour", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to create (must not exist)")
    parser.add_argument("--seconds", type=float, required=True, help="length of train.mp4 in seconds")
    parser.add_argument("--seed", type=int, default=0, help="the tour's seed (default 0)")
    parser.add_argument(
        "--held-out-seconds",
        type=float,
        default=DEFAULT_HELD_OUT_SECONDS,
        help=f"length of held_out.mp4 (default {DEFAULT_HELD_OUT_SECONDS:g}: 40 DAVIS sequences of 5 s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        out = write_tour(args.out, args.seconds, args.seed, args.held_out_seconds, progress=not args.no_progress)
    except DoraUserError as err:
        print(f"controlled tour: error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
