# Copyright 2026 The dora-hf authors. Licensed under the Apache License, Version 2.0.
"""DoRA model configuration.

DoRA ("Is ImageNet worth 1 video? Learning strong image encoders from 1 long unlabelled video",
Venkataramanan et al., ICLR 2024, arXiv:2310.08584) is DINO self-distillation in which the
student's global views are object tracks found by the teacher's own attention. The defaults
here are the ViT-S/16 recipe of the authors' reference code.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

TRACKER_LAYERS = ("last", "second_last")
MASK_MODES = ("keep", "remove")
THRESHOLD_SCOPES = ("per_image", "batch")
POS_INTERPOLATION_MODES = ("reference", "size")
CLASSIFIER_POOLINGS = ("cls_mean", "cls")


@strict
class DoraConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a DoRA Vision Transformer, its DINO projection head and its tracking head.

    Args:
        hidden_size (`int`, *optional*, defaults to 384): width of the ViT.
        num_hidden_layers (`int`, *optional*, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 6): attention heads per block.
        intermediate_size (`int`, *optional*, defaults to 1536): MLP hidden width (ratio 4).
        hidden_act (`str`, *optional*, defaults to `"gelu"`): MLP activation (exact GELU, as in DINO).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0): dropout after attention and MLP.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0): attention dropout.
        drop_path_rate (`float`, *optional*, defaults to 0.1): stochastic depth of the last block,
            linearly increasing from 0 over the blocks; only active in training mode (the student).
        initializer_range (`float`, *optional*, defaults to 0.02): std of the truncated normal init.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): LayerNorm epsilon.
        image_size (`int`, *optional*, defaults to 224): size of the learned position-embedding grid.
        interpolate_pos_encoding_mode (`str`, *optional*, defaults to `"reference"`): how the learned
            position grid is resampled (bicubic) for other input sizes, e.g. the 112-px local views.
            `"reference"` is DINO's `interpolate_pos_encoding`, which the reference checkpoints were
            trained with: `scale_factor=(g + 0.1) / n` for a `g`-patch side and an `n`-patch learned
            side, so the learned grid is sampled every `n / (g + 0.1)` cells; `"size"` asks for
            the `g`-patch grid directly (`size=g`, as transformers' ViT does: every `n / g` cells).
            At 112 px the two give features about 1e-2 apart.
        patch_size (`int`, *optional*, defaults to 16): patch size.
        num_channels (`int`, *optional*, defaults to 3): input channels.
        qkv_bias (`bool`, *optional*, defaults to `True`): bias in the fused query/key/value projection.
        head_out_dim (`int`, *optional*, defaults to 65536): prototypes of the DINO projection head.
        head_hidden_dim (`int`, *optional*, defaults to 2048): hidden width of the head's MLP.
        head_bottleneck_dim (`int`, *optional*, defaults to 256): bottleneck before the last layer.
        head_num_layers (`int`, *optional*, defaults to 3): linear layers of the head's MLP.
        norm_last_layer (`bool`, *optional*, defaults to `False`): freeze the weight-norm gain of the
            head's last layer at 1. The reference keeps it trainable (`False`) for ViT-S.
        num_objects (`int`, *optional*, defaults to 3): objects (attention heads) discovered per clip.
        sinkhorn_iterations (`int`, *optional*, defaults to 30): Sinkhorn-Knopp iterations.
        sinkhorn_epsilon (`float`, *optional*, defaults to 0.05): entropic regularisation.
        tracker_layer (`str`, *optional*, defaults to `"last"`): block whose queries, keys and [CLS]
            attention drive discovery and tracking: `"last"` (reference code) or `"second_last"`
            (one reading of the paper's text).
        mask_mode (`str`, *optional*, defaults to `"keep"`): `"keep"` keeps the tracked object and
            zeroes the rest (reference code); `"remove"` zeroes the object instead.
        mask_threshold_scope (`str`, *optional*, defaults to `"per_image"`): over what the mean
            that binarises an object's attention is taken. `"batch"` is the reference code (one
            mean over all clips of the batch for an object and frame), which makes a clip's masks
            depend on the other clips in its batch and on the per-GPU batch size; `"per_image"`
            thresholds each frame by its own mean, so `discover_and_track` gives the same masks for
            a clip alone or in any batch.
        apply_layernorm (`bool`, *optional*, defaults to `True`): `DoraBackbone` passes each feature map
            through the final LayerNorm (the last stage is then `DoraModel`'s `last_hidden_state`).
        reshape_hidden_states (`bool`, *optional*, defaults to `True`): `DoraBackbone` returns NCHW maps
            `(batch, hidden_size, height / patch_size, width / patch_size)` without the [CLS] token
            (UperNet, Mask2Former); `False` keeps the `(batch, 1 + patches, hidden_size)` tokens (DPT).
        classifier_pooling (`str`, *optional*, defaults to `"cls_mean"`): what `DoraForImageClassification`'s
            linear layer reads: `"cls_mean"` is the [CLS] token and the mean patch token concatenated
            (DINOv2's head), `"cls"` the [CLS] token alone (DoRA's image feature, DINO's linear probe).
        add_fpn (`bool`, *optional*, defaults to `False`): `DoraBackbone` brings its four feature maps to
            four scales with BEiT's multi-scale neck (`fpn1`: two 2x transposed convolutions with a
            BatchNorm and a GELU between them, `fpn2`: one 2x transposed convolution, `fpn3`: the
            identity, `fpn4`: a 2x max-pool), strides 4, 8, 16 and 32 for 16-pixel patches, as
            UperNet expects of a pyramid. Needs exactly four `out_features` and
            `reshape_hidden_states=True`. The name, modules and layout are those of transformers'
            `BeitConfig.add_fpn` / `BeitBackbone` (4.x) and of iBOT's segmentation backbone
            (bytedance/ibot, `evaluation/semantic_segmentation/mmcv_custom/register_backbone.py`).
        batch_norm_eps (`float`, *optional*, defaults to 1e-5): epsilon of the neck's BatchNorm
            (PyTorch's default, which iBOT's `SyncBatchNorm` and BEiT use).
        out_features (`list[str]`, *optional*): stages `DoraBackbone` returns, among `stage_names`
            (`"stem"`, the embeddings, then `"stage1"` ... `"stageN"`, the blocks' outputs).
        out_indices (`list[int]`, *optional*): the same stages by index into `stage_names`.
    """

    model_type = "dora"

    # The fields @strict checks, on construction and on every later assignment; the defaults and
    # the documented signature are `__init__`'s. Counts and flags are exact types; a float field
    # also takes an int, as JSON files write 0 for 0.0.
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    hidden_dropout_prob: float | int
    attention_probs_dropout_prob: float | int
    drop_path_rate: float | int
    initializer_range: float | int
    layer_norm_eps: float | int
    image_size: int
    patch_size: int
    num_channels: int
    qkv_bias: bool
    head_out_dim: int
    head_hidden_dim: int
    head_bottleneck_dim: int
    head_num_layers: int
    norm_last_layer: bool
    num_objects: int
    sinkhorn_iterations: int
    sinkhorn_epsilon: float | int
    tracker_layer: str
    mask_mode: str
    mask_threshold_scope: str
    interpolate_pos_encoding_mode: str
    apply_layernorm: bool
    reshape_hidden_states: bool
    classifier_pooling: str
    add_fpn: bool
    batch_norm_eps: float | int
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __init__(
        self,
        hidden_size: int = 384,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 6,
        intermediate_size: int = 1536,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.1,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-6,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        qkv_bias: bool = True,
        head_out_dim: int = 65536,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_num_layers: int = 3,
        norm_last_layer: bool = False,
        num_objects: int = 3,
        sinkhorn_iterations: int = 30,
        sinkhorn_epsilon: float = 0.05,
        tracker_layer: str = "last",
        mask_mode: str = "keep",
        mask_threshold_scope: str = "per_image",
        interpolate_pos_encoding_mode: str = "reference",
        apply_layernorm: bool = True,
        reshape_hidden_states: bool = True,
        classifier_pooling: str = "cls_mean",
        add_fpn: bool = False,
        batch_norm_eps: float = 1e-5,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
        self.head_out_dim = head_out_dim
        self.head_hidden_dim = head_hidden_dim
        self.head_bottleneck_dim = head_bottleneck_dim
        self.head_num_layers = head_num_layers
        self.norm_last_layer = norm_last_layer
        self.num_objects = num_objects
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.tracker_layer = tracker_layer
        self.mask_mode = mask_mode
        self.mask_threshold_scope = mask_threshold_scope
        self.interpolate_pos_encoding_mode = interpolate_pos_encoding_mode
        self.apply_layernorm = apply_layernorm
        self.reshape_hidden_states = reshape_hidden_states
        self.classifier_pooling = classifier_pooling
        self.add_fpn = add_fpn
        self.batch_norm_eps = batch_norm_eps
        # Derived from the depth, never read back from a saved file (`stage_names` is written there).
        kwargs.pop("stage_names", None)
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_features=kwargs.pop("out_features", None), out_indices=kwargs.pop("out_indices", None)
        )
        super().__init__(**kwargs)
        # Here rather than only through @strict's `validate()`, so that a bad value is a plain
        # ValueError naming the field (the recipe reports those), not a wrapped one.
        self.validate_dora()

    def validate_dora(self) -> None:
        """Reject impossible settings, naming the field, so a typo fails early (and again at save)."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DoraConfig.{name} must be a positive integer, got {value!r}")

        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "image_size",
            "patch_size",
            "num_channels",
            "head_out_dim",
            "head_hidden_dim",
            "head_bottleneck_dim",
            "head_num_layers",
            "num_objects",
            "sinkhorn_iterations",
        ):
            positive_int(name)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DoraConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"DoraConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.num_objects > self.num_attention_heads:
            raise ValueError(
                f"DoraConfig.num_objects ({self.num_objects}) cannot exceed num_attention_heads "
                f"({self.num_attention_heads}): each object is discovered by a distinct head"
            )
        if not self.sinkhorn_epsilon > 0:
            raise ValueError(f"DoraConfig.sinkhorn_epsilon must be > 0, got {self.sinkhorn_epsilon!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"DoraConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        for name, allowed in (
            ("tracker_layer", TRACKER_LAYERS),
            ("mask_mode", MASK_MODES),
            ("mask_threshold_scope", THRESHOLD_SCOPES),
            ("interpolate_pos_encoding_mode", POS_INTERPOLATION_MODES),
            ("classifier_pooling", CLASSIFIER_POOLINGS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DoraConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.tracker_layer == "second_last" and self.num_hidden_layers < 2:
            raise ValueError("DoraConfig.tracker_layer='second_last' needs num_hidden_layers >= 2")
        if not self.batch_norm_eps > 0:
            raise ValueError(f"DoraConfig.batch_norm_eps must be > 0, got {self.batch_norm_eps!r}")
        if self.add_fpn:
            self._check_fpn()

    def _check_fpn(self) -> None:
        """The neck maps four stages to four scales, from NCHW maps (BEiT asks the same)."""
        if len(self.out_features) != 4:
            raise ValueError(
                f"DoraConfig.add_fpn needs exactly 4 out_features (one per scale), got {self.out_features}; "
                "iBOT and BEiT use out_indices=[4, 6, 8, 12] for a 12-block ViT"
            )
        if not self.reshape_hidden_states:
            raise ValueError("DoraConfig.add_fpn needs reshape_hidden_states=True: the neck works on NCHW maps")

    @property
    def tracker_layer_index(self) -> int:
        """Index of the block whose queries and keys the tracking head reads."""
        return self.num_hidden_layers - (1 if self.tracker_layer == "last" else 2)


__all__ = ["DoraConfig"]
