"""What a `prepare-data` run wrote: per video (part), per shard and in all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .options import PrepareOptions


@dataclass
class VideoSummary:
    """What was decoded and kept from one video (goes to prepare_info.json and the card)."""

    video_id: str
    file: str
    codec: str
    width: int
    height: int
    fps: float
    declared_frames: int | None
    frame_count_exact: bool
    duration_s: float
    size_bytes: int
    clip_step: int
    keep_every: int
    decoded_frames: int
    kept_frames: int
    first_row: int
    stored_width: int
    stored_height: int
    clip_starts: int
    """Kept rows that can start a clip: rows r with r + (T-1) * step/n still in this video."""
    frame_interval_spread: float = 0.0
    """Largest difference between an interval of consecutive kept frames and the nominal
    ``keep_every / fps``, as a fraction of the nominal one (0 for a constant frame rate)."""
    uneven_frame_intervals: int = 0
    """Kept-frame intervals off the nominal one beyond :data:`FRAME_INTERVAL_TOLERANCE`."""
    source_video_id: str = ""
    """The source file's stem; differs from ``video_id`` for the later parts of a video that blank or
    frozen stretches were cut out of (``venice@2``, ...): each part is a video of its own for the readers."""
    first_frame_index: int = 0
    """Source frame of the part's first row; ``decoded_frames`` counts the source frames the part spans."""
    url: str | None = None
    """Where the file was downloaded from, when the input was a URL (left out of prepare_info.json otherwise)."""
    rotation: int = 0
    """Counter-clockwise degrees the stored frames were turned from the coded ones to be upright
    (the source's display matrix); ``width`` and ``height`` are the coded frame's."""


@dataclass
class ShardSummary:
    """One written shard, as the manifest records it (docs/DATA_FORMAT.md)."""

    file: str
    """Relative to the output folder."""
    rows: int
    size_bytes: int = 0
    sha256: str = ""
    """Of the file's bytes, computed while writing them."""


@dataclass
class PrepareSummary:
    """Result of :func:`prepare_dataset`."""

    out_dir: Path
    options: PrepareOptions
    videos: list[VideoSummary]
    shards: list[ShardSummary]
    num_rows: int
    num_bytes: int
    decoded_frames: int
    seconds: float
    sources: list[dict] = field(default_factory=list)
    """Per source video: its parts and the stretches left out (or kept with --keep-blank)."""

    @property
    def frames_per_second(self) -> float:
        """Source frames decoded per second of wall time (the throughput that matters)."""
        return self.decoded_frames / self.seconds if self.seconds > 0 else float("nan")
