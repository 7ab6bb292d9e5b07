"""A tiny DoRA configuration shared by the model tests: seconds on a CPU, same code paths."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from dora_hf import DoraConfig, DoraForPreTraining, DoraImageProcessor


def tiny_config(**overrides) -> DoraConfig:
    values = dict(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        image_size=32,
        patch_size=8,
        head_out_dim=64,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        num_objects=3,
    )
    values.update(overrides)
    return DoraConfig(**values)


def save_tiny_dora(folder: Path) -> Path:
    """A tiny `DoraForPreTraining` (seed 0) and its 32-px image processor saved in `folder`."""
    torch.manual_seed(0)
    DoraForPreTraining(tiny_config()).save_pretrained(folder)
    DoraImageProcessor.for_image_size(32).save_pretrained(folder)
    return folder


def save_tiny_vit(folder: Path, num_hidden_layers: int) -> Path:
    """A tiny transformers `ViTModel` (seed 0, 32 px, patch 8) and its image processor saved in `folder`."""
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=num_hidden_layers, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8,
    )
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
