"""How many clips a prepared dataset yields per epoch, from its `prepare_info.json`.

A streamed dataset has no length; the schedules need one (steps per epoch). `prepare-data` records
each video's kept frames and `keep_every`, which fixes the number of clip starts for any clip
length and step without reading a single image.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DoraUserError

INFO_FILE = "prepare_info.json"


def read_prepare_info(source: str | Path, revision: str | None = None) -> dict:
    """`prepare_info.json` of a local prepared folder or a hub dataset repo."""
    path = Path(source)
    if path.is_dir():
        info_path = path / INFO_FILE
        if not info_path.is_file():
            raise DoraUserError(f"{path} has no {INFO_FILE}: was it written by `dora-hf prepare-data`?")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            info_path = Path(hf_hub_download(str(source), INFO_FILE, repo_type="dataset", revision=revision))
        except EntryNotFoundError as err:
            raise DoraUserError(f"dataset {source} has no {INFO_FILE}: was it written by `dora-hf prepare-data`?") from err
    try:
        return json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise DoraUserError(f"{info_path} is not valid JSON: {err}") from err


def count_clips(info: dict, frames_per_clip: int, clip_step: int) -> int:
    """Clip starts over all videos for clips of `frames_per_clip` frames `clip_step` source frames apart."""
    total = 0
    for video in info.get("videos", []):
        keep_every = int(video["keep_every"])
        if clip_step % keep_every:
            raise DoraUserError(
                f"clip step {clip_step} is not a multiple of video {video['video_id']!r}'s keep_every {keep_every}"
            )
        span_rows = (frames_per_clip - 1) * (clip_step // keep_every) + 1
        total += max(0, int(video["kept_frames"]) - span_rows + 1)
    return total
