"""What one request may ask of the Space, and the check of an upload against it before decoding.

A free CPU Space has 2 cores: a request must end well under a minute, and a careless upload (a
4-hour film, a 4K clip, a text file renamed .mp4, an empty file) must get one clear line in the
page instead of tying up the machine or a traceback. The container is probed with PyAV, which
reads its header only, so a long video is refused before a single frame is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DoraUserError
from ..prepare.video_decode import VideoInfo, format_duration, probe_video
from ..publish.push import format_bytes


@dataclass(frozen=True)
class SpaceLimits:
    """Caps that keep a request on 2 CPU cores in seconds, not minutes."""

    max_seconds: float = 60.0
    """Longest clip accepted (the container's stated duration)."""
    max_bytes: int = 100_000_000
    """Largest upload."""
    max_pixels: int = 1920 * 1088
    """Largest frame (width x height): decoding 4K frames on a CPU takes most of a minute by itself."""
    max_frames: int = 24
    """Most frames tracked through."""
    max_step: int = 30
    """Widest spacing of the frames used (every n-th frame of the clip)."""
    max_objects: int = 8
    """Most objects discovered."""


def check_video(path: str | Path | None, limits: SpaceLimits) -> VideoInfo:
    """The upload's properties, or one line saying why it cannot be used (nothing is decoded)."""
    if path is None:
        raise DoraUserError("no video: upload a short clip or pick an example")
    path = Path(path)
    name = path.name
    if path.is_file() and path.stat().st_size > limits.max_bytes:
        raise DoraUserError(
            f"{name}: {format_bytes(path.stat().st_size)}, more than this demo takes ({format_bytes(limits.max_bytes)})"
        )
    try:
        info = probe_video(path)
    except DoraUserError as err:  # probe_video names the full temporary path; the page shows the file's name
        raise DoraUserError(str(err).replace(str(path), name)) from err
    if info.duration_s is None:
        raise DoraUserError(f"{name}: the container states no duration, so its length cannot be checked; re-encode it as mp4")
    if info.duration_s > limits.max_seconds:
        raise DoraUserError(
            f"{name}: {format_duration(info.duration_s)} long; this demo takes clips up to "
            f"{limits.max_seconds:g} s: cut a short piece first (or run `dora-hf visualize` locally)"
        )
    if info.width * info.height > limits.max_pixels:
        raise DoraUserError(
            f"{name}: {info.width}x{info.height} frames; this demo takes up to 1920x1080: scale it down first"
        )
    return info
