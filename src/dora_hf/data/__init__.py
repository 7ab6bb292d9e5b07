"""Video -> dataset shards, streaming clip reader, clip views.

``dora_hf.data.sample_video`` (a short real video for demos) is not imported here, so that
``python -m dora_hf.data.sample_video`` runs it cleanly.
"""

from .prepare import FRAME_FEATURES, PrepareOptions, PrepareSummary, choose_keep_every, prepare_dataset
from .video_source import VideoInfo, decode_frames, probe_video

__all__ = [
    "FRAME_FEATURES",
    "PrepareOptions",
    "PrepareSummary",
    "VideoInfo",
    "choose_keep_every",
    "decode_frames",
    "prepare_dataset",
    "probe_video",
]
