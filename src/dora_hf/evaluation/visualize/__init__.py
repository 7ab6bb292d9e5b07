"""`dora-hf visualize`: the objects a model discovers and tracks through a video, as a GIF or PNG.

`command` (the CLI and `visualize`), `clip_tracks` (a clip's tracks, ready to draw; also used by the
demo Space), `mask_figure` (the frame grid), `track_animation` (the GIF), `overlays` (colours and
tints shared by both).
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "OUTPUT_SUFFIXES": ".command",
    "Visualization": ".command",
    "add_arguments": ".command",
    "TrackedClip": ".clip_tracks",
    "attention_maps": ".clip_tracks",
    "model_input_size": ".clip_tracks",
    "run": ".command",
    "track_clip": ".clip_tracks",
    "visualize": ".command",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
