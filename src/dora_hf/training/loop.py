"""The pretraining run: build everything from a recipe, train, checkpoint, resume and export.

The step itself is in `step.py`; this file is the wiring around it that a launch script calls:
`pretrain(recipe)` under `accelerate launch` (one process per device, or `--multi_gpu
--num_processes 2` with `cpu=True` on a CPU machine).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..data.clips import ClipStream, collate_clips
from ..data.dataset_info import count_clips, read_prepare_info
from ..data.views import ClipViews, ClipViewsConfig
from ..errors import DoraUserError
from ..loss import DoraLoss
from ..modeling import DoraConfig, DoraForPreTraining
from .interrupt import GracefulInterrupt
from .checkpoints import RunState, load_rank_state, resolve_checkpoint, save_checkpoint
from .optimizer import build_optimizer
from .recipe import PretrainRecipe
from .schedules import DoraSchedules
from .step import DoraTrainingStep, MultiViewStudent


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


class TrainingDiverged(DoraUserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class PretrainResult:
    steps: int
    export_dir: Path | None
    last_checkpoint: Path | None
    loss_history: list[float] = field(default_factory=list)
    interrupted: bool = False
    teacher: DoraForPreTraining | None = field(default=None, repr=False)
    loss_fn: DoraLoss | None = field(default=None, repr=False)

    def loss_trend(self, fraction: float = 0.1) -> tuple[float, float] | None:
        """Mean loss over the first and the last `fraction` of the logged windows (at least one each)."""
        if not self.loss_history:
            return None
        count = max(1, math.ceil(fraction * len(self.loss_history)))
        return sum(self.loss_history[:count]) / count, sum(self.loss_history[-count:]) / count


def build_model_config(recipe: PretrainRecipe) -> DoraConfig:
    try:
        return DoraConfig(**recipe.model)
    except (TypeError, ValueError) as err:
        raise DoraUserError(f"recipe key 'model': {err}") from err


def build_views(recipe: PretrainRecipe) -> ClipViews:
    try:
        return ClipViews(ClipViewsConfig.from_dict(recipe.views))
    except (TypeError, ValueError) as err:
        raise DoraUserError(f"recipe key 'views': {err}") from err


def build_student_and_teacher(config: DoraConfig) -> tuple[DoraForPreTraining, DoraForPreTraining]:
    """A fresh student (training mode) and its teacher: the same weights, frozen, in eval mode."""
    student_model = DoraForPreTraining(config).train()
    teacher = DoraForPreTraining(config).eval()
    teacher.load_state_dict(student_model.state_dict())
    teacher.requires_grad_(False)
    return student_model, teacher


def build_loss(recipe: PretrainRecipe, config: DoraConfig) -> DoraLoss:
    return DoraLoss(
        output_dim=config.head_out_dim,
        warmup_teacher_temp=recipe.warmup_teacher_temp,
        teacher_temp=recipe.teacher_temp,
        warmup_teacher_temp_epochs=recipe.warmup_teacher_temp_epochs,
        student_temp=recipe.student_temp,
        center_momentum=recipe.center_momentum,
        reference_compat=recipe.reference_compat_loss,
    )


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


def prepare_output_dir(recipe: PretrainRecipe, accelerator: Accelerator) -> Path:
    """Refuse to train into a used folder unless resuming from it or told to overwrite it."""
    output_dir = Path(recipe.output_dir)
    used = output_dir.exists() and any(output_dir.iterdir())
    if used and not recipe.resume_from_checkpoint and not recipe.overwrite:
        raise DoraUserError(
            f"output folder {output_dir} already holds a run: pass --resume_from_checkpoint latest to continue it "
            "or --overwrite to replace it"
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if used and recipe.overwrite and not recipe.resume_from_checkpoint:
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_dir


def endless_batches(loader: torch.utils.data.DataLoader, stream: ClipStream) -> Iterator[dict]:
    """Batches epoch after epoch; each process moves to its next data epoch when its share ends."""
    while True:
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise DoraUserError(
                f"{stream!r} produced no full batch for this process: use a smaller batch or more data"
            )
        stream.set_epoch(stream.epoch + 1)


def build_clip_loader(
    recipe: PretrainRecipe, rank: int, world_size: int, device: torch.device
) -> tuple[ClipStream, torch.utils.data.DataLoader]:
    """This process's clip stream (its share of the shards) and the loader that batches it."""
    stream = ClipStream.from_source(
        recipe.dataset,
        frames_per_clip=recipe.frames_per_clip,
        clip_step=recipe.clip_step,
        shuffle_buffer=recipe.shuffle_buffer,
        seed=recipe.seed,
        rank=rank,
        world_size=world_size,
        revision=recipe.dataset_revision,
    )
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=recipe.batch_size_per_device,
        num_workers=recipe.num_workers,
        collate_fn=collate_clips,
        drop_last=True,
        pin_memory=device.type == "cuda",
        # Workers live across data epochs (ClipStream shares its epoch with them), so a new epoch
        # does not restart them and re-open the shards.
        persistent_workers=recipe.num_workers > 0,
        # Its own generator: creating a loader iterator must not draw from the global RNG, which
        # drop path uses and a checkpoint restores (a resumed run would otherwise drift).
        generator=torch.Generator().manual_seed(recipe.seed + rank),
    )
    return stream, loader


