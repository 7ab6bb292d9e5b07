"""The resume folder of `prepare-data`: decoded segments kept on disk until the dataset is written.

A parallel run keeps each worker's segments here; a one-worker run keeps each finished video but
the last as the one segment of a whole-video plan (`pipeline._sequential_videos`), so both resume alike.

A Walking Tours video takes hours to decode, so an interrupted run (Ctrl-C, a killed process, a
full disk) should not start again from nothing. Each decoding process writes its segment's kept
frames (already resized and compressed) to ``.DIR.partial/VIDEO_ID/NNNNN.arrow`` and, only once
that file is complete, a small record ``NNNNN.json``: a segment is finished exactly when its
record exists. Each video's folder also holds ``plan.json``: its segments and the *key* they were
made under (the input file's path, size and modification time, and the options that change what
a segment holds). A later run with the same key reuses the plan and decodes only the segments
without a record; any other key discards the video's segments and says which setting changed.

The folder is hidden and named ``.partial``, so it never looks like a finished dataset; it is
removed once the dataset folder is complete. The dataset is assembled from it in order by the
parent process (see `parallel_prepare`), so it holds each kept frame once more until then: about
the size of the finished dataset in extra disk space.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..blank_frozen import THUMBNAIL_SIZE
from .segments import Segment

SEGMENT_FORMAT = 1
"""Version of the segment files and plan; a run of another version starts the segments afresh."""

BATCH_ROWS = 32
"""Kept frames per Arrow record batch in a segment file."""

SCHEMA = pa.schema(
    [
        ("frame_index", pa.int64()),
        ("timestamp", pa.float64()),
        ("tick", pa.float64()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("grey", pa.binary()),
    ]
)
"""One row per kept frame: what the parent needs to write its dataset row and judge blank/frozen stretches."""

KEY_NAMES = {
    "format": "the segment format",
    "file": "the input file",
    "size_bytes": "the input file's size",
    "mtime_ns": "the input file's modification time",
    "keep_every": "the kept-frame spacing (--keep-every, --clip-step)",
    "width": "the stored width (--short-side)",
    "height": "the stored height (--short-side)",
    "image_format": "--format",
    "quality": "--quality",
    "blur_faces": "--blur-faces",
}
"""How a changed key field is named in the message saying a video is decoded again."""

README = """\
Segments decoded by an interrupted `dora-hf prepare-data --out {name}`.
Running the same command again resumes from them; deleting this folder is safe (it starts afresh).
"""


@dataclass(frozen=True)
class KeptFrame:
    """One kept frame as a decoding process stored it."""

    frame_index: int
    timestamp: float
    tick: float
    """The frame's time base in seconds (the rounding of its timestamp)."""
    image: bytes
    width: int
    height: int
    grey: np.ndarray
    """Its :func:`~dora_hf.prepare.blank_frozen.grey_thumbnail` (float32), for the blank/frozen test."""


@dataclass(frozen=True)
class SegmentRecord:
    """What a finished segment holds (``NNNNN.json``)."""

    segment: int
    decoded: int
    """Source frames decoded in it."""
    kept: int
    faces_blurred: int
    arrow_bytes: int
    """Size of its segment file, checked before it is reused."""
    last_time: float | None = None
    """Presentation time (seconds) of its last decoded frame, which tells a complete variable-frame-rate
    video from a cut one (`video_decode.check_complete`); None in records of older versions."""


class SegmentFileWriter:
    """Write one segment's kept frames to ``NNNNN.arrow.tmp``; :meth:`commit` renames it and writes the record."""

    def __init__(self, arrow_path: Path) -> None:
        self.arrow_path = arrow_path
        self.tmp_path = arrow_path.with_name(arrow_path.name + ".tmp")
        self._writer = pa.ipc.new_file(str(self.tmp_path), SCHEMA)
        self._rows: list[tuple] = []
        self.kept = 0

    def add(self, frame_index: int, timestamp: float, tick: float, image: bytes, width: int, height: int, grey: np.ndarray) -> None:
        self._rows.append((frame_index, timestamp, tick, image, width, height, grey.astype(np.uint8).tobytes()))
        self.kept += 1
        if len(self._rows) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        columns = list(zip(*self._rows))
        self._writer.write_batch(pa.record_batch([pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA)], schema=SCHEMA))
        self._rows = []

    def commit(self, record: SegmentRecord) -> None:
        """Close the file, give it its final name, then write the record that marks the segment finished."""
        self._flush()
        self._writer.close()
        os.replace(self.tmp_path, self.arrow_path)
        record = SegmentRecord(**{**asdict(record), "arrow_bytes": self.arrow_path.stat().st_size})
        _write_json(self.arrow_path.with_suffix(".json"), asdict(record))

    def discard(self) -> None:
        """Drop the unfinished file (a segment that must be decoded another way)."""
        self._writer.close()
        self.tmp_path.unlink(missing_ok=True)


