"""iBOT's linear segmentation head: one 1x1 convolution on frozen, concatenated patch features.

bytedance/ibot, `evaluation/semantic_segmentation/configs/linear/vit_small_512_ade20k_160k.py`:
the backbone is frozen (`frozen_stages=12`, so its blocks also stay in eval mode: no stochastic
depth) and returns the patch tokens of blocks 4, 6, 8 and 12 through the final LayerNorm
(`out_with_norm=true` in iBOT's `evaluation/README.md`), without the neck (`with_fpn=False`). The
head is mmseg's `FCNHead` with `input_transform='resize_concat'` (the four maps, all at the patch
stride, concatenated: 4 x 384 = `channels=1536`), `num_convs=0` (no convolution, so no
BatchNorm: its `norm_cfg` is never used), `dropout_ratio=0`: what is left is `conv_seg`, a 1x1
convolution to the classes, initialised N(0, 0.01) with a zero bias (mmseg's
`BaseDecodeHead.init_weights`). Its logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SemanticSegmenterOutput

from ...modeling import DoraBackbone
from .protocol import IGNORE_INDEX


class LinearSegmenter(nn.Module):
    """A frozen `DoraBackbone` and a trainable 1x1 convolution on its concatenated maps."""

    def __init__(self, backbone: DoraBackbone, num_labels: int):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.classifier = nn.Conv2d(sum(backbone.channels), num_labels, kernel_size=1)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def train(self, mode: bool = True) -> LinearSegmenter:
        """The backbone stays in eval mode, as iBOT's frozen stages do."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> SemanticSegmenterOutput:
        """Logits `(N, classes, H, W)` at the input size; with `labels` `(N, H, W)`, their
        cross-entropy over the scored (not 255) pixels."""
        with torch.no_grad():
            maps = self.backbone(pixel_values).feature_maps
        size = maps[0].shape[-2:]
        features = torch.cat(
            [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps],
            dim=1,
        )
        logits = self.classifier(features)
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        return SemanticSegmenterOutput(loss=loss, logits=logits)
