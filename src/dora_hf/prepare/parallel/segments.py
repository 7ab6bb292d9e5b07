"""Cut a long video into time segments at keyframes, so that several processes can decode it.

Decoding is sequential within a stream, but a keyframe resets the decoder: a process that seeks
to one and decodes up to the next segment's keyframe gets exactly the frames a decode from the
start gets there. Finding keyframes needs no decoding: demuxing reads each packet's timestamps
and keyframe flag (at disk speed). From the same pass, the number of frames presented before each
keyframe gives the source frame index of its segment's first frame, so that every process numbers
its frames (and keeps every n-th one) as one sequential decode does.

Only *clean* keyframes are cut points: every packet before it in decode order is presented before
it (no frame of the previous group is shown after it). Decoders return frames in presentation
order, so the frames of a segment are those whose timestamps lie in ``[start, next start)``; the
leading pictures of an open group (decoded after the keyframe, shown before it) belong to the
previous segment, which decodes them before it stops.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import av.error


@dataclass(frozen=True)
class Keyframe:
    """A clean keyframe of the stream: where a segment can start."""

    pts: int
    """Presentation time, in the stream's time base."""
    dts: int | None
    """Decode time: some demuxers (MPEG-TS) seek by it."""
    frames_before: int
    """Frames presented before it: the source frame index of the keyframe itself."""


@dataclass(frozen=True)
class KeyframeScan:
    """What demuxing a video stream (without decoding it) says about where it can be cut."""

    frames: int
    """Packets (frames) the stream holds, excluding those the container marks as discarded."""
    keyframes: tuple[Keyframe, ...]
    """Clean keyframes, in time order; the first frame's keyframe included when it is one."""
    splittable: bool
    """False when timestamps are missing or repeated: the video is then decoded in one piece."""
    reason: str = ""
    """Why it is not splittable."""
    span_s: float | None = None
    """Seconds from the first frame's presentation time to the last's (None when not known)."""


@dataclass(frozen=True)
class Segment:
    """A time range of one video decoded by one process: frames with ``start_pts <= pts < end_pts``."""

    index: int
    first_frame: int
    """Source frame index of its first frame (0 for the first segment)."""
    frames: int | None
    """Frames it holds, as demuxing counted them; None for a video decoded in one piece (unknown up front)."""
    start_pts: int | None = None
    """None: from the start of the stream, without seeking."""
    seek_dts: int | None = None
    """The keyframe's decode time, the second seek target when seeking by ``start_pts`` misses it."""
    end_pts: int | None = None
    """None: to the end of the stream."""

    def to_dict(self) -> dict:
        """As recorded in the resume folder's plan."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> Segment:
        return cls(**record)

    def describe(self) -> str:
        """``frames 1200-2399`` (or ``frames from 0`` when the count is not known up front)."""
        if self.frames is None:
            return f"frames from {self.first_frame}"
        return f"frames {self.first_frame}-{self.first_frame + self.frames - 1}"


def whole_video() -> list[Segment]:
    """One segment that decodes the video from its start to its end, as a single process does."""
    return [Segment(index=0, first_frame=0, frames=None)]


def scan_keyframes(path: str | Path) -> KeyframeScan:
    """Demux the first video stream of ``path`` (no decoding) and list its clean keyframes.

    A demuxing error (a truncated file, say) is not raised here: the video is then decoded in one
    piece, which reports the error exactly as a single process does.
    """
    pts: list[int] = []
    candidates: list[tuple[int, int | None]] = []
    latest: int | None = None
    time_base = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            time_base = stream.time_base
            for packet in container.demux(stream):
                if packet.pts is None:
                    if packet.size == 0:
                        continue  # the demuxer's end-of-stream packet
                    return KeyframeScan(0, (), False, "some packets carry no presentation time")
                if packet.is_discard:
                    continue  # dropped by the decoder (an edit list's pre-roll): no frame index
                if packet.is_keyframe and (latest is None or latest < packet.pts):
                    candidates.append((packet.pts, packet.dts))
                latest = packet.pts if latest is None else max(latest, packet.pts)
                pts.append(packet.pts)
    except (av.error.FFmpegError, OSError) as err:
        return KeyframeScan(0, (), False, f"demuxing failed ({err})")
    pts.sort()
    span = float((pts[-1] - pts[0]) * time_base) if pts and time_base else None
    if any(a == b for a, b in zip(pts, pts[1:])):
        return KeyframeScan(len(pts), (), False, "two frames share a presentation time", span)
    keyframes = tuple(Keyframe(p, d, bisect.bisect_left(pts, p)) for p, d in candidates)
    return KeyframeScan(len(pts), keyframes, True, span_s=span)


def split_at_keyframes(scan: KeyframeScan, pieces: int) -> list[Segment]:
    """About ``pieces`` segments of about equal frame counts, each starting at a clean keyframe.

    Fewer when the stream has fewer keyframes; one (:func:`whole_video`) when it cannot be split.
    """
    if not scan.splittable or pieces <= 1 or scan.frames == 0:
        return whole_video()
    starts = [k for k in scan.keyframes if 0 < k.frames_before < scan.frames]
    cuts: list[Keyframe] = []
    for i in range(1, pieces):
        if not starts:
            break
        ideal = i * scan.frames / pieces
        nearest = min(starts, key=lambda k: (abs(k.frames_before - ideal), k.frames_before))
        if not cuts or nearest.frames_before > cuts[-1].frames_before:
            cuts.append(nearest)
    if not cuts:
        return whole_video()
    segments = []
    bounds: Sequence[Keyframe | None] = [None, *cuts, None]
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        first = start.frames_before if start is not None else 0
        last = end.frames_before if end is not None else scan.frames
        segments.append(
            Segment(
                index=i,
                first_frame=first,
                frames=last - first,
                start_pts=start.pts if start is not None else None,
                seek_dts=start.dts if start is not None else None,
                end_pts=end.pts if end is not None else None,
            )
        )
    return segments


def share_pieces(frames: Sequence[int], pieces: int) -> list[int]:
    """How many segments each video gets: ``pieces`` in all, in proportion to its frames, at least one.

    Several segments per process balance the load: the last ones to finish are short.
    """
    total = sum(frames)
    if total <= 0:
        return [1] * len(frames)
    return [max(1, round(pieces * n / total)) for n in frames]
