"""Exponential moving average of the student into the teacher, in one fused call per step."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """`teacher <- momentum * teacher + (1 - momentum) * student` for every parameter.

    One `torch._foreach_lerp_` over all parameters (`t + (1 - m) * (s - t)`), so a GPU runs a
    single fused pass per step instead of a Python loop of per-tensor launches. Parameters are paired by name, so a wrapper such as DDP around
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
    torch._foreach_lerp_(targets, sources, 1.0 - momentum)
