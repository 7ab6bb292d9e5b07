"""Semantic segmentation (ADE20K-style) by iBOT's recipes: a linear head on frozen features, or UperNet.

`protocol` (iBOT's values, without torch), `dataset` (a Hugging Face segmentation split, checked
up front), `augment` (mmseg's pipelines), `backbone` (the `DoraBackbone` a recipe trains),
`linear` and `upernet` (the two heads), `optimizer` (AdamW, layer decay, poly schedule), `train`,
`inference` (sliding windows), `scoring` (mIoU by the shipped `mean_iou` module); the command is
`dora-hf eval segmentation`.
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "LinearSegmenter": ".linear",
    "SegmentationRecipe": ".protocol",
    "build_upernet": ".upernet",
    "open_segmentation_split": ".dataset",
    "predict_split": ".inference",
    "score_predictions": ".scoring",
    "train_segmenter": ".train",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
