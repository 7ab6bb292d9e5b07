"""Per-step schedules of the DINO/DoRA recipe: learning rate, weight decay, teacher momentum.

Closed forms of DINO's `cosine_scheduler` arrays (linear warm-up with both ends included, then
half a cosine that stops one step short of the final value), evaluated at a step index so that no
per-run array is stored and a resumed run recomputes the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineSchedule:
    """`base -> final` by half a cosine over `total_steps`, after `warmup_steps` of linear warm-up.

    Equal at every integer step to DINO's
    `cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs, start_warmup_value)`.
    """

    base: float
    final: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            if self.warmup_steps == 1:
                return self.warmup_start
            return self.warmup_start + (self.base - self.warmup_start) * step / (self.warmup_steps - 1)
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps == 0:
            return self.base
        progress = min(step - self.warmup_steps, decay_steps) / decay_steps
        return self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class DoraSchedules:
    """The three per-step schedules of one run."""

    learning_rate: CosineSchedule
    weight_decay: CosineSchedule
    teacher_momentum: CosineSchedule

    @classmethod
    def from_recipe(
        cls,
        *,
        base_learning_rate: float,
        global_batch_size: int,
        min_learning_rate: float,
        warmup_epochs: float,
        weight_decay: float,
        weight_decay_end: float,
        momentum_teacher: float,
        epochs: float,
        steps_per_epoch: int,
    ) -> "DoraSchedules":
        """Learning rate scaled linearly with the global batch (`base * batch / 256`), as DINO does."""
        total = max(1, int(round(epochs * steps_per_epoch)))
        warmup = min(total, int(round(warmup_epochs * steps_per_epoch)))
        peak = base_learning_rate * global_batch_size / 256.0
        return cls(
            learning_rate=CosineSchedule(peak, min_learning_rate, total, warmup),
            weight_decay=CosineSchedule(weight_decay, weight_decay_end, total),
            teacher_momentum=CosineSchedule(momentum_teacher, 1.0, total),
        )
