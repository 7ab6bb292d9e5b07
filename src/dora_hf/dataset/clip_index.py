"""Where clips start in a prepared dataset, and how many an epoch holds: the one place of these rules.

Every reader and every count uses this module: the layout checks (a video's rows are consecutive
kept frames, ``keep_every`` divides the clip step), the clip count of an epoch
(:func:`count_clips`, from ``prepare_info.json``), and the numbering of clips
(:class:`ClipIndex`, used by the random-access reader).

Epoch. The reference starts a clip at every *source* frame of every video, so one epoch holds
``num_frames - (T - 1) * step`` clips per video (DORA_SPEC §1). The prepared dataset keeps every
``n``-th source frame only; a source start ``s`` is read from the kept frame at or just before it,
``n * (s // n)``, which is at most ``n - 1`` source frames (a fraction of a second) earlier and
holds the same frames ``step`` apart, since ``n`` divides the step. Each kept start is thus drawn
``n`` times per epoch (with fresh views each time), exactly as the reference's sampler would
draw the ``n`` source starts around it. Nothing here reads an image: the index is built from the
small metadata columns.

Numbering. Random access numbers clips by *source*-frame start (``ClipIndex``), so that a uniform
permutation of clip numbers is the reference's sampler. The streaming reader
(`streaming.ClipStream`) numbers its clips by *kept*-frame start instead, one per kept frame
(thinned by ``clip_stride``), because it must know, per parquet row group, which clips start there
without drawing from the whole dataset; its epochs are counted by :func:`count_clips` all the
same, so both modes train the same number of steps per epoch. It checks the layout with the
functions below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DoraUserError
from .info import INFO_FILE

logger = logging.getLogger(__name__)


def reference_clip_starts(source_frames: int, frames_per_clip: int, clip_step: int) -> int:
    """Clip starts the reference counts in a video of ``source_frames`` frames (every valid start)."""
    return max(0, source_frames - (frames_per_clip - 1) * clip_step)


def check_keep_every(keep_every: int, video_id: str, where: str) -> None:
    """A video's ``keep_every`` must be at least 1; `where` names the video's data in errors."""
    if keep_every < 1:
        raise DoraUserError(f"{where}: video '{video_id}' has keep_every={keep_every}; it must be at least 1")


def rows_per_step(clip_step: int, keep_every: int, video_id: str, where: str) -> int:
    """A clip step in kept rows, ``clip_step / keep_every``; `where` names the video's data in errors."""
    check_keep_every(keep_every, video_id, where)
    if clip_step % keep_every:
        raise DoraUserError(
            f"clip_step={clip_step} source frames is not a multiple of keep_every={keep_every} of video "
            f"'{video_id}' ({where}): use a multiple of {keep_every}, or prepare the data with a keep_every that "
            f"divides {clip_step}"
        )
    return clip_step // keep_every


def first_break(frame_indices: np.ndarray, keep_every: np.ndarray) -> int | None:
    """Position of the first row that does not follow the one before it by its ``keep_every`` source
    frames (or changes ``keep_every``), within rows of one video; None when they are consecutive."""
    frame_indices, keep_every = np.asarray(frame_indices, np.int64), np.asarray(keep_every, np.int64)
    bad = np.flatnonzero((np.diff(frame_indices) != keep_every[1:]) | (keep_every[1:] != keep_every[:-1]))
    return int(bad[0]) + 1 if bad.size else None


def layout_break(where: str, video_id: str, previous: tuple[int, int], row: tuple[int, int]) -> DoraUserError:
    """The error for a row (``(frame_index, keep_every)``) that does not follow `previous` in its video."""
    return DoraUserError(
        f"{where}: video '{video_id}' goes from frame_index {previous[0]} (keep_every {previous[1]}) to {row[0]} "
        f"(keep_every {row[1]}); rows of one video must be consecutive kept frames in time order"
    )


def kept_starts(kept_frames: int, frames_per_clip: int, step_rows: int) -> int:
    """Kept frames that start a clip: those with the clip's last frame still in the video."""
    return max(0, kept_frames - (frames_per_clip - 1) * step_rows)


