"""Decode long videos once into a streamable dataset folder of parquet frame shards.

``dora-hf prepare-data VIDEO [VIDEO...] --out DIR`` (files, http(s) URLs or ``--source-list FILE``,
see `inputs`) decodes each video sequentially (or, with ``--num-workers N``, in segments cut at
keyframes by N processes, with the same result: see `parallel.pool`), keeps
every n-th frame (n divides the clip step, so clips with the reference spacing can be
assembled from kept rows while streaming), shrinks it to a short side, compresses it, and
writes parquet shards ordered by time with a dataset card. The format is described in
docs/DATA_FORMAT.md. The folder appears only when complete: work happens in a temporary
sibling that is removed on any error or interrupt. The output folder is claimed for the whole run
and only an earlier prepare-data output is ever replaced (with --overwrite); see `staged_folder`.

``--part I/N`` prepares the I-th of N parts of the inputs (see `inputs`), so that N machines share
the work; the lists are read, and the part checked, before the folder is claimed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..dataset.split_parts import ENTRY_KEY, SplitRecord
from ..errors import DoraUserError
from ..folders.staged_folder import staged_folder
from . import faces
from .blank_frozen import grey_thumbnail
from .card import render_dataset_card, write_prepare_info
from .frame_images import check_frame_size, encode_image, frame_to_image, stored_size
from .inputs import (
    PartNumber,
    ResolvedVideo,
    gather_sources,
    resolve_videos,
    split_sources,
)
from .options import PrepareOptions
from .parallel.segment_decode import FrameSettings
from .parallel.segment_store import ResumeFolder, SegmentFileWriter, SegmentRecord, VideoSegments, segment_key
from .parallel.segments import whole_video
from .plan import VideoPlan, check_unique_ids, plan_video
from .rows import VideoRows
from .shard_writer import ShardWriter
from .summary import PrepareSummary, VideoSummary
from .video_decode import VideoInfo, check_complete, decode_video_frames, probe_video


# Names other modules and users import from here (the flat layout's `dora_hf.data.prepare`).
__all__ = ["PrepareOptions", "PrepareSummary", "VideoSummary", "prepare_dataset"]


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
    part: str | PartNumber | None = None,
) -> PrepareSummary:
    """Decode ``videos`` once each into the dataset folder ``out_dir`` (see the module doc).

    ``videos`` are paths or http(s) URLs, followed by the entries of ``source_lists`` (see
    `sources`). The folder is claimed before any URL is downloaded, and all videos are probed and
    planned before any is decoded, so bad input fails within seconds. ``out_dir`` appears only
    when everything succeeded. ``num_workers`` > 1 decodes in that many processes
    (`parallel_prepare`), with the same result. ``part`` (``"I/N"``) prepares the I-th of N parts
    of the inputs (`inputs.split_sources`) and records the split in ``prepare_info.json``.
    """
    options = options or PrepareOptions()
    options.validate()
    if num_workers < 1:
        raise DoraUserError(f"--num-workers must be at least 1 (got {num_workers})")
    if part is not None and not isinstance(part, PartNumber):
        part = PartNumber.parse(part)
    if part is not None and not source_lists:
        raise DoraUserError(f"--part {part} splits a list of videos: give it with --source-list FILE")
    if options.blur_faces:
        faces.check_available()  # a missing detector fails before any folder or video is touched
    say = log or (lambda _line: None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers > max(cores, 2):  # more processes than cores only fight over them
        say(f"--num-workers {num_workers} is more than the {cores} cores this process may use: using {max(cores, 2)}")
        num_workers = max(cores, 2)
    out_dir = Path(os.path.abspath(out_dir))  # a name to put the temporary sibling beside, even for "x/."
    # The lists are read (a hub or URL list fetched) and the part chosen before the folder is claimed:
    # a malformed line or a wrong --part writes nothing.
    sources = gather_sources(videos, source_lists)
    split: SplitRecord | None = None
    if part is not None:
        sources, split = split_sources(sources, part, source_lists)
        say(
            f"part {part} of {len(split.entries)} videos (entry k, in list order, goes to part k % {part.count} + 1): "
            + ", ".join(e.video_id or e.source for e in split.entries_of(part.index))
        )
    # Claimed and checked before any video is downloaded or opened: a second prepare-data into the
    # same folder fails at once instead of downloading the same videos.
    with staged_folder(out_dir, overwrite, kind="dataset", command="prepare-data", log=say) as tmp_dir:
        resolved = resolve_videos(sources, download_dir=download_dir, log=say, progress=progress)
        with _naming_downloads(resolved):
            plans = [plan_video(_with_list_name(probe_video(v.path), v), options) for v in resolved]
            if not plans:
                raise DoraUserError("no VIDEO given")
            check_unique_ids(plans)
            summary = _write_dataset(plans, resolved, options, out_dir, tmp_dir, progress, say, num_workers, split)
    say(
        f"wrote {summary.num_rows} frames in {len(summary.shards)} shard(s) to {out_dir} "
        f"({summary.decoded_frames} frames decoded in {summary.seconds:.1f} s: {summary.frames_per_second:.0f} frames/s"
        + (f", {num_workers} processes)" if num_workers > 1 else ")")
    )
    return summary


@dataclasses.dataclass(frozen=True)
class NamedVideoInfo(VideoInfo):
    """A video the list names: its rows carry the name's slug as video_id instead of the file stem
    (a YouTube download's stem is its opaque id)."""

    list_video_id: str = ""

    @property
    def video_id(self) -> str:
        return self.list_video_id


def _with_list_name(info: VideoInfo, video: ResolvedVideo) -> VideoInfo:
    """``info`` under the video_id its list line names, if it names one."""
    named = video.source.named_id if video.source is not None else None
    if named is None:
        return info
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(VideoInfo)}
    return NamedVideoInfo(**fields, list_video_id=named)


