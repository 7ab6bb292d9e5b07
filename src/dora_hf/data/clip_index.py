"""Where every clip of a prepared dataset starts: the reference's epoch, over source frames.

The reference starts a clip at every *source* frame of every video, so one epoch holds
``num_frames - (T - 1) * step`` clips per video (DORA_SPEC §1). The prepared dataset keeps every
``n``-th source frame only; a source start ``s`` is read from the kept frame at or just before it,
``n * (s // n)``, which is at most ``n - 1`` source frames (a fraction of a second) earlier and
holds the same frames ``step`` apart, since ``n`` divides the step. Each kept start is thus drawn
``n`` times per epoch (with fresh views each time), exactly as the reference's sampler would
draw the ``n`` source starts around it. Nothing here reads an image: the index is built from the
small metadata columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import DoraUserError

logger = logging.getLogger(__name__)


def reference_clip_starts(source_frames: int, frames_per_clip: int, clip_step: int) -> int:
    """Clip starts the reference counts in a video of ``source_frames`` frames (every valid start)."""
    return max(0, source_frames - (frames_per_clip - 1) * clip_step)


@dataclass(frozen=True)
class VideoClips:
    """One video's rows and clip starts."""

    video_id: str
    first_row: int
    kept_frames: int
    keep_every: int
    rows_per_step: int
    source_frames: int
    kept_starts: int
    source_starts: int


@dataclass(frozen=True)
class ClipIndex:
    """Every clip start of a dataset, numbered ``0 .. num_clips - 1`` across videos in stored order."""

    videos: tuple[VideoClips, ...]
    frames_per_clip: int
    clip_step: int

    @property
    def num_clips(self) -> int:
        """Clips per epoch, as the reference counts them (one per source-frame start)."""
        return int(self._offsets[-1])

    @property
    def num_kept_starts(self) -> int:
        """Distinct clips: kept frames that start one."""
        return sum(v.kept_starts for v in self.videos)

    @property
    def _offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([v.source_starts for v in self.videos], dtype=np.int64)])

    def clip_rows(self, clip_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For clip numbers ``(N,)``: the video position ``(N,)`` and dataset rows ``(N, T)`` of each."""
        clip_ids = np.asarray(clip_ids, dtype=np.int64)
        offsets = self._offsets
        if clip_ids.size and (clip_ids.min() < 0 or clip_ids.max() >= offsets[-1]):
            raise IndexError(f"clip numbers must be in [0, {int(offsets[-1])})")
        video = np.searchsorted(offsets, clip_ids, side="right") - 1
        source_start = clip_ids - offsets[video]
        first_row = np.array([v.first_row for v in self.videos], dtype=np.int64)[video]
        keep_every = np.array([v.keep_every for v in self.videos], dtype=np.int64)[video]
        rows_per_step = np.array([v.rows_per_step for v in self.videos], dtype=np.int64)[video]
        kept_starts = np.array([v.kept_starts for v in self.videos], dtype=np.int64)[video]
        # A source frame count that is not a multiple of keep_every leaves a few starts after the
        # last kept start; they read from it (min), as their nearest kept frame before them.
        kept_start = np.minimum(source_start // keep_every, kept_starts - 1)
        rows = first_row[:, None] + kept_start[:, None] + rows_per_step[:, None] * np.arange(self.frames_per_clip)
        return video, rows

    @classmethod
    def from_columns(
        cls,
        video_ids: np.ndarray,
        frame_indices: np.ndarray,
        keep_every: np.ndarray,
        *,
        frames_per_clip: int,
        clip_step: int,
        source_frames: Mapping[str, int] | None = None,
        row_names: Callable[[int], str] | None = None,
    ) -> ClipIndex:
        """Index a dataset from its metadata columns, checking the stored layout.

        ``source_frames`` gives each video's decoded source-frame count (``prepare_info.json``);
        a video missing from it is taken to end ``keep_every`` frames after its last kept frame.
        """
        if frames_per_clip < 1 or clip_step < 1:
            raise DoraUserError(f"frames_per_clip and clip_step must be >= 1 (got {frames_per_clip}, {clip_step})")
        name = row_names or (lambda row: f"row {row}")
        video_ids = np.asarray(video_ids)
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        keep_every = np.asarray(keep_every, dtype=np.int64)
        if not len(video_ids):
            raise DoraUserError("the dataset holds no frames")
        change = np.flatnonzero(video_ids[1:] != video_ids[:-1]) + 1
        bounds = np.concatenate([[0], change, [len(video_ids)]])
        videos: list[VideoClips] = []
        seen: set[str] = set()
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            video_id = str(video_ids[lo])
            if video_id in seen:
                raise DoraUserError(
                    f"{name(lo)}: video '{video_id}' appears again after other videos; rows of one video "
                    f"must be contiguous and in time order (docs/DATA_FORMAT.md)"
                )
            seen.add(video_id)
            n = int(keep_every[lo])
            if n < 1:
                raise DoraUserError(f"{name(lo)}: video '{video_id}' has keep_every={n}; it must be at least 1")
            if np.any(keep_every[lo:hi] != n) or np.any(np.diff(frame_indices[lo:hi]) != n):
                bad = lo + 1 + int(
                    np.flatnonzero((np.diff(frame_indices[lo:hi]) != n) | (keep_every[lo + 1 : hi] != n))[0]
                )
                raise DoraUserError(
                    f"{name(bad)}: video '{video_id}' goes from frame_index {int(frame_indices[bad - 1])} "
                    f"(keep_every {n}) to {int(frame_indices[bad])} (keep_every {int(keep_every[bad])}); rows of "
                    f"one video must be consecutive kept frames in time order"
                )
            if clip_step % n:
                raise DoraUserError(
                    f"clip_step={clip_step} source frames is not a multiple of keep_every={n} of video "
                    f"'{video_id}': use a multiple of {n}, or prepare the data with a keep_every that divides "
                    f"{clip_step}"
                )
            rows_per_step = clip_step // n
            kept = hi - lo
            kept_starts = max(0, kept - (frames_per_clip - 1) * rows_per_step)
            frames = int(source_frames[video_id]) if source_frames and video_id in source_frames else None
            if frames is None:
                frames = int(frame_indices[hi - 1]) + n
            source_starts = reference_clip_starts(frames, frames_per_clip, clip_step) if kept_starts else 0
            if not kept_starts:
                logger.warning(
                    "video '%s' has %d kept frames, fewer than the %d one clip spans (%d frames, %d kept "
                    "frames apart): it yields no clips",
                    video_id,
                    kept,
                    (frames_per_clip - 1) * rows_per_step + 1,
                    frames_per_clip,
                    rows_per_step,
                )
            videos.append(
                VideoClips(video_id, lo, kept, n, rows_per_step, frames, kept_starts, source_starts)
            )
        index = cls(tuple(videos), frames_per_clip, clip_step)
        if not index.num_clips:
            raise DoraUserError(
                f"no video of the dataset is long enough for one clip of {frames_per_clip} frames "
                f"{clip_step} source frames apart"
            )
        return index

