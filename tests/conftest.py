"""Shared test fixtures: small synthetic videos made with PyAV, and the real sample video.

Synthetic frames carry their own index as a row of black/white blocks (one bit per block,
most significant first) above moving coloured rectangles, so a test can read back from a
stored, compressed, resized image which source frame it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from video_server import VideoServer

INDEX_BITS = 10
"""Blocks in the index row: enough for 1024 frames."""

REPO_ROOT = Path(__file__).resolve().parents[1]


def synthetic_frame(index: int, width: int, height: int) -> np.ndarray:
    """RGB frame ``index``: index bits in the top quarter, moving rectangles below."""
    img = np.full((height, width, 3), 40, dtype=np.uint8)
    bit_w = width // INDEX_BITS
    band_h = max(height // 4, 8)
    for bit in range(INDEX_BITS):
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        img[:band_h, bit * bit_w : (bit + 1) * bit_w] = 255 if on else 0
    colours = [(230, 40, 40), (40, 200, 60), (50, 80, 230)]
    for k, colour in enumerate(colours):
        rw, rh = width // 5, (height - band_h) // 3
        x = (index * (3 + 2 * k) + k * width // 3) % max(width - rw, 1)
        y = band_h + (index * (1 + k) + k * rh) % max(height - band_h - rh, 1)
        img[y : y + rh, x : x + rw] = colour
    return img


def read_frame_index(rgb: np.ndarray) -> int:
    """Inverse of :func:`synthetic_frame`'s index row, tolerant of compression and resizing."""
    height, width = rgb.shape[:2]
    bit_w = width / INDEX_BITS
    band_h = max(height // 4, 2)
    gray = rgb[: band_h, :, :].mean(axis=2)
    value = 0
    for bit in range(INDEX_BITS):
        lo, hi = int(bit * bit_w + bit_w / 4), int((bit + 1) * bit_w - bit_w / 4)
        value = (value << 1) | int(gray[band_h // 4 : 3 * band_h // 4, lo:hi].mean() > 128)
    return value


def write_synthetic_video(
    path: Path,
    *,
    frames: int = 200,
    fps: int = 30,
    size: tuple[int, int] = (160, 96),
    codec: str = "libx264",
    faststart: bool = False,
) -> Path:
    """Encode ``frames`` synthetic frames; ``faststart`` puts the mp4 index before the data."""
    width, height = size
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast", "g": "30"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


VideoFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def video_factory(tmp_path_factory: pytest.TempPathFactory) -> VideoFactory:
    """Make (once per session and parameter set) a synthetic video; returns its path.

    Keyword arguments are those of :func:`write_synthetic_video`, plus ``name`` for the file
    stem and ``suffix`` for the container (``.mp4``, ``.mkv``, ...).
    """
    root = tmp_path_factory.mktemp("videos")
    cache: dict[tuple, Path] = {}

    def make(name: str = "synthetic", suffix: str = ".mp4", **kwargs: object) -> Path:
        key = (name, suffix, tuple(sorted(kwargs.items())))
        if key not in cache:
            folder = root / f"v{len(cache)}"
            folder.mkdir()
            cache[key] = write_synthetic_video(folder / f"{name}{suffix}", **kwargs)  # type: ignore[arg-type]
        return cache[key]

    return make


@pytest.fixture(scope="session")
def synthetic_video(video_factory: VideoFactory) -> Path:
    """160x96, 200 frames at 30 fps (6.7 s), H.264 in mp4, with frame indices drawn in."""
    return video_factory()


@pytest.fixture(scope="session")
def sample_video_cache() -> Path:
    """Where the real sample video is kept between runs (ignored by git)."""
    return REPO_ROOT / ".cache" / "sample_videos"


@pytest.fixture(scope="session")
def tiny_frames_dataset(synthetic_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic video prepared for training tests: 100 kept frames (every 2nd) in 2 shards."""
    from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "tiny-frames"
    options = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=2, frames_per_shard=50)
    prepare_dataset([synthetic_video], out, options, progress=False, log=lambda *_: None)
    return out


@pytest.fixture
def server() -> Iterator[VideoServer]:
    """A local HTTP server for downloads (tests/video_server.py), closed after the test."""
    running = VideoServer()
    yield running
    running.close()


def files_under(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted (empty when it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
