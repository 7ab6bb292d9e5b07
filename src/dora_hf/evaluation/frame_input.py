"""Frames to visualise: from a video file (decoded with PyAV) or a folder of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DoraUserError
from ..prepare.video_decode import decode_video_frames, probe_video

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_frames(source: str | Path, num_frames: int, step: int = 1, start: int = 0) -> torch.Tensor:
    """`(T, 3, H, W)` uint8 frames ``start, start + step, ...`` (at most ``num_frames``).

    A folder's images are taken in name order and resized to the first one's size.
    """
    if num_frames < 1 or step < 1 or start < 0:
        raise DoraUserError("--num-frames and --step must be >= 1 and --start >= 0")
    source = Path(source)
    wanted = range(start, start + num_frames * step, step)
    frames = _folder_frames(source, wanted) if source.is_dir() else _video_frames(source, wanted)
    if not frames:
        raise DoraUserError(f"{source}: no frame at index {start} or later (it has fewer frames)")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _folder_frames(folder: Path, wanted: range) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DoraUserError(f"{folder}: a folder with no images ({', '.join(IMAGE_SUFFIXES)})")
    frames: list[np.ndarray] = []
    size = None
    for index in wanted:
        if index >= len(files):
            break
        try:
            with Image.open(files[index]) as image:
                image = image.convert("RGB")
                size = size or image.size
                frames.append(np.asarray(image if image.size == size else image.resize(size, Image.BILINEAR)))
        except OSError as err:
            raise DoraUserError(f"{files[index]}: not a readable image ({err})") from err
    return frames


def _video_frames(path: Path, wanted: range) -> list[np.ndarray]:
    info = probe_video(path)
    keep = set(wanted)
    frames: list[np.ndarray] = []
    decoder = decode_video_frames(info)
    try:
        for decoded in decoder:
            if decoded.index in keep:  # turned upright as prepare-data stores it (np.rot90 turns counter-clockwise)
                frames.append(np.rot90(decoded.frame.to_ndarray(format="rgb24"), k=info.rotation // 90))
            if decoded.index >= wanted[-1]:
                break
    finally:
        decoder.close()
    return frames
