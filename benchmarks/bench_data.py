"""Data pipeline benchmark: reference-style per-clip seeking vs. streaming prepared shards.

DoRA's reference loader reopens the source video for every clip and seeks to each of the
clip's 8 frames (decord, one decoder thread). This project decodes each video once
(``dora-hf prepare-data``) into parquet shards of small JPEG frames and assembles clips while
streaming them. This script measures, on the same video and in one run:

(a) the reference access pattern, re-implemented with PyAV: per clip, open the file afresh,
    ``container.seek`` to the keyframe at or before each needed frame (unless the decoder is
    already in that frame's GOP, as decord does), decode forward to it and convert it to RGB;
    clip starts drawn at random, as the reference's shuffled sampler does;
(b) :class:`~dora_hf.dataset.streaming.ClipStream` over the prepared shards of that video, in-process
    (``num_workers=0``), batched with :func:`~dora_hf.dataset.streaming.collate_clips`;

each with and without :class:`~dora_hf.views.dora_views.ClipViews` applied to batches of the decoded
clips, so that both sides build the same views and differ in data access (and in the size of the
frames the views start from: full-size source frames in (a), as in the reference, stored frames
in (b)). Rates are per core: one process,
one torch thread, one decoder thread, divided by the process's CPU time (all threads); wall-clock
rates are reported beside them. It also times ``prepare_dataset`` and reports the storage cost
of the shards per hour of source video.

Three videos: the real sample clip (640x272, 25 fps, 250 frames, short GOPs) with the step
scaled to 25 frames so that clips fit, and two longer re-encodes of it (looped 4x, resized,
60 fps timestamps, H.264 with a 250-frame GOP) with the reference step of 60 frames, because
long GOPs are what make seeking expensive in real 4K walking-tour videos: a small 640x360 one
(the data issue's own example of a cheap case for the reference) and a 1920x816 one.

The headline figure is the last column of the per-core table: (b) with all views against (a)
without views, which the data issue asks to be at least 10x.

    .venv/bin/python benchmarks/bench_data.py            # about 3 min on 2 cores
    .venv/bin/python benchmarks/bench_data.py --quick    # about 1 min, smaller test video

``--paper-scale`` measures instead the reference recipe's own loader (T=8, step 60, batch 16, rank
0 of 8 processes, views on this process's device) over a long prepared video (1 h of 60 fps
frames by default, written directly in the prepared format from real street frames), in both
data modes, random access and streaming: clips/s wall, per worker and per CPU second (the
process and its DataLoader workers), without and with the views, and the batch diversity: the
spread (standard deviation) of clip start times within a batch against that of a uniform draw.

    .venv/bin/python benchmarks/bench_data.py --paper-scale   # about 10 min on 2 cores, 2.5 GB of temp disk
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from itertools import count, islice
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.frame import PictureType

from dora_hf.dataset.streaming import ClipStream
from dora_hf.dataset.batches import collate_clips
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.prepare.options import choose_keep_every
from dora_hf.prepare.frame_images import stored_size
from dora_hf.demo.sample_video import get_sample_video
from dora_hf.views.dora_views import ClipViews

from common import machine_info, write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
FRAMES_PER_CLIP = 8

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "bench_data.json"

WT_SOURCE = {"width": 3840, "height": 2160, "fps": 60.0, "clip_step": 60, "mean_minutes": 98.0}
"""A Walking Tours video (DORA_SPEC §1: 4K, 60 fps, mean length 1 h 38 min), for extrapolations."""


# ---- timing ----------------------------------------------------------------------------------


@dataclass
class Clock:
    """Accumulated wall and process CPU time (CPU time counts every thread of the process)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Add the time spent in the ``with`` block."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall_s += time.perf_counter() - wall
            self.cpu_s += time.process_time() - cpu


@dataclass
class LoaderTiming:
    """One loader on one video: time to get clips (data) and to build their views."""

    clips: int = 0
    data: Clock = field(default_factory=Clock)
    views: Clock = field(default_factory=Clock)

    def rates(self) -> dict[str, float]:
        """Clips per CPU second (per core) and per wall second, without and with views."""
        total_cpu = self.data.cpu_s + self.views.cpu_s
        total_wall = self.data.wall_s + self.views.wall_s
        return {
            "data_per_core": self.clips / self.data.cpu_s,
            "data_wall": self.clips / self.data.wall_s,
            "views_per_core": self.clips / total_cpu,
            "views_wall": self.clips / total_wall,
        }

    def to_json(self) -> dict[str, Any]:
        return {"clips": self.clips, "data": asdict(self.data), "views": asdict(self.views), "rates": self.rates()}


