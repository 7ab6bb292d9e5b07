"""DAVIS-2017 video object segmentation by label propagation, scored with J&F.

`folder` reads a DAVIS folder, `label_propagation` carries the first frame's labels through the
video on frozen patch features, `region_boundary` scores region (J) and boundary (F), `evaluate`
runs a sequence end to end; the command is `dora-hf eval davis`.
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "BackbonePatchFeatures": ".evaluate",
    "FeatureFunction": ".evaluate",
    "evaluate_davis": ".evaluate",
    "segment_sequence": ".evaluate",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
