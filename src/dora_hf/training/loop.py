"""The training loop: step after step until the run's length, with logging, checkpoints, Ctrl-C
and a loss that must stay finite.

`dora_hf.pretrain.pretrain` builds what the loop runs (data, networks, loss and optimiser,
resume) and exports and pushes what it leaves; this file is the loop alone, as in DINO's
`train_one_epoch`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from .._moved import moved_attribute
from ..dataset.batches import ClipReader, endless_batches
from ..errors import DoraUserError
from ..losses.self_distillation import SelfDistillationLoss
from ..modeling import DoraConfig, DoraForPreTraining
from ..folders.checkpoint_layout import checkpoint_step
from .checkpoints import RunState, save_checkpoint
from .data_errors import DataErrorStop, data_error_line
from .interrupt import GracefulInterrupt
from .out_of_memory import is_out_of_memory, out_of_memory_error
from .recipe import PretrainRecipe
from .step import SelfDistillationStep


logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunLength:
    """How long the run is, in clips and steps."""

    global_batch: int
    """Clips per optimiser step over all processes and accumulated micro-batches."""
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, recipe: PretrainRecipe, clips_per_epoch: int, world_size: int) -> RunLength:
        """An epoch is the reference's (`clips_per_epoch`) unless the recipe fixes its steps."""
        global_batch = recipe.batch_size_per_device * world_size * recipe.gradient_accumulation_steps
        steps_per_epoch = recipe.steps_per_epoch or max(1, clips_per_epoch // global_batch)
        total_steps = recipe.max_steps or max(1, round(recipe.epochs * steps_per_epoch))
        return cls(global_batch, steps_per_epoch, total_steps)


def rank_state(step_fn: SelfDistillationStep, reader: ClipReader, data_state: dict | None = None) -> dict[str, Any]:
    """This process's part of a checkpoint: its view and head generators and its reader position
    (`data_state`, when given: the position kept at the last completed step)."""
    return {
        "view_generator": step_fn.view_generator.get_state(),
        "head_generator": step_fn.head_generator.get_state(),
        "data": reader.state_dict() if data_state is None else data_state,
    }


def restore_rank_state(state: dict[str, Any], step_fn: SelfDistillationStep, reader: ClipReader, inexact: bool = False) -> None:
    """The inverse of :func:`rank_state`.

    A reader whose setup changed (other data, clips or processes) refuses its saved position; with
    `inexact` the run instead reads the saved epoch from its start, after a line saying so.
    """
    step_fn.view_generator.set_state(state["view_generator"])
    step_fn.head_generator.set_state(state["head_generator"])
    try:
        reader.load_state_dict(state["data"])
    except DoraUserError as err:
        if not inexact:
            raise DoraUserError(f"{err}; or pass --resume_inexact true to read the saved data epoch from its start") from None
        epoch = int(state["data"].get("epoch", 0)) if isinstance(state["data"], dict) else 0
        reader.set_epoch(epoch)
        logger.warning("%s; resume_inexact: reading data epoch %d from its start instead", err, epoch)


def checkpoint_saver(
    accelerator: Accelerator,
    recipe: PretrainRecipe,
    config: DoraConfig,
    run_state: RunState,
    step_fn: SelfDistillationStep,
    reader: ClipReader,
) -> Callable[[], Path]:
    """A function that saves the run as it stands now and returns the checkpoint folder; given
    `data_state`, with that reader position instead of the reader's own."""

    def save(data_state: dict | None = None) -> Path:
        return save_checkpoint(
            accelerator,
            recipe.output_dir,
            run_state.step,
            rank_state(step_fn, reader, data_state),
            config.to_dict(),
            {**dataclasses.asdict(recipe), "mixed_precision": accelerator.mixed_precision},  # as resolved
            recipe.checkpoints_total_limit,
        )

    return save


def train_loop(
    *,
    accelerator: Accelerator,
    recipe: PretrainRecipe,
    step_fn: SelfDistillationStep,
    run_state: RunState,
    loader: torch.utils.data.DataLoader,
    reader: ClipReader,
    length: RunLength,
    save: Callable[..., Path],
    result: PretrainResult,
    resumed_from: Path | None,
) -> PretrainResult:
    """Train from `run_state.step` to `length.total_steps`, or until Ctrl-C (then checkpoint and stop).

    Losses are summed on the device and read only at logging steps (no host sync per step); a
    non-finite loss, or running out of memory (`out_of_memory.py`), stops the run without saving,
    naming the last good checkpoint. A batch that cannot be read saves the last completed step
    first (`data_errors.py`); with several processes they agree on that before every step, since
    a process stopping alone would leave the others waiting in the step's collectives (one small
    reduction per step).
    """
    world = accelerator.num_processes
    accumulation = recipe.gradient_accumulation_steps
    total_steps = length.total_steps
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
            data_state = reader.state_dict()  # the position of the last completed step
            try:
                micro_batches, data_error = [next(batches) for _ in range(accumulation)], None
            except Exception as err:  # noqa: BLE001 - whatever reading the data raised: saved, then one line
                micro_batches, data_error = [], err
            if data_error is not None or world > 1:
                stop_for_data_error(accelerator, data_error, data_state, save, result, run_state.step, resumed_from, check_finite)
            try:
                output = step_fn([b["frames"] for b in micro_batches], run_state.step)
            except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
                if not is_out_of_memory(err):
                    raise
                raise out_of_memory_error(
                    err, recipe, accelerator.device, accelerator.mixed_precision, run_state.step,
                    result.last_checkpoint or resumed_from,
                ) from err
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
                clips_per_s = window_steps * length.global_batch / max(elapsed, 1e-9)
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
                result.last_checkpoint = save()
        bar.close()
        check_finite()
        result.steps = run_state.step
        if run_state.step < total_steps:
            result.last_checkpoint = save()
            result.interrupted = True
            accelerator.print(f"interrupted: saved {result.last_checkpoint}; resume with --resume_from_checkpoint latest")
            return result
    result.last_checkpoint = save()
    return result


def stop_for_data_error(
    accelerator: Accelerator,
    error: BaseException | None,
    data_state: dict,
    save: Callable[..., Path],
    result: PretrainResult,
    step: int,
    resumed_from: Path | None,
    check_finite: Callable[[], None],
) -> None:
    """Return if no process failed to read its batch; else save the last completed step (if there
    is one since the start or the resume) on every process and raise :class:`DataErrorStop`."""
    if accelerator.num_processes > 1:
        flag = torch.tensor([float(error is not None)], device=accelerator.device)
        if not accelerator.reduce(flag, reduction="sum").item():
            return
        lines = gather_object([None if error is None else f"process {accelerator.process_index}: {data_error_line(error)}"])
        line = next(text for text in lines if text is not None)
    else:
        line = data_error_line(error)
    check_finite()
    first = f"cannot read the data for step {step + 1}: {line}"
    kept = result.last_checkpoint or resumed_from
    if step == (checkpoint_step(kept) if kept is not None else 0):
        after = "; fix the data, then resume with --resume_from_checkpoint latest" if kept is not None else ""
        raise DataErrorStop(f"{first}; no step was trained since {kept or 'the start'}, so nothing was saved{after}") from error
    result.last_checkpoint = save(data_state)
    result.steps = step
    raise DataErrorStop(
        f"{first}; saved {result.last_checkpoint} (step {step}, the last completed one): fix or re-prepare the data, "
        "then resume it exactly with --resume_from_checkpoint latest"
    ) from error


def __getattr__(name: str) -> Any:
    # Names of the flat layout's loop.py that live elsewhere now; `pretrain` moved above training.
    return moved_attribute(__name__, name)
