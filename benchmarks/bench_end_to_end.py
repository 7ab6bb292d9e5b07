"""End-to-end training benchmark: prepared shards -> clip reader -> DataLoader -> views + step.

The pieces are those of :func:`dora_hf.pretrain.pretrain` (same recipe keys, the same clip
reader and ``DataLoader`` settings - random access by default, ``--streaming`` for the streaming
reader - and the same ``DoraTrainingStep``), minus checkpoints,
logging and export, so that the time a step spends blocked in ``next(dataloader)`` can be
measured apart from the time of the step itself (views, teacher, tracking, student, loss,
backward, optimiser, EMA).

Three measurements, after warm-up steps (worker start-up, shuffle-buffer fill, compilation):

1. **free-running**: ``steps`` steps as the training loop runs them, one synchronisation at the
   end; clips/s, and the host time spent blocked in ``next()``.
2. **synchronised** (CUDA only; on a CPU this is the same as 1.): the device is synchronised
   before and after each step, so a wait in ``next()`` is time the GPU sits idle: the share of
   wall time spent waiting for data says whether the GPU waits on data.
3. **loader only**: batches drawn with no step at all: the data pipeline's own capacity.

Without ``--dataset``, the sample street video (640x272, 25 fps, 10 s) is prepared into a
temporary folder, copied enough times that the timed steps stay within one data epoch. Its
frames are smaller than prepared Walking Tours frames (683x384), so JPEG decoding per clip is
cheaper than on real data: use ``--video`` with a larger video for a closer figure.

    .venv/bin/python benchmarks/bench_end_to_end.py --tiny           # CPU, about 2 min
    .venv/bin/python benchmarks/bench_end_to_end.py --batch 16       # GPU, reference recipe
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import run_header, run_and_record, synchronize
from step_pieces import FIRST_STEP, REFERENCE_RECIPE, TINY_MODEL, TINY_VIEWS, Pieces, device_peak, flops_per_clip

from dora_hf.dataset.clip_index import count_clips
from dora_hf.dataset.info import read_prepare_info
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.demo.sample_video import get_sample_video
from dora_hf.training.data_loading import build_clip_loader
from dora_hf.training.builders import build_model_config, make_accelerator
from dora_hf.dataset.batches import endless_batches
from dora_hf.training.recipe import PretrainRecipe, load_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DATA_WAIT_THRESHOLD = 0.05
"""Share of synchronised wall time blocked in next() above which the device is said to wait on data."""


def prepare_sample_shards(args: argparse.Namespace, work_dir: Path, clips_needed: int) -> tuple[Path, dict[str, Any]]:
    """Prepare ``--video`` (default: the sample video) into ``work_dir``, copied until enough clips."""
    video = Path(args.video) if args.video else get_sample_video(CACHE_DIR / "sample_videos")
    options = PrepareOptions(
        clip_step=args.clip_step,
        keep_every=args.keep_every,
        frames_per_clip=args.frames,
        frames_per_shard=args.frames_per_shard,
    )
    # One copy first, to learn how many clips a copy gives.
    videos_dir = work_dir / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    probe_dir = work_dir / "probe"
    first = videos_dir / f"{video.stem}_0{video.suffix}"
    first.symlink_to(video.resolve())
    prepare_dataset([first], probe_dir, options, progress=False, log=None)
    per_copy = count_clips(read_prepare_info(str(probe_dir)), args.frames, args.clip_step)
    if per_copy < 1:
        raise SystemExit(
            f"{video} gives no clip of {args.frames} frames {args.clip_step} frames apart: lower --clip-step"
        )
    copies = args.copies or min(64, max(1, math.ceil(clips_needed / per_copy)))
    if copies == 1:
        out = probe_dir
    else:
        names = [first]
        for i in range(1, copies):
            link = videos_dir / f"{video.stem}_{i}{video.suffix}"
            link.symlink_to(video.resolve())
            names.append(link)
        out = work_dir / "shards"
        prepare_dataset(names, out, options, progress=False, log=None)
        shutil.rmtree(probe_dir)
    info = read_prepare_info(str(out))
    details = {
        "video": str(video),
        "copies": copies,
        "clip_step": args.clip_step,
        "keep_every": args.keep_every,
        "clips": count_clips(info, args.frames, args.clip_step),
        "frames": sum(int(v["kept_frames"]) for v in info["videos"]),
        "shards": len(list((out / "data").glob("*.parquet"))),
        "prepare_s": time.perf_counter() - start,
    }
    return out, details


def make_recipe(args: argparse.Namespace, dataset: str, output_dir: Path) -> PretrainRecipe:
    overrides: dict[str, Any] = {
        "dataset": dataset,
        "frames_per_clip": args.frames,
        "clip_step": args.clip_step,
        "batch_size_per_device": args.batch,
        "num_workers": args.num_workers,
        "mixed_precision": {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[args.precision],
        "output_dir": str(output_dir),
        "epochs": 100,
    }
    if args.shuffle_buffer is not None:
        overrides["shuffle_buffer"] = args.shuffle_buffer
    if args.streaming:
        overrides["streaming"] = True
    if args.tiny:
        overrides["model"] = {**load_recipe(REFERENCE_RECIPE).model, **TINY_MODEL}
        overrides["views"] = dict(TINY_VIEWS)
    return load_recipe(REFERENCE_RECIPE, overrides)


def build_loader(recipe: PretrainRecipe, device: torch.device):
    """The clip reader, loader and epoch plan exactly as ``pretrain`` builds them (one process)."""
    return build_clip_loader(recipe, 0, 1, device)


def train_steps(
    step_fn, stream, batches, device, batch_size: int, steps: int, first: int, sync_each_step: bool
) -> dict[str, Any]:
    """``steps`` training steps; time blocked in next() and, when synchronised, in the step."""
    wait = 0.0
    step_time = 0.0
    window_loss = torch.zeros((), device=device)
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        output = step_fn(batch["frames"], first + i)
        stream.mark_consumed(batch)
        window_loss += output.loss  # as the training loop does: stays on the device
        if sync_each_step:
            synchronize(device)
        wait += t1 - t0
        step_time += time.perf_counter() - t1
    synchronize(device)
    wall = time.perf_counter() - start
    clips = steps * batch_size
    return {
        "steps": steps,
        "wall_s": wall,
        "clips_per_s": clips / wall,
        "data_wait_s_per_step": wait / steps,
        "step_s_per_step": step_time / steps,
        "data_wait_share": wait / wall,
        "synchronised_each_step": sync_each_step,
        "mean_loss": float(window_loss) / steps,
    }


def loader_only(batches, batch_size: int, count: int) -> dict[str, Any]:
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    seconds = time.perf_counter() - start
    return {"batches": count, "clips_per_s": count * batch_size / seconds, "s_per_batch": seconds / count}


def run(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Fill ``result`` as the figures come in (so that a failure keeps what was measured)."""
    device = torch.device(args.device)
    result.update(run_header("bench_end_to_end", device))
    print(f"machine: {result['machine']}")
    print(f"load average at start: {result['load_average_start']}")
    work_dir = Path(tempfile.mkdtemp(prefix="dora-e2e-", dir=args.work_dir))
    try:
        timed_batches = args.warmup + args.steps * (2 if device.type == "cuda" else 1) + args.loader_batches
        clips_needed = (timed_batches + 2 * max(1, args.num_workers)) * args.batch
        if args.dataset:
            dataset = args.dataset
            result["data"] = {"dataset": dataset}
        else:
            path, details = prepare_sample_shards(args, work_dir, clips_needed)
            dataset = str(path)
            result["data"] = details
            print(
                f"prepared {details['copies']} cop{'y' if details['copies'] == 1 else 'ies'} of "
                f"{Path(details['video']).name}: {details['frames']} frames, {details['clips']} clips, "
                f"{details['shards']} shards in {details['prepare_s']:.1f} s"
            )
        recipe = make_recipe(args, dataset, work_dir / "run")
        result["settings"] = {
            "tiny": args.tiny,
            "batch": args.batch,
            "frames": args.frames,
            "clip_step": args.clip_step,
            "num_workers": args.num_workers,
            "shuffle_buffer": recipe.shuffle_buffer,
            "precision": args.precision,
            "compile": args.compile,
            "warmup": args.warmup,
            "steps": args.steps,
            "torch_threads": torch.get_num_threads(),
        }
        stream, loader, plan = build_loader(recipe, device)
        clips_per_epoch = plan.clips_per_epoch
        result["data"]["clips_per_epoch"] = clips_per_epoch
        result["data"]["mode"] = plan.mode
        result["data"]["batches_per_epoch"] = clips_per_epoch // args.batch
        if clips_per_epoch // args.batch < timed_batches:
            print(
                f"note: {clips_per_epoch // args.batch} batches per data epoch, fewer than the {timed_batches} drawn: "
                "epoch restarts (worker start-up, shuffle-buffer fill) fall inside the timed steps"
            )

        accelerator = make_accelerator(recipe, cpu=device.type == "cpu")
        pieces = Pieces(recipe, accelerator, seed=recipe.seed)
        step_fn = pieces.batched_step(compile_backbone=args.compile)
        batches = endless_batches(loader, stream)

        config = build_model_config(recipe)
        views_cfg = pieces.views.config
        flops = flops_per_clip(
            config, args.frames, views_cfg.global_size, views_cfg.local_size, views_cfg.num_local_views
        )
        peak, peak_source = device_peak(device, args.precision)
        result["flops_per_clip"] = flops["total"]

        start = time.perf_counter()
        first_batch_s = None
        for i in range(args.warmup):
            t0 = time.perf_counter()
            batch = next(batches)
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - t0
            step_fn(batch["frames"], FIRST_STEP - args.warmup + i)
            stream.mark_consumed(batch)
        synchronize(device)
        result["warmup"] = {"steps": args.warmup, "s": time.perf_counter() - start, "first_batch_s": first_batch_s}
        warm = result["warmup"]
        print(f"warm-up: {args.warmup} steps in {warm['s']:.1f} s (first batch after {first_batch_s:.2f} s)")

        free = train_steps(step_fn, stream, batches, device, args.batch, args.steps, FIRST_STEP, sync_each_step=False)
        free["tflops"] = free["clips_per_s"] * flops["total"] / 1e12
        if peak:
            free["fraction_of_peak"] = free["tflops"] / peak
        result["free_running"] = free
        print(
            f"free-running: {free['clips_per_s']:.2f} clips/s ({free['tflops']:.3f} TFLOP/s), host blocked in next() "
            f"{1000 * free['data_wait_s_per_step']:.1f} ms/step ({100 * free['data_wait_share']:.1f} % of wall time)"
        )
        if device.type == "cuda":
            first = FIRST_STEP + args.steps
            synced = train_steps(step_fn, stream, batches, device, args.batch, args.steps, first, sync_each_step=True)
            result["synchronised"] = synced
        else:
            synced = free
        result["device_waits_on_data"] = synced["data_wait_share"] > DATA_WAIT_THRESHOLD
        print(
            f"synchronised per step: step {1000 * synced['step_s_per_step']:.1f} ms, waiting for data "
            f"{1000 * synced['data_wait_s_per_step']:.1f} ms ({100 * synced['data_wait_share']:.1f} % of wall time): "
            f"{'the device waits on data' if result['device_waits_on_data'] else 'data keeps up'}"
        )
        if args.loader_batches:
            result["loader_only"] = lo = loader_only(batches, args.batch, args.loader_batches)
            print(f"loader alone ({args.num_workers} workers): {lo['clips_per_s']:.1f} clips/s")
        if peak:
            result["peak_tflops"] = peak
            result["peak_source"] = peak_source
        if device.type == "cuda":
            result["peak_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["load_average_end"] = os.getloadavg()
        print(f"load average at end: {result['load_average_end']}")
        del batches, loader
        return result
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", default=None, help="a prepared folder (default: prepare the sample video into a temp folder)"
    )
    parser.add_argument("--video", default=None, help="video to prepare instead of the sample video")
    parser.add_argument(
        "--copies", type=int, default=None, help="copies of the video to prepare (default: enough for the run)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny model and views of bench_step.py --tiny, for a CPU"
    )
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default 16, tiny 4)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default 8, tiny 4)")
    parser.add_argument(
        "--clip-step", type=int, default=5, help="source frames between a clip's frames (the sample is only 10 s long)"
    )
    parser.add_argument("--keep-every", type=int, default=1)
    parser.add_argument("--frames-per-shard", type=int, default=50)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers (default: the recipe's 8; tiny 1)"
    )
    parser.add_argument("--shuffle-buffer", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--streaming", action="store_true", help="the streaming reader instead of random access")
    parser.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the student and teacher backbones (the recipe's compile key)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--loader-batches", type=int, default=None, help="batches drawn with no step (default: --steps; 0 skips)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the main process")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--work-dir", default=None, help="where the temporary shards go")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/results/bench_end_to_end.json")
    args = parser.parse_args(argv)
    args.batch = args.batch or (4 if args.tiny else 16)
    args.frames = args.frames or (4 if args.tiny else 8)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.num_workers is None:
        args.num_workers = 1 if args.tiny else load_recipe(REFERENCE_RECIPE).num_workers
    args.loader_batches = args.steps if args.loader_batches is None else args.loader_batches
    args.warmup = max(1, args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_and_record(run, args, args.json or RESULTS_DIR / "bench_end_to_end.json")


if __name__ == "__main__":
    sys.exit(main())
