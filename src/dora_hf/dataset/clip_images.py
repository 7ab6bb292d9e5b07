"""Decoding a clip's stored frame images into one uint8 ``(T, 3, H, W)`` array.

Both clip readers (random access and streaming) hand compressed images here, so a bad frame gets
the same message, naming where it is stored, whichever reader met it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import DoraUserError


def decode_clip_images(images: Sequence[bytes | None], where: Sequence[str]) -> np.ndarray:
    """Decode ``images`` (one per frame) to uint8 ``(T, 3, H, W)``; ``where[t]`` names frame t in errors."""
    frames: np.ndarray | None = None
    for t, (data, place) in enumerate(zip(images, where)):
        try:
            if data is None:
                raise ValueError("the row holds no image bytes")
            with Image.open(io.BytesIO(data)) as image:
                # Per-band copies write channels-first directly: about 3x cheaper than permuting
                # an (H, W, 3) array afterwards. RGB JPEGs (what prepare-data writes) skip
                # `convert`, which would copy the whole image.
                image.load()
                bands = (image if image.mode == "RGB" else image.convert("RGB")).split()
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad data
            raise DoraUserError(f"{place}: cannot decode the frame image ({type(err).__name__}: {err})") from err
        size = (bands[0].height, bands[0].width)
        if frames is None:
            frames = np.empty((len(images), 3, *size), dtype=np.uint8)
        elif size != frames.shape[2:]:
            raise DoraUserError(
                f"{place}: frame is {size[1]}x{size[0]} but the clip's first frame is "
                f"{frames.shape[3]}x{frames.shape[2]}; frames of one video must share one size"
            )
        for channel, band in enumerate(bands):
            frames[t, channel] = np.asarray(band)
    if frames is None:
        raise DoraUserError("a clip needs at least one frame")
    return frames
