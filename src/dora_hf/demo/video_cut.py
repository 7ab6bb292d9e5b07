"""The first part of a video as a file of its own, by stream copy (no re-encoding).

Used to hold the end of a video out of training: the part before the cut is prepared and
trained on, the rest is kept for evaluation. Packets are copied unchanged, so the frames of the
cut file decode to exactly the frames of the source.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DoraUserError


def cut_video(source: str | Path, target: str | Path, num_frames: int) -> Path:
    """Write the first ``num_frames`` frames of ``source``'s video stream to ``target``.

    The container is the target's suffix (the source's format when they match); the file is
    written under a temporary name and renamed, so an interrupted cut leaves no partial file.
    """
    import av

    source, target = Path(source), Path(target)
    if num_frames < 1:
        raise DoraUserError(f"cut of {source}: num_frames must be at least 1 (got {num_frames})")
    partial = target.with_name(f".{target.name}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(source)) as reader:
            if not reader.streams.video:
                raise DoraUserError(f"{source}: has no video stream")
            stream = reader.streams.video[0]
            with av.open(str(partial), "w", format=_format_of(target)) as writer:
                out = writer.add_stream_from_template(stream)
                copied = 0
                for packet in reader.demux(stream):
                    if packet.dts is None or packet.size == 0:
                        continue
                    if copied == num_frames:
                        break
                    packet.stream = out
                    writer.mux(packet)
                    copied += 1
        if copied < num_frames:
            raise DoraUserError(f"{source}: has {copied} frames, fewer than the {num_frames} to cut")
        os.replace(partial, target)
    except (av.error.FFmpegError, OSError) as err:
        raise DoraUserError(f"cut of {source} to {target}: {err}") from err
    finally:
        partial.unlink(missing_ok=True)
    return target


def _format_of(target: Path) -> str | None:
    """The container for ``target``'s suffix (PyAV guesses from the name, the partial name hides it)."""
    return {".avi": "avi", ".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".webm": "webm"}.get(target.suffix.lower())
