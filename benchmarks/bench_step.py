"""Training-step benchmark: the project's batched DoRA step against a loop formulation of it.

Both formulations run in one process, on one device, from the same initial weights, on the
same synthetic uint8 frames (already on the device) and the same views:

* **batched**: :class:`dora_hf.training.step.DoraTrainingStep`, wired as
  :func:`dora_hf.pretrain.pretrain` wires it from a recipe (accelerate, ``MultiViewStudent``,
  fused/foreach AdamW, ``DoraLoss``, schedules): views, one teacher forward over the ``B*T``
  frames, one tracking-head call, one student call over the ``k*B*T`` masked and ``L*B*T``
  local views, batched loss, backward, per-parameter clipping, optimiser, fused EMA.
* **loop**: the same step with the structure of the authors' reference training loop, written
  here: the teacher called frame by frame; the tracker looping over frames and, per frame, over
  objects (one attention, threshold, upsampling and masking per object and frame) after a
  Sinkhorn-Knopp with the reference's ``isinf`` scan; the student called once per object's
  masked views (``B*T`` images each) and once per local crop (``--loop-granularity object``,
  the default) or, as the reference's multi-crop wrapper does, once per object and frame and
  once per frame for the local crops (``--loop-granularity frame``); the loss as Python loops
  over objects, frames and local crops (the teacher softmax recomputed for each pair, the local
  terms recomputed for each object); DINO's per-parameter clipping with an ``.item()`` per
  parameter; ``loss.item()`` to check finiteness; ``torch.optim.AdamW`` with its default
  implementation; a Python loop over parameters for the EMA. It uses this project's model
  modules, so by default both sides run the same kernels (fused attention included) and the
  ratio measures the formulation alone; the reference's ViT computes every block's attention
  explicitly, which ``--loop-attention eager`` reproduces.

``--check`` first runs one step of each formulation from the same weights on the same views
(fp32, stochastic depth off) and compares the losses and the updated weights: the two compute
the same step.

Figures: clips/s with and without building the views in the step, the ratio, achieved TFLOP/s
from an analytic FLOP count (see :func:`flops_per_clip`), its fraction of the device's peak
when the device is known, peak memory, and a per-phase breakdown of the batched step (views,
teacher forward, tracking head, student forward, loss, backward + clipping + optimiser + EMA)
timed with CUDA events (perf_counter on CPU) in a separate instrumented run. ``--rounds N``
interleaves the measurements of both formulations N times and reports medians, which keeps the
ratio meaningful on a machine whose load changes during the run.

    .venv/bin/python benchmarks/bench_step.py --tiny --rounds 3           # CPU, a few minutes
    .venv/bin/python benchmarks/bench_step.py --batch 16 --precision bf16  # GPU, reference recipe
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from dora_hf.training.builders import build_model_config, build_views, make_accelerator
from dora_hf.training.step import DoraTrainingStep

from common import run_header, free_memory, memory_snapshot, peak_memory, reset_peak, run_and_record, synchronize, timed
from loop_step import LoopStep
from step_pieces import (
    FIRST_STEP,
    REFERENCE_FRAME_SIZE,
    RESULTS_DIR,
    TINY_FRAME_SIZE,
    TINY_MODEL,
    Pieces,
    device_peak,
    flops_per_clip,
    make_recipe,
    reference_flops_per_clip,
)


ISSUE_H200_PEAK = 790.0
"""The bf16 peak the speed issue quotes for an H200; NVIDIA's H200 SXM datasheet says 989 dense."""


