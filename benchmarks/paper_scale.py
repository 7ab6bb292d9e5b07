"""`bench_data.py --paper-scale`: the reference recipe's loader (rank 0 of 8) in both data modes, on a
prepared dataset of one long 60 fps video written directly in the prepared format."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from dora_hf.demo.sample_video import get_sample_video
from dora_hf.views.dora_views import ClipViews

from common import machine_info, write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "bench_data.json"


def write_long_dataset(folder: Path, sample: Path, *, hours: float, fps: int = 60, keep_every: int = 10) -> dict[str, Any]:
    """A prepared dataset of one ``hours``-long 60 fps video, written directly in the prepared format.

    Frames are real street frames (the sample video's, resized to the prepared 683x384 and stored
    as JPEG at the default quality), cycled: decoding cost per clip is that of real data, while the
    index (frame numbers, shards, row groups) is that of a long Walking Tours video.
    """
    from PIL import Image as PILImage

    from dora_hf.prepare.shard_writer import ShardWriter

    distinct: list[bytes] = []
    with av.open(str(sample)) as container:
        for frame in islice(container.decode(video=0), 0, 250, 4):
            image = frame.to_image().resize((683, 384), PILImage.Resampling.BOX)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            distinct.append(buffer.getvalue())
    source_frames = int(hours * 3600 * fps)
    kept = (source_frames + keep_every - 1) // keep_every
    started = time.perf_counter()
    writer = ShardWriter(folder / "data", 2000)
    for row in range(kept):
        writer.add({
            "image": {"bytes": distinct[row % len(distinct)], "path": None},
            "video_id": "long",
            "frame_index": row * keep_every,
            "timestamp": row * keep_every / fps,
            "source_fps": float(fps),
            "keep_every": keep_every,
            "width": 683,
            "height": 384,
        })
    shards = writer.finish()
    info = {
        "format_version": 1,
        "videos": [{"video_id": "long", "fps": float(fps), "keep_every": keep_every, "decoded_frames": source_frames,
                    "kept_frames": kept, "first_row": 0}],
        "shards": [asdict(shard) for shard in shards],
    }
    (folder / "prepare_info.json").write_text(json.dumps(info))
    return {"hours": hours, "source_frames": source_frames, "kept_frames": kept, "shards": len(shards),
            "bytes": sum(shard.size_bytes for shard in shards), "write_s": time.perf_counter() - started,
            "mean_jpeg_bytes": sum(map(len, distinct)) / len(distinct)}


def _tree_cpu_seconds() -> float:
    """CPU seconds of this process and of its live children (the DataLoader workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def bench_paper_loader(folder: Path, *, streaming: bool, workers: int, batches: int, world_size: int, seed: int) -> dict[str, Any]:
    """The reference recipe's loader (T=8, step 60, batch 16) as rank 0 of ``world_size``, timed
    for ``batches`` batches without and then with ClipViews on this process's device."""
    from dora_hf.training.data_loading import build_clip_loader
    from dora_hf.dataset.batches import endless_batches
    from dora_hf.training.recipe import load_recipe

    recipe = load_recipe(
        REPO_ROOT / "training_scripts" / "configs" / "vits16_wt_venice.yaml",
        {"dataset": str(folder), "streaming": streaming, "num_workers": workers, "seed": seed,
         "dataset_cache_dir": str(folder.parent / "datasets-cache")},
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    views = ClipViews()
    generator = torch.Generator(device=device).manual_seed(seed)
    started = time.perf_counter()
    reader, loader, plan = build_clip_loader(recipe, 0, world_size, device)
    batch_iter = endless_batches(loader, reader)
    first = next(batch_iter)
    open_s = time.perf_counter() - started
    fps = 60.0
    spreads: list[float] = []
    phases: dict[str, dict[str, float]] = {}
    for phase in ("loader", "loader+views"):
        wall, cpu = time.perf_counter(), _tree_cpu_seconds()
        for _ in range(batches):
            batch = next(batch_iter)
            reader.mark_consumed(batch)
            spreads.append(float((batch["start_frame"].double() / fps).std(unbiased=False)))
            if phase == "loader+views":
                views(batch["frames"].to(device, non_blocking=True), generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, _tree_cpu_seconds() - cpu
        clips = batches * recipe.batch_size_per_device
        phases[phase] = {"clips": clips, "wall_s": wall, "cpu_s": cpu, "clips_per_s": clips / wall,
                         "clips_per_s_per_worker": clips / wall / max(1, workers), "clips_per_cpu_s": clips / cpu}
    del first, batch_iter, loader
    info = json.loads((folder / "prepare_info.json").read_text())["videos"][0]
    span_s = (recipe.frames_per_clip - 1) * recipe.clip_step / fps
    starts_range_s = info["decoded_frames"] / fps - span_s
    batch = recipe.batch_size_per_device
    # A uniform draw of `batch` starts over the video: E[population std] = range/sqrt(12) * sqrt((B-1)/B).
    uniform = starts_range_s / (12 ** 0.5) * ((batch - 1) / batch) ** 0.5
    return {
        "mode": plan.mode,
        "streaming": streaming,
        "workers": workers,
        "rank": f"0 of {world_size}",
        "clips_per_epoch": plan.clips_per_epoch,
        "open_and_first_batch_s": open_s,
        "phases": phases,
        "batch_spread_s": {"mean": float(np.mean(spreads)), "median": float(np.median(spreads)),
                           "uniform_expected": uniform, "ratio_to_uniform": float(np.mean(spreads)) / uniform},
    }


def run_paper_scale(args: argparse.Namespace) -> int:
    """``--paper-scale``: both data modes on a long prepared video, as the reference recipe reads it."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    sample = get_sample_video(CACHE_DIR / "sample_videos")
    with tempfile.TemporaryDirectory(prefix="bench-data-scale-", dir=args.work_dir) as work:
        folder = Path(work) / "long"
        dataset = write_long_dataset(folder, sample, hours=args.hours)
        print(f"dataset: {dataset}", flush=True)
        modes = []
        # Alternating runs, so that a change in the machine's load shows as a spread between the
        # repeats of one mode rather than as a difference between modes.
        for repeat in range(args.repeats):
            for streaming in (False, True):
                result = bench_paper_loader(folder, streaming=streaming, workers=args.workers, batches=args.batches,
                                            world_size=args.world_size, seed=args.seed)
                result["repeat"] = repeat
                print(json.dumps(result, indent=1), flush=True)
                modes.append(result)
    load_after = os.getloadavg()
    print(f"\nreference recipe loader, rank 0 of {args.world_size}, {args.workers} workers, batch 16, T=8, step 60 "
          f"({args.hours:g} h video at 60 fps)")
    head = f"{'mode':<14} {'run':>3} {'open s':>7} {'clips/s':>8} {'/worker':>8} {'/core':>7} {'+views/s':>9} {'/core':>7} {'spread/uniform':>15}"
    print(head)
    print("-" * len(head))
    for m in modes:
        lo, lv = m["phases"]["loader"], m["phases"]["loader+views"]
        print(f"{'streaming' if m['streaming'] else 'random access':<14} {m['repeat']:>3} {m['open_and_first_batch_s']:>7.1f} "
              f"{lo['clips_per_s']:>8.1f} {lo['clips_per_s_per_worker']:>8.1f} {lo['clips_per_cpu_s']:>7.1f} "
              f"{lv['clips_per_s']:>9.1f} {lv['clips_per_cpu_s']:>7.1f} {m['batch_spread_s']['ratio_to_uniform']:>15.3f}")
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": machine_info(packages=("torch", "datasets", "av", "pyarrow", "pillow", "numpy", "dora-hf")),
        "load_average": {"before": load_before, "after": load_after},
        "elapsed_s": time.perf_counter() - started,
        "dataset": dataset,
        "modes": modes,
    }
    print(f"load average before {load_before}, after {load_after}")
    path = args.json if args.json != DEFAULT_JSON else REPO_ROOT / "benchmarks" / "results" / "bench_data_paper_scale.json"
    write_json(path, report)
    return 0
