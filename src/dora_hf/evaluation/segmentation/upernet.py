"""iBOT's UperNet fine-tuning: transformers' `UperNetForSemanticSegmentation` on `DoraBackbone` + neck.

bytedance/ibot, `evaluation/semantic_segmentation/configs/upernet/vit_small_512_ade20k_160k.py`
on `configs/_base_/models/upernet.py`: the ViT returns blocks 4, 6, 8 and 12 (through the final
LayerNorm, `out_with_norm=true`) brought to strides 4, 8, 16 and 32 by the neck (`with_fpn=True`:
`DoraConfig.add_fpn`); `UPerHead` with `channels=384`, `pool_scales=(1, 2, 3, 6)`; an auxiliary
`FCNHead` on the third map (`in_index=2`, 256 channels, one 3x3 conv, no input concatenation)
whose loss is weighted 0.4; ignored label 255. Transformers' `UperNetConfig` takes these values
as `hidden_size`, `pool_scales`, `auxiliary_*` and `loss_ignore_index`; its heads place the
auxiliary head on the third map as mmseg's config does. They have no dropout before the
classifiers (mmseg's `dropout_ratio=0.1`), and their loss averages over the scored pixels where
mmseg 0.x divides by every pixel of the batch, ignored ones included (a per-batch scale, which
AdamW largely absorbs). The position embeddings stay on the pretrained grid and are resampled at
every forward (`DoraBackbone`), where iBOT resamples them once to the 512 grid when it loads the
checkpoint and fine-tunes that grid.
"""

from __future__ import annotations

from transformers import UperNetConfig, UperNetForSemanticSegmentation

from ...modeling import DoraBackbone
from .protocol import IGNORE_INDEX, SegmentationRecipe


def build_upernet(backbone: DoraBackbone, num_labels: int, recipe: SegmentationRecipe) -> UperNetForSemanticSegmentation:
    """UperNet on a copy of `backbone` (with its neck), heads as the recipe says."""
    if not backbone.config.add_fpn:
        raise ValueError("UperNet reads a pyramid: build the backbone with add_fpn=True")
    config = UperNetConfig(
        backbone_config=backbone.config,
        num_labels=num_labels,
        hidden_size=recipe.decoder_channels,
        pool_scales=list(recipe.pool_scales),
        use_auxiliary_head=True,
        auxiliary_loss_weight=recipe.auxiliary_loss_weight,
        auxiliary_channels=recipe.auxiliary_channels,
        auxiliary_num_convs=1,
        auxiliary_concat_input=False,
        loss_ignore_index=IGNORE_INDEX,
    )
    model = UperNetForSemanticSegmentation(config)
    model.backbone.load_state_dict(backbone.state_dict())  # a config alone builds a random ViT
    return model
