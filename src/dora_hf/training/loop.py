"""The pretraining run: build everything from a recipe, train, checkpoint, resume and export.

The step itself is in `step.py`; this file is the wiring around it that a launch script calls:
`pretrain(recipe)` under `accelerate launch` (one process per device, or `--multi_gpu
--num_processes 2` with `cpu=True` on a CPU machine).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from tqdm.auto import tqdm

from ..data.clips import ClipStream, collate_clips
from ..data.dataset_info import count_clips, read_prepare_info
from ..data.random_access import open_random_access
from ..data.dino_views import DinoViews, DinoViewsConfig
from ..data.views import ClipViews
from ..dino_loss import DinoLoss
from ..errors import DoraUserError
from ..hub import check_push_target
from ..output_folder import (
    MARKER_FILE,
    check_replaceable,
    claim_folder,
    marker_kind,
    release_folder,
    write_errors_reported,
    write_marker,
)
from ..loss import DoraLoss, SelfDistillationLoss
from ..modeling import DoraConfig, DoraForPreTraining
from .interrupt import GracefulInterrupt, leave_stop_signals_to_the_main_process
from .checkpoints import (
    RECIPE_FILE,
    RunState,
    complete_checkpoints,
    load_rank_state,
    resolve_checkpoint,
    save_checkpoint,
)
from .dino_step import DinoTrainingStep
from .optimizer import build_optimizer
from .recipe import PretrainRecipe
from .schedules import DoraSchedules
from .step import DoraTrainingStep, SelfDistillationStep


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
    loss_fn: SelfDistillationLoss | None = field(default=None, repr=False)

    def loss_trend(self, fraction: float = 0.1) -> tuple[float, float] | None:
        """Mean loss over the first and the last `fraction` of the logged windows (at least one each)."""
        if not self.loss_history:
            return None
        count = max(1, math.ceil(fraction * len(self.loss_history)))
        return sum(self.loss_history[:count]) / count, sum(self.loss_history[-count:]) / count


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


def prepare_output_dir(recipe: PretrainRecipe, accelerator: Accelerator) -> Path:
    """Claim the run folder for this run and make it ready; check the export folder can be written.

    The main process claims the folder (see `dora_hf.output_folder`) and keeps the claim until the
    run has exported (or until its process ends, if it stops earlier), so a second run, or a second
    resume, into the same folder fails here. A used folder is continued only with `resume_from_checkpoint` and replaced
    only with `overwrite` and only if it is a run folder; the export folder is checked now, under
    the rule the final export follows, so a run never trains only to fail at its end. Every process
    raises the main process's error, so none is left waiting.
    """
    output_dir = Path(recipe.output_dir)
    error = None
    if accelerator.is_main_process:
        try:
            _claim_run_folder(recipe, output_dir)
        except DoraUserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        error = broadcast_object_list([error])[0]
    if error is not None:
        raise DoraUserError(error)
    accelerator.wait_for_everyone()
    return output_dir


def _claim_run_folder(recipe: PretrainRecipe, output_dir: Path) -> None:
    """The main process's part of `prepare_output_dir`; the claim is released again on any error."""
    claim = claim_folder(output_dir, "pretrain")
    try:
        check_replaceable(recipe.export_path, "model", overwrite=recipe.may_replace_export, keep=(output_dir,))
        used = output_dir.is_dir() and any(output_dir.iterdir())
        if recipe.resume_from_checkpoint:
            resolve_checkpoint(recipe.resume_from_checkpoint, output_dir, exact=not recipe.resume_inexact)  # fails before the setup
            if used and marker_kind(output_dir) != "run" and not complete_checkpoints(output_dir):
                raise DoraUserError(
                    f"output folder {output_dir} holds files but no run (no checkpoints, no {MARKER_FILE}); "
                    "refusing to train into it: choose another --output_dir"
                )
        elif used:
            hint = "pass --resume_from_checkpoint latest to continue it or --overwrite to replace it"
            check_replaceable(output_dir, "run", overwrite=recipe.overwrite, hint=hint)
            with write_errors_reported(output_dir, "output folder"):
                shutil.rmtree(output_dir)
        with write_errors_reported(output_dir, "output folder"):
            output_dir.mkdir(parents=True, exist_ok=True)
        if marker_kind(output_dir) != "run":
            write_marker(output_dir, "run", "pretrain")
    except BaseException:
        claim.release()
        raise


