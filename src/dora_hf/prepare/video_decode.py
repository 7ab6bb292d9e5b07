"""A source video: open and validate it with PyAV, then decode it once, in order.

Long videos are decoded sequentially exactly once (random access into long-GOP video is what
makes the reference loader slow). Every problem with the file is a
:class:`~dora_hf.errors.DoraUserError` naming the file and, while decoding, the frame: a
truncated or corrupt file must fail loudly rather than yield a silently shorter dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from ..errors import DoraUserError

EXACT_COUNT_TOLERANCE = (2, 0.005)
"""Frames a decode may fall short of a count the container states: (frames, fraction).
Edit lists can drop a frame or two at the start; a cut file loses far more."""

ESTIMATED_COUNT_TOLERANCE = (3, 0.02)
"""The same when the count is only estimated from duration x frame rate (e.g. Matroska)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, read without decoding it."""

    path: Path
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int | None
    """Frames the container states (mp4) or that duration x fps implies; None if unknown."""
    frame_count_exact: bool
    """True when ``num_frames`` is stated by the container rather than estimated."""
    duration_s: float | None
    size_bytes: int
    rotation: int = 0
    """Counter-clockwise turn (0, 90, 180 or 270 degrees) that shows the frames upright: the
    stream's display matrix (phones record portrait video as landscape frames plus this)."""

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the frames once turned upright."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    @property
    def video_id(self) -> str:
        """The file name's stem: what rows of this video carry in ``video_id``."""
        return self.path.stem

    def describe(self) -> str:
        """One line for logs and errors: size, rate, length."""
        about = "" if self.frame_count_exact else "about "  # duration x fps: a variable rate makes it wrong
        frames = f"{about}{self.num_frames} frames" if self.num_frames is not None else "unknown frame count"
        length = f", {format_duration(self.duration_s)}" if self.duration_s is not None else ""
        turned = f" (turned {self.rotation} degrees counter-clockwise to be upright)" if self.rotation else ""
        return f"{self.codec} {self.width}x{self.height}{turned}, {self.fps:g} fps, {frames}{length}"


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame with its position in the source video."""

    index: int
    """0-based position in presentation order (the order the decoder returns frames)."""
    timestamp: float
    """Presentation time in seconds."""
    frame: av.VideoFrame


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` for long videos, ``12.3 s`` for short ones."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` and read its video stream's properties; raise on anything unusable."""
    path = Path(path)
    if not path.exists():
        raise DoraUserError(f"{path}: no such file")
    if path.is_dir():
        raise DoraUserError(f"{path}: is a folder, not a video file")
    if not path.is_file():
        raise DoraUserError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise DoraUserError(f"{path}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except PermissionError as err:
        raise DoraUserError(f"{path}: cannot be read ({err.strerror})") from err
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise DoraUserError(
            f"{path}: not a readable video ({_ffmpeg_reason(err)}); is it truncated or not a video at all?"
        ) from err
    with container:
        if not container.streams.video:
            raise DoraUserError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate or rate <= 0:
            raise DoraUserError(f"{path}: the container states no frame rate")
        fps = float(rate)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise DoraUserError(f"{path}: the video stream has no frame size ({width}x{height})")
        duration = _duration_seconds(stream, container)
        if stream.frames > 0:
            num_frames, exact = int(stream.frames), True
        elif duration is not None:
            num_frames, exact = int(round(duration * fps)), False
        else:
            num_frames, exact = None, False
        return VideoInfo(
            path=path,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            fps=fps,
            num_frames=num_frames,
            frame_count_exact=exact,
            duration_s=duration if duration is not None else (num_frames / fps if num_frames else None),
            size_bytes=size,
            rotation=_display_rotation(path, container, stream),
        )


def decode_video_frames(info: VideoInfo) -> Iterator[DecodedFrame]:
    """Yield every frame of ``info.path`` in order, then check that none are missing.

    Decoder errors become :class:`DoraUserError` naming the frame that failed. After the last
    frame the count is compared with the container's (within ``*_COUNT_TOLERANCE``): a cut
    file often decodes cleanly up to where it was cut.
    """
    container = open_for_decoding(info)
    index = 0
    first = last = 0.0
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                timestamp = float(frame.time if frame.time is not None else index / info.fps)
                first, last = (timestamp if index == 0 else first), max(last, timestamp)
                yield DecodedFrame(index=index, timestamp=timestamp, frame=frame)
                index += 1
        except av.error.FFmpegError as err:
            raise decoding_failed(info, index, err) from err
    check_complete(info, index, last - first if index else None)


def open_for_decoding(info: VideoInfo) -> av.container.InputContainer:
    """Open the probed file again to decode it; a file gone or changed since is an error naming it."""
    try:
        return av.open(str(info.path))
    except (av.error.FFmpegError, OSError) as err:
        raise DoraUserError(f"{info.path}: could not be reopened for decoding ({_ffmpeg_reason(err)})") from err


def decoding_failed(info: VideoInfo, index: int, err: BaseException) -> DoraUserError:
    """The error for a decoder failure at source frame ``index`` (whichever process decoded it)."""
    where = f"frame {index} (about {format_duration(index / info.fps)} in)"
    of = f" of {info.num_frames}" if info.num_frames else ""
    return DoraUserError(
        f"{info.path}: decoding failed at {where}{of} ({_ffmpeg_reason(err)}): the file is truncated or corrupt"
    )


def check_complete(info: VideoInfo, decoded: int, span_s: float | None = None) -> None:
    """Raise when the decode fell far short of what the container announced.

    A count the container states (mp4) is compared frame for frame. A count only estimated as
    duration x fps (Matroska, WebM) is wrong for a variable-frame-rate video, so there the time the
    frames span (``span_s``: from the first frame's presentation time to the last's) is compared
    with the stated duration instead: a cut file stops early in time, a complete one does not.
    """
    if not info.frame_count_exact and span_s is not None and info.duration_s:
        frames, fraction = ESTIMATED_COUNT_TOLERANCE
        reached = span_s + 1 / info.fps  # the last frame is shown for about one frame interval
        if info.duration_s - reached > max(frames / info.fps, fraction * info.duration_s):
            raise DoraUserError(
                f"{info.path}: decoding stopped after frame {decoded - 1} ({decoded} frames, {format_duration(reached)}) "
                f"but the container states a duration of {format_duration(info.duration_s)} (about {info.num_frames} "
                f"frames at {info.fps:g} fps): the file is truncated or corrupt"
            )
        return
    if info.num_frames is None:
        return
    frames, fraction = EXACT_COUNT_TOLERANCE if info.frame_count_exact else ESTIMATED_COUNT_TOLERANCE
    missing = info.num_frames - decoded
    if missing > max(frames, fraction * info.num_frames):
        stated = "states" if info.frame_count_exact else "implies (duration x fps)"
        raise DoraUserError(
            f"{info.path}: decoding stopped after frame {decoded - 1} ({decoded} frames, "
            f"{format_duration(decoded / info.fps)}) but the container {stated} {info.num_frames} frames "
            f"({format_duration(info.num_frames / info.fps)}): the file is truncated or corrupt"
        )


def _display_rotation(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The counter-clockwise turn, in degrees, that shows the frames upright.

    Read from the first frame's display-matrix side data (what FFmpeg applies when it
    auto-rotates), else from an old-style ``rotate`` tag (clockwise degrees); a turn that is not
    a multiple of 90 degrees is refused rather than stored crooked.
    """
    degrees = 0.0
    try:
        for frame in container.decode(stream):
            degrees = float(frame.rotation or 0)
            break
    except av.error.FFmpegError:
        return 0  # decoding problems are reported, with the frame, when the video is decoded
    if not degrees and stream.metadata.get("rotate"):
        try:
            degrees = -float(stream.metadata["rotate"])
        except ValueError:
            raise DoraUserError(f"{path}: its rotate tag {stream.metadata['rotate']!r} is not a number") from None
    quarter = round(degrees / 90)
    if abs(degrees - 90 * quarter) > 1:
        raise DoraUserError(
            f"{path}: its display matrix turns the frames {degrees:g} degrees, not a multiple of 90; "
            "re-encode it upright (ffmpeg applies the rotation when it re-encodes)"
        )
    return 90 * quarter % 360


def _duration_seconds(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> float | None:
    """The stream's duration, else the container's; None when neither is stated."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _ffmpeg_reason(err: BaseException) -> str:
    """FFmpeg's message without the errno noise and file name PyAV adds."""
    reason = getattr(err, "strerror", None) or str(err)
    return reason.strip() or type(err).__name__