@contextlib.contextmanager
def _naming_downloads(resolved: Sequence[ResolvedVideo]) -> Iterator[None]:
    """An error about a cached download names its URL and how to fetch it again (files cached by
    an older dora-hf were not verified when they were downloaded)."""
    try:
        yield
    except DoraUserError as err:
        for video in resolved:
            if video.url is not None and str(err).startswith(f"{video.path}:"):
                raise DoraUserError(
                    f"{err} [downloaded from {video.url}; delete {video.path} to download it again]"
                ) from None
        raise


def _write_dataset(
    plans: Sequence[VideoPlan],
    resolved: Sequence[ResolvedVideo],
    options: PrepareOptions,
    out_dir: Path,
    tmp_dir: Path,
    progress: bool,
    say: Callable[[str], None],
    num_workers: int,
    split: SplitRecord | None = None,
) -> PrepareSummary:
    """Decode every planned video into the shards, info file and card of the staging folder `tmp_dir`."""
    started = time.perf_counter()
    writer = ShardWriter(tmp_dir / "data", options.frames_per_shard)
    resume = ResumeFolder(out_dir)
    if num_workers == 1 and resume.exists():  # an interrupted run's segments: finish them, not start over
        say(f"{resume.root}: holds segments of an interrupted run: resuming it with 1 worker process")
    try:
        with contextlib.ExitStack() as stack:
            if num_workers > 1 or resume.exists():
                videos = _parallel_videos(plans, options, writer, resume, num_workers, progress, say, stack)
            else:
                videos = _sequential_videos(plans, options, writer, resume, progress, say, stack)
            summaries: list[VideoSummary] = []
            sources: list[dict] = []
            for plan, video, (parts, source) in zip(plans, resolved, videos):
                url = video.url
                taken = {v.video_id for v in summaries} | {p.info.video_id for p in plans if p is not plan}
                clash = [part.video_id for part in parts[1:] if part.video_id in taken]
                if clash:  # readers key on video_id: a part must not take another video's id
                    raise DoraUserError(
                        f"{plan.info.path}: its part {clash[0]!r} has the video_id of another video; rename that file"
                    )
                if url is not None:
                    parts = [dataclasses.replace(part, url=url) for part in parts]
                    source["url"] = url
                if video.source is not None and video.source.name is not None:
                    source["name"] = video.source.name  # as the list writes it; video_id is its slug
                if split is not None and video.source is not None:
                    source[ENTRY_KEY] = video.source.entry
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
            write_prepare_info(tmp_dir / "prepare_info.json", summary, split)
            render_dataset_card(summary, split).save(tmp_dir / "README.md")
    except BaseException:
        writer.abort()  # close the open shard; staged_folder removes the folder
        raise
    return summary


