"""`pretrain(recipe)`: a whole DoRA (or DINO) pretraining run, read top to bottom as DINO's
`main_dino.py` is: set-up, data, networks, loss and optimiser, resume, the loop, export and push.

Each section is one call into the folder that owns it (`dataset/` through `training/data_loading`,
`training/builders`, `training/checkpoints`, `training/loop`, `publish/`). It lives here, above
`training/` and `publish/`, because it uses both and neither may import the other. Run it under
`accelerate launch training_scripts/pretrain.py` (one process per device), or call it directly.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from .folders.output_folder import release_folder
from .publish.export import export_checkpoint
from .publish.push import check_push_target, plan_upload, push
from .training.builders import (
    METHOD_NAMES,
    build_loss,
    build_model_config,
    build_schedules,
    build_student_and_teacher,
    build_training_step,
    build_views,
    check_supported,
    make_accelerator,
)
from .training.checkpoints import agree_on_checkpoint, load_checkpoint, load_rank_state
from .training.data_loading import build_clip_loader, reading_datasets, stop_loader_workers
from .training.loop import (
    PretrainResult,
    RunLength,
    checkpoint_saver,
    restore_rank_state,
    train_loop,
)
from .training.recipe import PretrainRecipe
from .training.resume_recipe import check_resume_recipe
from .training.run_folder import prepare_output_dir
from .training.trackers import tracker_config

__all__ = ["PretrainResult", "make_accelerator", "pretrain"]


def pretrain(recipe: PretrainRecipe, accelerator: Accelerator | None = None) -> PretrainResult:
    """Run (or continue) the pretraining `recipe` describes (DoRA, or DINO with `method: dino`); returns what it did.

    The dataset folders are claimed for reading while it runs (`training/data_loading.reading_datasets`).
    """
    recipe.validate()
    with reading_datasets(recipe):
        return _pretrain(recipe, accelerator)


def _pretrain(recipe: PretrainRecipe, accelerator: Accelerator | None) -> PretrainResult:
    # ---- set-up: every check that can fail before any work, the run folder, the seed
    accelerator = accelerator or make_accelerator(recipe)
    check_supported(accelerator, recipe)
    if recipe.push_to_hub:
        check_push_target(recipe.hub_model_id)
    output_dir = prepare_output_dir(recipe, accelerator)
    set_seed(recipe.seed)
    rank, world = accelerator.process_index, accelerator.num_processes

    # ---- data: this process's clip reader and loader, and the run's length in steps
    with accelerator.main_process_first():  # the first opening converts the shards into the cache
        reader, loader, plan = build_clip_loader(recipe, rank, world, accelerator.device)
    length = RunLength.of(recipe, plan.clips_per_epoch, world)

    # ---- networks: student and EMA teacher, and the views the step builds on the device
    config = build_model_config(recipe)
    views = build_views(recipe)
    student_model, teacher = build_student_and_teacher(config)

    # ---- loss and optimiser, schedules, the step
    loss_fn = build_loss(recipe, config)
    schedules = build_schedules(recipe, length.global_batch, length.total_steps / length.steps_per_epoch, length.steps_per_epoch)
    step_fn, run_state = build_training_step(
        recipe, accelerator, student_model, teacher, loss_fn, schedules, views, length.steps_per_epoch
    )

    # ---- resume
    resumed_from: Path | None = None
    if recipe.resume_from_checkpoint:
        checkpoint = agree_on_checkpoint(
            accelerator, recipe.resume_from_checkpoint, output_dir, exact=not recipe.resume_inexact
        )
        check_resume_recipe(
            recipe, checkpoint, mixed_precision=accelerator.mixed_precision, processes=world,
            announce=accelerator.is_main_process,
        )
        load_checkpoint(accelerator, checkpoint)
        restore_rank_state(load_rank_state(checkpoint, rank), step_fn, reader, inexact=recipe.resume_inexact)
        resumed_from = checkpoint
        accelerator.print(f"resumed from {checkpoint} at step {run_state.step}")

    # ---- the loop
    accumulation = recipe.gradient_accumulation_steps
    views_in_words = f"k={config.num_objects} objects" if recipe.method == "dora" else "each frame one DINO image"
    accelerator.print(
        f"{METHOD_NAMES[recipe.method]} pretraining: {world} process(es) on {accelerator.device.type}, global batch "
        f"{length.global_batch} clips ({recipe.batch_size_per_device} per process"
        f"{f' x {accumulation} accumulated micro-batches' if accumulation > 1 else ''}) of {recipe.frames_per_clip} frames, "
        f"{plan.clips_per_epoch} clips/epoch (one per source-frame start; {plan.distinct_clips} distinct) -> "
        f"{length.steps_per_epoch} steps/epoch, {length.total_steps} steps, precision {accelerator.mixed_precision}, "
        f"model {config.hidden_size}x{config.num_hidden_layers} ({config.num_attention_heads} heads), "
        f"{views_in_words}; data: {plan.mode}"
    )
    if recipe.report_to != "none":
        accelerator.init_trackers("dora-hf", config=tracker_config(recipe, config, views))
    result = PretrainResult(steps=run_state.step, export_dir=None, last_checkpoint=None, teacher=teacher, loss_fn=loss_fn)
    try:
        train_loop(
            accelerator=accelerator,
            recipe=recipe,
            step_fn=step_fn,
            run_state=run_state,
            loader=loader,
            reader=reader,
            length=length,
            save=checkpoint_saver(accelerator, recipe, config, run_state, step_fn, reader),
            result=result,
            resumed_from=resumed_from,
        )
    except BaseException:
        stop_loader_workers(loader)  # else Python's exit could wait for them forever
        raise
    if result.interrupted:
        accelerator.end_training()
        return result

    # ---- export and push
    result.export_dir = export_and_push(recipe, accelerator, result.last_checkpoint)
    release_folder(output_dir)  # the run, its export and its push are done: the folder is free again
    accelerator.end_training()
    trend = result.loss_trend()
    if trend is not None:
        accelerator.print(f"loss averaged over the first 10% of steps {trend[0]:.4f}, over the last 10% {trend[1]:.4f}")
    return result


def export_and_push(recipe: PretrainRecipe, accelerator: Accelerator, checkpoint: Path | None) -> Path:
    """The final checkpoint's teacher as a transformers model folder, pushed when the recipe asks."""
    export_dir = recipe.export_path
    if accelerator.is_main_process:
        export_checkpoint(checkpoint, export_dir, overwrite=recipe.may_replace_export)
        accelerator.print(f"exported the teacher to {export_dir}")
    accelerator.wait_for_everyone()
    if recipe.push_to_hub and accelerator.is_main_process:
        url = push(plan_upload(export_dir, recipe.hub_model_id, "model"))
        accelerator.print(f"pushed {export_dir} to {recipe.hub_model_id}: {url}")
    accelerator.wait_for_everyone()
    return export_dir