def check_same_method(recipe: PretrainRecipe, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint of the other method (runs from before `method` were DoRA)."""
    try:
        trained = json.loads((checkpoint / RECIPE_FILE).read_text()).get("method", "dora")
    except (OSError, ValueError, AttributeError) as err:
        raise DoraUserError(f"cannot read the recipe of checkpoint {checkpoint}: {err}") from err
    if trained != recipe.method:
        raise DoraUserError(
            f"recipe key 'method' is {recipe.method!r} but checkpoint {checkpoint} was trained with {trained!r}; "
            "resume it with the same method"
        )


class ClipReader(Protocol):
    """What the loop needs of a clip reader: epochs, progress, and state for exact resume.

    Both modes provide it: the random-access sampler (:class:`EpochClipSampler`) and the streaming
    reader (:class:`ClipStream`).
    """

    @property
    def epoch(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def mark_consumed(self, batch: dict) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def endless_batches(loader: torch.utils.data.DataLoader, reader: ClipReader) -> Iterator[dict]:
    """Batches epoch after epoch; each process moves to its next data epoch when its share ends."""
    while True:
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise DoraUserError(
                f"{reader!r} produced no full batch for this process: use a smaller batch or more data"
            )
        reader.set_epoch(reader.epoch + 1)


@dataclass(frozen=True)
class ClipPlan:
    """How many clips an epoch holds and how they are read, for the schedules and the start-up line."""

    clips_per_epoch: int
    """The reference's count: one clip per source-frame start of every video (DORA_SPEC §1)."""
    distinct_clips: int
    """Kept frames that start a clip; each is drawn about keep_every times per reference epoch."""
    mode: str
    """How the data is read, in words."""


def build_clip_loader(
    recipe: PretrainRecipe, rank: int, world_size: int, device: torch.device
) -> tuple[ClipReader, torch.utils.data.DataLoader, ClipPlan]:
    """This process's clip reader, the loader that batches it, and the epoch it reads.

    By default (``streaming: false``) the frames are read with random access from a memory-mapped
    Arrow copy (a hub dataset is downloaded first) and each epoch is a seeded permutation of all
    clip starts over the whole dataset, split exactly over processes; ``streaming: true`` reads a
    hub dataset without downloading it, row groups spread over readers through a shuffle buffer.
    """
    loader_options = dict(
        batch_size=recipe.batch_size_per_device,
        num_workers=recipe.num_workers,
        collate_fn=collate_clips,
        drop_last=True,
        pin_memory=device.type == "cuda",
        # Workers live across data epochs, so a new epoch does not restart them and re-open the data.
        persistent_workers=recipe.num_workers > 0,
        # Its own generator: creating a loader iterator must not draw from the global RNG, which
        # drop path uses and a checkpoint restores (a resumed run would otherwise drift).
        generator=torch.Generator().manual_seed(recipe.seed + rank),
        # Ctrl-C and SIGTERM reach the whole process group: workers leave them to this process.
        worker_init_fn=leave_stop_signals_to_the_main_process if recipe.num_workers > 0 else None,
    )
    if recipe.streaming:
        info = read_prepare_info(recipe.dataset, recipe.dataset_revision)
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
        plan = ClipPlan(
            clips_per_epoch=count_clips(info, recipe.frames_per_clip, recipe.clip_step),
            distinct_clips=stream.num_clips,  # counted from the shards' rows while opening
            mode=f"streaming ({len(stream.shard_names)} shard(s), shuffle buffer {recipe.shuffle_buffer} clips)",
        )
        return stream, torch.utils.data.DataLoader(stream, **loader_options), plan
    clips, sampler = open_random_access(
        recipe.dataset,
        frames_per_clip=recipe.frames_per_clip,
        clip_step=recipe.clip_step,
        revision=recipe.dataset_revision,
        cache_dir=recipe.dataset_cache_dir,
        rank=rank,
        world_size=world_size,
        seed=recipe.seed,
    )
    plan = ClipPlan(
        clips_per_epoch=clips.index.num_clips,
        distinct_clips=clips.index.num_kept_starts,
        mode=f"random access over {len(clips.index.videos)} video(s), uniform over the whole dataset",
    )
    return sampler, torch.utils.data.DataLoader(clips, sampler=sampler, **loader_options), plan


def compile_backbones_(student_model: DoraForPreTraining, teacher: DoraForPreTraining) -> None:
    """`torch.compile` both backbones in place (`nn.Module.compile`), not by wrapping them.

    Wrapping would prefix every parameter name with `_orig_mod.`, which breaks the name pairing of
    the EMA and the checkpoint keys. Each backbone traces as one graph per input resolution (the
    student's two and the teacher's one); the heads, the tracker and the loss stay eager.
    """
    student_model.dora.compile()
    teacher.dora.compile()


def make_accelerator(recipe: PretrainRecipe, cpu: bool = False) -> Accelerator:
    """The run's Accelerator. Precision is the recipe's `mixed_precision` when it sets one, else
    the accelerate config's (or `accelerate launch --mixed_precision`), else none."""
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


def tracker_config(recipe: PretrainRecipe, config: DoraConfig, views: ClipViews | DinoViews) -> dict[str, Any]:
    """The whole run as flat scalars for experiment trackers: the recipe, then the resolved model
    (`model.*`) and views (`views.*`) configurations, lists and tuples as text."""

    def scalar(value: Any) -> Any:
        return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

    flat = {k: scalar(v) for k, v in dataclasses.asdict(recipe).items() if k not in ("model", "views")}
    model = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    flat.update({f"model.{k}": scalar(v) for k, v in sorted(model.items()) if not isinstance(v, dict)})
    view_values = dataclasses.asdict(views.config)
    view_values.update(view_values.pop("views", {}))  # DINO's config holds the recipe's `views:` whole
    flat.update({f"views.{k}": scalar(v) for k, v in sorted(view_values.items())})
    return flat


def pretrain(recipe: PretrainRecipe, accelerator: Accelerator | None = None) -> PretrainResult:
    """Run (or continue) the pretraining `recipe` describes (DoRA, or DINO with `method: dino`); returns what it did."""
    recipe.validate()
    accelerator = accelerator or make_accelerator(recipe)
    check_supported(accelerator, recipe)
    if recipe.push_to_hub:
        check_push_target(recipe.hub_model_id)
    output_dir = prepare_output_dir(recipe, accelerator)
    set_seed(recipe.seed)
    rank, world = accelerator.process_index, accelerator.num_processes

    config = build_model_config(recipe)
    views = build_views(recipe)
    with accelerator.main_process_first():  # the first opening converts the shards into the cache
        reader, loader, plan = build_clip_loader(recipe, rank, world, accelerator.device)
    accumulation = recipe.gradient_accumulation_steps
    global_batch = recipe.batch_size_per_device * world * accumulation
    steps_per_epoch = recipe.steps_per_epoch or max(1, plan.clips_per_epoch // global_batch)
    total_steps = recipe.max_steps or max(1, round(recipe.epochs * steps_per_epoch))

    student_model, teacher = build_student_and_teacher(config)
    loss_fn = build_loss(recipe, config)
    schedules = build_schedules(recipe, global_batch, total_steps / steps_per_epoch, steps_per_epoch)

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

    resumed_from: Path | None = None
    if recipe.resume_from_checkpoint:
        from .checkpoints import agree_on_checkpoint, load_checkpoint

        exact = not recipe.resume_inexact
        checkpoint = agree_on_checkpoint(accelerator, recipe.resume_from_checkpoint, output_dir, exact=exact)
        check_same_method(recipe, checkpoint)
        load_checkpoint(accelerator, checkpoint)
        rank_state = load_rank_state(checkpoint, rank)
        resumed_from = checkpoint
        step_fn.view_generator.set_state(rank_state["view_generator"])
        step_fn.head_generator.set_state(rank_state["head_generator"])
        reader.load_state_dict(rank_state["data"])
        accelerator.print(f"resumed from {checkpoint} at step {run_state.step}")

    def checkpoint_now() -> Path:
        rank_state = {
            "view_generator": step_fn.view_generator.get_state(),
            "head_generator": step_fn.head_generator.get_state(),
            "data": reader.state_dict(),
        }
        return save_checkpoint(
            accelerator,
            output_dir,
            run_state.step,
            rank_state,
            config.to_dict(),
            {**dataclasses.asdict(recipe), "mixed_precision": accelerator.mixed_precision},  # as resolved
            recipe.checkpoints_total_limit,
        )

    views_in_words = f"k={config.num_objects} objects" if recipe.method == "dora" else "each frame one DINO image"
    accelerator.print(
        f"{METHOD_NAMES[recipe.method]} pretraining: {world} process(es) on {accelerator.device.type}, global batch {global_batch} clips "
        f"({recipe.batch_size_per_device} per process"
        f"{f' x {accumulation} accumulated micro-batches' if accumulation > 1 else ''}) of {recipe.frames_per_clip} frames, "
        f"{plan.clips_per_epoch} clips/epoch (one per source-frame start; {plan.distinct_clips} distinct) -> "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps, precision {accelerator.mixed_precision}, "
        f"model {config.hidden_size}x{config.num_hidden_layers} ({config.num_attention_heads} heads), "
        f"{views_in_words}; data: {plan.mode}"
    )
    if recipe.report_to != "none":
        accelerator.init_trackers("dora-hf", config=tracker_config(recipe, config, views))

    result = PretrainResult(
        steps=run_state.step, export_dir=None, last_checkpoint=None, teacher=teacher, loss_fn=loss_fn
    )
    bar = tqdm(total=total_steps, initial=run_state.step, disable=not accelerator.is_main_process, unit="step", dynamic_ncols=True)
    window_loss = torch.zeros((), device=accelerator.device)
    window_steps = 0
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    window_start = time.perf_counter()
    batches = endless_batches(loader, reader)

    def check_finite() -> None:
        if bool(nonfinite):  # host sync, only at logging and checkpoint time
            last = result.last_checkpoint or resumed_from or "none yet"
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
            micro_batches = [next(batches) for _ in range(accumulation)]
            output = step_fn([b["frames"] for b in micro_batches], run_state.step)
            for batch in micro_batches:
                reader.mark_consumed(batch)
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

    export_dir = recipe.export_path
    if accelerator.is_main_process:
        export_checkpoint(result.last_checkpoint, export_dir, overwrite=recipe.may_replace_export)
        accelerator.print(f"exported the teacher to {export_dir}")
    accelerator.wait_for_everyone()
    result.export_dir = export_dir
    if recipe.push_to_hub and accelerator.is_main_process:
        from ..hub import plan_upload, push

        url = push(plan_upload(export_dir, recipe.hub_model_id, "model"))
        accelerator.print(f"pushed {export_dir} to {recipe.hub_model_id}: {url}")
    accelerator.wait_for_everyone()
    release_folder(output_dir)  # the run, its export and its push are done: the folder is free again
    accelerator.end_training()
    trend = result.loss_trend()
    if trend is not None:
        accelerator.print(f"loss averaged over the first 10% of steps {trend[0]:.4f}, over the last 10% {trend[1]:.4f}")
    return result
