"""`dora-hf visualize`: the objects a model discovers and tracks through a video, as a GIF or PNG.

`command` (the CLI and `visualize`), `mask_figure` (the frame grid), `track_animation` (the GIF),
`overlays` (colours and tints shared by both).
"""

from __future__ import annotations

from ..._lazy import lazy_names

# Imported on first use: `dora-hf eval --help` imports this package without torch.
_EXPORTS = {
    "OUTPUT_SUFFIXES": ".command",
    "Visualization": ".command",
    "add_arguments": ".command",
    "attention_maps": ".command",
    "run": ".command",
    "visualize": ".command",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
