"""DINO's gradient handling: per-parameter norm clipping and the frozen last layer in early epochs."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def clip_gradients_per_parameter_(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor | None:
    """Scale each parameter's gradient to norm at most `max_norm`, separately (DINO style).

    DINO multiplies a gradient by `max_norm / (norm + 1e-6)` when that factor is below 1. Here the
    norms and factors of all gradients are computed at once on the device, with no host sync.
    Returns the pre-clipping norms (a 1-D tensor) for logging, or None without gradients.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    norms = torch.stack(torch._foreach_norm(grads))
    factors = (max_norm / (norms.float() + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(factors.to(grads[0].dtype).unbind(0)))
    return norms


def cancel_last_layer_gradients_(model: nn.Module, epoch: float, freeze_last_layer_epochs: float) -> None:
    """Drop the gradients of the projection head's last layer while `epoch < freeze_last_layer_epochs`.

    The optimiser then skips those parameters entirely (no update, no weight decay), as in DINO.
    """
    if epoch >= freeze_last_layer_epochs:
        return
    for name, param in model.named_parameters():
        if "last_layer" in name:
            param.grad = None