def read_kept_frames(arrow_path: Path) -> Iterator[KeptFrame]:
    """The kept frames of a finished segment file, in order."""
    height, width = THUMBNAIL_SIZE[1], THUMBNAIL_SIZE[0]
    with pa.memory_map(str(arrow_path)) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i).to_pydict()
            for row in zip(*(batch[name] for name in SCHEMA.names)):
                frame_index, timestamp, tick, image, w, h, grey = row
                thumbnail = np.frombuffer(grey, dtype=np.uint8).reshape(height, width).astype(np.float32)
                yield KeptFrame(frame_index, timestamp, tick, image, w, h, thumbnail)


class VideoSegments:
    """One video's folder in the resume folder: its plan and finished segments."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def arrow_path(self, segment: int) -> Path:
        return self.folder / f"{segment:05d}.arrow"

    def load_plan(self, key: dict) -> tuple[list[Segment] | None, str | None]:
        """The saved segments if they were made under ``key``; else None and, if a plan was there, what changed."""
        try:
            saved = json.loads((self.folder / "plan.json").read_text())
        except (OSError, ValueError):
            return None, None
        old = saved.get("key", {}) if isinstance(saved, dict) else {}
        if old != key:
            changed = [name for name in KEY_NAMES if old.get(name) != key.get(name)] or ["format"]
            first = changed[0]
            detail = "" if first in ("mtime_ns", "file") else f" ({old.get(first)} -> {key.get(first)})"
            return None, f"{KEY_NAMES[first]} changed{detail}"
        try:
            return [Segment.from_dict(s) for s in saved["segments"]], None
        except (KeyError, TypeError):
            return None, "its plan is unreadable"

    def save_plan(self, key: dict, segments: list[Segment]) -> None:
        """Start (or restart) the video under ``key``: drop what was there, record the segments."""
        self.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / "plan.json", {"key": key, "segments": [s.to_dict() for s in segments]})

    def finished(self, segments: list[Segment]) -> dict[int, SegmentRecord]:
        """Records of the segments whose file is complete; unfinished leftovers are removed."""
        for stray in self.folder.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        done = {}
        for segment in segments:
            arrow = self.arrow_path(segment.index)
            try:
                record = SegmentRecord(**json.loads(arrow.with_suffix(".json").read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if arrow.is_file() and arrow.stat().st_size == record.arrow_bytes and record.segment == segment.index:
                done[segment.index] = record
        return done

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class ResumeFolder:
    """``.DIR.partial`` beside the dataset folder ``DIR``: one :class:`VideoSegments` per video id."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir.with_name(f".{out_dir.name}.partial")
        self.out_dir = out_dir

    def exists(self) -> bool:
        return self.root.is_dir()

    def open(self, video_ids: list[str]) -> list[str]:
        """Create the folder; remove the folders of videos not in ``video_ids``; return their ids."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "README.txt").write_text(README.format(name=self.out_dir.name))
        stale = [p for p in self.root.iterdir() if p.is_dir() and p.name not in video_ids]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return sorted(p.name for p in stale)

    def video(self, video_id: str) -> VideoSegments:
        return VideoSegments(self.root / video_id)

    def finished_segments(self) -> int:
        """Segment records in the folder (for the line saying what an interrupted run keeps)."""
        return sum(1 for _ in self.root.glob("*/[0-9]*.json")) if self.exists() else 0

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def keep_after_failure(self, say: Callable[[str], None]) -> None:
        """After a failed or interrupted run: keep the folder if it holds finished work, saying so; else remove it."""
        kept = self.finished_segments()
        if kept:
            say(
                f"{self.root}: keeps {kept} finished segment(s): the same command resumes from them "
                "(delete the folder to start afresh)"
            )
        else:
            self.remove()


def segment_key(path: Path, settings: dict) -> dict:
    """What a video's segments depend on: the input file as it is now, and the frame settings."""
    stat = path.stat()
    return {
        "format": SEGMENT_FORMAT,
        "file": str(path.resolve()),
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        **settings,
    }


def _write_json(path: Path, record: dict) -> None:
    """Write ``record`` under a temporary name, then rename: a reader sees all of it or nothing."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
