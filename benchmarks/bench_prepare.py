"""prepare-data throughput: one process against ``--num-workers 2``, on the same videos, in one run.

``dora-hf prepare-data --num-workers N`` cuts each video at keyframes and decodes the segments in
N processes (`dora_hf.prepare.parallel.pool`); the parent writes the shards. This script times
``prepare_dataset`` with 1 and with 2 workers on:

- a long-GOP 1280x720 60 fps H.264 video (the sample clip looped and upscaled, 2 s keyframe
  interval, 30 s), encoded once and cached in ``.cache/bench_prepare/``;
- a short 3840x2160 60 fps H.264 clip made the same way (4 s), for the per-core rate at the size
  of the Walking Tours videos;
- the real sample clip ``bikes.mp4`` (640x272, 25 fps, 10 s), too short to gain anything: it
  shows the fixed cost of starting the worker processes.

Settings are prepare-data's defaults (60-frame clip step, every 10th frame kept, short side 384,
JPEG q90), except for the sample (25-frame step, every 5th frame) and the 4K clip (2 frames per clip,
which changes nothing in decoding: 4 s hold no clip of 8). For each run: source frames
per wall second, per CPU second (the parent and its worker processes together), the parent's own
CPU time (writing the shards) and the largest worker's memory. It checks that both runs wrote
byte-identical shards. Then, to get a worker's own cost without the scheduling noise of a shared
machine, it decodes every segment of the 2-worker plan in this process, one after the other, with
one decoder thread (what each of N workers on N free cores runs), and estimates from that 4K rate how
long WT-all (16.3 h of 4K60, 3.52 M source frames) takes on 16 and 64 cores.

    .venv/bin/python benchmarks/bench_prepare.py             # about 1.5 min on 2 cores (+2 min the first time)
    .venv/bin/python benchmarks/bench_prepare.py --repeats 2 # each case twice, 1 and 2 workers alternating
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import psutil

if TYPE_CHECKING:
    from dora_hf.prepare.pipeline import PrepareOptions

# dora_hf.prepare.pipeline (datasets, huggingface_hub) is imported inside the functions: worker processes
# are started with spawn, which imports this script again in each of them, as the `dora-hf` command
# imports only its light entry point.

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "bench_prepare.json"

WT_ALL = {"hours": 16.3, "width": 3840, "height": 2160, "fps": 60.0, "source_frames": 3.52e6}
"""WT-all: the 10 Walking Tours videos (DORA_SPEC.md section 1)."""


def make_video(source: Path, width: int, height: int, seconds: float, *, fps: int = 60, gop: int = 120) -> Path:
    """``source`` looped and resized to ``width`` x ``height`` at ``fps`` for ``seconds``, H.264
    (veryfast, CRF 20, B-frames) with a keyframe exactly every ``gop`` frames; cached by settings."""
    from bench_data import make_long_video  # here: the spawned workers re-import this script, not bench_data

    return make_long_video(source, width, height, fps=fps, gop=gop, frames=int(seconds * fps))


class WorkerMemory:
    """The largest resident size of any child process (the workers), sampled while a run lasts."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.1):
            for child in me.children(recursive=True):
                try:
                    self.peak_bytes = max(self.peak_bytes, child.memory_info().rss)
                except psutil.Error:
                    pass

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def time_prepare(video: Path, options: PrepareOptions, workers: int, out: Path) -> dict[str, Any]:
    """One ``prepare_dataset`` run: wall time, CPU time of this process and of its (joined) workers."""
    from dora_hf.prepare.pipeline import prepare_dataset

    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    with WorkerMemory() as memory:
        summary = prepare_dataset([video], out, options, progress=False, log=None, num_workers=workers)
    wall = time.perf_counter() - wall_before
    parent_cpu = time.process_time() - cpu_before
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu = (children_after.ru_utime - children_before.ru_utime) + (children_after.ru_stime - children_before.ru_stime)
    cpu = parent_cpu + children_cpu
    frames = summary.decoded_frames
    digests = [hashlib.sha256((out / s.file).read_bytes()).hexdigest() for s in summary.shards]
    return {
        "workers": workers,
        "decoded_frames": frames,
        "kept_frames": summary.num_rows,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "parent_cpu_s": round(parent_cpu, 3),
        "frames_per_s": round(frames / wall, 2),
        "frames_per_cpu_s": round(frames / cpu, 2),
        "cores_used": round(cpu / wall, 2),
        "largest_worker_rss_mb": round(memory.peak_bytes / 2**20, 1) if workers > 1 else None,
        "shard_sha256": digests,
    }


