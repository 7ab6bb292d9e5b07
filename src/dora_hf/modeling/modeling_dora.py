# Copyright 2026 The dora-hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch DoRA model: a DINO-style Vision Transformer, its projection head and its tracking head.

DoRA (arXiv:2310.08584) pretrains the backbone by self-distillation on object tracks found by the
teacher's own attention. The backbone follows the DINO ViT (pre-norm blocks, fused qkv projection,
learned position embeddings interpolated bicubically, [CLS] token); weight names map one to one
onto the DINO/DoRA reference layout, so converting a reference checkpoint is a rename.

This file imports only torch, transformers and its sibling files, so `save_pretrained` can copy
it next to the weights for `trust_remote_code=True` users.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_dora import DoraConfig
from .tracking_dora import DoraTrackerFeatures, DoraTrackingHead, DoraTrackingOutput


@dataclass
class DoraForPreTrainingOutput(ModelOutput):
    """Output of `DoraForPreTraining`.

    Args:
        logits: `(N, head_out_dim)` projection-head output of the [CLS] feature (DINO logits).
        pooler_output: `(N, d)` final-LayerNorm [CLS] token: the image feature.
        last_hidden_state: `(N, 1 + P, d)` final-LayerNorm tokens.
        hidden_states: input of every block and the last block's output, when requested.
        attentions: attention probabilities of every block, when requested.
        tracker_features: what the tracking head needs, when `output_tracker_features=True`.
    """

    logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    tracker_features: DoraTrackerFeatures | None = None


class DoraPatchEmbeddings(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution."""

    def __init__(self, config: DoraConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(N, C, H, W)` images to `(N, P, d)` tokens, or `(N * M, P, d)` with `M` masks per image.

        A mask constant on every patch commutes with the projection, `W (m x) + b = m (W x) + b`,
        so `patch_mask` scales each patch's projection before the bias: the tokens of the masked
        image, without building it and with one projection per image however many masks it has.
        """
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels, the configuration expects {self.num_channels}"
            )
        if patch_mask is None:
            return self.projection(pixel_values).flatten(2).transpose(1, 2)
        projected = F.conv2d(pixel_values, self.projection.weight, stride=self.projection.stride)
        projected = projected.flatten(2).transpose(1, 2)  # (N, P, d), no bias yet
        batch, num_patches = projected.shape[:2]
        if patch_mask.ndim == 2:
            patch_mask = patch_mask.unsqueeze(1)
        if patch_mask.ndim != 3 or patch_mask.shape[0] != batch or patch_mask.shape[2] != num_patches:
            raise ValueError(
                f"patch_mask must be ({batch}, {num_patches}) or ({batch}, num_masks, {num_patches}) for "
                f"pixel_values of shape {tuple(pixel_values.shape)}, got {tuple(patch_mask.shape)}"
            )
        mask = patch_mask.to(projected.dtype).unsqueeze(-1)  # (N, M, P, 1)
        projected = projected.unsqueeze(1)  # (N, 1, P, d): broadcast over the masks, not copied
        if self.projection.bias is None:
            tokens = projected * mask
        else:
            tokens = torch.addcmul(self.projection.bias.to(projected.dtype), projected, mask)
        return tokens.flatten(0, 1)