class Marks:
    """Named time points inside steps: CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.points: list[tuple[str, Any]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append((name, event))
        else:
            self.points.append((name, time.perf_counter()))

    def intervals(self) -> dict[str, float]:
        """Seconds between consecutive marks, summed by ``"a->b"``; call after synchronising."""
        totals: dict[str, float] = defaultdict(float)
        for (a, ta), (b, tb) in zip(self.points[:-1], self.points[1:]):
            if a == "step_end":
                continue
            seconds = ta.elapsed_time(tb) / 1000.0 if self.cuda else tb - ta
            totals[f"{a}->{b}"] += seconds
        return dict(totals)


BREAKDOWN = {
    "step_start->teacher_start": "schedules + views",
    "teacher_start->teacher_end": "teacher forward (+ tracker features)",
    "tracking_start->tracking_end": "tracking head",
    "student_start->student_end": "student forward",
    "loss_start->loss_end": "loss",
    "loss_end->step_end": "backward + clipping + optimiser + EMA",
}


def instrumented_breakdown(
    step_fn: DoraTrainingStep, frames: torch.Tensor, device: torch.device, steps: int, first: int
) -> dict[str, Any]:
    """Per-phase time of the batched step (views included), from marks placed by module hooks."""
    marks = Marks(device)
    hooks = []
    for name, module in (
        ("teacher", step_fn.teacher),
        ("tracking", step_fn.teacher.tracking_head),
        ("student", step_fn.student),
        ("loss", step_fn.loss_fn),
    ):
        hooks.append(module.register_forward_pre_hook(lambda *_, n=name: marks.mark(f"{n}_start")))
        hooks.append(module.register_forward_hook(lambda *_, n=name: marks.mark(f"{n}_end")))
    try:
        synchronize(device)
        for i in range(steps):
            marks.mark("step_start")
            step_fn(frames, first + i)
            marks.mark("step_end")
        synchronize(device)
    finally:
        for hook in hooks:
            hook.remove()
    raw = marks.intervals()
    total = sum(raw.values())
    phases = {label: raw.get(key, 0.0) for key, label in BREAKDOWN.items()}
    phases["other (glue between phases)"] = total - sum(phases.values())
    return {
        "steps": steps,
        "step_s": total / steps,
        "phase_s_per_step": {k: v / steps for k, v in phases.items()},
        "phase_share": {k: v / total for k, v in phases.items()},
        "tracking_head_share": phases["tracking head"] / total,
        "timer": "CUDA events (GPU stream time)" if device.type == "cuda" else "perf_counter",
    }


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def op_profile(device: torch.device, steps: int, fn) -> dict[str, Any]:
    """Operator counts and the matrix products' FLOPs, time and rate over ``steps`` steps (torch profiler).

    Says how much of a step is arithmetic in matrix products and how many operators carry it: on a
    CPU, operator time is CPU time; on CUDA, kernel time.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn(0)  # one unprofiled step, so that nothing is first-touch inside the profile
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities, with_flops=True) as prof:
        for i in range(steps):
            fn(i)
        synchronize(device)
    wall = time.perf_counter() - start
    field = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total_us = sum(getattr(e, field) for e in events)
    matmul = [e for e in events if e.key in MATMUL_OPS]
    matmul_us = sum(getattr(e, field) for e in matmul)
    matmul_flops = sum(e.flops for e in matmul)
    return {
        "steps": steps,
        "ms_per_step": 1000 * wall / steps,
        "note": "ms_per_step is wall time under the profiler (slower than unprofiled steps)",
        "ops_per_step": sum(e.count for e in events) // steps,
        "matmul_gflop_per_step": matmul_flops / steps / 1e9,
        "matmul_ms_per_step": matmul_us / steps / 1000,
        "matmul_gflops": matmul_flops / matmul_us / 1e3 if matmul_us else None,
        "matmul_share": matmul_us / total_us if total_us else None,
        "time_basis": field,
    }


# ---- the benchmark ----------------------------------------------------------------------------


def rate(batch: int, steps: int, seconds: float, flops_clip: float, peak: float | None) -> dict[str, Any]:
    step_s = seconds / steps
    clips_per_s = batch / step_s
    tflops = clips_per_s * flops_clip / 1e12
    out = {"steps": steps, "step_ms": 1000 * step_s, "clips_per_s": clips_per_s, "tflops": tflops}
    if peak:
        out["fraction_of_peak"] = tflops / peak
    return out


def try_compile_warmup(pieces: Pieces, step_fn: DoraTrainingStep, frames, warmup: int) -> dict[str, Any]:
    """Warm-up steps; with ``--compile``, fall back to eager if compiling fails."""
    status: dict[str, Any] = {"requested": step_fn.student_model.dora._compiled_call_impl is not None}
    start = time.perf_counter()
    try:
        for i in range(warmup):
            step_fn(frames, FIRST_STEP - warmup + i)
        synchronize(pieces.accelerator.device)
        status["active"] = status["requested"]
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as err:  # torch.compile raises many kinds of errors (backend, dynamo, C++ toolchain)
        if not status["requested"]:
            raise
        message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        print(f"torch.compile of the backbones failed ({message}); continuing without compile", flush=True)
        step_fn.student_model.dora._compiled_call_impl = None
        step_fn.teacher.dora._compiled_call_impl = None
        torch._dynamo.reset()
        status.update(active=False, error=message)
        for i in range(warmup):
            step_fn(frames, FIRST_STEP - warmup + i)
        synchronize(pieces.accelerator.device)
    status["warmup_s"] = time.perf_counter() - start
    return status


