"""The objects that cross a tour: star-shaped cut-outs of photographs at fixed depths, entering and leaving the view."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .scene import CameraPath
from .settings import VIEW_MARGIN, TourSettings


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
