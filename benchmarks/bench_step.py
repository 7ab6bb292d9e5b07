"""Training-step benchmark: the project's batched DoRA step against a loop formulation of it.

Both formulations run in one process, on one device, from the same initial weights, on the
same synthetic uint8 frames (already on the device) and the same views:

* **batched**: :class:`dora_hf.training.step.DoraTrainingStep`, wired as
  :func:`dora_hf.training.loop.pretrain` wires it from a recipe (accelerate, ``MultiViewStudent``,
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
import copy
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dora_hf.data.views import DoraViews
from dora_hf.loss import DoraLoss, teacher_temperature_at
from dora_hf.modeling import DoraConfig, DoraForPreTraining
from dora_hf.training.gradients import cancel_last_layer_gradients_
from dora_hf.training.loop import (
    build_loss,
    build_model_config,
    build_schedules,
    build_student_and_teacher,
    build_views,
    compile_backbones_,
    make_accelerator,
)
from dora_hf.training.optimizer import build_optimizer, parameter_groups
from dora_hf.training.recipe import PretrainRecipe, load_recipe
from dora_hf.training.step import DoraTrainingStep, MultiViewStudent

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_RECIPE = REPO_ROOT / "training_scripts" / "configs" / "vits16_wt_venice.yaml"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

TINY_MODEL = dict(
    hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384, patch_size=16,
    image_size=112, head_out_dim=2048, head_hidden_dim=512, head_bottleneck_dim=128, num_objects=3,
)
TINY_VIEWS = dict(clip_size=150, global_size=112, local_size=64, num_local_views=6)
TINY_FRAME_SIZE = (192, 341)
REFERENCE_FRAME_SIZE = (384, 683)
"""A Walking Tours frame as ``prepare-data`` stores it: 4K 16:9 shrunk to a 384-pixel short side."""

STEPS_PER_EPOCH = 1000
FIRST_STEP = 2 * STEPS_PER_EPOCH
"""Timed steps start in epoch 2: past the frozen-last-layer epoch, as for nearly all of a run."""

PEAK_TFLOPS = [
    # (substring of torch.cuda.get_device_name(), bf16/fp16 dense tensor, TF32 dense tensor, FP32 non-tensor),
    # NVIDIA datasheet figures without sparsity; the first matching substring wins.
    ("H200 NVL", 835.0, 418.0, 60.0),
    ("H200", 989.0, 494.0, 67.0),
    ("H100 NVL", 835.0, 418.0, 60.0),
    ("H100 PCIe", 756.0, 378.0, 51.0),
    ("H100", 989.0, 494.0, 67.0),
    ("A100", 312.0, 156.0, 19.5),
    ("L40S", 362.0, 183.0, 91.6),
]
ISSUE_H200_PEAK = 790.0
"""The bf16 peak the speed issue quotes for an H200; NVIDIA's H200 SXM datasheet says 989 dense."""


# ---- FLOP count ------------------------------------------------------------------------------


