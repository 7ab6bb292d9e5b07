"""How many clips a prepared dataset yields per epoch, from its `prepare_info.json`.

A streamed dataset has no length; the schedules need one (steps per epoch). `prepare-data` records
each video's kept frames and `keep_every`, which fixes the number of clip starts for any clip
length and step without reading a single image.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DoraUserError
from .clip_index import reference_clip_starts

INFO_FILE = "prepare_info.json"


def read_prepare_info(source: str | Path, revision: str | None = None) -> dict:
    """`prepare_info.json` of a local prepared folder or a hub dataset repo."""
    info = find_prepare_info(source, revision)
    if info is None:
        where = source if Path(source).is_dir() else f"dataset {source}"
        raise DoraUserError(f"{where} has no {INFO_FILE}: was it written by `dora-hf prepare-data`?")
    return info


def find_prepare_info(source: str | Path, revision: str | None = None) -> dict | None:
    """`prepare_info.json` of a local prepared folder or a hub dataset repo; None when it has none."""
    path = Path(source)
    if path.is_dir():
        info_path = path / INFO_FILE
        if not info_path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            info_path = Path(hf_hub_download(str(source), INFO_FILE, repo_type="dataset", revision=revision))
        except EntryNotFoundError:
            return None
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise DoraUserError(f"{info_path} is not valid JSON: {err}") from err
    if not isinstance(info, dict):
        raise DoraUserError(f"{info_path} is not a JSON object")
    return info


def decoded_frames_per_video(folder: str | Path) -> dict[str, int] | None:
    """Source frames decoded per video id, from a local folder's `prepare_info.json` (None without one)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return None
    info = read_prepare_info(folder)
    return {str(v["video_id"]): int(v["decoded_frames"]) for v in info.get("videos", []) if "decoded_frames" in v}


def count_clips(info: dict, frames_per_clip: int, clip_step: int) -> int:
    """Clips per epoch as the reference counts them: one per source-frame start, over all videos.

    A video of N decoded source frames has ``N - (T - 1) * clip_step`` starts (DORA_SPEC §1), whatever
    `keep_every` prepare-data used (see `clip_index`), as long as it keeps room for one clip.
    """
    total = 0
    for video in info.get("videos", []):
        keep_every = int(video["keep_every"])
        if clip_step % keep_every:
            raise DoraUserError(
                f"clip step {clip_step} is not a multiple of video {video['video_id']!r}'s keep_every {keep_every}"
            )
        span_rows = (frames_per_clip - 1) * (clip_step // keep_every) + 1
        if int(video["kept_frames"]) < span_rows:
            continue
        source_frames = int(video.get("decoded_frames") or int(video["kept_frames"]) * keep_every)
        total += reference_clip_starts(source_frames, frames_per_clip, clip_step)
    return total