def equivalence_check(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One step of each formulation from the same weights in fp32 without stochastic depth."""
    # A small batch is enough to compare the two and keeps fp32 activations small on a GPU.
    overrides = {"precision": "fp32", "drop_path": 0.0, "batch": min(args.batch, 4)}
    check_args = argparse.Namespace(**{**vars(args), **overrides})
    recipe = make_recipe(check_args)
    accelerator = make_accelerator(recipe, cpu=device.type == "cpu")
    pieces = Pieces(recipe, accelerator, seed=args.seed)
    step_fn = pieces.batched_step(compile_backbone=False)
    loop = LoopStep(pieces, device, "fp32", args.loop_attention, args.loop_granularity)
    frames = synthetic_frames(check_args, device)
    views = step_fn.make_views(frames)
    step_fn.make_views = lambda _frames: views
    conv_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # both sides in true fp32 (matmuls already are by default)
    try:
        batched_loss = step_fn(frames, FIRST_STEP).loss
        loop_loss = loop(views, FIRST_STEP)
    finally:
        torch.backends.cudnn.allow_tf32 = conv_tf32
    teacher_diff = max(
        (a - b).abs().max().item() for a, b in zip(pieces.teacher.parameters(), loop.teacher.parameters())
    )
    student_diff = max(
        (a - b).abs().max().item() for a, b in zip(pieces.student_model.parameters(), loop.student.parameters())
    )
    result = {
        "batched_loss": batched_loss.item(),
        "loop_loss": loop_loss.item(),
        "loss_rel_diff": abs(batched_loss.item() - loop_loss.item()) / abs(loop_loss.item()),
        "max_abs_diff_student_after_step": student_diff,
        "max_abs_diff_teacher_after_step": teacher_diff,
    }
    result["batch"] = check_args.batch
    result["ok"] = result["loss_rel_diff"] < 1e-4 and student_diff < 1e-4
    del pieces, step_fn, loop, views, frames
    free_memory(device)
    return result


def synthetic_frames(args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    height, width = args.frame_size
    generator = torch.Generator().manual_seed(args.seed + 7)
    frames = torch.randint(0, 256, (args.batch, args.frames, 3, height, width), dtype=torch.uint8, generator=generator)
    return frames.to(device)


def run(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Fill ``result`` as the figures come in (so that a failure keeps what was measured)."""
    device = torch.device(args.device)
    result.update(run_header("bench_step", device))
    recipe = make_recipe(args)
    config = build_model_config(recipe)
    views_cfg = build_views(recipe).config
    flops = flops_per_clip(config, args.frames, views_cfg.global_size, views_cfg.local_size, views_cfg.num_local_views)
    reference = reference_flops_per_clip()
    peak, peak_source = device_peak(device, args.precision)
    result["settings"] = {
        "tiny": args.tiny,
        "batch": args.batch,
        "frames": args.frames,
        "frame_size": list(args.frame_size),
        "precision": args.precision,
        "compile": args.compile,
        "steps": args.steps,
        "loop_steps": args.loop_steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "loop_attention": args.loop_attention,
        "loop_granularity": args.loop_granularity,
        "model": {k: getattr(config, k) for k in (*TINY_MODEL, "drop_path_rate")},
        "views": {k: getattr(views_cfg, k) for k in ("clip_size", "global_size", "local_size", "num_local_views")},
    }
    result["flops_per_clip"] = flops
    result["reference_recipe_flops_per_clip"] = reference
    result["peak_tflops"] = peak
    result["peak_source"] = peak_source
    print(f"machine: {result['machine']}")
    print(f"load average at start: {result['load_average_start']}")
    print(
        f"model FLOPs per clip: {flops['total'] / 1e12:.4f} TFLOP "
        f"(teacher fwd {flops['teacher_forward'] / 1e9:.1f} GFLOP, "
        f"student fwd+bwd {flops['student_forward_backward'] / 1e9:.1f} GFLOP); reference recipe: "
        f"{reference['total'] / 1e12:.4f} TFLOP per clip"
    )

    if args.check:
        result["equivalence_check"] = check = equivalence_check(args, device)
        print(
            f"equivalence (fp32, no drop path, one step, batch {check['batch']}): "
            f"loss batched {check['batched_loss']:.6f} vs loop {check['loop_loss']:.6f} "
            f"(rel diff {check['loss_rel_diff']:.2e}); max |diff| student "
            f"{check['max_abs_diff_student_after_step']:.2e}, teacher {check['max_abs_diff_teacher_after_step']:.2e}: "
            f"{'OK' if check['ok'] else 'MISMATCH'}"
        )

    accelerator = make_accelerator(recipe, cpu=device.type == "cpu")
    pieces = Pieces(recipe, accelerator, seed=args.seed)
    step_fn = pieces.batched_step(compile_backbone=args.compile)
    frames = synthetic_frames(args, device)
    fixed_views = step_fn.make_views(frames)
    result["compile"] = try_compile_warmup(pieces, step_fn, frames, args.warmup)
    loop = None
    if args.loop_steps:
        loop = LoopStep(pieces, device, args.precision, args.loop_attention, args.loop_granularity)
        for i in range(min(args.warmup, 2)):
            loop(fixed_views, FIRST_STEP - 2 + i)
    synchronize(device)

    # Measurements interleaved in rounds (batched, then loop, for each of: excluding and
    # including views), so that a change of machine load hits both formulations alike; the
    # figures are medians over rounds and the ratio is the median of per-round ratios.
    counter = iter(range(FIRST_STEP, 10**9))
    seconds: dict[str, list[float]] = defaultdict(list)
    memory: dict[str, dict[str, Any]] = {}

    def measure(name: str, steps: int, fn) -> None:
        before = memory_snapshot(device)
        reset_peak(device)
        seconds[name].append(timed(device, steps, fn))
        if name not in memory:
            memory[name] = peak_memory(device, before, args.batch)

    def batched_excl(i: int) -> None:
        step_fn(frames, next(counter))

    for r in range(args.rounds):
        seconds["views_only"].append(timed(device, args.steps, lambda i: step_fn.make_views(frames)))
        step_fn.make_views = lambda _frames: fixed_views  # the step gets views built beforehand
        measure("batched_excl_views", args.steps, batched_excl)
        del step_fn.make_views  # back to the class's make_views: views built in the step
        if loop is not None:
            measure("loop_excl_views", args.loop_steps, lambda i: loop(fixed_views, next(counter)))
        measure("batched_incl_views", args.steps, lambda i: step_fn(frames, next(counter)))
        if loop is not None:
            measure("loop_incl_views", args.loop_steps, lambda i: loop(loop.make_views(frames), next(counter)))
        line = ", ".join(
            f"{name} {args.batch * (args.loop_steps if name.startswith('loop') else args.steps) / values[-1]:.2f}"
            for name, values in seconds.items()
        )
        print(f"round {r + 1}/{args.rounds} (clips/s): {line}", flush=True)

    flops_clip = flops["total"]
    result["rounds"] = args.rounds
    result["seconds_per_round"] = dict(seconds)
    batched: dict[str, Any] = {
        "views_only": {
            "steps": args.steps,
            "ms": 1000 * statistics.median(seconds["views_only"]) / args.steps,
            "clips_per_s": args.batch * args.steps / statistics.median(seconds["views_only"]),
        }
    }
    result["batched"] = batched
    for key in ("excl_views", "incl_views"):
        batched[key] = rate(args.batch, args.steps, statistics.median(seconds[f"batched_{key}"]), flops_clip, peak)
        batched[key]["memory"] = memory[f"batched_{key}"]
    print_rates("batched", batched)
    if loop is not None:
        loop_result: dict[str, Any] = {}
        result["loop"] = loop_result
        for key in ("excl_views", "incl_views"):
            median = statistics.median(seconds[f"loop_{key}"])
            loop_result[key] = rate(args.batch, args.loop_steps, median, flops_clip, peak)
            loop_result[key]["memory"] = memory[f"loop_{key}"]
        print_rates("loop", loop_result)
        result["speedup"] = {}
        for key in ("excl_views", "incl_views"):
            per_round = [
                (args.steps / b) / (args.loop_steps / lp)
                for b, lp in zip(seconds[f"batched_{key}"], seconds[f"loop_{key}"])
            ]
            result["speedup"][key] = statistics.median(per_round)
            result["speedup"][f"{key}_per_round"] = per_round
        print(
            f"batched / loop (median of per-round ratios): {result['speedup']['excl_views']:.2f}x excluding views, "
            f"{result['speedup']['incl_views']:.2f}x including views"
        )

    if args.breakdown_steps:
        batched["breakdown"] = bd = instrumented_breakdown(step_fn, frames, device, args.breakdown_steps, next(counter))
        print(
            f"batched step breakdown ({bd['timer']}, {bd['steps']} steps incl. views, "
            f"{1000 * bd['step_s']:.1f} ms/step):"
        )
        for name, share in bd["phase_share"].items():
            print(f"  {name:40s} {1000 * bd['phase_s_per_step'][name]:9.2f} ms  {100 * share:5.1f} %")

    if args.op_profile:
        step_fn.make_views = lambda _frames: fixed_views
        profiles = {"batched": op_profile(device, args.op_profile, lambda i: step_fn(frames, next(counter)))}
        del step_fn.make_views
        if loop is not None:
            profiles["loop"] = op_profile(device, args.op_profile, lambda i: loop(fixed_views, next(counter)))
        result["op_profile"] = profiles
        print(f"operator profile ({args.op_profile} steps each, views built beforehand):")
        for name, prof in profiles.items():
            print(
                f"  {name:8s} {prof['ms_per_step']:8.1f} ms/step; matrix products {prof['matmul_gflop_per_step']:.2f} "
                f"GFLOP in {prof['matmul_ms_per_step']:.1f} ms ({prof['matmul_gflops']:.1f} GFLOP/s, "
                f"{100 * prof['matmul_share']:.0f}% of operator time); {prof['ops_per_step']} operators/step"
            )

    if peak:
        print(f"peak used for the fraction: {peak:.0f} TFLOP/s ({peak_source})")
        if device.type == "cuda" and "H200" in torch.cuda.get_device_name(device):
            result["fraction_of_issue_h200_peak_790"] = batched["excl_views"]["tflops"] / ISSUE_H200_PEAK
    if device.type == "cuda":
        mem = batched["excl_views"]["memory"]
        print(
            f"peak memory (batched step): {mem['peak_allocated_mib'] / 1024:.2f} GiB allocated, "
            f"{mem['peak_reserved_mib'] / 1024:.2f} GiB reserved, "
            f"{mem['peak_above_resident_per_clip_mib']:.0f} MiB per clip above weights/optimiser/inputs"
        )
    result["load_average_end"] = os.getloadavg()
    print(f"load average at end: {result['load_average_end']}")
    return result


def print_rates(name: str, figures: dict[str, Any]) -> None:
    for key, label in (("excl_views", "step excl. views"), ("incl_views", "step incl. views")):
        f = figures[key]
        extra = f", {100 * f['fraction_of_peak']:.1f} % of peak" if "fraction_of_peak" in f else ""
        print(
            f"{name:8s} {label:17s}: {f['clips_per_s']:9.2f} clips/s  {f['step_ms']:9.1f} ms/step  "
            f"{f['tflops']:8.3f} TFLOP/s{extra}"
        )
    if "views_only" in figures:
        v = figures["views_only"]
        print(f"{name:8s} {'views only':17s}: {v['clips_per_s']:9.2f} clips/s  {v['ms']:9.1f} ms/batch")


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model and views for a CPU (width 96, 4 blocks, 112/64 px)"
    )
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default 16, tiny 4)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip T (default 8, tiny 4)")
    parser.add_argument("--frame-size", type=parse_size, default=None, help="HxW of the synthetic uint8 frames")
    parser.add_argument(
        "--precision", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the student and teacher backbones (the recipe's compile key)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per batched measurement")
    parser.add_argument(
        "--loop-steps", type=int, default=None, help="timed steps of the loop formulation (0: skip it; default --steps)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved measurement rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument(
        "--breakdown-steps",
        type=int,
        default=None,
        help="steps of the instrumented per-phase run (0: skip; default min(steps, 5))",
    )
    parser.add_argument(
        "--op-profile",
        type=int,
        default=0,
        help="profile this many steps of each formulation with the torch profiler: operators per step, "
        "FLOPs, time and rate of the matrix products (0: skip)",
    )
    parser.add_argument(
        "--loop-attention", choices=("sdpa", "eager"), default="sdpa", help="attention kernels of the loop formulation"
    )
    parser.add_argument(
        "--loop-granularity",
        choices=("object", "frame"),
        default="object",
        help="student calls of the loop formulation: one per object / local crop (B*T images each), or one per "
        "object and frame / per frame (the reference's multi-crop wrapper)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="first check that one step of each formulation gives the same loss and weights",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the figures (default benchmarks/results/bench_step.json)",
    )
    args = parser.parse_args(argv)
    args.batch = args.batch or (4 if args.tiny else 16)
    args.frames = args.frames or (4 if args.tiny else 8)
    args.frame_size = args.frame_size or (TINY_FRAME_SIZE if args.tiny else REFERENCE_FRAME_SIZE)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.loop_steps = args.steps if args.loop_steps is None else args.loop_steps
    args.breakdown_steps = min(args.steps, 5) if args.breakdown_steps is None else args.breakdown_steps
    args.drop_path = None
    if args.precision == "fp16" and not args.device.startswith("cuda"):
        parser.error("--precision fp16 needs a CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)

    return run_and_record(run, args, args.json or RESULTS_DIR / "bench_step.json")


if __name__ == "__main__":
    sys.exit(main())
