"""The training step as `dora_hf.pretrain.pretrain` builds it, for the step and end-to-end benchmarks:
recipes (the reference's and a tiny one for the CPU), the built pieces, an analytic FLOP count and
the peak rates of known devices.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import torch

from dora_hf.losses.dora_loss import DoraLoss
from dora_hf.modeling import DoraConfig, DoraForPreTraining
from dora_hf.training.builders import build_loss, build_model_config, build_schedules, build_student_and_teacher, build_views, compile_backbones_
from dora_hf.training.optimizer import build_optimizer
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
