"""Unsupervised object discovery with LOST (valeoai/LOST), scored with CorLoc.

`protocol` (LOST's values), `lost` (the box from a key matrix), `datasets` (VOC07, VOC12 and
COCO20k images with the ground-truth boxes LOST counts), `features` (an image as LOST feeds it
and the keys of the last block), `scoring` (LOST's IoU and the CorLoc hit), `evaluate` (the loop
over a dataset); the command is `dora-hf eval corloc`.
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "CorLocRun": ".evaluate",
    "DiscoveryDataset": ".datasets",
    "GroundTruthImage": ".datasets",
    "LastBlockKeys": ".features",
    "LostBox": ".lost",
    "box_iou": ".scoring",
    "detect_box": ".lost",
    "evaluate_corloc": ".evaluate",
    "localizes": ".scoring",
    "lost": ".lost",
    "read_coco20k": ".datasets",
    "read_dataset": ".datasets",
    "read_voc": ".datasets",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