def warn_no_clips(video_id: str, kept_frames: int, frames_per_clip: int, step_rows: int) -> None:
    """Log that a video is too short to give one clip (it is skipped, not an error)."""
    logger.warning(
        "video '%s' has %d kept frames, fewer than the %d one clip spans (%d frames, %d kept frames apart): "
        "it yields no clips",
        video_id,
        kept_frames,
        (frames_per_clip - 1) * step_rows + 1,
        frames_per_clip,
        step_rows,
    )


def count_clips(info: dict, frames_per_clip: int, clip_step: int) -> int:
    """Clips per epoch as the reference counts them: one per source-frame start, over all videos.

    A video of N decoded source frames has ``N - (T - 1) * clip_step`` starts (DORA_SPEC §1), whatever
    `keep_every` prepare-data used, as long as it keeps room for one clip. `info` is a
    ``prepare_info.json``; nothing is read but it.
    """
    total = 0
    for video in info.get("videos", []):
        keep_every = int(video["keep_every"])
        step_rows = rows_per_step(clip_step, keep_every, str(video["video_id"]), INFO_FILE)
        if not kept_starts(int(video["kept_frames"]), frames_per_clip, step_rows):
            continue
        source_frames = int(video.get("decoded_frames") or int(video["kept_frames"]) * keep_every)
        total += reference_clip_starts(source_frames, frames_per_clip, clip_step)
    return total


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
        step_rows = np.array([v.rows_per_step for v in self.videos], dtype=np.int64)[video]
        last_start = np.array([v.kept_starts for v in self.videos], dtype=np.int64)[video] - 1
        # A source frame count that is not a multiple of keep_every leaves a few starts after the
        # last kept start; they read from it (min), as their nearest kept frame before them.
        kept_start = np.minimum(source_start // keep_every, last_start)
        rows = first_row[:, None] + kept_start[:, None] + step_rows[:, None] * np.arange(self.frames_per_clip)
        return video, rows

    def in_order(self, video_ids: Sequence[str]) -> ClipIndex:
        """The same clips numbered with the videos in the order of ``video_ids`` (each video's rows stay
        where they are): several datasets read as one number their clips in list order (`combined`)."""
        by_id = {v.video_id: v for v in self.videos}
        if sorted(by_id) != sorted(video_ids):
            missing = sorted(set(video_ids) - set(by_id))[:3]
            extra = sorted(set(by_id) - set(video_ids))[:3]
            raise DoraUserError(
                "the videos of the shards differ from those prepare_info.json records "
                f"(recorded but not stored: {missing or 'none'}; stored but not recorded: {extra or 'none'}): "
                "prepare the dataset again"
            )
        return ClipIndex(tuple(by_id[v] for v in video_ids), self.frames_per_clip, self.clip_step)

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
            check_keep_every(n, video_id, name(lo))
            bad = first_break(frame_indices[lo:hi], keep_every[lo:hi])
            if bad is not None:
                b = lo + bad
                raise layout_break(
                    name(b), video_id, (int(frame_indices[b - 1]), int(keep_every[b - 1])),
                    (int(frame_indices[b]), int(keep_every[b])),
                )
            step_rows = rows_per_step(clip_step, n, video_id, name(lo))
            kept = hi - lo
            starts = kept_starts(kept, frames_per_clip, step_rows)
            frames = int(source_frames[video_id]) if source_frames and video_id in source_frames else None
            if frames is None:
                frames = int(frame_indices[hi - 1]) + n
            source_starts = reference_clip_starts(frames, frames_per_clip, clip_step) if starts else 0
            if not starts:
                warn_no_clips(video_id, kept, frames_per_clip, step_rows)
            videos.append(
                VideoClips(video_id, lo, kept, n, step_rows, frames, starts, source_starts)
            )
        index = cls(tuple(videos), frames_per_clip, clip_step)
        if not index.num_clips:
            raise DoraUserError(
                f"no video of the dataset is long enough for one clip of {frames_per_clip} frames "
                f"{clip_step} source frames apart"
            )
        return index

