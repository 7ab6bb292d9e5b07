"""One video's kept frames -> rows, parts between left-out blank or frozen stretches, and summaries.

Both ways of decoding (one process, or segments in workers) feed `VideoRows` the same kept
frames, so they write the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DoraUserError
from .blank_frozen import StretchFilter
from .frame_images import IMAGE_FORMATS, stored_size
from .frame_spacing import FrameSpacing
from .options import PrepareOptions
from .plan import VideoPlan, check_long_enough
from .shard_writer import ShardWriter
from .summary import VideoSummary


@dataclass
class Part:
    """A run of stored rows of one video between left-out stretches."""

    video_id: str
    first_row: int
    first_frame_index: int
    last_frame_index: int = -1
    kept: int = 0
    cut: bool = False
    """True when frames after it were left out, so it ends one kept interval after its last row."""


class VideoRows:
    """One video's kept frames, in order -> rows of the shard writer, parts, and the video's summaries.

    Blank and frozen stretches are held back by a :class:`StretchFilter` and, unless
    ``--keep-blank``, left out; the rows around them become separate parts (``id``, ``id@2``, ...),
    so that rows of one video id stay consecutive kept frames. Both ways of decoding feed it the
    same kept frames, so they write the same rows.
    """

    def __init__(self, plan: VideoPlan, options: PrepareOptions, writer: ShardWriter) -> None:
        info = plan.info
        self.plan = plan
        self.options = options
        self.writer = writer
        self.spacing = FrameSpacing(plan.keep_every / info.fps)
        self.size = stored_size(*info.display_size, options.short_side)
        self.extension = IMAGE_FORMATS[options.image_format][1]
        self.stretch_filter: StretchFilter[dict] = StretchFilter(plan.keep_every / info.fps, options.min_gap_seconds)
        self.parts: list[Part] = []

    def add(
        self, index: int, timestamp: float, tick: float, image: bytes, width: int, height: int, grey: np.ndarray
    ) -> None:
        """Account for the next kept frame: its compressed image, size and small grey copy."""
        self.spacing.add(timestamp, tick)
        row = {  # video_id and the image path are set when the row is stored, per part
            "image": {"bytes": image, "path": ""},
            "video_id": self.plan.info.video_id,
            "frame_index": index,
            "timestamp": timestamp,
            "source_fps": self.plan.info.fps,
            "keep_every": self.plan.keep_every,
            "width": width,
            "height": height,
        }
        self._store(self.stretch_filter.push_thumbnail(index, timestamp, grey, row))

    def _store(self, released: list[tuple[dict, str | None]]) -> None:
        """Write the decided rows; a left-out row closes the current part."""
        video_id, parts = self.plan.info.video_id, self.parts
        for row, kind in released:
            if kind is not None and not self.options.keep_blank:
                if parts:
                    parts[-1].cut = True
                continue
            if not parts or parts[-1].cut:
                part_id = video_id if not parts else f"{video_id}@{len(parts) + 1}"
                parts.append(Part(part_id, self.writer.num_rows, row["frame_index"]))
            part = parts[-1]
            row["video_id"] = part.video_id
            row["image"]["path"] = f"{part.video_id}-{row['frame_index']:08d}.{self.extension}"
            self.writer.add(row)
            part.kept += 1
            part.last_frame_index = row["frame_index"]

    def finish(
        self, decoded: int, faces_blurred: int | None, say: Callable[[str], None]
    ) -> tuple[list[VideoSummary], dict]:
        """After the last kept frame of ``decoded`` source frames: warn, and return one summary per part
        and the video's record for ``prepare_info.json``'s ``sources``."""
        plan, options, info = self.plan, self.options, self.plan.info
        stretch_filter = self.stretch_filter
        self._store(stretch_filter.finish())
        check_long_enough(plan, decoded)
        warning = self.spacing.warning(info.path)
        if warning:
            say(warning)
        if faces_blurred is not None:
            say(f"{info.path.name}: blurred {faces_blurred} face(s) in the kept frames")
        for stretch in stretch_filter.stretches:
            fate = "kept (--keep-blank)" if options.keep_blank else "left out (--keep-blank keeps it)"
            say(f"warning: {info.path}: {stretch.describe()}: {fate}")
        if not self.parts:
            raise DoraUserError(
                f"{info.path}: every kept frame is in a blank or frozen stretch "
                f"({'; '.join(s.describe() for s in stretch_filter.stretches)}), so nothing is left of it; "
                "--keep-blank keeps such stretches"
            )
        summaries = [part_summary(plan, part, decoded, self.size, self.spacing) for part in self.parts]
        stretches = [s.to_dict() for s in stretch_filter.stretches]
        source = {
            "video_id": info.video_id,
            "file": info.path.name,
            "decoded_frames": decoded,
            "duration_s": decoded / info.fps,
            "parts": [
                {
                    "video_id": part.video_id,
                    "first_frame_index": part.first_frame_index,
                    "last_frame_index": part.last_frame_index,
                    "kept_frames": part.kept,
                }
                for part in self.parts
            ],
            "left_out": [] if options.keep_blank else stretches,
            "kept_stretches": stretches if options.keep_blank else [],
        }
        return summaries, source


def part_summary(
    plan: VideoPlan, part: Part, decoded: int, size: tuple[int, int], spacing: FrameSpacing
) -> VideoSummary:
    """A part's summary. Its ``decoded_frames`` are the source frames it spans: up to the video's end,
    or one kept interval past its last row when a stretch was left out after it. Readers count a
    part's clips from that (one per source-frame start), so no clip starts in a left-out stretch."""
    info = plan.info
    end = part.last_frame_index + plan.keep_every if part.cut else decoded
    source_frames = end - part.first_frame_index
    rows_per_step = plan.clip_step // plan.keep_every
    kept = part.kept
    return VideoSummary(
        video_id=part.video_id,
        file=info.path.name,
        codec=info.codec,
        width=info.width,
        height=info.height,
        fps=info.fps,
        declared_frames=info.num_frames,
        frame_count_exact=info.frame_count_exact,
        duration_s=source_frames / info.fps,
        size_bytes=info.size_bytes,
        clip_step=plan.clip_step,
        keep_every=plan.keep_every,
        decoded_frames=source_frames,
        kept_frames=kept,
        first_row=part.first_row,
        stored_width=size[0],
        stored_height=size[1],
        clip_starts=max(0, kept - (plan.frames_per_clip - 1) * rows_per_step),
        frame_interval_spread=round(spacing.spread, 6),
        uneven_frame_intervals=spacing.uneven,
        source_video_id=info.video_id,
        first_frame_index=part.first_frame_index,
        rotation=info.rotation,
    )
