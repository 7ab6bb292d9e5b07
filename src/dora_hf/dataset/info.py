"""A prepared dataset's `prepare_info.json`, from a local folder or a hub dataset repo.

`prepare-data` records each video's kept frames, `keep_every` and decoded source frames there, which
fix the number of clip starts for any clip length and step without reading a single image
(`clip_index.count_clips`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DoraUserError

INFO_FILE = "prepare_info.json"


def looks_local(source: str | Path) -> bool:
    """A Path, an existing path, or anything that cannot be a hub ``owner/name`` id is local."""
    if isinstance(source, Path):
        return True
    text = str(source)
    return (
        Path(text).expanduser().exists()
        or text.startswith((".", "/", "~"))
        or text.count("/") != 1
        or "\\" in text
    )


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
