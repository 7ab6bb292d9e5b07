"""A tiny DoRA configuration shared by the model tests: seconds on a CPU, same code paths."""

from dora_hf import DoraConfig


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
