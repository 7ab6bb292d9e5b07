"""The `DoraBackbone` a segmentation recipe trains, with the evaluated model's weights.

The encoder is loaded once, frozen, by `encoder.load_encoder` (which checks the folder or hub id
and finds its processor and revision); its weights go into a `DoraBackbone` configured for the
recipe: the four stages the heads read, every map through the final LayerNorm (iBOT's
`out_with_norm=true`), NCHW maps, the multi-scale neck for UperNet (`add_fpn`, initialised fresh
as it has no pretrained weights) and the recipe's stochastic depth.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import DoraUserError
from ...modeling import DoraBackbone, DoraConfig
from ..encoder import FrozenEncoder
from .protocol import ibot_stages


def backbone_stages(encoder: FrozenEncoder, requested: Sequence[int] | None) -> list[int]:
    """The four stages (1-based blocks) the heads read: `requested`, else iBOT's for the depth."""
    depth = int(encoder.model.config.num_hidden_layers)
    stages = list(requested) if requested else list(ibot_stages(depth))
    valid = len(stages) == 4 and len(set(stages)) == 4 and stages == sorted(stages)
    if not valid or not all(1 <= stage <= depth for stage in stages):
        source = "--out-indices" if requested else f"iBOT's blocks scaled to {depth} blocks"
        raise DoraUserError(
            f"{source} gives stages {stages}: the heads read 4 distinct blocks in increasing order, "
            f"numbered 1..{depth} (iBOT reads 4 6 8 12 of a 12-block ViT); choose them with --out-indices"
        )
    return stages


def segmentation_backbone(
    encoder: FrozenEncoder, stages: Sequence[int], *, add_fpn: bool, drop_path_rate: float
) -> DoraBackbone:
    """A `DoraBackbone` reading `stages`, holding `encoder`'s weights (and a fresh neck if `add_fpn`)."""
    source = encoder.model
    if getattr(source.config, "model_type", None) != "dora":
        raise DoraUserError(
            f"{encoder.name}: segmentation trains a DoRA backbone, and this is a {source.config.model_type!r} "
            "model; convert a DINO or DoRA reference checkpoint with `dora-hf convert-reference` first"
        )
    values = source.config.to_dict()
    for key in ("out_features", "stage_names", "auto_map", "architectures"):
        values.pop(key, None)
    values.update(
        out_indices=list(stages), add_fpn=add_fpn, drop_path_rate=drop_path_rate,
        apply_layernorm=True, reshape_hidden_states=True,
    )
    backbone = DoraBackbone(DoraConfig.from_dict(values))
    missing, unexpected = backbone.load_state_dict(source.state_dict(), strict=False)
    if unexpected or any(not key.startswith("fpn") for key in missing):
        raise RuntimeError(f"backbone weights do not match: missing {missing}, unexpected {unexpected}")
    return backbone
