"""Decode one time segment of a video in a worker process: what `prepare-data --num-workers N` runs N of.

A worker seeks to its segment's keyframe, decodes until the next segment's start, and for every
kept frame does what a single-process run does (resize, blur faces, compress, take the small grey
copy the blank/frozen test needs), writing the results to its segment file (`segment_store`).
Frame indices come from the keyframe scan (`segments`), so the frames kept (``index % n == 0``) and
their numbers are those of a decode from the start. Everything that needs the whole video in order
(blank and frozen stretches, frame spacing, parts, shards) is left to the parent process.

A segment checks that it decoded what the scan promised: its first frame is the keyframe itself,
frames come in time order, and it holds as many frames as the scan counted. When not (a demuxer
that seeks inexactly, a decoder that drops frames after a seek), it reports the segment
*misaligned* rather than guessing, and the parent decodes that video in one piece instead.

This module imports no ``datasets`` or ``huggingface_hub``, so worker processes start quickly.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from .. import faces
from ..blank_frozen import grey_thumbnail
from ..frame_images import check_frame_size, encode_image, frame_to_image
from ..video_decode import VideoInfo, decoding_failed, open_for_decoding
from .segment_store import SegmentFileWriter, SegmentRecord, VideoSegments
from .segments import Segment

PROGRESS_INTERVAL_S = 0.25
"""How often a worker publishes its frame count for the parent's progress bar."""


@dataclass(frozen=True)
class FrameSettings:
    """How kept frames are chosen and stored: the same for every segment of a video."""

    keep_every: int
    width: int
    """Stored size (after shrinking the short side)."""
    height: int
    image_format: str
    quality: int
    blur_faces: bool


@dataclass(frozen=True)
class SegmentTask:
    """One unit of work for a worker process."""

    info: VideoInfo
    settings: FrameSettings
    segment: Segment
    folder: Path
    """The video's folder in the resume folder."""
    threads: int
    """Decoder threads: the cores divided among the workers; 0 for FFmpeg's default, as one process
    decodes (a video decoded in one piece then fails on a truncated file exactly as it does there)."""


@dataclass(frozen=True)
class SegmentOutcome:
    """What a worker reports back (the frames themselves are in the segment file)."""

    decoded: int
    kept: int
    faces_blurred: int
    misaligned: str | None = None
    """Why the segment did not decode as the scan said (it then wrote nothing); None when it did."""
    last_time: float | None = None
    """Presentation time (seconds) of its last decoded frame."""


class _Progress:
    """This worker's running count of decoded frames, in its slot of an array the parent sums."""

    counters: Any = None
    """A shared array of int64 (``multiprocessing``'s ``Array("q", N, lock=False)``), one slot per worker."""
    slot = 0
    parent_pid = 0

    def __init__(self) -> None:
        self._last = time.monotonic()

    @classmethod
    def publish(cls, frames: int) -> None:
        if cls.counters is not None:
            cls.counters[cls.slot] += frames

    def tick(self, pending: int) -> int:
        """Publish ``pending`` frames when due; return what is still pending. Stops an orphaned worker."""
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S:
            return pending
        self._last = now
        if self.parent_pid and os.getppid() != self.parent_pid:
            os._exit(1)  # the parent was killed outright: nobody will read this segment
        self.publish(pending)
        return 0


def init_worker(counters: Any, next_slot: Any, parent_pid: int) -> None:
    """Worker start-up: take a progress slot; leave Ctrl-C to the parent (it stops the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with next_slot.get_lock():
        _Progress.slot = next_slot.value
        next_slot.value += 1
    _Progress.counters = counters
    _Progress.parent_pid = parent_pid


def decode_segment(task: SegmentTask) -> SegmentOutcome:
    """Decode ``task.segment`` into its segment file; try the keyframe's decode time if seeking by its
    presentation time lands elsewhere (MPEG-TS seeks by decode time)."""
    segment = task.segment
    targets: list[int | None] = [segment.start_pts]
    if segment.start_pts is not None and segment.seek_dts is not None and segment.seek_dts != segment.start_pts:
        targets.append(segment.seek_dts)
    outcome = SegmentOutcome(0, 0, 0, "not decoded")
    for target in targets:
        outcome = _decode_from(task, target)
        if outcome.misaligned is None or outcome.decoded:
            break
    return outcome


def _decode_from(task: SegmentTask, seek_to: int | None) -> SegmentOutcome:
    info, settings, segment = task.info, task.settings, task.segment
    split = segment.start_pts is not None or segment.end_pts is not None
    store = VideoSegments(task.folder)
    writer = SegmentFileWriter(store.arrow_path(segment.index))
    blurrer = faces.FaceBlurrer() if settings.blur_faces else None
    size = (settings.width, settings.height)
    progress = _Progress()
    index = segment.first_frame
    decoded = pending = 0
    previous_pts: int | None = None
    last_time: float | None = None

    def misaligned(reason: str) -> SegmentOutcome:
        writer.discard()
        _Progress.publish(pending)
        return SegmentOutcome(decoded, 0, 0, reason)

    try:
        with open_for_decoding(info) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if task.threads:
                stream.codec_context.thread_count = task.threads
            if seek_to is not None:
                container.seek(seek_to, stream=stream, backward=True)
            try:
                for frame in container.decode(stream):
                    if split:
                        pts = frame.pts
                        if pts is None:
                            return misaligned("a decoded frame carries no timestamp")
                        if segment.start_pts is not None and pts < segment.start_pts:
                            continue  # before the keyframe: the previous segment's (leading pictures of an open group)
                        if decoded == 0 and segment.start_pts is not None and pts != segment.start_pts:
                            return misaligned(f"seeking to the keyframe at pts {segment.start_pts} gave pts {pts} first")
                        if segment.end_pts is not None and pts >= segment.end_pts:
                            break
                        if previous_pts is not None and pts <= previous_pts:
                            return misaligned("the decoder returned frames out of time order")
                        previous_pts = pts
                    if index % settings.keep_every == 0:
                        check_frame_size(info, frame, index)
                        timestamp = frame.time if frame.time is not None else index / info.fps
                        image = frame_to_image(frame, size, info.rotation)
                        if blurrer is not None:
                            image = blurrer(image)
                        writer.add(
                            index,
                            float(timestamp),
                            float(frame.time_base) if frame.time_base else 0.0,
                            encode_image(image, settings.image_format, settings.quality),
                            image.width,
                            image.height,
                            grey_thumbnail(image),
                        )
                    if frame.time is not None:
                        last_time = max(last_time or 0.0, float(frame.time))
                    decoded += 1
                    index += 1
                    pending = progress.tick(pending + 1)
            except av.error.FFmpegError as err:
                if split and decoded == 0 and segment.start_pts is not None:
                    return misaligned(f"decoding after the seek failed ({err})")
                raise decoding_failed(info, index, err) from err
    except BaseException:
        writer.discard()
        raise
    if segment.frames is not None and decoded != segment.frames:
        return misaligned(f"{decoded} frames decoded where demuxing counted {segment.frames}")
    faces_blurred = blurrer.faces_blurred if blurrer is not None else 0
    writer.commit(SegmentRecord(segment.index, decoded, writer.kept, faces_blurred, 0, last_time))
    _Progress.publish(pending)
    return SegmentOutcome(decoded, writer.kept, faces_blurred, last_time=last_time)
