"""CorLoc: the share of images whose predicted box has IoU >= 0.5 with some ground-truth box.

Follows valeoai/LOST ``main_lost.py`` (``ious = bbox_iou(torch.from_numpy(pred),
torch.from_numpy(gt_bbxs))``; ``if torch.any(ious >= 0.5): corloc[im_id] = 1``; CorLoc
``= sum(corloc) / cnt`` over every evaluated image) and ``datasets.py``'s ``bbox_iou`` (from
ultralytics/yolov5, ``x1y1x2y2=True`` branch): integer boxes, ``eps = 1e-7`` added to each box's
height and to the union, computed in torch's default float dtype, so that an IoU on the 0.5
boundary falls on the same side as in LOST.
"""

from __future__ import annotations

import torch


def box_iou(box: torch.Tensor, boxes: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of `box` `(4,)` with each of `boxes` `(n, 4)`, all ``(x1, y1, x2, y2)``: LOST's ``bbox_iou``."""
    other = boxes.T
    inter = (torch.min(box[2], other[2]) - torch.max(box[0], other[0])).clamp(0) * (
        torch.min(box[3], other[3]) - torch.max(box[1], other[1])
    ).clamp(0)
    w1, h1 = box[2] - box[0], box[3] - box[1] + eps
    w2, h2 = other[2] - other[0], other[3] - other[1] + eps
    union = w1 * h1 + w2 * h2 - inter + eps
    return inter / union


def localizes(box: tuple[int, int, int, int], gt_boxes: list[list[int]], threshold: float = 0.5) -> tuple[bool, float]:
    """Whether integer pixel `box` hits one of the (non-empty) ground-truth boxes, and the best IoU."""
    ious = box_iou(torch.tensor(box, dtype=torch.int64), torch.tensor(gt_boxes, dtype=torch.int64).reshape(-1, 4))
    return bool(torch.any(ious >= threshold)), float(ious.max())
