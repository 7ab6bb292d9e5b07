"""Mean IoU, mean accuracy and overall accuracy of predicted class-id maps, by the shipped metric.

The scores are those of `evaluate`'s `mean_iou` module (mmseg's mIoU, which iBOT reports),
loaded from the package (`metric_modules.MEAN_IOU`): intersections and unions summed over all
images, then per class; classes absent from both predictions and references are left out of the
means. References are already reduced (255 ignored), so the module's own `reduce_labels` is off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..metric_modules import MEAN_IOU, load_metric
from .protocol import IGNORE_INDEX


def score_predictions(pairs: Iterable[tuple[int, np.ndarray, np.ndarray]], num_labels: int) -> dict:
    """Scores of `(row, prediction, reference)` maps; per-class values are None where undefined."""
    metric = load_metric(MEAN_IOU)
    count = 0
    for _, prediction, reference in pairs:
        metric.add_batch(predictions=[prediction], references=[reference])
        count += 1
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 for a class never seen: NaN, reported as None
        scores = metric.compute(num_labels=num_labels, ignore_index=IGNORE_INDEX, reduce_labels=False)
    return {
        "mean_iou": _number(scores["mean_iou"]),
        "mean_accuracy": _number(scores["mean_accuracy"]),
        "overall_accuracy": _number(scores["overall_accuracy"]),
        "per_category_iou": [_number(value) for value in scores["per_category_iou"]],
        "per_category_accuracy": [_number(value) for value in scores["per_category_accuracy"]],
        "num_images": count,
    }


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
