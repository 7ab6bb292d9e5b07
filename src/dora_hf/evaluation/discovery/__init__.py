"""Object discovery: without labels on a static-camera video, and against known objects.

`scoring` (the moving foreground and the figures that score tracked objects against it), `video`
(a model's tracker run over a video's clips and scored), `known_objects` (scores against
ground-truth instance maps, e.g. the controlled tour's); the command is `dora-hf eval discovery`.
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "KnownObjectScores": ".known_objects",
    "box_corloc": ".known_objects",
    "found_share": ".known_objects",
    "identity_share": ".known_objects",
    "match_objects": ".known_objects",
    "score_known_objects": ".known_objects",
    "ForegroundReference": ".scoring",
    "METRIC_NAMES": ".scoring",
    "Tracker": ".scoring",
    "best_region_iou": ".scoring",
    "centre_square": ".scoring",
    "clean_foreground": ".scoring",
    "clip_scores": ".scoring",
    "clip_starts": ".scoring",
    "connected_components": ".scoring",
    "dilate": ".scoring",
    "downscale": ".scoring",
    "erode": ".scoring",
    "evaluate_discovery": ".scoring",
    "foreground_masks": ".scoring",
    "foreground_reference": ".scoring",
    "mask_precision": ".scoring",
    "mutual_iou": ".scoring",
    "pairwise_iou": ".scoring",
    "random_masks_like": ".scoring",
    "temporal_iou": ".scoring",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
