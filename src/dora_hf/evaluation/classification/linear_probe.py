"""A linear classifier trained on frozen features (linear probing).

DINO trains one linear layer on the frozen [CLS] features (of the last block, or the last 4
blocks concatenated for ViT-S) with SGD, momentum 0.9, no weight decay and a cosine schedule.
Here the features are extracted once, without augmentation, and cached, so training takes
seconds; they are standardised with the training set's statistics first (MAE's parameter-free
BatchNorm before the linear layer), which makes one learning rate work for any backbone scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..protocols import LinearProbeSettings


@dataclass
class LinearProbe:
    """Standardisation statistics and the trained layer: ``logits = linear((x - mean) / std)``."""

    mean: torch.Tensor
    std: torch.Tensor
    linear: nn.Linear

    @torch.inference_mode()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        device = self.linear.weight.device
        return self.linear((features.float().to(device) - self.mean) / self.std).cpu()


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: LinearProbeSettings = LinearProbeSettings(),
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Fit a linear layer with cross-entropy; examples labelled -1 (unknown class) are skipped."""
    keep = labels >= 0
    features, labels = features[keep].float().to(device), labels[keep].to(device)
    if features.shape[0] == 0:
        raise ValueError("linear probing needs at least one labelled training example")
    mean = features.mean(dim=0)
    std = features.std(dim=0, unbiased=False).clamp_min(1e-6)
    inputs = (features - mean) / std

    generator = torch.Generator().manual_seed(settings.seed)
    linear = nn.Linear(inputs.shape[1], num_classes).to(device)
    with torch.no_grad():  # DINO's initialisation
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    optimizer = torch.optim.SGD(
        linear.parameters(), lr=settings.learning_rate, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    steps_per_epoch = math.ceil(inputs.shape[0] / settings.batch_size)
    total_steps = max(settings.epochs * steps_per_epoch, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(settings.epochs):
        order = torch.randperm(inputs.shape[0], generator=generator).to(device)
        for start in range(0, inputs.shape[0], settings.batch_size):
            batch = order[start : start + settings.batch_size]
            loss = loss_fn(linear(inputs[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    linear.eval().requires_grad_(False)
    return LinearProbe(mean=mean, std=std, linear=linear)