# ---- test videos -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A video and the clip settings used on it."""

    name: str
    video: Path
    clip_step: int
    keep_every: int | None  # None: prepare-data's default choice for the step


def make_long_video(
    source: Path, width: int, height: int, *, loops: int = 4, fps: int = 60, gop: int = 250, frames: int | None = None
) -> Path:
    """Re-encode ``source`` looped, upscaled, at ``fps`` with a fixed ``gop`` (cached by settings).

    The sample clip's own GOPs are 30-60 frames; real long recordings use 250 or more, which is
    what makes each seek decode many frames. Scene-cut keyframes are disabled so the GOP is exact,
    and the source's frame types are cleared so its keyframes are not copied. ``frames``: that many
    frames (looping as needed) instead of ``loops`` whole passes.
    """
    length = f"{frames}f" if frames else f"x{loops}"
    target = CACHE_DIR / "bench_data" / f"{source.stem}-{length}-{width}x{height}-{fps}fps-gop{gop}.mp4"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"encoding {target.name} (once; cached in {target.parent}) ...", flush=True)
    with av.open(str(source)) as container:
        decoded = [
            f.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            for f in container.decode(video=0)
        ]
    partial = target.with_suffix(".part.mp4")
    with av.open(str(partial), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(frames or loops * len(decoded)):
            frame = decoded[i % len(decoded)]
            frame.pts, frame.time_base, frame.pict_type = i, Fraction(1, fps), PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(partial, target)
    return target


def describe_video(path: Path, index: FrameIndex) -> dict[str, Any]:
    """Codec, size, rate, frame count and keyframe spacing."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        gaps = np.diff(index.keyframes)
        return {
            "file": path.name,
            "codec": f"{ctx.name} {ctx.profile}",
            "width": ctx.width,
            "height": ctx.height,
            "fps": float(stream.average_rate),
            "frames": len(index.pts),
            "size_bytes": path.stat().st_size,
            "keyframes": len(index.keyframes),
            "max_gop": int(gaps.max()) if len(gaps) else len(index.pts),
        }


# ---- (a) reference-style loader --------------------------------------------------------------


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of every frame and which frames are keyframes.

    decord builds this at every open by demuxing every packet of the file; here it is built
    once and shared (favouring the reference), and the cost of that scan is reported apart.
    """

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    position: dict[int, int]
    frame_size: tuple[int, int]  # (height, width)

    @classmethod
    def scan(cls, path: Path) -> tuple[FrameIndex, float]:
        """Demux every packet (no decoding); return the index and the seconds the scan took."""
        started = time.perf_counter()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
            size = (stream.codec_context.height, stream.codec_context.width)
        seconds = time.perf_counter() - started
        packets.sort()
        pts = tuple(p for p, _ in packets)
        keyframes = tuple(i for i, (_, key) in enumerate(packets) if key)
        return cls(pts, keyframes, {p: i for i, p in enumerate(pts)}, size), seconds

    def keyframe_at_or_before(self, frame: int) -> int:
        """Where a seek for ``frame`` lands."""
        return self.keyframes[bisect.bisect_right(self.keyframes, frame) - 1]


def read_clip_reference(path: Path, index: FrameIndex, frame_ids: list[int]) -> np.ndarray:
    """Frames ``frame_ids`` as uint8 (T, 3, H, W), the way decord's ``get_batch`` reaches them.

    The file is opened afresh; for each frame, seek to its keyframe unless the decoder already
    sits earlier in the same GOP, then decode forward to it (decord's ``SeekAccurate``).
    """
    out: np.ndarray | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # the reference's DecordInit(num_threads=1)
        decoder: Iterator[av.VideoFrame] | None = None
        position = -1
        for t, target in enumerate(frame_ids):
            key = index.keyframe_at_or_before(target)
            if decoder is None or target <= position or key > position:
                container.seek(index.pts[key], stream=stream)
                decoder = container.decode(stream)
            for frame in decoder:
                position = index.position[frame.pts]
                if position >= target:
                    break
            if position != target:
                raise RuntimeError(f"{path.name}: decoding for frame {target} ended at frame {position}")
            rgb = frame.to_ndarray(format="rgb24")
            if out is None:
                out = np.empty((len(frame_ids), 3, *rgb.shape[:2]), dtype=np.uint8)
            out[t] = rgb.transpose(2, 0, 1)
    assert out is not None
    return out


def bench_reference(case: Case, index: FrameIndex, clips: int, batch: int, views: ClipViews, seed: int) -> LoaderTiming:
    """(a): random clip starts over the reference's ``num_frames - T * step`` range."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(index.pts) - FRAMES_PER_CLIP * case.clip_step, size=clips)
    generator = torch.Generator().manual_seed(seed)
    height, width = index.frame_size
    views(torch.zeros(batch, FRAMES_PER_CLIP, 3, height, width, dtype=torch.uint8), generator)  # untimed warm-up
    timing = LoaderTiming()
    for first in range(0, clips, batch):
        with timing.data.running():
            steps = [i * case.clip_step for i in range(FRAMES_PER_CLIP)]
            clip_ids = [[int(s) + d for d in steps] for s in starts[first : first + batch]]
            frames = torch.from_numpy(np.stack([read_clip_reference(case.video, index, ids) for ids in clip_ids]))
        with timing.views.running():
            views(frames, generator)
        timing.clips += frames.shape[0]
    return timing


# ---- (b) this project's reader ---------------------------------------------------------------


def bench_stream(
    folder: Path, case: Case, clips: int, batch: int, views: ClipViews, seed: int
) -> tuple[LoaderTiming, float]:
    """(b): ClipStream in this process, epoch after epoch, until ``clips`` clips are timed.

    The first batch (opening the dataset, first reads) is not timed; its seconds are returned.
    """
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    stream = ClipStream.from_source(folder, frames_per_clip=FRAMES_PER_CLIP, clip_step=case.clip_step, seed=seed)

    def endless() -> Iterator[dict[str, Any]]:
        for epoch in count():
            stream.set_epoch(epoch)
            yield from stream

    samples = endless()
    views(collate_clips(list(islice(samples, batch)))["frames"], generator)
    warmup_s = time.perf_counter() - started
    timing = LoaderTiming()
    while timing.clips < clips:
        with timing.data.running():
            frames = collate_clips(list(islice(samples, min(batch, clips - timing.clips))))["frames"]
        with timing.views.running():
            views(frames, generator)
        timing.clips += frames.shape[0]
    return timing, warmup_s


# ---- prepare-data and storage ----------------------------------------------------------------


def bench_prepare(case: Case, out_dir: Path) -> dict[str, Any]:
    """Time ``prepare_dataset`` (its decoder uses all cores) and measure the shards it writes."""
    options = PrepareOptions(clip_step=case.clip_step, keep_every=case.keep_every)
    clock = Clock()
    with clock.running():
        summary = prepare_dataset([case.video], out_dir, options, progress=False, log=None)
    video = summary.videos[0]
    shard_bytes = sum(s.size_bytes for s in summary.shards)
    source_s = video.decoded_frames / video.fps
    return {
        "clip_step": video.clip_step,
        "keep_every": video.keep_every,
        "short_side": options.short_side,
        "image_format": f"{options.image_format} q{options.quality}",
        "decoded_frames": video.decoded_frames,
        "kept_frames": video.kept_frames,
        "clip_starts": video.clip_starts,
        "stored_size": [video.stored_width, video.stored_height],
        "wall_s": clock.wall_s,
        "cpu_s": clock.cpu_s,
        "source_frames_per_s": video.decoded_frames / clock.wall_s,
        "source_frames_per_cpu_s": video.decoded_frames / clock.cpu_s,
        "shard_bytes": shard_bytes,
        "source_seconds": source_s,
        "gb_per_source_hour": shard_bytes / source_s * 3600 / 1e9,
        "bytes_per_stored_frame": shard_bytes / video.kept_frames,
        "bytes_per_stored_pixel": shard_bytes / (video.kept_frames * video.stored_width * video.stored_height),
    }


def wt_storage_estimate(bytes_per_pixel: float) -> dict[str, Any]:
    """GB per hour of a 4K 60 fps source at default settings, from a measured JPEG bytes/pixel.

    Shards hold frames shrunk to the short side, so the cost follows the stored size and the
    kept rate (keep_every of the 60-frame step), not the source resolution.
    """
    width, height = stored_size(WT_SOURCE["width"], WT_SOURCE["height"], PrepareOptions().short_side)
    kept_fps = WT_SOURCE["fps"] / choose_keep_every(WT_SOURCE["clip_step"])
    return {
        "stored_size": [width, height],
        "kept_fps": kept_fps,
        "gb_per_source_hour": bytes_per_pixel * width * height * kept_fps * 3600 / 1e9,
    }


# ---- report ----------------------------------------------------------------------------------


def print_tables(cases: list[dict[str, Any]]) -> None:
    """The headline table (per core) and the wall-clock one."""
    for basis, label in (("per_core", "clips/s per core (CPU time)"), ("wall", "clips/s wall clock, 1 thread")):
        print(f"\n{label}")
        head = (
            f"{'video':<32} {'step':>4} {'(a) ref':>8} {'(b) ours':>9} {'ratio':>7}"
            f" {'(a)+views':>10} {'(b)+views':>10} {'ratio':>7} {'(b)+views/(a)':>14}"
        )
        print(head)
        print("-" * len(head))
        for case in cases:
            a, b = case["reference"]["rates"], case["stream"]["rates"]
            r = case["ratios"]
            print(
                f"{case['name']:<32} {case['clip_step']:>4} {a['data_' + basis]:>8.2f} {b['data_' + basis]:>9.2f}"
                f" {r['data_' + basis]:>6.1f}x {a['views_' + basis]:>10.2f} {b['views_' + basis]:>10.2f}"
                f" {r['views_' + basis]:>6.1f}x {b['views_' + basis] / a['data_' + basis]:>13.1f}x"
            )


def run_case(case: Case, work: Path, args: argparse.Namespace, views: ClipViews) -> dict[str, Any]:
    """Prepare, then time (a) and (b) on one video."""
    index, scan_s = FrameIndex.scan(case.video)
    scan_s = min(scan_s, *(FrameIndex.scan(case.video)[1] for _ in range(2)))  # the file is in the page cache now
    video = describe_video(case.video, index)
    print(
        f"\n== {case.name}: {video['codec']} {video['width']}x{video['height']} {video['fps']:g} fps, "
        f"{video['frames']} frames, {video['keyframes']} keyframes (longest GOP {video['max_gop']})",
        flush=True,
    )
    prepared = bench_prepare(case, work / case.video.stem)
    print(
        f"prepare-data: {prepared['decoded_frames']} frames in {prepared['wall_s']:.1f} s = "
        f"{prepared['source_frames_per_s']:.0f} source frames/s ({prepared['source_frames_per_cpu_s']:.0f} per CPU s); "
        f"step {prepared['clip_step']}, keep_every {prepared['keep_every']}, stored "
        f"{prepared['stored_size'][0]}x{prepared['stored_size'][1]}, {prepared['clip_starts']} clips per epoch; "
        f"{prepared['gb_per_source_hour']:.2f} GB per source hour",
        flush=True,
    )
    reference = bench_reference(case, index, args.clips, args.batch, views, args.seed)
    reference_s = reference.data.wall_s + reference.views.wall_s
    print(f"(a) reference-style: {reference.clips} clips, {reference_s:.1f} s", flush=True)
    stream, warmup_s = bench_stream(work / case.video.stem, case, args.stream_clips, args.batch, views, args.seed)
    print(
        f"(b) ClipStream: {stream.clips} clips, {stream.data.wall_s + stream.views.wall_s:.1f} s "
        f"(+{warmup_s:.1f} s untimed open and first batch)",
        flush=True,
    )
    a, b = reference.rates(), stream.rates()
    return {
        "name": case.name,
        "video": video,
        "clip_step": case.clip_step,
        "frames_per_clip": FRAMES_PER_CLIP,
        "prepare": prepared,
        "reference": reference.to_json(),
        "stream": {**stream.to_json(), "untimed_open_s": warmup_s},
        "ratios": {key: b[key] / a[key] for key in a},
        "index_scan": {"seconds": scan_s, "us_per_packet": scan_s / len(index.pts) * 1e6},
    }




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16, help="clips timed per reference-style run (default 16)")
    parser.add_argument("--stream-clips", type=int, default=64, help="clips timed for ClipStream (default 64)")
    parser.add_argument("--batch", type=int, default=8, help="clips per ClipViews call, both loaders (default 8)")
    parser.add_argument("--small-size", default="640x360", help="WIDTHxHEIGHT of the small long-GOP test video")
    parser.add_argument("--long-size", default="1920x816", help="WIDTHxHEIGHT of the large long-GOP test video")
    parser.add_argument("--quick", action="store_true", help="8 / 32 clips and a 1280x544 large long-GOP video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="where prepared shards go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--paper-scale", action="store_true",
                        help="instead: the reference recipe's loader in both data modes over a long prepared video")
    parser.add_argument("--hours", type=float, default=1.0, help="--paper-scale: length of the video (default 1 h)")
    parser.add_argument("--workers", type=int, default=2, help="--paper-scale: DataLoader workers (default 2)")
    parser.add_argument("--batches", type=int, default=24, help="--paper-scale: batches timed per phase (default 24)")
    parser.add_argument("--world-size", type=int, default=8, help="--paper-scale: processes; rank 0 is timed (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="--paper-scale: alternating runs of each mode (default 2)")
    args = parser.parse_args(argv)
    if args.paper_scale:
        from paper_scale import run_paper_scale

        return run_paper_scale(args)
    if args.quick:
        args.clips, args.stream_clips, args.long_size = 8, 32, "1280x544"
    sizes = [tuple(int(v) for v in text.lower().split("x")) for text in (args.small_size, args.long_size)]

    torch.set_num_threads(1)  # per-core figures: one thread for the views in both loaders
    load_before = os.getloadavg()
    started = time.perf_counter()
    sample = get_sample_video(CACHE_DIR / "sample_videos")
    long_videos = [make_long_video(sample, width, height) for width, height in sizes]
    cases = [
        Case(f"{sample.stem} (real)", sample, clip_step=25, keep_every=5),
        *(Case(video.stem, video, clip_step=60, keep_every=None) for video in long_videos),
    ]
    settings = {
        "frames_per_clip": FRAMES_PER_CLIP,
        "batch": args.batch,
        "reference_clips": args.clips,
        "stream_clips": args.stream_clips,
        "num_workers": 0,
        "torch_threads": torch.get_num_threads(),
        "reference_decoder_threads": 1,
        "seed": args.seed,
    }
    print(f"settings: {settings}")
    print(f"load average before: {load_before}")
    views = ClipViews()
    with tempfile.TemporaryDirectory(prefix="bench-data-", dir=args.work_dir) as work:
        results = [run_case(case, Path(work), args, views) for case in cases]
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    real = results[0]["prepare"]["bytes_per_stored_pixel"]
    upscaled = results[-1]["prepare"]["bytes_per_stored_pixel"]
    storage_4k = {
        "from_real_video": wt_storage_estimate(real),
        "from_upscaled_video": wt_storage_estimate(upscaled),
        "wt_mean_video_gb": wt_storage_estimate(real)["gb_per_source_hour"] * WT_SOURCE["mean_minutes"] / 60,
    }
    executable = Path(sys.executable)
    interpreter = str(executable.relative_to(REPO_ROOT) if executable.is_relative_to(REPO_ROOT) else executable)
    scan = results[-1]["index_scan"]["us_per_packet"]
    wt_packets = WT_SOURCE["fps"] * WT_SOURCE["mean_minutes"] * 60
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([interpreter, *sys.argv]),
        "machine": machine_info(packages=("torch", "datasets", "av", "pyarrow", "pillow", "numpy", "dora-hf")),
        "load_average": {"before": load_before, "after": load_after},
        "elapsed_s": elapsed,
        "settings": settings,
        "cases": results,
        "storage_4k_estimate": storage_4k,
        "decord_reopen_index_scan_estimate": {
            "us_per_packet_measured": scan,
            "wt_mean_video_packets": wt_packets,
            "seconds_per_clip": scan * wt_packets / 1e6,
        },
    }
    print_tables(results)
    print(
        f"\nstorage, default settings: 4K 60 fps source -> {storage_4k['from_real_video']['stored_size']} at "
        f"{storage_4k['from_real_video']['kept_fps']:g} fps stored: about "
        f"{storage_4k['from_real_video']['gb_per_source_hour']:.1f} GB per source hour (JPEG bytes/pixel of the real "
        f"clip; "
        f"{storage_4k['from_upscaled_video']['gb_per_source_hour']:.1f} with the smoother upscaled one)"
    )
    print(
        f"not in (a): decord demuxes the whole file at every open; at {scan:.1f} us/packet a "
        f"{WT_SOURCE['mean_minutes']:g}-min 60 fps video adds about {scan * wt_packets / 1e6:.1f} s per clip"
    )
    print(f"load average after: {load_after}; total {elapsed:.0f} s")
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
