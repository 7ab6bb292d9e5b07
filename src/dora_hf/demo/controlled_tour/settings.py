"""The controlled tour's fixed settings: the photographs of each segment and `TourSettings` (each value's reason
in its docstring). They were fixed before any model was scored and are not to be changed to favour one."""

from __future__ import annotations

from dataclasses import dataclass

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


VIEW_MARGIN = 2.0
"""Canvas pixels added to an object's reach when testing whether it touches the view."""


TRUTH_FORMAT = "dora-hf controlled tour, version 1"
"""``truth.json``'s ``format``: readers check it before relying on the layout."""


JPEG_QUALITY = 95
"""The DAVIS folder's frames: near-lossless, as DAVIS's own JPEGs."""

CAMERA_STREAM, OBJECT_STREAM = 0, 1
