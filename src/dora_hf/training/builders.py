"""Everything a run is built from, each from the recipe: accelerator, model, views, loss,
schedules, and the training step of the recipe's method (DoRA's or DINO's)."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import DistributedType

from ..errors import DoraUserError
from ..losses.dino_loss import DinoLoss
from ..losses.dora_loss import DoraLoss
from ..losses.self_distillation import SelfDistillationLoss
from ..modeling import DoraConfig, DoraForPreTraining
from ..views.dino_views import DinoViews, DinoViewsConfig
from ..views.dora_views import ClipViews
from .checkpoints import RunState
from .dino_step import DinoTrainingStep
from .optimizer import build_optimizer
from .recipe import PretrainRecipe
from .schedules import DoraSchedules
from .step import DoraTrainingStep, SelfDistillationStep

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def make_accelerator(recipe: PretrainRecipe, cpu: bool = False) -> Accelerator:
    """The run's Accelerator. Precision is the recipe's `mixed_precision` when it sets one, else
    the accelerate config's (or `accelerate launch --mixed_precision`), else none."""
    check_not_launched_alone()
    if recipe.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise DoraUserError("mixed_precision fp16 needs a CUDA device; use bf16 or no on CPU")
    log_with = None
    if recipe.report_to != "none":
        available = {str(t) for t in get_available_trackers()}
        if recipe.report_to != "all" and recipe.report_to not in available:
            package = TRACKER_PACKAGES.get(recipe.report_to, recipe.report_to)
            raise DoraUserError(f"--report_to {recipe.report_to} needs the {package} package: pip install {package}")
        log_with = recipe.report_to
    accelerator = Accelerator(
        mixed_precision=recipe.mixed_precision,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        log_with=log_with,
        project_dir=recipe.output_dir,
        cpu=cpu,
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type != "cuda":
        raise DoraUserError("mixed precision fp16 (from the accelerate config) needs a CUDA device; use bf16 or no")
    return accelerator


WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Where accelerate reads the number of processes of a CPU run (torchrun's, then MPI's)."""


def check_not_launched_alone() -> None:
    """Refuse a process that `accelerate launch --cpu` started alone although it was asked for more.

    With `--cpu`, the launcher runs the script once per machine, with the main process's address
    (`MASTER_ADDR`) but no process count: every process trains a run of its own, and on machines
    with their own disks nothing would stop them. The multi-GPU launcher (torchrun) with the
    script's `--cpu` starts the processes as one run.
    """
    launched_by_cpu_launcher = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    asked_for_more = "MASTER_ADDR" in os.environ and not any(os.environ.get(v) for v in WORLD_SIZE_VARIABLES)
    if launched_by_cpu_launcher and asked_for_more:
        raise DoraUserError(
            "`accelerate launch --cpu` starts each machine's process alone, not as one run of several processes or "
            "machines: launch with --multi_gpu and pass --cpu to the training script instead "
            "(as training_scripts/accelerate_configs/2cpu.yaml does)"
        )


def check_supported(accelerator: Accelerator, recipe: PretrainRecipe) -> None:
    """Refuse set-ups the loop cannot run faithfully, before any work is done."""
    kind = accelerator.distributed_type
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise DoraUserError(
            f"distributed type {kind.value} is not supported: the EMA teacher, DINO's per-parameter gradient "
            "clipping and the checkpoints need every parameter whole on every process; use DDP "
            "(distributed_type: MULTI_GPU; a ViT-S/16 and its teacher fit on one GPU)"
        )
    if accelerator.gradient_accumulation_steps != recipe.gradient_accumulation_steps:
        raise DoraUserError(
            f"the accelerator accumulates {accelerator.gradient_accumulation_steps} micro-batches but the recipe's "
            f"gradient_accumulation_steps is {recipe.gradient_accumulation_steps}; set it in one place"
        )


def build_model_config(recipe: PretrainRecipe) -> DoraConfig:
    return recipe.model_config()


TRAINING_STEPS: dict[str, type[SelfDistillationStep]] = {"dora": DoraTrainingStep, "dino": DinoTrainingStep}
"""The step of each recipe `method`; each names the student module it runs (`student_class`)."""

METHOD_NAMES = {"dora": "DoRA", "dino": "DINO"}


def build_views(recipe: PretrainRecipe) -> ClipViews | DinoViews:
    """DoRA's clip views, or DINO's crops of every frame at the same sizes (`method: dino`)."""
    if recipe.method == "dino":
        return DinoViews(DinoViewsConfig(recipe.views_config()))
    return ClipViews(recipe.views_config())


def build_student_and_teacher(config: DoraConfig) -> tuple[DoraForPreTraining, DoraForPreTraining]:
    """A fresh student (training mode) and its teacher: the same weights, frozen, in eval mode."""
    student_model = DoraForPreTraining(config).train()
    teacher = DoraForPreTraining(config).eval()
    teacher.load_state_dict(student_model.state_dict())
    teacher.requires_grad_(False)
    return student_model, teacher


def build_loss(recipe: PretrainRecipe, config: DoraConfig) -> SelfDistillationLoss:
    """The method's loss; both take the recipe's temperatures and center momentum."""
    teacher_side = dict(
        output_dim=config.head_out_dim,
        warmup_teacher_temp=recipe.warmup_teacher_temp,
        teacher_temp=recipe.teacher_temp,
        warmup_teacher_temp_epochs=recipe.warmup_teacher_temp_epochs,
        student_temp=recipe.student_temp,
        center_momentum=recipe.center_momentum,
    )
    if recipe.method == "dino":
        return DinoLoss(**teacher_side)
    return DoraLoss(**teacher_side, reference_compat=recipe.reference_compat_loss)


def build_schedules(
    recipe: PretrainRecipe, global_batch_size: int, epochs: float, steps_per_epoch: int
) -> DoraSchedules:
    """Learning rate, weight decay and teacher momentum per step (`epochs` may be fractional)."""
    return DoraSchedules.from_recipe(
        base_learning_rate=recipe.base_learning_rate,
        global_batch_size=global_batch_size,
        min_learning_rate=recipe.min_learning_rate,
        warmup_epochs=recipe.warmup_epochs,
        weight_decay=recipe.weight_decay,
        weight_decay_end=recipe.weight_decay_end,
        momentum_teacher=recipe.momentum_teacher,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
    )


def compile_backbones_(student_model: DoraForPreTraining, teacher: DoraForPreTraining) -> None:
    """`torch.compile` both backbones in place (`nn.Module.compile`), not by wrapping them.

    Wrapping would prefix every parameter name with `_orig_mod.`, which breaks the name pairing of
    the EMA and the checkpoint keys. Each backbone traces as one graph per input resolution (the
    student's two and the teacher's one); the heads, the tracker and the loss stay eager.
    """
    student_model.dora.compile()
    teacher.dora.compile()


def build_training_step(
    recipe: PretrainRecipe,
    accelerator: Accelerator,
    student_model: DoraForPreTraining,
    teacher: DoraForPreTraining,
    loss_fn: SelfDistillationLoss,
    schedules: DoraSchedules,
    views: ClipViews | DinoViews,
    steps_per_epoch: int,
) -> tuple[SelfDistillationStep, RunState]:
    """The method's step with its optimiser, prepared by accelerate, and the checkpointed run state.

    The student is wrapped as the method's step expects (`student_class`) and handed to
    `accelerator.prepare` with the optimiser; the teacher and the loss's centre are moved to the
    device; with `compile`, both backbones are compiled in place.
    """
    step_class = TRAINING_STEPS[recipe.method]
    student = step_class.student_class(student_model)
    optimizer = build_optimizer(student_model, accelerator.device)
    student, optimizer = accelerator.prepare(student, optimizer)
    teacher.to(accelerator.device)
    loss_fn.to(accelerator.device)
    if recipe.compile:
        compile_backbones_(student_model, teacher)
    run_state = RunState(teacher, loss_fn)
    accelerator.register_for_checkpointing(run_state)
    step_fn = step_class(
        accelerator=accelerator,
        student=student,
        student_model=student_model,
        teacher=teacher,
        loss_fn=loss_fn,
        optimizer=optimizer,
        schedules=schedules,
        views=views,
        steps_per_epoch=steps_per_epoch,
        clip_grad=recipe.clip_grad,
        freeze_last_layer=recipe.freeze_last_layer,
        seed=recipe.seed,
    )
    return step_fn, run_state
