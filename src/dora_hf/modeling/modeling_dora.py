# Copyright 2026 The dora-hf authors. Licensed under the Apache License, Version 2.0.
"""PyTorch DoRA model: a DINO-style Vision Transformer, its projection head and its tracking head.

DoRA (arXiv:2310.08584) pretrains the backbone by self-distillation on object tracks found by the
teacher's own attention. The backbone follows the DINO ViT (pre-norm blocks, fused qkv projection,
learned position embeddings interpolated bicubically, [CLS] token); weight names map one to one
onto the DINO/DoRA reference layout, so converting a reference checkpoint is a rename. The same
weights serve downstream as `DoraBackbone` (AutoBackbone feature maps for UperNet, DPT,
Mask2Former) and `DoraForImageClassification`.

The code follows transformers' ViT: attention through `ALL_ATTENTION_FUNCTIONS`, blocks as
`GradientCheckpointingLayer`s, hidden states and attentions recorded by `capture_outputs`.

This file imports only torch, transformers and its sibling files, so `save_pretrained` can copy
it next to the weights for `trust_remote_code=True` users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_dora import DoraConfig
from .tracking_dora import DoraTrackerFeatures, DoraTrackingHead, DoraTrackingOutput, float32_region


@dataclass
class DoraModelOutput(BaseModelOutputWithPooling):
    """Output of `DoraModel`: `BaseModelOutputWithPooling` and, on request, the tracker's inputs.

    Args:
        last_hidden_state: `(N, 1 + P, d)` final-LayerNorm tokens.
        pooler_output: `(N, d)` final-LayerNorm [CLS] token: the image feature.
        hidden_states: input of every block and the last block's output, when requested.
        attentions: attention probabilities of every block, when requested.
        tracker_features: what the tracking head needs, when `output_tracker_features=True`.
    """

    tracker_features: DoraTrackerFeatures | None = None


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
        self.interpolate_pos_encoding_mode = config.interpolate_pos_encoding_mode

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a `height x width` input, resampled bicubically from the learned grid.

        The learned embeddings are returned unchanged when the patch grid is the learned one.
        `interpolate_pos_encoding_mode="reference"` resamples as DINO's `interpolate_pos_encoding`
        does (the reference checkpoints' local views were embedded that way): `scale_factor`
        `(g + 0.1) / n` per side, the offset keeping the output size from rounding down to
        `g - 1`; as the scale also sets the sampling pitch, this differs from asking for `size=g`,
        which is the `"size"` mode (transformers' ViT).
        """
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        source = self.image_size // self.patch_size
        if grid_h == source and grid_w == source:
            return self.position_embeddings
        class_pos = self.position_embeddings[:, :1]
        patch_pos = self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, source, source, dim).permute(0, 3, 1, 2).float()
        if self.interpolate_pos_encoding_mode == "reference":
            scale = ((grid_h + 0.1) / source, (grid_w + 0.1) / source)
            patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", align_corners=False)
            if tuple(patch_pos.shape[-2:]) != (grid_h, grid_w):  # DINO asserts the same
                raise RuntimeError(
                    f"position grid resampled to {tuple(patch_pos.shape[-2:])}, expected {(grid_h, grid_w)}"
                )
        else:
            patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
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


