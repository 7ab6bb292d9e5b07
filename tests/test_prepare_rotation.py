"""Phone videos are stored upright: the display matrix's turn is applied in both decode paths.

A portrait video recorded by a phone is landscape frames plus a display matrix that says to turn
them. The test video carries its own frame index drawn in (see conftest), in the upright picture:
after prepare-data, a stored image reads back as that index only if it was turned correctly.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import read_frame_index, synthetic_frame
from dora_hf.evaluation.frame_input import read_frames
from dora_hf.prepare import PrepareOptions, prepare_dataset, probe_video

UPRIGHT = (100, 160)  # width, height of the picture as it should be seen (portrait; a multiple of the 10 index blocks)


def write_turned_video(path: Path, rotation: int, frames: int = 36) -> Path:
    """Frames stored turned `rotation` degrees clockwise, with a display matrix that turns them back."""
    k = rotation // 90
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(12))
        coded = np.rot90(synthetic_frame(0, *UPRIGHT), k=-k)
        stream.height, stream.width = coded.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            picture = np.ascontiguousarray(np.rot90(synthetic_frame(i, *UPRIGHT), k=-k))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def stored_images(folder: Path) -> list[Image.Image]:
    images = []
    for shard in sorted((folder / "data").glob("*.parquet")):
        for cell in pq.read_table(shard, columns=["image"]).column("image").to_pylist():
            images.append(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
    return images


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("workers", [1, 2])
def test_turned_video_is_stored_upright(tmp_path, rotation, workers):
    video = write_turned_video(tmp_path / f"phone{rotation}.mp4", rotation)
    info = probe_video(video)
    assert info.rotation == rotation
    assert info.display_size == UPRIGHT
    out = tmp_path / "data"
    options = PrepareOptions(clip_step=4, keep_every=2, frames_per_clip=2, short_side=100)
    prepare_dataset([video], out, options, progress=False, log=None, num_workers=workers)
    images = stored_images(out)
    assert [image.size for image in images] == [UPRIGHT] * len(images)
    assert [read_frame_index(np.asarray(image)) for image in images] == list(range(0, 36, 2))
    record = json.loads((out / "prepare_info.json").read_text())["videos"][0]
    assert record["rotation"] == rotation
    assert (record["stored_width"], record["stored_height"]) == UPRIGHT


def test_one_and_two_workers_store_the_same_turned_frames(tmp_path):
    video = write_turned_video(tmp_path / "phone.mp4", 90)
    options = PrepareOptions(clip_step=4, keep_every=2, frames_per_clip=2, short_side=64)
    for workers in (1, 2):
        prepare_dataset([video], tmp_path / f"w{workers}", options, progress=False, log=None, num_workers=workers)
    one, two = stored_images(tmp_path / "w1"), stored_images(tmp_path / "w2")
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(one, two, strict=True))
    assert one[0].size == (64, round(160 * 64 / 100))


def test_an_unturned_video_is_unchanged(tmp_path):
    video = write_turned_video(tmp_path / "plain.mp4", 0)
    assert probe_video(video).rotation == 0
    out = tmp_path / "data"
    prepare_dataset([video], out, PrepareOptions(clip_step=4, keep_every=2, frames_per_clip=2), progress=False, log=None)
    assert json.loads((out / "prepare_info.json").read_text())["videos"][0]["rotation"] == 0


def test_frames_for_evaluation_are_upright_too(tmp_path):
    video = write_turned_video(tmp_path / "phone.mp4", 270)
    frames = read_frames(video, num_frames=3, step=5)
    assert tuple(frames.shape) == (3, 3, UPRIGHT[1], UPRIGHT[0])
    assert [read_frame_index(f.permute(1, 2, 0).numpy()) for f in frames] == [0, 5, 10]
