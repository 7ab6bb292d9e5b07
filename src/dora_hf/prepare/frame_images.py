"""A decoded source frame -> the stored image: shrink, compress, and the checks on its size.

Both ways of decoding (one process in `prepare`, several in `segment_decode`) turn frames into
stored images here, so they produce the same bytes. This module imports only PyAV and PIL, so
decoding processes start without ``datasets`` or ``huggingface_hub``.
"""

from __future__ import annotations

import io

import av
from PIL import Image as PILImage

from ..errors import DoraUserError
from .video_decode import VideoInfo

IMAGE_FORMATS = {"jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp")}
"""--format value -> (PIL format name, file extension)."""


def stored_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Size after shrinking the short side to ``short_side`` (never enlarging), aspect kept."""
    short = min(width, height)
    if short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


TURNS = {90: PILImage.Transpose.ROTATE_90, 180: PILImage.Transpose.ROTATE_180, 270: PILImage.Transpose.ROTATE_270}
"""Counter-clockwise turns as PIL transposes (exact pixel permutations, no resampling)."""


def frame_to_image(frame: av.VideoFrame, size: tuple[int, int], rotation: int = 0) -> PILImage.Image:
    """Upright RGB image of ``frame`` at ``size`` (the upright size), turned ``rotation`` degrees
    counter-clockwise. FFmpeg's area-averaging scaler converts and shrinks in one pass: about 8x
    faster than PIL's resize on 4K frames, with proper anti-aliasing; the turn comes after it."""
    width, height = (size[1], size[0]) if rotation in (90, 270) else size
    if (width, height) == (frame.width, frame.height):
        image = frame.to_image()
    else:
        image = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_image()
    return image.transpose(TURNS[rotation]) if rotation else image


def encode_image(image: PILImage.Image, image_format: str, quality: int) -> bytes:
    """Compress one frame (JPEG or WebP) to bytes."""
    buffer = io.BytesIO()
    pil_format = IMAGE_FORMATS[image_format][0]
    image.save(buffer, format=pil_format, quality=quality)
    return buffer.getvalue()


def check_frame_size(info: VideoInfo, frame: av.VideoFrame, index: int) -> None:
    """Refuse a stream that changes size mid-way: every stored frame of a video has one size."""
    if (frame.width, frame.height) != (info.width, info.height):
        raise DoraUserError(
            f"{info.path}: frame {index} is {frame.width}x{frame.height}, but the stream "
            f"starts at {info.width}x{info.height}; re-encode it at one size"
        )
