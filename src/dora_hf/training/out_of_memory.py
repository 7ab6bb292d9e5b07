"""Out of memory during training: one line saying what to change, and nothing half-written saved.

The allocator's own report (a CUDA `torch.OutOfMemoryError`, the CPU allocator's RuntimeError, or
Python's MemoryError) is a traceback that names no setting. Memory grows with the clips of one
micro-batch, their frames and views, and the precision; the global batch, which the schedules
depend on, is kept by trading `batch_size_per_device` for `gradient_accumulation_steps`. No
checkpoint is written: the step that failed may have left the weights half updated, and the last
checkpoint is the state to resume from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DoraUserError
from .recipe import PretrainRecipe

ALLOCATOR_WORDS = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")
"""How the CPU allocator (`DefaultCPUAllocator`), CUDA and MPS word it in a plain RuntimeError."""


class OutOfMemory(DoraUserError):
    """A training step ran out of memory; nothing was saved."""


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(words in str(err).lower() for words in ALLOCATOR_WORDS)


def out_of_memory_error(
    err: BaseException, recipe: PretrainRecipe, device: torch.device, precision: str, step: int, last_checkpoint: Path | None
) -> OutOfMemory:
    """The one line for `err`, raised at training step `step` (0-based) on `device`."""
    batch, accumulation = recipe.batch_size_per_device, recipe.gradient_accumulation_steps
    found = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    found = f"{type(err).__name__}: {found[:200]}" if found else type(err).__name__
    hints = []
    if batch > 1:
        smaller = batch // 2 if batch % 2 == 0 else 1
        more = accumulation * batch // smaller
        hints.append(
            f"lower batch_size_per_device ({batch}) and raise gradient_accumulation_steps ({accumulation}) to keep the "
            f"batch, e.g. --batch_size_per_device {smaller} --gradient_accumulation_steps {more}"
        )
    if precision == "no":
        hints.append("use --mixed_precision bf16" + (" (or fp16)" if device.type == "cuda" else ""))
    hints.append(
        f"use fewer or smaller frames and views (frames_per_clip {recipe.frames_per_clip}, views.global_size, "
        "views.local_size, views.num_local_views)"
    )
    return OutOfMemory(
        f"out of memory in training step {step + 1} on {device} ({found}); nothing was saved, the last checkpoint is "
        f"{last_checkpoint or 'none yet'}. To fit: {'; or '.join(hints)}"
    )
