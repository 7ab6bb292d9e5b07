"""The project's `evaluate` metric modules, loaded from the package folder rather than the Hub.

`evaluate.load("name")` fetches a metric script from the Hub (the `evaluate` wheel ships none),
so the modules live in ``dora_hf/evaluation/metrics/<name>/`` as package data and are loaded by
path: no network, and the installed version always matches the code that produced the inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent / "metrics"

JACCARD_F = "jaccard_f"
"""DAVIS J&F of video object segmentation."""
TOPK_ACCURACY = "topk_accuracy"
"""Top-1/top-5 accuracy of ranked class predictions (k-NN and linear probe)."""
MEAN_IOU = "mean_iou"
"""Mean IoU, mean and overall pixel accuracy of semantic segmentation (`evaluate`'s module, copied)."""


def metric_path(name: str) -> Path:
    """Folder of a shipped metric module; raises for an unknown name, listing the known ones."""
    folder = METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no metric module {name!r}; shipped: {', '.join(known)}")
    return folder


def load_metric(name: str) -> evaluate.EvaluationModule:
    """``evaluate.load`` of a shipped metric module by its local path."""
    import evaluate  # imported here: it pulls in transformers' pipelines, seconds on a CPU

    return evaluate.load(str(metric_path(name)))