def _layer_norm_float32(norm: nn.LayerNorm, hidden_states: torch.Tensor) -> torch.Tensor:
    """`norm` applied in float32 (input and parameters), whatever the model's dtype."""
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    return F.layer_norm(hidden_states.float(), norm.normalized_shape, weight, bias, norm.eps)


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


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with its probabilities materialised (softmax in float32), for `output_attentions`."""
    logits = torch.matmul(query, key.transpose(2, 3)).float() * scaling
    if attention_mask is not None:
        logits = logits + attention_mask
    weights = logits.softmax(dim=-1).to(query.dtype)
    context = torch.matmul(F.dropout(weights, p=dropout, training=module.training), value)
    return context.transpose(1, 2).contiguous(), weights


class DoraAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, through transformers' attention interface.

    `config._attn_implementation` picks the kernel (`"sdpa"` by default, `"eager"`,
    `"flex_attention"`, a flash-attention build where one is installed); a call that asks for
    `output_attentions` runs eagerly, as only that path materialises the probabilities.
    """

    def __init__(self, config: DoraConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def query_key_value(
        self, hidden_states: torch.Tensor, float32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(N, S, d)` normalised tokens to queries, keys and values of shape `(N, h, S, dh)`.

        `float32=True` projects with float32 copies of the weights (the tracker's recomputation,
        which must stay float32 whatever the model's dtype); call it with autocast off.
        """
        batch, length, _ = hidden_states.shape
        if float32:
            bias = None if self.qkv.bias is None else self.qkv.bias.float()
            qkv = F.linear(hidden_states.float(), self.qkv.weight.float(), bias)
        else:
            qkv = self.qkv(hidden_states)
        qkv = qkv.reshape(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return query, key, value

    def forward(
        self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        query, key, value = self.query_key_value(hidden_states)
        output_attentions = kwargs.get("output_attentions")
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        context, weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = self.output_dropout(self.o_proj(context.reshape(*hidden_states.shape[:-1], -1)))
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


class DoraLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block with stochastic depth on both residual branches.

    Under `gradient_checkpointing_enable()` its activations are recomputed in the backward pass;
    the checkpoint restores the RNG state, so stochastic depth drops the same samples again.
    """

    def __init__(self, config: DoraConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = DoraAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DoraMLP(config)
        self.drop_path = DoraDropPath(drop_path_rate)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        attention_output, _ = self.attention(self.layernorm_before(hidden_states), **kwargs)
        hidden_states = hidden_states + self.drop_path(attention_output)
        return hidden_states + self.drop_path(self.mlp(self.layernorm_after(hidden_states)))


class DoraEncoder(nn.Module):
    def __init__(self, config: DoraConfig):
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layer = nn.ModuleList([DoraLayer(config, rate) for rate in rates])

    def forward(
        self, hidden_states: torch.Tensor, capture_layer: int | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Run the blocks; `capture_layer=i` also returns block i's input and output (for the tracker).

        Hidden states and attentions are recorded by the output-capturing hooks of the model's
        `_can_record_outputs`, not here.
        """
        captured = None
        for index, layer in enumerate(self.layer):
            block_input = hidden_states
            hidden_states = layer(hidden_states, **kwargs)
            if index == capture_layer:
                captured = (block_input, hidden_states)
        return hidden_states, captured


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


_FORWARD_KWARGS = frozenset(TransformersKwargs.__optional_keys__) | frozenset(TransformersKwargs.__required_keys__)


def check_forward_kwargs(model: nn.Module, kwargs: dict) -> None:
    """Refuse keyword arguments that are neither a named parameter nor one of transformers' own.

    A misspelt option (`interpolate_pos_encodings=True`) would otherwise vanish into `**kwargs`.
    """
    unknown = sorted(set(kwargs) - _FORWARD_KWARGS)
    if unknown:
        raise TypeError(f"{type(model).__name__}.forward() got unexpected keyword argument(s): {', '.join(unknown)}")


class DoraPreTrainedModel(PreTrainedModel):
    config: DoraConfig
    config_class = DoraConfig
    base_model_prefix = "dora"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["DoraEmbeddings", "DoraLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": DoraLayer,
        "attentions": DoraAttention,
    }
    # Heads of the other DoRA classes (and `DoraBackbone`'s neck), left out on purpose when one class
    # loads another's folder.
    _keys_to_ignore_on_load_unexpected = [r"^projection_head\.", r"^classifier\.", r"^fpn\d\."]

    def _init_weights(self, module: nn.Module) -> None:
        """DINO's initialisation: truncated normal (std 0.02) linears and embeddings, unit LayerNorms;
        the neck's (`add_fpn`) transposed convolutions as the convolutions, its BatchNorm at unit scale."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):  # the backbone's neck (`add_fpn`)
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
        elif isinstance(module, DoraEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=std)
            init.trunc_normal_(module.cls_token, std=std)
        elif isinstance(module, DoraWeightNormLinear):
            init.ones_(module.magnitude)
            init.kaiming_uniform_(module.direction, a=5**0.5)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights, config and, through `auto_map`, the modeling code for every Auto class.

        `register_for_auto_class` only records the saved class; listing them all lets any DoRA
        folder load through any of these Auto classes under `trust_remote_code=True` in an
        environment without this package (a `DoraForPreTraining` folder as a backbone, say).
        """
        self.config.auto_map = {
            "AutoConfig": "configuration_dora.DoraConfig",
            "AutoModel": "modeling_dora.DoraModel",
            "AutoModelForPreTraining": "modeling_dora.DoraForPreTraining",
            "AutoBackbone": "modeling_dora.DoraBackbone",
            "AutoModelForImageClassification": "modeling_dora.DoraForImageClassification",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)


def _prepare_pixel_values(model: DoraPreTrainedModel, pixel_values: torch.Tensor | None) -> torch.Tensor:
    """Inputs in the weights' dtype, except under autocast, which casts per operation itself."""
    if pixel_values is None:
        raise ValueError("pixel_values is required")
    expected_dtype = model.embeddings.patch_embeddings.projection.weight.dtype
    if pixel_values.dtype != expected_dtype and not torch.is_autocast_enabled(pixel_values.device.type):
        pixel_values = pixel_values.to(expected_dtype)
    return pixel_values


class DoraModel(DoraPreTrainedModel):
    """The DoRA backbone: `pooler_output` is the final-LayerNorm [CLS] token, DoRA's image feature."""

    def __init__(self, config: DoraConfig):
        super().__init__(config)
        self.embeddings = DoraEmbeddings(config)
        self.encoder = DoraEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> DoraPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        patch_mask: torch.Tensor | None = None,
        output_tracker_features: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DoraModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images (see `DoraImageProcessor`).
        interpolate_pos_encoding (`bool`, *optional*):
            Resample the position embeddings for inputs of another size than `config.image_size`
            (bicubic, as `config.interpolate_pos_encoding_mode` says: DINO's way by default).
        patch_mask (`torch.Tensor` of shape `(batch_size, [num_masks,] num_patches)`, *optional*):
            Multiplies each patch's projection, before the bias and the position embedding, by this
            (bool or float; patches in row-major order). As patches do not overlap, this gives the
            tokens of the image masked patch by patch in pixels, which is how DoRA's student sees
            its masked views. With `num_masks` masks per image the outputs hold
            `batch_size * num_masks` sequences, image-major (sequence `i * num_masks + j` is image
            `i` under mask `j`), and each image is projected once.
        output_tracker_features (`bool`, *optional*, defaults to `False`):
            Also return the tracker block's queries, keys and [CLS] attention and the patch
            features (`DoraTrackerFeatures`), what `DoraTrackingHead` reads.

        `output_hidden_states` gives the input of every block and the last block's output (before
        the final LayerNorm); `output_attentions` every block's probabilities (computed eagerly).
        """
        check_forward_kwargs(self, kwargs)
        pixel_values = _prepare_pixel_values(self, pixel_values)
        embeddings = self.embeddings(
            pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding), patch_mask=patch_mask
        )
        capture = self.config.tracker_layer_index if output_tracker_features else None
        hidden_states, captured = self.encoder(embeddings, capture_layer=capture, **kwargs)
        sequence_output = self.layernorm(hidden_states)
        tracker_features = self._tracker_features(captured, sequence_output) if output_tracker_features else None
        return DoraModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output[:, 0],
            tracker_features=tracker_features,
        )

    def _encode(
        self,
        pixel_values: torch.Tensor | None,
        interpolate_pos_encoding: bool | None = None,
        output_tracker_features: bool = False,
        patch_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DoraModelOutput:
        """`forward` with its output always a `DoraModelOutput` (kept for the evaluation code)."""
        return self(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            patch_mask=patch_mask,
            output_tracker_features=output_tracker_features,
            return_dict=True,
            **kwargs,
        )

    def _tracker_features(
        self, captured: tuple[torch.Tensor, torch.Tensor], sequence_output: torch.Tensor
    ) -> DoraTrackerFeatures:
        """Recompute the tracker block's queries, keys and [CLS] attention row from its input.

        The blocks run fused attention, which never materialises probabilities; only the [CLS]
        row of one block is needed, so it is recomputed here at the cost of one qkv projection.
        The recomputation is part of the tracker, so it runs in float32 with autocast off (one
        projection of one block: cheap), and the patch features are float32 final-LayerNorm
        tokens: a bf16 forward's rounding stays in the block's input, not in the tracker's maths.
        """
        block_input, block_output = captured
        layer = self.encoder.layer[self.config.tracker_layer_index]
        attention = layer.attention
        with float32_region(block_input.device):
            normalized = _layer_norm_float32(layer.layernorm_before, block_input)
            query, key, _ = attention.query_key_value(normalized, float32=True)
            cls_logits = (query[:, :, :1] @ key.transpose(-2, -1)) * attention.scaling
            cls_attention = cls_logits.softmax(dim=-1)[:, :, 0, 1:]
            if self.config.tracker_layer == "last" and sequence_output.dtype == torch.float32:
                patch_tokens = sequence_output[:, 1:]
            else:
                # the final LayerNorm, in float32, of the tracker block's output
                patch_tokens = _layer_norm_float32(self.layernorm, block_output[:, 1:])
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

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_tracker_features: bool = False,
        patch_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DoraForPreTrainingOutput:
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
        check_forward_kwargs(self, kwargs)
        output = self.dora(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            patch_mask=patch_mask,
            output_tracker_features=output_tracker_features,
            return_dict=True,
            **kwargs,
        )
        return DoraForPreTrainingOutput(
            logits=self.projection_head(output.pooler_output),
            pooler_output=output.pooler_output,
            last_hidden_state=output.last_hidden_state,
            hidden_states=output.hidden_states,
            attentions=output.attentions,
            tracker_features=output.tracker_features,
        )

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
        output = self.dora._encode(
            clip_pixel_values.flatten(0, 1),
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_tracker_features=True,
        )
        return self.tracking_head(output.tracker_features, clip_pixel_values, head_indices, generator)


class DoraBackbone(BackboneMixin, DoraPreTrainedModel):
    """DoRA's ViT as an `AutoBackbone`: one feature map per stage, for UperNet, DPT, Mask2Former.

    The stages are the embeddings (`"stem"`) and every block's output (`"stage1"` ...), as in
    transformers' `Dinov2Backbone`; `config.out_features` / `out_indices` pick them. Each map goes
    through the final LayerNorm (`config.apply_layernorm`) and is reshaped to NCHW without the
    [CLS] token (`config.reshape_hidden_states`). The position embeddings are resampled for any
    input size (a multiple of the patch size), as dense tasks train on other crops. It loads the
    weights of any saved DoRA folder.

    A plain ViT gives every map at the patch stride; `config.add_fpn` adds BEiT's multi-scale neck,
    which brings the four chosen maps to 4x, 2x, 1x and 1/2x the patch grid (strides 4, 8, 16 and
    32 for 16-pixel patches), the pyramid UperNet is built for. Its modules and their weight names
    (`fpn1.0`, `fpn1.1`, `fpn1.3`, `fpn2.0`) are those of transformers' `BeitBackbone` (4.x) and of
    iBOT's segmentation ViT (bytedance/ibot, `evaluation/semantic_segmentation/mmcv_custom/
    register_backbone.py`, `with_fpn=True`, patch size 16).
    """

    def __init__(self, config: DoraConfig):
        super().__init__(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.embeddings = DoraEmbeddings(config)
        self.encoder = DoraEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.add_fpn:
            config._check_fpn()  # again: `out_features` may have been set after the configuration was made
            width = config.hidden_size
            self.fpn1 = nn.Sequential(
                nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
                nn.BatchNorm2d(width, eps=config.batch_norm_eps),
                nn.GELU(),
                nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
            )
            self.fpn2 = nn.Sequential(nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
            self.fpn3 = nn.Identity()
            self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.post_init()

    def get_input_embeddings(self) -> DoraPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def _stages(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutput:
        """The blocks' forward; the stages come back as the recorded `hidden_states`."""
        embeddings = self.embeddings(pixel_values, interpolate_pos_encoding=True)
        hidden_states, _ = self.encoder(embeddings, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images; height and width multiples of `config.patch_size`.

        Returns a `BackboneOutput` whose `feature_maps` hold one map per stage of `out_features`
        (with `config.add_fpn`: at 4x, 2x, 1x and 1/2x the patch grid).
        """
        check_forward_kwargs(self, kwargs)
        pixel_values = _prepare_pixel_values(self, pixel_values)
        output = self._stages(pixel_values, return_dict=True, **kwargs)
        batch, _, height, width = pixel_values.shape
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, output.hidden_states):
            if stage in self.out_features:
                if self.config.apply_layernorm:
                    hidden_state = self.layernorm(hidden_state)
                if self.config.reshape_hidden_states:
                    hidden_state = hidden_state[:, 1:].reshape(batch, *grid, -1).permute(0, 3, 1, 2).contiguous()
                feature_maps += (hidden_state,)
        if self.config.add_fpn:
            scales = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
            feature_maps = tuple(scale(feature_map) for scale, feature_map in zip(scales, feature_maps))
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=output.hidden_states, attentions=output.attentions
        )


class DoraForImageClassification(DoraPreTrainedModel):
    """DoRA's ViT with a linear classifier, for the `image-classification` pipeline and `Trainer`.

    The classifier reads the [CLS] token and the mean patch token (`classifier_pooling="cls_mean"`,
    DINOv2's head) or the [CLS] token alone (`"cls"`), both after the final LayerNorm. Fine-tune
    everything, or freeze `model.dora` (and set `drop_path_rate=0.0`) for a linear probe.
    """

    def __init__(self, config: DoraConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dora = DoraModel(config)
        width = config.hidden_size * (2 if config.classifier_pooling == "cls_mean" else 1)
        self.classifier = nn.Linear(width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> DoraPatchEmbeddings:
        return self.dora.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class indices for the cross-entropy loss (or float targets, as `config.problem_type` says).
        interpolate_pos_encoding (`bool`, *optional*):
            Resample the position embeddings for inputs of another size than `config.image_size`.
        """
        check_forward_kwargs(self, kwargs)
        outputs = self.dora(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        tokens = outputs.last_hidden_state
        features = tokens[:, 0]
        if self.config.classifier_pooling == "cls_mean":
            features = torch.cat([features, tokens[:, 1:].mean(dim=1)], dim=-1)
        logits = self.classifier(features)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "DoraPreTrainedModel",
    "DoraModel",
    "DoraModelOutput",
    "DoraForPreTraining",
    "DoraForPreTrainingOutput",
    "DoraBackbone",
    "DoraForImageClassification",
]
