"""Blank and frozen stretches: found with their times, left out by default, kept with --keep-blank."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import read_frame_index, synthetic_frame
from huggingface_hub import DatasetCard
from PIL import Image

from dora_hf.cli import main
from dora_hf.dataset.clip_index import count_clips
from dora_hf.prepare.blank_frozen import BLANK, FROZEN, StretchFilter
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.dataset.random_access import open_random_access
from dora_hf.errors import DoraUserError

FPS = 30
FRAMES = 300
SIZE = (160, 96)
KEEP_EVERY = 2
OPTIONS = PrepareOptions(clip_step=6, keep_every=KEEP_EVERY, frames_per_clip=2, short_side=64, frames_per_shard=40)
"""Kept frames 1/15 s apart; the default 3 s minimum stretch is 45 kept frames."""


def write_video(path: Path, frame: Callable[[int], np.ndarray]) -> Path:
    """Encode FRAMES frames, frame ``i`` being ``frame(i)``."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast", "g": "30"}
        for i in range(FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")))
        container.mux(stream.encode(None))
    return path


BLACK_FROM = 200
"""The last third of the blank video is black."""
FROZEN_FRAMES = (100, 220)
"""Source frames [100, 220) of the frozen video all show frame 100 (4 s)."""


def black_tail(i: int) -> np.ndarray:
    return np.zeros((SIZE[1], SIZE[0], 3), np.uint8) if i >= BLACK_FROM else synthetic_frame(i, *SIZE)


def frozen_middle(i: int) -> np.ndarray:
    first, stop = FROZEN_FRAMES
    return synthetic_frame(first if first <= i < stop else i, *SIZE)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    return {"blank": write_video(root / "blank.mp4", black_tail), "frozen": write_video(root / "frozen.mp4", frozen_middle)}


def rows_of(out: Path) -> list[dict]:
    return [row for shard in sorted((out / "data").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def kept_indices(first: int, stop: int) -> list[int]:
    """Kept source frames in [first, stop)."""
    return [i for i in range(first, stop) if i % KEEP_EVERY == 0]


def test_black_last_third_is_reported_and_left_out(videos, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    prepare_dataset([videos["blank"]], out, OPTIONS, progress=False)
    said = capsys.readouterr().out
    rows = rows_of(out)
    assert [r["frame_index"] for r in rows] == kept_indices(0, BLACK_FROM)
    assert {r["video_id"] for r in rows} == {"blank"}
    for row in rows:  # every stored frame is the frame it claims, none black
        rgb = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"))
        assert read_frame_index(rgb) == row["frame_index"] and rgb.std() > 20
    info = json.loads((out / "prepare_info.json").read_text())
    black = kept_indices(BLACK_FROM, FRAMES)
    expected = {
        "kind": BLANK,
        "start_s": pytest.approx(BLACK_FROM / FPS, abs=1e-3),
        "end_s": pytest.approx((black[-1] + KEEP_EVERY) / FPS, abs=1e-3),
        "first_frame_index": BLACK_FROM,
        "last_frame_index": black[-1],
        "frames": len(black),
    }
    (source,) = info["sources"]
    assert source["left_out"] == [expected] and source["kept_stretches"] == []
    assert source["decoded_frames"] == info["decoded_frames"] == FRAMES
    assert source["parts"] == [
        {"video_id": "blank", "first_frame_index": 0, "last_frame_index": BLACK_FROM - KEEP_EVERY,
         "kept_frames": BLACK_FROM // KEEP_EVERY}
    ]
    (video,) = info["videos"]
    assert video["decoded_frames"] == BLACK_FROM  # the part spans source frames 0..199: clips start only there
    assert count_clips(info, 2, 6) == BLACK_FROM - 6
    assert f"blank from {BLACK_FROM / FPS:.2f} s" in said and "left out" in said
    card = DatasetCard.load(out / "README.md").text
    assert f"| blank | blank | {BLACK_FROM / FPS:.1f} s |" in card and "left out" in card


def test_keep_blank_keeps_the_black_frames_and_still_reports_them(videos, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    argv = ["prepare-data", str(videos["blank"]), "--out", str(out), "--clip-step", "6", "--keep-every", "2",
            "--frames-per-clip", "2", "--short-side", "64", "--keep-blank", "--no-progress"]
    assert main(argv) == 0
    assert "blank from 6.67 s" in capsys.readouterr().out
    rows = rows_of(out)
    assert [r["frame_index"] for r in rows] == kept_indices(0, FRAMES)
    assert {r["video_id"] for r in rows} == {"blank"}
    black = [r for r in rows if r["frame_index"] >= BLACK_FROM]
    assert all(np.asarray(Image.open(io.BytesIO(r["image"]["bytes"]))).max() < 30 for r in black)
    info = json.loads((out / "prepare_info.json").read_text())
    (source,) = info["sources"]
    assert source["left_out"] == [] and [s["first_frame_index"] for s in source["kept_stretches"]] == [BLACK_FROM]
    assert info["videos"][0]["decoded_frames"] == FRAMES
    assert "kept" in DatasetCard.load(out / "README.md").text


def test_frozen_stretch_splits_the_video_into_parts(videos, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prepare_dataset([videos["frozen"]], out, OPTIONS, progress=False, log=None)
    first, stop = FROZEN_FRAMES
    repeats = kept_indices(first + 1, stop)  # the repeated frame itself (100) stays
    rows = rows_of(out)
    assert [r["frame_index"] for r in rows] == kept_indices(0, first + 1) + kept_indices(stop, FRAMES)
    assert [r["video_id"] for r in rows] == ["frozen"] * len(kept_indices(0, first + 1)) + ["frozen@2"] * len(
        kept_indices(stop, FRAMES)
    )
    info = json.loads((out / "prepare_info.json").read_text())
    (stretch,) = info["sources"][0]["left_out"]
    assert (stretch["kind"], stretch["first_frame_index"], stretch["last_frame_index"]) == (FROZEN, repeats[0], repeats[-1])
    assert stretch["start_s"] == pytest.approx(repeats[0] / FPS, abs=1e-3)
    # Each part counts the source frames it spans: up to the stretch, and from it to the end.
    spans = {v["video_id"]: v["decoded_frames"] for v in info["videos"]}
    assert spans == {"frozen": repeats[0], "frozen@2": FRAMES - stop}
    assert [v["first_row"] for v in info["videos"]] == [0, len(kept_indices(0, first + 1))]
    clips, _ = open_random_access(out, frames_per_clip=2, clip_step=6)
    expected_clips = sum(span - 6 for span in spans.values())
    assert clips.index.num_clips == count_clips(info, 2, 6) == expected_clips
    _, rows_of_clips = clips.index.clip_rows(np.arange(expected_clips))
    frame_of = np.array([r["frame_index"] for r in rows])
    video_of = np.array([r["video_id"] for r in rows])
    assert (video_of[rows_of_clips[:, 0]] == video_of[rows_of_clips[:, 1]]).all()
    assert (np.diff(frame_of[rows_of_clips], axis=1) == 6).all()
    assert not np.isin(frame_of[rows_of_clips], repeats).any()
    card = DatasetCard.load(out / "README.md").text
    assert f"| frozen | frozen | {repeats[0] / FPS:.1f} s |" in card


def test_short_stretches_are_ordinary_frames() -> None:
    """A run under the minimum length is released unchanged; one at it becomes a stretch."""
    frame_seconds = 0.5
    black = Image.new("RGB", (64, 36))
    noise = np.random.default_rng(0)

    def busy() -> Image.Image:
        return Image.fromarray(noise.integers(0, 255, (36, 64, 3), dtype=np.uint8))

    kinds = ["x"] * 4 + ["b"] * 5 + ["x"] * 3 + ["b"] * 6 + ["x"] * 2  # 2.5 s of black, then 3 s
    detector: StretchFilter[int] = StretchFilter(frame_seconds, min_seconds=3.0)
    released: list[tuple[int, str | None]] = []
    for i, kind in enumerate(kinds):
        released += detector.push(i, i * frame_seconds, black if kind == "b" else busy(), i)
    released += detector.finish()
    assert [i for i, _ in released] == list(range(len(kinds)))
    long_run = range(12, 18)
    assert [i for i, kind in released if kind == BLANK] == list(long_run)
    (stretch,) = detector.stretches
    assert (stretch.start_s, stretch.end_s, stretch.frames) == (12 * frame_seconds, 18 * frame_seconds, len(long_run))


def test_a_video_that_is_all_blank_is_an_error(tmp_path: Path) -> None:
    video = write_video(tmp_path / "dark.mp4", lambda i: np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    with pytest.raises(DoraUserError, match=r"dark.mp4: every kept frame is in a blank or frozen stretch.*--keep-blank"):
        prepare_dataset([video], tmp_path / "ds", OPTIONS, progress=False, log=None)
    assert not (tmp_path / "ds").exists()


def test_a_part_may_not_take_the_video_id_of_another_file(videos, synthetic_video: Path, tmp_path: Path) -> None:
    other = tmp_path / "frozen@2.mp4"
    other.write_bytes(synthetic_video.read_bytes())
    with pytest.raises(DoraUserError, match=r"frozen.mp4: its part 'frozen@2' has the video_id of another video"):
        prepare_dataset([videos["frozen"], other], tmp_path / "ds", OPTIONS, progress=False, log=None)
    assert not (tmp_path / "ds").exists()


def still_scene_with_one_walker(stop_from: int | None = None) -> Callable[[int], np.ndarray]:
    """Frames of a still camera on a textured square, a 60x40 walker crossing it 3 px a frame.

    ``stop_from``: from that frame on, the stream repeats one picture (a frozen stream).
    """
    rng = np.random.default_rng(0)
    scene = np.asarray(Image.fromarray((rng.random((36, 64, 3)) * 255).astype(np.uint8)).resize((640, 360), Image.BICUBIC))

    def frame(i: int) -> np.ndarray:
        i = min(i, stop_from) if stop_from is not None else i
        picture = scene.copy()
        x = 20 + 3 * i
        picture[200:240, x : x + 60] = (200, 40, 40)
        return picture

    return frame


def write_still_camera_video(path: Path, frame: Callable[[int], np.ndarray], frames: int = 200, fps: int = 10) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = 640, 360
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "ultrafast"}
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_a_still_camera_with_one_walker_is_not_frozen(tmp_path):
    """20 s of a still scene with one 60x40 walker (like vtest.avi): every kept frame stays."""
    video = write_still_camera_video(tmp_path / "square.mp4", still_scene_with_one_walker())
    out = tmp_path / "square"
    options = PrepareOptions(clip_step=10, frames_per_clip=2, short_side=360)
    summary = prepare_dataset([video], out, options, progress=False, log=None)
    info = json.loads((out / "prepare_info.json").read_text())
    assert info["sources"][0]["left_out"] == []
    assert summary.num_rows == 200 // summary.videos[0].keep_every


def test_a_frozen_stream_behind_a_still_camera_is_still_found(tmp_path):
    """The same scene whose stream repeats one picture for its last 8 s: that stretch is frozen."""
    video = write_still_camera_video(tmp_path / "stuck.mp4", still_scene_with_one_walker(stop_from=120))
    out = tmp_path / "stuck"
    options = PrepareOptions(clip_step=10, frames_per_clip=2, short_side=360)
    prepare_dataset([video], out, options, progress=False, log=None)
    (stretch,) = json.loads((out / "prepare_info.json").read_text())["sources"][0]["left_out"]
    assert stretch["kind"] == FROZEN
    assert stretch["first_frame_index"] in range(120, 125) and stretch["last_frame_index"] >= 195
