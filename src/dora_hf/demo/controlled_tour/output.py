"""Writing a tour: the videos (PyAV), the DAVIS-style held-out folder, `truth.json`, and the command."""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DoraUserError
from ...evaluation.discovery.known_objects import instance_boxes
from .render import TourSegment, build_segment
from .settings import (
    DEFAULT_HELD_OUT_SECONDS,
    JPEG_QUALITY,
    PHOTOS,
    TRUTH_FORMAT,
    TourSettings,
)

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