def time_segments_in_process(video: Path, options: PrepareOptions, work: Path) -> dict[str, Any]:
    """What one worker costs per frame with a core to itself: every segment of a 2-worker plan decoded
    here, one after the other, with one decoder thread (as each of N workers on N cores runs)."""
    from dora_hf.prepare.frame_images import stored_size
    from dora_hf.prepare.parallel.pool import SEGMENTS_PER_WORKER
    from dora_hf.prepare.options import choose_keep_every
    from dora_hf.prepare.parallel.segment_decode import FrameSettings, SegmentTask, decode_segment
    from dora_hf.prepare.parallel.segments import scan_keyframes, split_at_keyframes
    from dora_hf.prepare.video_decode import probe_video

    info = probe_video(video)
    width, height = stored_size(info.width, info.height, options.short_side)
    keep_every = choose_keep_every(options.clip_step, options.keep_every)
    settings = FrameSettings(keep_every, width, height, options.image_format, options.quality, options.blur_faces)
    folder = work / f"segments-{video.stem}"
    folder.mkdir(parents=True)
    cpu_before = time.process_time()
    segments = split_at_keyframes(scan_keyframes(video), 2 * SEGMENTS_PER_WORKER)
    frames = sum(decode_segment(SegmentTask(info, settings, s, folder, 1)).decoded for s in segments)
    cpu = time.process_time() - cpu_before
    return {"segments": len(segments), "frames": frames, "cpu_s": round(cpu, 3), "frames_per_cpu_s": round(frames / cpu, 2)}


def run_case(name: str, video: Path, options: PrepareOptions, repeats: int, work: Path) -> dict[str, Any]:
    from dora_hf.prepare.parallel.segments import scan_keyframes

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        described = {
            "file": video.name,
            "size": f"{stream.codec_context.width}x{stream.codec_context.height}",
            "fps": float(stream.average_rate),
            "frames": stream.frames,
            "codec": stream.codec_context.name,
            "file_bytes": video.stat().st_size,
        }
    scan_started = time.perf_counter()
    scan = scan_keyframes(video)
    scan_s = time.perf_counter() - scan_started
    described["keyframes"] = len(scan.keyframes)
    described["scan_s"] = round(scan_s, 4)
    described["scan_mb_per_s"] = round(video.stat().st_size / scan_s / 1e6, 1)
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for repeat in range(repeats):
        for workers in (1, 2):
            out = work / f"{name}-{workers}-{repeat}"
            result = time_prepare(video, options, workers, out)
            runs[workers].append(result)
            print(f"  {name}: {workers} worker(s): {result['frames_per_s']:.1f} frames/s "
                  f"({result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU)", flush=True)
    in_process = [time_segments_in_process(video, options, work / f"{name}-{repeat}") for repeat in range(repeats)]
    print(f"  {name}: segments decoded in this process, one thread: "
          f"{max(r['frames_per_cpu_s'] for r in in_process):.1f} frames per CPU second", flush=True)
    best = {w: max(r, key=lambda x: x["frames_per_s"]) for w, r in runs.items()}
    identical = all(r["shard_sha256"] == runs[1][0]["shard_sha256"] for rs in runs.values() for r in rs)
    return {
        "name": name,
        "video": described,
        "options": {"clip_step": options.clip_step, "keep_every": options.keep_every, "short_side": options.short_side},
        "runs": {str(w): r for w, r in runs.items()},
        "segments_in_process": in_process,
        "best_frames_per_s": {str(w): r["frames_per_s"] for w, r in best.items()},
        "speedup_2_over_1": round(best[2]["frames_per_s"] / best[1]["frames_per_s"], 3),
        "identical_shards": identical,
    }


def wt_all_estimate(per_cpu_s: float, parent_cpu_per_kept: float) -> dict[str, Any]:
    """Hours for WT-all on 16 and 64 cores from a per-core rate at 4K, if the decoding scales linearly.

    The parent's work (writing the shards of a video once its segments are done) overlaps the
    decoding of the next videos; only the last video's is a tail, counted here for a mean-length one.
    """
    frames = WT_ALL["source_frames"]
    kept_mean_video = frames / 10 / 10  # every 10th frame, one of ten videos
    tail_h = parent_cpu_per_kept * kept_mean_video / 3600
    estimate = {}
    for cores in (16, 64):
        decode_h = frames / (per_cpu_s * cores) / 3600
        estimate[str(cores)] = {"decode_h": round(decode_h, 2), "tail_h": round(tail_h, 3), "total_h": round(decode_h + tail_h, 2)}
    estimate["1"] = {"decode_h": round(frames / per_cpu_s / 3600, 1)}
    return estimate