class DoraEmbeddings(nn.Module):
    """[CLS] token, patch embeddings and learned position embeddings."""

    def __init__(self, config: DoraConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = DoraPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.patch_size = config.patch_size
        self.image_size = config.image_size

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a `height x width` input, resampled bicubically from the learned grid.

        Uses the target grid size directly (as transformers' ViT and DINOv2 do) rather than DINO's
        `scale_factor` with a +0.1 offset; the two differ only by interpolation round-off.
        """
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        source = self.image_size // self.patch_size
        if grid_h == source and grid_w == source:
            return self.position_embeddings
        class_pos = self.position_embeddings[:, :1]
        patch_pos = self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, source, source, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.to(class_pos.dtype).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat((class_pos, patch_pos), dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        patch_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _, _, height, width = pixel_values.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(
                f"input size {height}x{width} differs from the model's {self.image_size}x{self.image_size}; "
                "pass interpolate_pos_encoding=True to resample the position embeddings"
            )
        embeddings = self.patch_embeddings(pixel_values, patch_mask)
        batch = embeddings.shape[0]  # N * M sequences when several masks per image are given
        embeddings = torch.cat((self.cls_token.expand(batch, -1, -1), embeddings), dim=1)
        embeddings = embeddings + self.interpolate_pos_encoding(height, width)
        return self.dropout(embeddings)


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch for random samples of the batch."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    keep = torch.empty(shape, dtype=hidden_states.dtype, device=hidden_states.device).bernoulli_(keep_prob)
    return hidden_states * (keep / keep_prob)  # one pass over the activations, not two


class DoraDropPath(nn.Module):
    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return drop_path(hidden_states, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class DoraAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection; SDPA unless probabilities are asked for."""

    def __init__(self, config: DoraConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def query_key_value(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(N, S, d)` normalised tokens to queries, keys and values of shape `(N, h, S, dh)`."""
        batch, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return query, key, value

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        query, key, value = self.query_key_value(hidden_states)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            weights = torch.softmax((query @ key.transpose(-2, -1)).float() * self.scaling, dim=-1).to(query.dtype)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=self.scaling)
        context = context.transpose(1, 2).flatten(2)
        output = self.output_dropout(self.o_proj(context))
        return output, (weights if output_attentions else None)


class DoraMLP(nn.Module):
    def __init__(self, config: DoraConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class DoraLayer(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, config: DoraConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = DoraAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DoraMLP(config)
        self.drop_path = DoraDropPath(drop_path_rate)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path(attention_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, weights


class DoraEncoder(nn.Module):
    def __init__(self, config: DoraConfig):
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layer = nn.ModuleList([DoraLayer(config, rate) for rate in rates])

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        capture_layer: int | None = None,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """Run the blocks; `capture_layer=i` also returns block i's input and output."""
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        captured_input = captured = None
        for index, layer in enumerate(self.layer):
            if index == capture_layer:
                captured_input = hidden_states
            hidden_states, weights = layer(hidden_states, output_attentions)
            if index == capture_layer:
                captured = (captured_input, hidden_states)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (weights,)
        return hidden_states, all_hidden, all_attentions, captured


class DoraWeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation, `weight = g * v / ||v||` per output row.

    `magnitude` `(out, 1)` and `direction` `(out, in)` are DINO's `weight_g` and `weight_v`. They
    carry other names because transformers rewrites any `weight_g`/`weight_v` key into
    `torch.nn.utils.parametrizations` names on load and save.
    """

    def __init__(self, in_features: int, out_features: int, freeze_norm: bool):
        super().__init__()
        self.magnitude = nn.Parameter(torch.ones(out_features, 1), requires_grad=not freeze_norm)
        self.direction = nn.Parameter(torch.empty(out_features, in_features))

    @property
    def weight(self) -> torch.Tensor:
        return self.magnitude * self.direction / self.direction.norm(dim=1, keepdim=True)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden_states, self.weight)


class DoraProjectionHead(nn.Module):
    """DINO projection head: MLP, L2 normalisation, weight-normalised prototypes layer."""

    def __init__(self, config: DoraConfig):
        super().__init__()
        dims = [config.hidden_size] + [config.head_hidden_dim] * (config.head_num_layers - 1)
        layers: list[nn.Module] = []
        for in_dim, out_dim in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(in_dim, out_dim), nn.GELU()]
        layers.append(nn.Linear(dims[-1], config.head_bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = DoraWeightNormLinear(config.head_bottleneck_dim, config.head_out_dim, config.norm_last_layer)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        embedding = F.normalize(self.mlp(features), dim=-1, p=2)
        return self.last_layer(embedding)


class DoraPreTrainedModel(PreTrainedModel):
    config_class = DoraConfig
    base_model_prefix = "dora"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules = ["DoraEmbeddings", "DoraLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """DINO's initialisation: truncated normal (std 0.02) linears and embeddings, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, DoraEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=std)
            init.trunc_normal_(module.cls_token, std=std)
        elif isinstance(module, DoraWeightNormLinear):
            init.ones_(module.magnitude)
            init.kaiming_uniform_(module.direction, a=5**0.5)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights, config and, through `auto_map`, the modeling code for every Auto class.

        `register_for_auto_class` only records the saved class; listing all three lets a folder
        saved from `DoraForPreTraining` load with `AutoModel` (the backbone) under
        `trust_remote_code=True` in an environment without this package.
        """
        self.config.auto_map = {
            "AutoConfig": "configuration_dora.DoraConfig",
            "AutoModel": "modeling_dora.DoraModel",
            "AutoModelForPreTraining": "modeling_dora.DoraForPreTraining",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)


class DoraModel(DoraPreTrainedModel):
    """The DoRA backbone: `pooler_output` is the final-LayerNorm [CLS] token, DoRA's image feature."""

    # Loading the backbone from a `DoraForPreTraining` folder leaves the projection head out on purpose.
    _keys_to_ignore_on_load_unexpected = [r"^projection_head\."]

    def __init__(self, config: DoraConfig):
        super().__init__(config)
        self.embeddings = DoraEmbeddings(config)
        self.encoder = DoraEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> DoraPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        patch_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images (see `DoraImageProcessor`).
        interpolate_pos_encoding (`bool`, *optional*):
            Resample the position embeddings for inputs of another size than `config.image_size`.
        patch_mask (`torch.Tensor` of shape `(batch_size, [num_masks,] num_patches)`, *optional*):
            Multiplies each patch's projection, before the bias and the position embedding, by this
            (bool or float; patches in row-major order). As patches do not overlap, this gives the
            tokens of the image masked patch by patch in pixels, which is how DoRA's student sees
            its masked views. With `num_masks` masks per image the outputs hold
            `batch_size * num_masks` sequences, image-major (sequence `i * num_masks + j` is image
            `i` under mask `j`), and each image is projected once.
        """
        output = self._encode(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            patch_mask=patch_mask,
        )
        result = BaseModelOutputWithPooling(
            last_hidden_state=output.last_hidden_state,
            pooler_output=output.pooler_output,
            hidden_states=output.hidden_states,
            attentions=output.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return result if return_dict else result.to_tuple()

    def _encode(
        self,
        pixel_values: torch.Tensor | None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_tracker_features: bool = False,
        patch_mask: torch.Tensor | None = None,
    ) -> DoraForPreTrainingOutput:
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        expected_dtype = self.embeddings.patch_embeddings.projection.weight.dtype
        if pixel_values.dtype != expected_dtype and not torch.is_autocast_enabled(pixel_values.device.type):
            pixel_values = pixel_values.to(expected_dtype)

        embeddings = self.embeddings(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding), patch_mask=patch_mask
        )
        capture = self.config.tracker_layer_index if output_tracker_features else None
        hidden_states, all_hidden, all_attentions, captured = self.encoder(
            embeddings, output_attentions, output_hidden_states, capture
        )
        sequence_output = self.layernorm(hidden_states)
        tracker_features = self._tracker_features(captured, sequence_output) if output_tracker_features else None
        return DoraForPreTrainingOutput(
            pooler_output=sequence_output[:, 0],
            last_hidden_state=sequence_output,
            hidden_states=all_hidden,
            attentions=all_attentions,
            tracker_features=tracker_features,
        )

    def _tracker_features(
        self, captured: tuple[torch.Tensor, torch.Tensor], sequence_output: torch.Tensor
    ) -> DoraTrackerFeatures:
        """Recompute the tracker block's queries, keys and [CLS] attention row from its input.

        The blocks run fused attention, which never materialises probabilities; only the [CLS]
        row of one block is needed, so it is recomputed here at the cost of one qkv projection.
        """
        block_input, block_output = captured
        attention = self.encoder.layer[self.config.tracker_layer_index].attention
        layernorm_before = self.encoder.layer[self.config.tracker_layer_index].layernorm_before
        query, key, _ = attention.query_key_value(layernorm_before(block_input))
        cls_logits = (query[:, :, :1].float() @ key.float().transpose(-2, -1)) * attention.scaling
        cls_attention = cls_logits.softmax(dim=-1)[:, :, 0, 1:]
        if self.config.tracker_layer == "last":
            patch_tokens = sequence_output[:, 1:]
        else:
            patch_tokens = self.layernorm(block_output)[:, 1:]
        return DoraTrackerFeatures(
            queries=query[:, :, 1:],
            keys=key[:, :, 1:],
            cls_attention=cls_attention,
            patch_features=patch_tokens,
        )


class DoraForPreTraining(DoraPreTrainedModel):
    """Backbone, DINO projection head and tracking head: one network of DoRA's student/teacher pair."""

    def __init__(self, config: DoraConfig):
        super().__init__(config)
        self.dora = DoraModel(config)
        self.projection_head = DoraProjectionHead(config)
        self.tracking_head = DoraTrackingHead(config)
        self.post_init()

    def get_input_embeddings(self) -> DoraPatchEmbeddings:
        return self.dora.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_tracker_features: bool = False,
        return_dict: bool | None = None,
        patch_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> DoraForPreTrainingOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images; a batch of clips is passed flattened to `(B*T, C, H, W)`.
        output_tracker_features (`bool`, *optional*, defaults to `False`):
            Also return the tracker block's queries, keys and [CLS] attention and the patch
            features (`DoraTrackerFeatures`), for `self.tracking_head`.
        patch_mask (`torch.Tensor` of shape `(batch_size, [num_masks,] num_patches)`, *optional*):
            Masks applied to the patch tokens, as in `DoraModel.forward`; the logits then hold
            `batch_size * num_masks` rows, image-major.
        """
        output = self.dora._encode(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_tracker_features=output_tracker_features,
            patch_mask=patch_mask,
        )
        output.logits = self.projection_head(output.pooler_output)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def discover_and_track(
        self,
        clip_pixel_values: torch.Tensor,
        head_indices: torch.Tensor | list[int] | None = None,
        generator: torch.Generator | None = None,
        interpolate_pos_encoding: bool | None = None,
    ) -> DoraTrackingOutput:
        """Discover `num_objects` objects in each clip's first frame and track them through the clip.

        Args:
            clip_pixel_values: `(B, T, C, H, W)` normalised frames.
            head_indices: the heads that discover the objects; drawn at random (with
                `generator`) when not given.
        """
        if clip_pixel_values.ndim != 5:
            raise ValueError(
                f"clip_pixel_values must be (batch, frames, channels, height, width), got {tuple(clip_pixel_values.shape)}"
            )
        batch, frames = clip_pixel_values.shape[:2]
        output = self.dora._encode(
            clip_pixel_values.flatten(0, 1),
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_tracker_features=True,
        )
        return self.tracking_head(output.tracker_features, clip_pixel_values, head_indices, generator)


__all__ = ["DoraPreTrainedModel", "DoraModel", "DoraForPreTraining", "DoraForPreTrainingOutput"]
