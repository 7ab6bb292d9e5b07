"""What DoRA's tracking head reads (queries, keys, [CLS] attention, patch features), from any ViT.

The tracking head has no weights: it only needs the last block's patch queries and keys, its
[CLS]-to-patch attention and the final patch tokens. DoRA computes them itself; for another
ViT-style encoder (transformers' ViT, e.g. DINO's checkpoints) they are read with a hook on the
last block's input, so DoRA's discovery and tracking can be drawn for any such model.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from transformers import PretrainedConfig

from ..errors import DoraUserError
from ..modeling import DoraConfig, DoraModel, DoraTrackerFeatures, DoraTrackingHead


@torch.inference_mode()
def read_tracker_features(
    model: nn.Module, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
) -> DoraTrackerFeatures:
    """Tracker features of `(N, 3, H, W)` images: DoRA's own, or read from a ViT's last block."""
    if isinstance(model, DoraModel):
        return model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, output_tracker_features=True, return_dict=True
        ).tracker_features
    return last_block_features(model, pixel_values, interpolate_pos_encoding)


@torch.inference_mode()
def last_block_features(
    model: nn.Module, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
) -> DoraTrackerFeatures:
    """Queries, keys and [CLS] attention of the last block, recomputed from its input.

    Works for pre-norm ViT blocks with ``layernorm_before`` and either a fused ``qkv`` (DoRA)
    or ``q_proj``/``k_proj`` (transformers' ViT) projections. The [CLS] attention row is the
    softmax over all tokens (registers included), restricted to the patch tokens.
    """
    block = _last_block(model)
    captured: list[torch.Tensor] = []
    hook = block.register_forward_pre_hook(
        lambda _module, args, kwargs: captured.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
    )
    try:
        output = model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
    finally:
        hook.remove()
    patch_size = int(model.config.patch_size)
    num_patches = (pixel_values.shape[-2] // patch_size) * (pixel_values.shape[-1] // patch_size)
    query, key = _query_key(block, block.layernorm_before(captured[0]), int(model.config.num_attention_heads))
    scale = query.shape[-1] ** -0.5
    cls_attention = ((query[:, :, :1].float() @ key.float().transpose(-2, -1)) * scale).softmax(dim=-1)
    return DoraTrackerFeatures(
        queries=query[:, :, -num_patches:],
        keys=key[:, :, -num_patches:],
        cls_attention=cls_attention[:, :, 0, -num_patches:],
        patch_features=output.last_hidden_state[:, -num_patches:],
    )


def tracking_head_for(config: PretrainedConfig, num_objects: int) -> DoraTrackingHead:
    """DoRA's tracking head for a model's head count and patch size, discovering ``num_objects``.

    A DoRA model keeps its own Sinkhorn and masking settings; another model gets DoRA's defaults.
    """
    heads = int(config.num_attention_heads)
    if not 1 <= num_objects <= heads:
        raise DoraUserError(f"--objects {num_objects}: must be between 1 and the model's {heads} attention heads")
    recipe = config if getattr(config, "model_type", None) == "dora" else DoraConfig()
    return DoraTrackingHead(
        SimpleNamespace(
            num_objects=num_objects,
            num_attention_heads=heads,
            patch_size=int(config.patch_size),
            sinkhorn_iterations=recipe.sinkhorn_iterations,
            sinkhorn_epsilon=recipe.sinkhorn_epsilon,
            mask_mode=recipe.mask_mode,
            mask_threshold_scope=recipe.mask_threshold_scope,
        )
    )


def _last_block(model: nn.Module) -> nn.Module:
    encoder = getattr(model, "encoder", None)
    blocks = getattr(encoder, "layer", None) if encoder is not None else getattr(model, "layers", None)
    if not isinstance(blocks, nn.ModuleList) or not hasattr(blocks[-1], "layernorm_before"):
        raise DoraUserError(
            f"{type(model).__name__}: cannot find pre-norm transformer blocks; tracking needs DoRA or a ViT-style model"
        )
    return blocks[-1]


def _query_key(block: nn.Module, normed: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(N, h, S, dh)` queries and keys of a block's attention for its normalised input."""
    attention = block.attention
    if hasattr(attention, "query_key_value"):
        query, key, _ = attention.query_key_value(normed)
        return query, key
    if hasattr(attention, "q_proj") and hasattr(attention, "k_proj"):
        batch, length, _ = normed.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, num_heads, -1).transpose(1, 2)

        return heads(attention.q_proj(normed)), heads(attention.k_proj(normed))
    raise DoraUserError(f"{type(attention).__name__}: unknown attention layout (expected qkv or q_proj/k_proj)")
