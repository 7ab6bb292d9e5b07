"""Find blank (near-constant) and frozen (repeated) stretches while a video is decoded.

A long upload can stop showing the tour well before its stated end: the Venice walking tour plays
1 h 50 min, then stays black for its last 1 h 50 min. Clips made of such frames teach nothing and
skew the epoch, so `prepare-data` finds them and, by default, leaves them out. The test is cheap
statistics of each kept frame (already shrunk): the spread of a small grey copy for "blank" (no
structure anywhere), its largest absolute difference to the previous kept frame for "frozen" (no
pixel changes anywhere: a still camera with something moving in front of it is not frozen). A stretch counts only when it
lasts at least ``min_seconds``, so that a cut to black or a short pause is kept; to decide that,
frames are held back (compressed) for ``min_seconds`` before they are released.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

import numpy as np
from PIL import Image as PILImage

BLANK_STD = 4.0
"""Grey levels (0-255): a frame whose small grey copy varies less than this is blank. Black or
single-colour frames, even after compression, stay under 2; a dark night scene still has edges and
lights well above 10."""

FROZEN_MAX_CHANGE = 5.0
"""Grey levels (0-255): a kept frame none of whose small-grey-copy pixels changes by this much from
the previous kept frame repeats it: a frozen stream changes nowhere. Re-encoded repeats of one frame
change by compression noise only (at most 1, 2 and 4 levels at x264 CRF 18, 28 and 35); one walker
in front of a still camera changes the pixels it crosses by tens of levels (the smallest largest
change between consecutive frames of vtest.avi, a static camera at 10 fps, is 7 levels). An average
over the frame, the earlier rule, cannot tell a still camera with one mover from a frozen stream."""

THUMBNAIL_SIZE = (64, 36)
"""The small grey copy the statistics are taken on: cheap, and blind to compression noise."""

MIN_STRETCH_SECONDS = 3.0
"""Default shortest stretch reported and left out: longer than a fade or a cut to black."""

BLANK = "blank"
FROZEN = "frozen"

T = TypeVar("T")


@dataclass(frozen=True)
class Stretch:
    """A blank or frozen stretch of one video, in kept frames."""

    kind: str
    """``blank`` or ``frozen``."""
    start_s: float
    """Timestamp of its first kept frame."""
    end_s: float
    """Timestamp just after its last kept frame (that frame's timestamp + the kept-frame interval)."""
    first_frame_index: int
    last_frame_index: int
    frames: int
    """Kept frames in it."""

    def describe(self) -> str:
        """e.g. ``blank from 6.67 s to 10.00 s (frames 200-290, 10 kept frames)``."""
        return (
            f"{self.kind} from {self.start_s:.2f} s to {self.end_s:.2f} s (frames {self.first_frame_index}-"
            f"{self.last_frame_index}, {self.frames} kept frames)"
        )

    def to_dict(self) -> dict:
        """As recorded in ``prepare_info.json``."""
        return asdict(self)


def frame_kind(grey: np.ndarray, previous: np.ndarray | None) -> str | None:
    """``blank`` (a spread under :data:`BLANK_STD`), ``frozen`` (no pixel changed by
    :data:`FROZEN_MAX_CHANGE` since ``previous``) or None, for a frame's :func:`grey_thumbnail`."""
    if float(grey.std()) < BLANK_STD:
        return BLANK
    if previous is not None and float(np.abs(grey - previous).max()) < FROZEN_MAX_CHANGE:
        return FROZEN
    return None


def grey_thumbnail(image: PILImage.Image) -> np.ndarray:
    """The small grey copy of a frame, as float32."""
    return np.asarray(image.convert("L").resize(THUMBNAIL_SIZE, PILImage.Resampling.BOX), dtype=np.float32)


@dataclass
class _Held(Generic[T]):
    index: int
    timestamp: float
    item: T


class StretchFilter(Generic[T]):
    """Classify each kept frame and release it once it is known whether it lies in a stretch.

    :meth:`push` takes a kept frame (its index, timestamp, shrunk image and whatever the caller
    wants back, e.g. its encoded row) and returns the frames now decided, each with the kind of
    stretch it belongs to (None: an ordinary frame), in order. Frames of a run of blank or frozen
    frames are held until the run lasts ``min_seconds`` (then it is a stretch) or ends sooner (then
    they are ordinary). A frozen stretch starts at the first repeat: the frame repeated stays.
    """

    def __init__(self, frame_seconds: float, min_seconds: float = MIN_STRETCH_SECONDS) -> None:
        self.frame_seconds = frame_seconds
        """Time between kept frames: each kept frame stands for this long."""
        self.min_frames = max(1, int(np.ceil(min_seconds / frame_seconds - 1e-9)))
        self.stretches: list[Stretch] = []
        self._previous: np.ndarray | None = None
        self._kind: str | None = None
        self._run: list[_Held[T]] = []
        """Frames of the current run of ``_kind`` (held while not yet a stretch)."""
        self._run_count = 0
        self._run_first: _Held[T] | None = None
        self._run_last: _Held[T] | None = None
        self._confirmed = False

    def classify(self, image: PILImage.Image) -> str | None:
        """``blank``, ``frozen`` or None for the next kept frame (updates the previous frame)."""
        return self.classify_thumbnail(grey_thumbnail(image))

    def classify_thumbnail(self, grey: np.ndarray) -> str | None:
        """:meth:`classify` for a frame's :func:`grey_thumbnail`, computed where the frame was decoded."""
        previous, self._previous = self._previous, grey
        return frame_kind(grey, previous)

    def push(self, index: int, timestamp: float, image: PILImage.Image, item: T) -> list[tuple[T, str | None]]:
        """Account for the next kept frame; return the frames decided by it."""
        return self.push_thumbnail(index, timestamp, grey_thumbnail(image), item)

    def push_thumbnail(self, index: int, timestamp: float, grey: np.ndarray, item: T) -> list[tuple[T, str | None]]:
        """:meth:`push` for a frame's :func:`grey_thumbnail`: parallel decoding sends the small copy, not
        the frame, and the stretches are still decided here, in order, over the whole video."""
        kind = self.classify_thumbnail(grey)
        released: list[tuple[T, str | None]] = []
        if kind != self._kind:
            released.extend(self._end_run())
            self._kind = kind
        held = _Held(index, timestamp, item)
        if kind is None:
            released.append((item, None))
            return released
        self._run_count += 1
        self._run_first = self._run_first or held
        self._run_last = held
        if self._confirmed:
            released.append((item, kind))
        else:
            self._run.append(held)
            if self._run_count >= self.min_frames:
                self._confirmed = True
                released.extend((h.item, kind) for h in self._run)
                self._run = []
        return released

    def finish(self) -> list[tuple[T, str | None]]:
        """Release what is still held, after the last frame."""
        released = self._end_run()
        self._kind = None
        return released

    def _end_run(self) -> list[tuple[T, str | None]]:
        """Close the current run: record it if it is a stretch; release its held frames as ordinary."""
        if self._confirmed and self._run_first is not None and self._run_last is not None and self._kind:
            self.stretches.append(
                Stretch(
                    kind=self._kind,
                    start_s=round(self._run_first.timestamp, 6),
                    end_s=round(self._run_last.timestamp + self.frame_seconds, 6),
                    first_frame_index=self._run_first.index,
                    last_frame_index=self._run_last.index,
                    frames=self._run_count,
                )
            )
        run, self._run = self._run, []
        self._run_count, self._run_first, self._run_last, self._confirmed = 0, None, None, False
        return [(h.item, None) for h in run]