def compile_backbones_(student_model: DoraForPreTraining, teacher: DoraForPreTraining) -> None:
    """`torch.compile` both backbones in place (`nn.Module.compile`), not by wrapping them.

    Wrapping would prefix every parameter name with `_orig_mod.`, which breaks the name pairing of
    the EMA and the checkpoint keys. Each backbone traces as one graph per input resolution (the
    student's two and the teacher's one); the heads, the tracker and the loss stay eager.
    """
    student_model.dora.compile()
    teacher.dora.compile()


def make_accelerator(recipe: PretrainRecipe, cpu: bool = False) -> Accelerator:
    mixed_precision = recipe.mixed_precision
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise DoraUserError("mixed_precision fp16 needs a CUDA device; use bf16 or no on CPU")
    log_with = None if recipe.report_to == "none" else recipe.report_to
    package = TRACKER_PACKAGES.get(recipe.report_to)  # "all" logs to whichever trackers are installed
    if package and importlib.util.find_spec(package) is None:
        raise DoraUserError(f"--report_to {recipe.report_to} needs the {package} package: pip install {package}")
    return Accelerator(mixed_precision=mixed_precision, log_with=log_with, project_dir=recipe.output_dir, cpu=cpu)


def pretrain(recipe: PretrainRecipe, accelerator: Accelerator | None = None) -> PretrainResult:
    """Run (or continue) a DoRA pretraining described by `recipe`; returns what it did."""
    recipe.validate()
    accelerator = accelerator or make_accelerator(recipe)
    output_dir = prepare_output_dir(recipe, accelerator)
    set_seed(recipe.seed)
    rank, world = accelerator.process_index, accelerator.num_processes

    config = build_model_config(recipe)
    views = build_views(recipe)
    info = read_prepare_info(recipe.dataset, recipe.dataset_revision)
    clips = count_clips(info, recipe.frames_per_clip, recipe.clip_step)
    global_batch = recipe.batch_size_per_device * world
    steps_per_epoch = recipe.steps_per_epoch or max(1, clips // global_batch)
    total_steps = recipe.max_steps or max(1, round(recipe.epochs * steps_per_epoch))

    student_model, teacher = build_student_and_teacher(config)
    loss_fn = build_loss(recipe, config)
    schedules = build_schedules(recipe, global_batch, total_steps / steps_per_epoch, steps_per_epoch)

    stream, loader = build_clip_loader(recipe, rank, world, accelerator.device)

    student = MultiViewStudent(student_model)
    optimizer = build_optimizer(student_model, accelerator.device)
    student, optimizer = accelerator.prepare(student, optimizer)
    teacher.to(accelerator.device)
    loss_fn.to(accelerator.device)
    if recipe.compile:
        compile_backbones_(student_model, teacher)
    run_state = RunState(teacher, loss_fn)
    accelerator.register_for_checkpointing(run_state)
    step_fn = DoraTrainingStep(
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

    if recipe.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(recipe.resume_from_checkpoint, output_dir)
        accelerator.load_state(str(checkpoint))
        rank_state = load_rank_state(checkpoint, rank)
        step_fn.view_generator.set_state(rank_state["view_generator"])
        step_fn.head_generator.set_state(rank_state["head_generator"])
        stream.load_state_dict(rank_state["data"])
        accelerator.print(f"resumed from {checkpoint} at step {run_state.step}")

    def checkpoint_now() -> Path:
        rank_state = {
            "view_generator": step_fn.view_generator.get_state(),
            "head_generator": step_fn.head_generator.get_state(),
            "data": stream.state_dict(),
        }
        return save_checkpoint(
            accelerator,
            output_dir,
            run_state.step,
            rank_state,
            config.to_dict(),
            dataclasses.asdict(recipe),
            recipe.checkpoints_total_limit,
        )

    accelerator.print(
        f"DoRA pretraining: {world} process(es) on {accelerator.device.type}, global batch {global_batch} clips "
        f"({recipe.batch_size_per_device} per process) of {recipe.frames_per_clip} frames, "
        f"{clips} clips/epoch -> {steps_per_epoch} steps/epoch, {total_steps} steps, precision {recipe.mixed_precision}, "
        f"model {config.hidden_size}x{config.num_hidden_layers} ({config.num_attention_heads} heads), "
        f"k={config.num_objects} objects"
    )
    if recipe.report_to != "none":
        accelerator.init_trackers("dora-hf", config={k: v for k, v in dataclasses.asdict(recipe).items() if not isinstance(v, dict)})

    result = PretrainResult(
        steps=run_state.step, export_dir=None, last_checkpoint=None, teacher=teacher, loss_fn=loss_fn
    )
    bar = tqdm(total=total_steps, initial=run_state.step, disable=not accelerator.is_main_process, unit="step", dynamic_ncols=True)
    window_loss = torch.zeros((), device=accelerator.device)
    window_steps = 0
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    window_start = time.perf_counter()
    batches = endless_batches(loader, stream)

    def check_finite() -> None:
        if bool(nonfinite):  # host sync, only at logging and checkpoint time
            last = result.last_checkpoint or "none yet"
            raise TrainingDiverged(
                f"loss became NaN or infinite before step {run_state.step}; stopped without saving. "
                f"Last good checkpoint: {last}. Lower the learning rate or use fp32 / bf16."
            )

    def stop_requested(interrupt: GracefulInterrupt) -> bool:
        """Ctrl-C seen; with several processes, agreed on at logging steps so all stop together."""
        if world == 1:
            return interrupt.requested
        if run_state.step % recipe.logging_steps:
            return False
        flag = torch.tensor([float(interrupt.requested)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    with GracefulInterrupt(announce=accelerator.is_main_process) as interrupt:
        while run_state.step < total_steps and not stop_requested(interrupt):
            batch = next(batches)
            output = step_fn(batch["frames"], run_state.step)
            stream.mark_consumed(batch)
            nonfinite |= ~torch.isfinite(output.loss)
            window_loss += output.loss
            window_steps += 1
            run_state.step += 1
            bar.update(1)
            if run_state.step % recipe.logging_steps == 0 or run_state.step == total_steps:
                check_finite()
                mean_loss = float(window_loss) / window_steps
                elapsed = time.perf_counter() - window_start
                clips_per_s = window_steps * global_batch / max(elapsed, 1e-9)
                result.loss_history.append(mean_loss)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{output.learning_rate:.2e}", clips_s=f"{clips_per_s:.1f}")
                accelerator.log(
                    {"loss": mean_loss, "lr": output.learning_rate, "weight_decay": output.weight_decay,
                     "teacher_momentum": output.teacher_momentum, "clips_per_second": clips_per_s},
                    step=run_state.step,
                )
                window_loss.zero_()
                window_steps = 0
                window_start = time.perf_counter()
            if run_state.step % recipe.checkpointing_steps == 0 and run_state.step < total_steps:
                check_finite()
                result.last_checkpoint = checkpoint_now()
        bar.close()
        check_finite()
        if run_state.step < total_steps:
            result.last_checkpoint = checkpoint_now()
            result.interrupted = True
            result.steps = run_state.step
            accelerator.print(f"interrupted: saved {result.last_checkpoint}; resume with --resume_from_checkpoint latest")
            accelerator.end_training()
            return result
    result.last_checkpoint = checkpoint_now()
    result.steps = run_state.step

    from ..export import export_checkpoint

    export_dir = Path(recipe.export_dir) if recipe.export_dir else output_dir / "export"
    if accelerator.is_main_process:
        export_checkpoint(result.last_checkpoint, export_dir, overwrite=True)
        accelerator.print(f"exported the teacher to {export_dir}")
    accelerator.wait_for_everyone()
    result.export_dir = export_dir
    accelerator.end_training()
    trend = result.loss_trend()
    if trend is not None:
        accelerator.print(f"loss averaged over the first 10% of steps {trend[0]:.4f}, over the last 10% {trend[1]:.4f}")
    return result