def main(argv: list[str] | None = None) -> int:
    import common  # here, as make_long_video: the spawned workers re-import this script

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each case and worker count (default 1)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the 1280x720 video (default 30)")
    parser.add_argument("--seconds-4k", type=float, default=4.0, help="length of the 3840x2160 clip (default 4)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the datasets go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    from dora_hf.prepare.pipeline import PrepareOptions
    from dora_hf.demo.sample_video import get_sample_video

    sample = get_sample_video(CACHE_DIR / "sample_videos")
    hd = make_video(sample, 1280, 720, args.seconds)
    uhd = make_video(sample, 3840, 2160, args.seconds_4k)
    load_before = os.getloadavg()
    print(f"load average before: {load_before}")
    started = time.perf_counter()
    defaults = PrepareOptions()
    cases = [
        ("1280x720 60 fps", hd, defaults),
        ("3840x2160 60 fps", uhd, PrepareOptions(frames_per_clip=2)),  # 4 s hold no clip of 8 frames
        ("bikes.mp4 (sample)", sample, PrepareOptions(clip_step=25, keep_every=5)),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-prepare-", dir=args.work_dir) as work:
        results = [run_case(name, video, options, args.repeats, Path(work)) for name, video, options in cases]
        # the file is in the page cache by now: this is the demuxer's speed, not the disk's
        print(f"keyframe scan (demux only): {', '.join(str(r['video']['scan_mb_per_s']) for r in results)} MB/s")
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    uhd_result, sample_result = results[1], results[2]
    one = max(uhd_result["runs"]["1"], key=lambda r: r["frames_per_s"])
    two = max(uhd_result["runs"]["2"], key=lambda r: r["frames_per_s"])
    # The fixed cost of a parallel run (starting the workers, scanning): what the 10 s sample costs more
    # with 2 workers than with 1. It does not grow with the video.
    fixed_cpu_s = min(r["cpu_s"] for r in sample_result["runs"]["2"]) - min(r["cpu_s"] for r in sample_result["runs"]["1"])
    # The estimate takes a worker's own rate (one decoder thread, a core to itself), measured in this process.
    per_cpu_s = max(r["frames_per_cpu_s"] for r in uhd_result["segments_in_process"])
    # The parent's cost per kept frame, from the longer 720p video: its frames are stored at 683x384, as
    # 4K frames are, and its 180 kept frames outweigh the parent's fixed costs better than 24 do.
    hd_two = max(results[0]["runs"]["2"], key=lambda r: r["frames_per_s"])
    estimate = wt_all_estimate(per_cpu_s, hd_two["parent_cpu_s"] / hd_two["kept_frames"])
    executable = Path(sys.executable)
    interpreter = str(executable.relative_to(REPO_ROOT) if executable.is_relative_to(REPO_ROOT) else executable)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([interpreter, *sys.argv]),
        "machine": common.machine_info(packages=("av", "pyarrow", "pillow", "datasets", "dora-hf")),
        "load_average": {"before": load_before, "after": load_after},
        "elapsed_s": round(elapsed, 1),
        "cases": results,
        "parallel_fixed_cpu_s": round(fixed_cpu_s, 3),
        "wt_all": {**WT_ALL, "per_cpu_s_4k_1_worker": one["frames_per_cpu_s"],
                   "per_cpu_s_4k_2_workers": two["frames_per_cpu_s"],
                   "per_cpu_s_4k_one_worker_thread": per_cpu_s, "hours_by_cores": estimate},
    }
    print()
    print(f"{'video':<22} {'1 worker':>14} {'2 workers':>14} {'ratio':>7} {'identical':>10}")
    for result in results:
        fps = result["best_frames_per_s"]
        print(f"{result['name']:<22} {fps['1']:>8.1f} fr/s {fps['2']:>8.1f} fr/s {result['speedup_2_over_1']:>7.2f} "
              f"{str(result['identical_shards']):>10}")
    print(f"\n4K frames per CPU second: {one['frames_per_cpu_s']:.1f} (1 worker), {two['frames_per_cpu_s']:.1f} "
          f"(2 workers, with the fixed {fixed_cpu_s:.1f} CPU s of starting them), {per_cpu_s:.1f} (one worker's "
          "segments decoded in this process)")
    print("cores used (CPU s / wall s): " + ", ".join(
        f"{r['name']}: {max(x['cores_used'] for x in r['runs']['1']):.2f} / {max(x['cores_used'] for x in r['runs']['2']):.2f}"
        for r in results))
    for cores in ("16", "64"):
        print(f"WT-all on {cores} cores: about {estimate[cores]['total_h']:.1f} h")
    print(f"load average after: {load_after}; elapsed {elapsed:.0f} s")
    common.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
