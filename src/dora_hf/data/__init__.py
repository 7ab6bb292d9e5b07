"""Video -> dataset shards, streaming clip reader, clip views.

The names below are imported on first use, so that ``dora_hf.data.views`` (plain torch) is
usable without PyAV or ``datasets`` installed, and ``python -m dora_hf.data.sample_video`` runs
cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FRAME_FEATURES": ".prepare",
    "PrepareOptions": ".prepare",
    "PrepareSummary": ".prepare",
    "choose_keep_every": ".prepare",
    "prepare_dataset": ".prepare",
    "VideoInfo": ".video_source",
    "decode_frames": ".video_source",
    "probe_video": ".video_source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
