"""Exponential moving average of the student into the teacher, in one fused call per step."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """`teacher <- momentum * teacher + (1 - momentum) * student` for every parameter.

    Uses `torch._foreach_*` over all parameters at once (two kernels per step on a GPU, no Python
    loop of per-tensor launches). Parameters are paired by name, so a wrapper such as DDP around
    the student does not change the pairing.
    """
    student_params = dict(student.named_parameters())
    teacher_pairs = list(teacher.named_parameters())
    if len(student_params) != len(teacher_pairs):
        raise ValueError(f"teacher has {len(teacher_pairs)} parameters, student {len(student_params)}")
    try:
        sources = [student_params[name].detach() for name, _ in teacher_pairs]
    except KeyError as err:
        raise ValueError(f"teacher parameter {err} has no student counterpart") from err
    targets = [param.detach() for _, param in teacher_pairs]
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, sources, alpha=1.0 - momentum)
