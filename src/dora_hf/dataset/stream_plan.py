"""The streaming reader's plan: its settings, and every clip of the dataset numbered by kept-frame
start in time order, from the metadata columns alone (layout rules from `clip_index`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from ..errors import DoraUserError
from .clip_index import (
    check_keep_every,
    first_break,
    kept_starts,
    layout_break,
    rows_per_step,
    warn_no_clips,
)
from .shards import ShardSource

logger = logging.getLogger(__name__)


#: The reference spacing: 60 source frames, one second of the 60 fps Walking Tours videos.
DEFAULT_CLIP_STEP = 60


@dataclass(frozen=True)
class ClipSettings:
    """What a clip is and how clips are ordered; saved in the state to refuse a mismatched resume."""

    frames_per_clip: int = 8
    clip_step: int | None = None
    clip_step_seconds: float | None = None
    clip_stride: int = 1
    shuffle: bool = True
    shuffle_buffer: int = 1000
    seed: int = 0

    def check(self) -> None:
        """Reject settings that cannot work, naming the setting."""
        if self.frames_per_clip < 1:
            raise DoraUserError(f"frames_per_clip must be at least 1, got {self.frames_per_clip}")
        if self.clip_step is not None and self.clip_step_seconds is not None:
            raise DoraUserError("give clip_step (source frames) or clip_step_seconds, not both")
        if self.clip_step is not None and self.clip_step < 1:
            raise DoraUserError(f"clip_step must be at least 1 source frame, got {self.clip_step}")
        if self.clip_step_seconds is not None and not self.clip_step_seconds > 0:
            raise DoraUserError(f"clip_step_seconds must be positive, got {self.clip_step_seconds}")
        if self.clip_stride < 1:
            raise DoraUserError(f"clip_stride must be at least 1 kept frame, got {self.clip_stride}")
        if self.shuffle_buffer < 0:
            raise DoraUserError(f"shuffle_buffer must be 0 or more clips, got {self.shuffle_buffer}")


@dataclass(frozen=True)
class StreamPlan:
    """Every clip of the dataset, numbered in time order, built from the metadata columns alone."""

    starts: np.ndarray
    """(N,) split row of each clip's first frame, ascending."""
    rows_per_step: np.ndarray
    """(N,) rows between a clip's frames (its video's step / keep_every)."""
    unit_clips: np.ndarray
    """(U + 1,) clips of unit (row group) ``u`` are numbers ``unit_clips[u]`` to ``unit_clips[u + 1] - 1``."""
    frame_index: np.ndarray
    """(rows,) ``frame_index`` of every row."""
    video: np.ndarray
    """(rows,) position of every row's video id in ``video_ids``."""
    video_ids: tuple[str, ...]

    @property
    def num_clips(self) -> int:
        return len(self.starts)

    @property
    def num_units(self) -> int:
        return len(self.unit_clips) - 1


def plan_stream(shards: ShardSource, settings: ClipSettings) -> StreamPlan:
    """Number every clip by kept-frame start; check the layout with `clip_index`'s rules (one place)."""
    table = shards.metadata
    encoded = pc.dictionary_encode(table.column("video_id").combine_chunks())
    video = encoded.indices.to_numpy().astype(np.int64)
    video_ids = tuple(str(v) for v in encoded.dictionary.to_pylist())
    frame = table.column("frame_index").to_numpy().astype(np.int64)
    keep = table.column("keep_every").to_numpy().astype(np.int64)
    fps = table.column("source_fps").to_numpy().astype(np.float64)
    rows = len(video)
    shard_of = shards.shard_of_rows

    # A run is a block of consecutive rows of one video (a shard boundary does not end it).
    run_first = np.flatnonzero(np.concatenate([[True], video[1:] != video[:-1]]))
    run_stop = np.append(run_first[1:], rows)

    starts: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    noted: set[tuple[str, str]] = set()
    for lo, hi in zip(run_first.tolist(), run_stop.tolist()):
        video_id, shard = video_ids[video[lo]], shards.shard_names[int(shard_of(lo))]
        k = step_in_rows(settings, video_id, int(keep[lo]), float(fps[lo]), shard, noted)
        bad = first_break(frame[lo:hi], keep[lo:hi])
        if bad is not None:
            b = lo + bad
            where = f"shard {shards.shard_names[int(shard_of(b))]}"
            raise layout_break(where, video_id, (int(frame[b - 1]), int(keep[b - 1])), (int(frame[b]), int(keep[b])))
        if not kept_starts(hi - lo, settings.frames_per_clip, k):
            if ("short", video_id) not in noted:
                noted.add(("short", video_id))
                warn_no_clips(video_id, hi - lo, settings.frames_per_clip, k)
            continue
        span = (settings.frames_per_clip - 1) * k + 1
        first = np.arange(lo, hi - span + 1)
        first = first[(frame[first] // keep[first]) % settings.clip_stride == 0]
        starts.append(first)
        steps.append(np.full(len(first), k, dtype=np.int64))
    all_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    unit_first = [g.first_row for g in shards.row_groups] + [rows]
    return StreamPlan(
        starts=all_starts,
        rows_per_step=np.concatenate(steps) if steps else np.zeros(0, np.int64),
        unit_clips=np.searchsorted(all_starts, unit_first).astype(np.int64),
        frame_index=frame,
        video=video,
        video_ids=video_ids,
    )


def step_in_rows(
    settings: ClipSettings, video_id: str, keep_every: int, source_fps: float, shard: str, noted: set[tuple[str, str]]
) -> int:
    """The clip step of one video in kept rows (s / n), checking that n divides s."""
    n = keep_every
    seconds = settings.clip_step_seconds
    if seconds is None:
        step = settings.clip_step if settings.clip_step is not None else DEFAULT_CLIP_STEP
        return rows_per_step(step, n, video_id, f"shard {shard}")
    check_keep_every(n, video_id, f"shard {shard}")
    if not source_fps > 0:
        raise DoraUserError(
            f"shard {shard}: video '{video_id}' has source_fps={source_fps}, so "
            f"clip_step_seconds cannot be converted to frames; give clip_step instead"
        )
    rows = max(1, round(seconds * source_fps / n))
    if ("step", video_id) not in noted:
        noted.add(("step", video_id))
        logger.info(
            "video '%s': clip_step_seconds=%g at %g fps is %g source frames, rounded to %d "
            "(a multiple of keep_every=%d)",
            video_id,
            seconds,
            source_fps,
            seconds * source_fps,
            rows * n,
            n,
        )
    return rows