def vit_forward_flops(image: int, config: DoraConfig) -> float:
    """FLOPs (2 per multiply-add) of one ViT forward on one ``image x image`` input.

    Patch embedding ``2 * P * (C * p * p) * d``; per block, with ``N = P + 1`` tokens:
    qkv ``6 N d^2``, attention scores and weighted sum ``4 N^2 d``, output projection
    ``2 N d^2``, MLP ``4 N d m`` (``m`` the MLP width). LayerNorm, GELU, softmax and residual
    adds are left out (a fraction of a percent).
    """
    d, m = config.hidden_size, config.intermediate_size
    patches = (image // config.patch_size) ** 2
    tokens = patches + 1
    embed = 2 * patches * config.num_channels * config.patch_size**2 * d
    block = 6 * tokens * d * d + 4 * tokens * tokens * d + 2 * tokens * d * d + 4 * tokens * d * m
    return float(embed + config.num_hidden_layers * block)


def head_forward_flops(config: DoraConfig) -> float:
    """FLOPs of the DINO projection head on one feature: the MLP and the ``head_out_dim``-way layer."""
    dims = [config.hidden_size] + [config.head_hidden_dim] * (config.head_num_layers - 1) + [config.head_bottleneck_dim]
    mlp = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return float(mlp + 2 * config.head_bottleneck_dim * config.head_out_dim)


def flops_per_clip(
    config: DoraConfig, frames: int, global_size: int, local_size: int, local_views: int
) -> dict[str, float]:
    """Model FLOPs of one training step per clip.

    Teacher: forward only, on the ``T`` global views (backbone and head). Student: forward on the
    ``k*T`` masked views at the global size and the ``L*T`` local views at the local size,
    times 3 for forward + backward. The tracking head, the loss and the optimiser are left out
    (well under 1%), as is the tracker block's q/k recomputation (``6 N d^2`` per frame).
    """
    k = config.num_objects
    per_global = vit_forward_flops(global_size, config) + head_forward_flops(config)
    per_local = vit_forward_flops(local_size, config) + head_forward_flops(config)
    teacher = frames * per_global
    student_forward = k * frames * per_global + local_views * frames * per_local
    return {
        "vit_forward_global": vit_forward_flops(global_size, config),
        "vit_forward_local": vit_forward_flops(local_size, config),
        "head_forward": head_forward_flops(config),
        "teacher_forward": teacher,
        "student_forward": student_forward,
        "student_forward_backward": 3 * student_forward,
        "total": teacher + 3 * student_forward,
    }


def reference_flops_per_clip() -> dict[str, float]:
    """The reference recipe: ViT-S/16, 65536-way head, T=8, 224 global, 6 locals of 112, k=3."""
    return flops_per_clip(DoraConfig(), frames=8, global_size=224, local_size=112, local_views=6)


def device_peak(device: torch.device, precision: str) -> tuple[float | None, str]:
    """Dense peak TFLOP/s of the device for ``precision`` and where the figure comes from."""
    if device.type != "cuda":
        return None, "no peak figure for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, half, tf32, fp32 in PEAK_TFLOPS:
        if key in name:
            if precision in ("bf16", "fp16"):
                return half, f"{key} bf16/fp16 dense tensor peak (NVIDIA datasheet, no sparsity)"
            if torch.backends.cuda.matmul.allow_tf32:
                return tf32, f"{key} TF32 dense tensor peak"
            return fp32, f"{key} FP32 (non-tensor) peak"
    return None, f"device {name!r} not in the peak table"


# ---- building the step as loop.py does --------------------------------------------------------


def make_recipe(args: argparse.Namespace) -> PretrainRecipe:
    """The reference recipe (``vits16_wt_venice.yaml``), or its tiny variant, with the bench's overrides."""
    overrides: dict[str, Any] = {
        "dataset": "synthetic-frames",
        "batch_size_per_device": args.batch,
        "frames_per_clip": args.frames,
        "mixed_precision": {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[args.precision],
        "output_dir": str(RESULTS_DIR / "bench_step_unused"),
        "steps_per_epoch": STEPS_PER_EPOCH,
        "epochs": 100,
    }
    model = dict(TINY_MODEL) if args.tiny else {}
    views = dict(TINY_VIEWS) if args.tiny else {}
    if args.drop_path is not None:
        model["drop_path_rate"] = args.drop_path
    if model:
        overrides["model"] = {**load_recipe(REFERENCE_RECIPE).model, **model}
    if views:
        overrides["views"] = views
    return load_recipe(REFERENCE_RECIPE, overrides)


class Pieces:
    """Everything a step needs, built like ``pretrain`` builds it (no data loader, no checkpoints)."""

    def __init__(self, recipe: PretrainRecipe, accelerator, seed: int):
        torch.manual_seed(seed)
        self.recipe = recipe
        self.config = build_model_config(recipe)
        self.views = build_views(recipe)
        self.accelerator = accelerator
        self.student_model, self.teacher = build_student_and_teacher(self.config)
        self.initial_student = copy.deepcopy(self.student_model.state_dict())
        global_batch = recipe.batch_size_per_device * accelerator.num_processes
        self.schedules = build_schedules(recipe, global_batch, recipe.epochs, STEPS_PER_EPOCH)

    def new_loss(self) -> DoraLoss:
        return build_loss(self.recipe, self.config)

    def fresh_pair(self) -> tuple[DoraForPreTraining, DoraForPreTraining]:
        """A student/teacher pair with the same initial weights as the batched one.

        The pair gets its own copy of the configuration: models built from one config object share
        it, and the loop formulation may switch its attention implementation.
        """
        student, teacher = build_student_and_teacher(copy.deepcopy(self.config))
        student.load_state_dict(self.initial_student)
        teacher.load_state_dict(self.initial_student)
        return student, teacher

    def batched_step(self, compile_backbone: bool) -> DoraTrainingStep:
        """``DoraTrainingStep`` exactly as ``pretrain`` wires it."""
        recipe, accelerator = self.recipe, self.accelerator
        loss_fn = self.new_loss()
        student = MultiViewStudent(self.student_model)
        optimizer = build_optimizer(self.student_model, accelerator.device)
        student, optimizer = accelerator.prepare(student, optimizer)
        self.teacher.to(accelerator.device)
        loss_fn.to(accelerator.device)
        if compile_backbone:
            compile_backbones_(self.student_model, self.teacher)  # as the recipe's `compile: true` does
        return DoraTrainingStep(
            accelerator=accelerator,
            student=student,
            student_model=self.student_model,
            teacher=self.teacher,
            loss_fn=loss_fn,
            optimizer=optimizer,
            schedules=self.schedules,
            views=self.views,
            steps_per_epoch=STEPS_PER_EPOCH,
            clip_grad=recipe.clip_grad,
            freeze_last_layer=recipe.freeze_last_layer,
            seed=recipe.seed,
        )


# ---- the loop formulation ---------------------------------------------------------------------


class LoopStep:
    """The step with the reference training loop's structure (see the module docstring)."""

    def __init__(self, pieces: Pieces, device: torch.device, precision: str, attention: str, granularity: str):
        self.config = pieces.config
        self.granularity = granularity
        self.recipe = pieces.recipe
        self.schedules = pieces.schedules
        self.device = device
        self.student, self.teacher = pieces.fresh_pair()
        if attention == "eager":
            for model in (self.student, self.teacher):
                model.config._attn_implementation = "eager"
        self.student.to(device)
        self.teacher.to(device)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.student))  # torch's default implementation
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.center = torch.zeros(1, self.config.head_out_dim, device=device)
        # The batched step's head stream on rank 0 (seed * 1000 + 1), so both track the same heads.
        self.head_generator = torch.Generator().manual_seed(self.recipe.seed * 1000 + 1)
        self.view_generator = torch.Generator().manual_seed(self.recipe.seed * 1000)
        self.views = pieces.views
        self.last_param_norms: list[float] = []

    def student_logits(self, images: torch.Tensor, interpolate: bool) -> torch.Tensor:
        return self.student(pixel_values=images, interpolate_pos_encoding=interpolate).logits

    def student_masked(self, masked: torch.Tensor) -> list[torch.Tensor]:
        """Logits ``(B, T, D)`` of each object's masked views: one call per object (``B*T`` images),
        or, with ``granularity="frame"``, one per object and frame (``B`` images), as the
        reference's multi-crop wrapper loops over a clip's frames inside each call."""
        objects, batch, frames = masked.shape[:3]
        if self.granularity == "object":
            return [
                self.student_logits(masked[j].flatten(0, 1), False).unflatten(0, (batch, frames))
                for j in range(objects)
            ]
        return [
            torch.stack([self.student_logits(masked[j][:, t], False) for t in range(frames)], dim=1)
            for j in range(objects)
        ]

    def student_local(self, local_views: torch.Tensor) -> list[torch.Tensor]:
        """Logits ``(B, T, D)`` of each local crop: one call per crop (``B*T`` images), or, with
        ``granularity="frame"``, one call per frame over all crops of that frame (``L*B`` images)."""
        batch, crops, frames = local_views.shape[:3]
        if self.granularity == "object":
            return [
                self.student_logits(local_views[:, c].flatten(0, 1), True).unflatten(0, (batch, frames))
                for c in range(crops)
            ]
        per_frame = [
            self.student_logits(local_views[:, :, t].transpose(0, 1).flatten(0, 1), True) for t in range(frames)
        ]
        return [torch.stack([logits[c * batch : (c + 1) * batch] for logits in per_frame], dim=1) for c in range(crops)]

    @torch.no_grad()
    def sinkhorn(self, scores: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        q = scores.float() / cfg.sinkhorn_epsilon
        q = q - q.max(-1).values.max(-1).values[:, None, None]
        q = torch.exp(q).transpose(-2, -1)  # (B, k, P)
        infinite = torch.nonzero(torch.isinf(q))  # the reference's inf scan: a host sync
        if len(infinite):
            q = torch.nan_to_num(q, posinf=0.0)
        q = q / q.sum(-1).sum(-1)[:, None, None]
        objects, patches = q.shape[1], q.shape[2]
        for _ in range(cfg.sinkhorn_iterations):
            q = q / q.sum(dim=2, keepdim=True)
            q = q / objects
            q = q / q.sum(dim=1, keepdim=True)
            q = q / patches
        q = q * patches
        return q.transpose(-2, -1)  # (B, P, k)

    @torch.no_grad()
    def track(self, global_views, queries, keys, cls_attention, patch_features) -> torch.Tensor:
        """Masked views ``(k, B, T, C, H, W)``: discovery on frame 0, then frames x objects loops."""
        cfg = self.config
        batch, frames, channels, height, width = global_views.shape
        grid_h, grid_w = height // cfg.patch_size, width // cfg.patch_size
        heads = torch.randperm(cfg.num_attention_heads, generator=self.head_generator)[: cfg.num_objects]
        first_query = queries[0].transpose(1, 2).flatten(2).float()  # (B, P, d)
        attention = cls_attention[0][:, heads.to(self.device)].float()  # (B, k, P)
        prototypes = torch.einsum("bkn,bnd->bkd", attention, first_query)
        normalized = patch_features[0].float()
        normalized = normalized / normalized.norm(dim=-1, keepdim=True)
        plan = self.sinkhorn(normalized @ prototypes.transpose(-2, -1))
        refined = plan.transpose(-2, -1) @ normalized  # (B, k, d)
        masked = torch.zeros(cfg.num_objects, batch, frames, channels, height, width, device=self.device)
        scale = refined.shape[2] ** -0.5
        for t in range(frames):
            key_frame = keys[t].transpose(1, 2).flatten(2).float()  # (B, P, d)
            tube = [(refined[:, j].unsqueeze(1) @ key_frame.transpose(-2, -1)) * scale for j in range(cfg.num_objects)]
            tube = [logits.softmax(dim=-1) for logits in tube]
            for j in range(cfg.num_objects):
                attn = tube[j].squeeze(1)
                attn = attn / attn.norm(dim=-1, keepdim=True)
                if cfg.mask_threshold_scope == "batch":
                    threshold = torch.mean(attn)
                else:
                    threshold = attn.mean(dim=-1, keepdim=True)
                mask = (attn > threshold).float().reshape(batch, grid_h, grid_w)
                mask = F.interpolate(mask.unsqueeze(1), scale_factor=cfg.patch_size, mode="nearest")
                if cfg.mask_mode == "remove":
                    mask = 1.0 - mask
                masked[j, :, t] = global_views[:, t] * torch.cat((mask, mask, mask), dim=1)
        return masked

    def loss(self, teacher_logits, masked_logits, local_logits, epoch: float) -> torch.Tensor:
        """Nested Python loops over objects, frames and local crops, as the reference's loss."""
        r = self.recipe
        tau = teacher_temperature_at(epoch, r.warmup_teacher_temp, r.teacher_temp, r.warmup_teacher_temp_epochs)
        student_temp = r.student_temp
        compat = r.reference_compat_loss
        objects, frames = len(masked_logits), teacher_logits.shape[0]
        total = 0.0
        frame_loss = 0.0
        for j in range(objects):
            per_object = 0.0
            for t in range(frames):
                target = F.softmax((teacher_logits[t].float() - self.center) / tau, dim=-1)
                student = masked_logits[j][:, t].float() / student_temp
                mask_term = torch.sum(-target * F.log_softmax(student, dim=-1), dim=-1).mean()
                local_term, terms = 0.0, 0
                for c in range(len(local_logits)):
                    if compat and c == 0:
                        continue  # the reference skips local crop 0
                    student = local_logits[c][:, t].float() / student_temp
                    local_term = local_term + torch.sum(-target * F.log_softmax(student, dim=-1), dim=-1).mean()
                    terms += 1
                term = (mask_term + local_term / terms) * 0.5
                if compat:
                    frame_loss = frame_loss + term
                else:
                    per_object = per_object + term
            if compat:
                frame_loss = frame_loss / frames  # never reset between objects, as in the reference
                total = total + frame_loss
            else:
                total = total + per_object / frames
        loss = total / objects
        with torch.no_grad():
            batch_center = teacher_logits.float().flatten(0, 1).mean(dim=0, keepdim=True)
            self.center = self.center * r.center_momentum + batch_center * (1 - r.center_momentum)
        return loss

    def make_views(self, frames: torch.Tensor) -> DoraViews:
        return self.views(frames, self.view_generator)

    def __call__(self, views: DoraViews, step: int) -> torch.Tensor:
        cfg, r = self.config, self.recipe
        epoch = step / STEPS_PER_EPOCH
        momentum = self.schedules.teacher_momentum(step)
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.schedules.learning_rate(step)
            if i == 0:
                group["weight_decay"] = self.schedules.weight_decay(step)
        global_views, local_views = views.global_views, views.local_views
        batch, frames = global_views.shape[:2]
        heads, head_dim, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size
        patches = (global_views.shape[-1] // cfg.patch_size) ** 2
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
        with autocast:
            with torch.no_grad():
                teacher_logits = torch.zeros(frames, batch, cfg.head_out_dim, device=self.device)
                queries = torch.zeros(frames, batch, heads, patches, head_dim, device=self.device)
                keys = torch.zeros_like(queries)
                cls_attention = torch.zeros(frames, batch, heads, patches, device=self.device)
                patch_features = torch.zeros(frames, batch, patches, d, device=self.device)
                for t in range(frames):
                    out = self.teacher(pixel_values=global_views[:, t], output_tracker_features=True)
                    teacher_logits[t] = out.logits
                    queries[t] = out.tracker_features.queries
                    keys[t] = out.tracker_features.keys
                    cls_attention[t] = out.tracker_features.cls_attention
                    patch_features[t] = out.tracker_features.patch_features
                masked = self.track(global_views, queries, keys, cls_attention, patch_features)
            masked_logits = self.student_masked(masked)
            local_logits = self.student_local(local_views)
            loss = self.loss(teacher_logits, masked_logits, local_logits, epoch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loop formulation: loss is {loss.item()}")
        self.optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if r.clip_grad:
            norms = []
            for _, param in self.student.named_parameters():
                if param.grad is not None:
                    norm = param.grad.data.norm(2)
                    norms.append(norm.item())
                    coef = r.clip_grad / (norm + 1e-6)
                    if coef < 1:
                        param.grad.data.mul_(coef)
            self.last_param_norms = norms
        cancel_last_layer_gradients_(self.student, epoch, r.freeze_last_layer)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        with torch.no_grad():
            for param_q, param_k in zip(self.student.parameters(), self.teacher.parameters()):
                param_k.data.mul_(momentum).add_((1 - momentum) * param_q.detach().data)
        return loss.detach()


# ---- timing helpers ---------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, steps: int, fn) -> float:
    """Seconds for ``steps`` calls of ``fn(i)``, synchronised only before and after."""
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        fn(i)
    synchronize(device)
    return time.perf_counter() - start


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


def rss_peak_mib() -> float:
    """High-water mark of the process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_snapshot(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"allocated_mib": torch.cuda.memory_allocated(device) / 2**20}
    return {"rss_peak_mib": rss_peak_mib()}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device, before: dict[str, float], batch: int) -> dict[str, Any]:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {
            "peak_allocated_mib": peak,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
            "allocated_before_mib": before["allocated_mib"],
            "peak_above_resident_per_clip_mib": (peak - before["allocated_mib"]) / batch,
        }
    after = rss_peak_mib()
    return {
        "rss_peak_mib": after,
        "rss_peak_increase_mib": after - before["rss_peak_mib"],
        "note": "CPU: growth of the process's RSS high-water mark during the phase "
        "(0 when an earlier phase peaked higher)",
    }


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def git_state() -> dict[str, Any]:
    """Commit of the checkout and the source files that differ from it (the code measured)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "changed_under_src": [line[3:] for line in status if line[:2] != "??"]}


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    info["git"] = git_state()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
        info["cuda"] = torch.version.cuda
    return info


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
    result.update(
        {
            "benchmark": "bench_step",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "load_average_start": os.getloadavg(),
            "machine": machine_info(device),
        }
    )
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


def run_and_record(run_fn, args: argparse.Namespace, json_path: Path) -> int:
    """``run_fn(args, result)``, then ``result`` written to ``json_path`` whatever happened.

    ``run_fn`` fills ``result`` as figures come in, so a failure part-way (CUDA out of memory:
    exit code 3; anything else: 1) still records what was measured, with the error.
    """
    json_path.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    try:
        run_fn(args, result)
        code = 0
    except torch.cuda.OutOfMemoryError as err:
        result["error"] = f"CUDA out of memory: {str(err).splitlines()[0]}"
        result["memory_total_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(result["error"], flush=True)
        code = 3
    except Exception as err:  # keep what was measured before the failure
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"
        code = 1
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
