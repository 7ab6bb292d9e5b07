"""AdamW with DINO's parameter groups: no weight decay on biases and other 1-D parameters."""

from __future__ import annotations

import torch
from torch import nn


def parameter_groups(model: nn.Module) -> list[dict]:
    """Group 0 is regularised (its weight decay follows the schedule); group 1 never is."""
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or param.ndim <= 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    """AdamW; learning rate and weight decay are set every step from the schedules.

    Fused AdamW (one kernel for all parameters) on CUDA, the foreach implementation elsewhere.
    """
    fused = device.type == "cuda"
    return torch.optim.AdamW(parameter_groups(model), lr=0.0, weight_decay=0.0, fused=fused, foreach=not fused)


def set_optimizer_hyperparameters_(optimizer: torch.optim.Optimizer, learning_rate: float, weight_decay: float) -> None:
    """Apply this step's values: the learning rate to every group, weight decay to group 0 only."""
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = learning_rate
        if index == 0:
            group["weight_decay"] = weight_decay
