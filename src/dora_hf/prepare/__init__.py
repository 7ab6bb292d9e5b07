"""`dora-hf prepare-data`: long videos -> parquet frame shards (docs/DATA_FORMAT.md).

The stage in the order it runs: `inputs` (files, URLs, lists), `video_decode` (probe and decode
one video), `blank_frozen` (stretches left out), `faces` (optional blurring), `frame_images`
(frame -> JPEG/WebP), `rows` (a video's rows and parts), `shard_writer`, `card` (dataset card
and prepare_info.json), `pipeline` (sequential and parallel orchestration), `command` (the CLI);
`parallel/` decodes keyframe segments of one video in worker processes and resumes them.

The names below are imported on first use, so that ``import dora_hf.prepare`` needs neither
PyAV nor ``datasets``.
"""

from __future__ import annotations

from .._lazy import lazy_names

_EXPORTS = {
    "FRAME_FEATURES": ".shard_writer",
    "PrepareOptions": ".options",
    "PrepareSummary": ".summary",
    "choose_keep_every": ".options",
    "prepare_dataset": ".pipeline",
    "VideoInfo": ".video_decode",
    "decode_video_frames": ".video_decode",
    "probe_video": ".video_decode",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
