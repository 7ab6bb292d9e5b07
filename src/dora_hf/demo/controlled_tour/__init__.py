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

The package: `settings` (the fixed `TourSettings` and photographs), `scene` (the canvas and the
camera), `objects` (what crosses the view), `render` (frames and instance maps), `output` (the
videos, the DAVIS folder, `truth.json` and the command).
"""

from __future__ import annotations

from .objects import (
    TourObject,
    new_object,
    object_reach,
    object_sprite,
    outline_radius,
    simulate_objects,
    touches_view,
)
from .output import (
    DavisLabels,
    VideoWriter,
    davis_palette,
    frame_count,
    main,
    write_segment,
    write_tour,
)
from .render import TourSegment, build_segment, sample_bilinear
from .scene import CameraPath, build_canvas, camera_path, cover_resize, load_photo
from .settings import (
    CAMERA_STREAM,
    DEFAULT_HELD_OUT_SECONDS,
    JPEG_QUALITY,
    OBJECT_STREAM,
    PHOTOS,
    SEGMENT_STREAMS,
    SEGMENTS,
    TRUTH_FORMAT,
    VIEW_MARGIN,
    SegmentPhotos,
    TourSettings,
)

__all__ = [
    "CAMERA_STREAM",
    "CameraPath",
    "DEFAULT_HELD_OUT_SECONDS",
    "DavisLabels",
    "JPEG_QUALITY",
    "OBJECT_STREAM",
    "PHOTOS",
    "SEGMENTS",
    "SEGMENT_STREAMS",
    "SegmentPhotos",
    "TRUTH_FORMAT",
    "TourObject",
    "TourSegment",
    "TourSettings",
    "VIEW_MARGIN",
    "VideoWriter",
    "build_canvas",
    "build_segment",
    "camera_path",
    "cover_resize",
    "davis_palette",
    "frame_count",
    "load_photo",
    "main",
    "new_object",
    "object_reach",
    "object_sprite",
    "outline_radius",
    "sample_bilinear",
    "simulate_objects",
    "touches_view",
    "write_segment",
    "write_tour",
]