def _sequential_videos(
    plans: Sequence[VideoPlan],
    options: PrepareOptions,
    writer: ShardWriter,
    resume: ResumeFolder,
    progress: bool,
    say: Callable[[str], None],
    stack: contextlib.ExitStack,
) -> Iterator[tuple[list[VideoSummary], dict]]:
    """Decode the videos one after the other in this process (``--num-workers 1``).

    Each video but the last also keeps its kept frames in the resume folder, as the one segment of
    a whole-video plan (the form the parallel path resumes from), so that a later video's failure
    or an interrupt loses no finished decoding: the same command resumes from them, as it does
    after a parallel run. The last video needs no copy (nothing after it can fail its work), so a
    one-video run writes nothing more than before. The folder lives as long as ``stack``.
    """
    if len(plans) > 1:
        stack.enter_context(_resume_folder_kept_on_failure(resume, [plan.info.video_id for plan in plans], say))
    for number, plan in enumerate(plans, start=1):
        say(f"{plan.info.path.name}: {plan.info.describe()}")
        say(f"{plan.info.path.name}: {plan.describe()}")
        store = None
        if number < len(plans):
            store = resume.video(plan.info.video_id)
            settings = dataclasses.asdict(_frame_settings(plan, options))
            store.save_plan(segment_key(plan.info.path, settings), whole_video())
        yield _write_video(plan, options, writer, progress, say, store)


@contextlib.contextmanager
def _resume_folder_kept_on_failure(
    resume: ResumeFolder, video_ids: list[str], say: Callable[[str], None]
) -> Iterator[None]:
    """The resume folder for this run's videos: removed once the dataset is written, kept with its
    finished work when the run fails (as `parallel.pool.ParallelDecoder` keeps it)."""
    resume.open(video_ids)
    try:
        yield
    except BaseException:
        resume.keep_after_failure(say)
        raise
    resume.remove()


def _frame_settings(plan: VideoPlan, options: PrepareOptions) -> FrameSettings:
    """How the video's kept frames are stored (and what its segments in the resume folder depend on)."""
    width, height = stored_size(*plan.info.display_size, options.short_side)
    return FrameSettings(plan.keep_every, width, height, options.image_format, options.quality, options.blur_faces)


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
    from .parallel.pool import ParallelDecoder, VideoJob

    jobs = []
    for plan in plans:
        say(f"{plan.info.path.name}: {plan.info.describe()}")
        say(f"{plan.info.path.name}: {plan.describe()}")
        jobs.append(VideoJob(plan.info, _frame_settings(plan, options)))
    decoder = stack.enter_context(ParallelDecoder(jobs, num_workers, resume, progress=progress, say=say))
    for plan, video in zip(plans, decoder.videos()):
        rows = VideoRows(plan, options, writer)
        first = None
        for kept in video.kept_frames():
            rows.add(kept.frame_index, kept.timestamp, kept.tick, kept.image, kept.width, kept.height, kept.grey)
            first = kept.timestamp if first is None else first
        last = video.last_time
        check_complete(plan.info, video.decoded, last - first if first is not None and last is not None else None)
        yield rows.finish(video.decoded, video.faces_blurred if options.blur_faces else None, say)


def _write_video(
    plan: VideoPlan,
    options: PrepareOptions,
    writer: ShardWriter,
    progress: bool,
    say: Callable[[str], None],
    store: VideoSegments | None = None,
) -> tuple[list[VideoSummary], dict]:
    """Decode one video in this process, keep every n-th frame and append its rows (see :class:`VideoRows`);
    with ``store``, also keep the kept frames there as its one finished segment (see :func:`_sequential_videos`)."""
    info = plan.info
    rows = VideoRows(plan, options, writer)
    blurrer = faces.FaceBlurrer() if options.blur_faces else None
    kept = SegmentFileWriter(store.arrow_path(0)) if store is not None else None
    decoded = 0
    last_time = 0.0
    with contextlib.ExitStack() as unfinished, tqdm(
        total=info.num_frames,
        desc=info.video_id,
        unit="frame",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    ) as bar:
        if kept is not None:
            unfinished.callback(kept.discard)  # a video that fails part-way keeps nothing
        for decoded_frame in decode_video_frames(info):
            decoded += 1
            last_time = max(last_time, decoded_frame.timestamp)
            bar.update(1)
            if decoded_frame.index % plan.keep_every:
                continue
            frame = decoded_frame.frame
            check_frame_size(info, frame, decoded_frame.index)
            image = frame_to_image(frame, rows.size, info.rotation)
            if blurrer is not None:
                image = blurrer(image)
            row = (
                decoded_frame.index,
                decoded_frame.timestamp,
                float(frame.time_base) if frame.time_base else 0.0,
                encode_image(image, options.image_format, options.quality),
                image.width,
                image.height,
                grey_thumbnail(image),
            )
            rows.add(*row)
            if kept is not None:
                kept.add(*row)
        unfinished.pop_all()
    faces_blurred = blurrer.faces_blurred if blurrer is not None else None
    if kept is not None:
        kept.commit(SegmentRecord(0, decoded, kept.kept, faces_blurred or 0, 0, last_time))
    return rows.finish(decoded, faces_blurred, say)


