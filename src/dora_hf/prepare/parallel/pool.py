"""Decode the videos of one `prepare-data` run in a pool of processes (``--num-workers N``).

One 4K60 Walking Tours video takes about 1.4 h to decode on 2 cores, so parallel videos are not
enough: each video is cut at keyframes into about ``N x SEGMENTS_PER_WORKER`` segments in all
(`segments`), in proportion to its length, and the segments are decoded by N worker processes
(`segment_decode`), started with ``spawn`` (no forked threads of the parent's libraries). Each
worker writes its segment's kept frames to the resume folder (`segment_store`). The parent hands
each video back, in order, once all its segments are finished; `prepare` then writes its rows
exactly as a single process does (stretches, spacing, parts and shards are decided there, over
the whole video), so the dataset is the same, shard for shard.

Failures keep the order of a single-process run: the error reported is the first one in video and
time order (a later segment that fails first waits for the earlier ones). Ctrl-C reaches only the
parent (workers ignore SIGINT), which stops the workers; a worker killed outright is one error
saying so. Either way the finished segments stay in the resume folder, and the same command
resumes from them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from ...errors import DoraUserError
from ..video_decode import VideoInfo, check_complete
from .segment_decode import (
    FrameSettings,
    SegmentOutcome,
    SegmentTask,
    decode_segment,
    init_worker,
)
from .segment_store import (
    KeptFrame,
    ResumeFolder,
    SegmentRecord,
    VideoSegments,
    read_kept_frames,
    segment_key,
)
from .segments import (
    KeyframeScan,
    Segment,
    scan_keyframes,
    share_pieces,
    split_at_keyframes,
    whole_video,
)

SEGMENTS_PER_WORKER = 4
"""Segments per worker process (over all videos): enough that the last ones to finish are short."""

POLL_S = 0.25
"""How often the parent wakes to update the progress bar while it waits for workers."""
CRASH_REAP_S = 2.0
"""How long, after a worker died, to wait for each worker's exit code (the pool stops the rest)."""


@dataclass(frozen=True)
class VideoJob:
    """One planned video: where it is and how its kept frames are stored."""

    info: VideoInfo
    settings: FrameSettings


@dataclass(frozen=True)
class DecodedVideo:
    """A video whose segments are all finished: its kept frames, in order, and its totals."""

    job: VideoJob
    store: VideoSegments
    segments: tuple[Segment, ...]
    records: tuple[SegmentRecord, ...]

    @property
    def decoded(self) -> int:
        """Source frames decoded: what a single decode from the start counts."""
        return sum(r.decoded for r in self.records)

    @property
    def faces_blurred(self) -> int:
        return sum(r.faces_blurred for r in self.records)

    @property
    def last_time(self) -> float | None:
        """Presentation time (seconds) of its last decoded frame; None when a record does not say."""
        times = [r.last_time for r in self.records]
        return None if not times or None in times else max(times)

    def kept_frames(self) -> Iterator[KeptFrame]:
        for segment in self.segments:
            yield from read_kept_frames(self.store.arrow_path(segment.index))


@dataclass
class _Video:
    """The parent's bookkeeping for one video."""

    job: VideoJob
    store: VideoSegments
    key: dict
    pieces: int
    segments: list[Segment] | None = None
    records: dict[int, SegmentRecord] = field(default_factory=dict)
    generation: int = 0
    """Bumped when the video is planned again (decoded in one piece): older outcomes are ignored."""

    @property
    def name(self) -> str:
        return self.job.info.path.name

    @property
    def finished(self) -> bool:
        return self.segments is not None and len(self.records) == len(self.segments)


@dataclass(frozen=True)
class _Tag:
    """What a future computes: a keyframe scan (segment -1) or a segment, of one video and plan."""

    video: int
    generation: int
    segment: int

    @property
    def order(self) -> tuple[int, int]:
        return (self.video, self.segment)


class ParallelDecoder:
    """Decode ``jobs`` with ``num_workers`` processes into ``resume``; :meth:`videos` yields them in order.

    Use as a context manager: leaving it normally removes the resume folder (the dataset is
    complete); leaving it by an exception stops the workers and keeps the finished segments.
    """

    def __init__(
        self,
        jobs: Sequence[VideoJob],
        num_workers: int,
        resume: ResumeFolder,
        *,
        progress: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self.jobs = list(jobs)
        self.num_workers = num_workers
        self.resume = resume
        self.progress = progress
        self.say = say
        self._videos: list[_Video] = []
        self._futures: dict[Future, _Tag] = {}
        self._errors: dict[tuple[int, int], BaseException] = {}
        self._executor: ProcessPoolExecutor | None = None
        self._counters: Any = None
        self._bar: tqdm | None = None
        self._initial = 0
        self._discarded = 0
        self._seen_processes: dict[int, multiprocessing.Process] = {}
        """Every worker process seen, so that a crash can say how the dead one ended."""

    # ---- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> ParallelDecoder:
        try:
            self._start()
        except BaseException:
            self._stop(failed=True)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._stop(failed=exc_type is not None)

    def _start(self) -> None:
        stale = self.resume.open([job.info.video_id for job in self.jobs])
        if stale:
            self.say(f"{self.resume.root}: removed the segments of {', '.join(stale)} (not in this run)")
        pieces = share_pieces([_expected_frames(job.info) for job in self.jobs], self.num_workers * SEGMENTS_PER_WORKER)
        for job, share in zip(self.jobs, pieces):
            store = self.resume.video(job.info.video_id)
            key = segment_key(job.info.path, asdict(job.settings))
            video = _Video(job, store, key, share)
            segments, changed = store.load_plan(key)
            if segments is not None:
                video.segments = segments
                video.records = store.finished(segments)
                self._initial += sum(r.decoded for r in video.records.values())
                self.say(
                    f"{video.name}: resuming: {len(video.records)} of {len(segments)} segment(s) were decoded by an "
                    "earlier run of this command"
                )
            elif changed is not None:
                self.say(f"{video.name}: {changed} since the interrupted run: its decoded segments are discarded")
                store.clear()
            self._videos.append(video)
        context = multiprocessing.get_context("spawn")
        self._counters = context.Array("q", self.num_workers, lock=False)
        self._executor = ProcessPoolExecutor(
            max_workers=self.num_workers,
            mp_context=context,
            initializer=init_worker,
            initargs=(self._counters, context.Value("i", 0), os.getpid()),
        )
        total = sum(video.job.info.num_frames or 0 for video in self._videos)
        self._bar = tqdm(
            total=total or None,
            initial=self._initial,
            desc=f"decoding ({self.num_workers} processes)",
            unit="frame",
            disable=not self.progress,
            file=sys.stderr,
            mininterval=0.5,
            dynamic_ncols=True,
        )
        for index, video in enumerate(self._videos):
            if video.segments is None:
                self._submit(_Tag(index, video.generation, -1), scan_keyframes, video.job.info.path)
            else:
                self._submit_segments(index)

    def _stop(self, failed: bool) -> None:
        """Shut the pool down; on failure stop the workers at once and say what the resume folder keeps."""
        if self._executor is not None:
            if failed:
                _terminate(self._executor)
            else:
                self._executor.shutdown(wait=True)
            self._executor = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if failed:
            self.resume.keep_after_failure(self.say)
        else:
            self.resume.remove()

    # ---- results, in order --------------------------------------------------------------------

    def videos(self) -> Iterator[DecodedVideo]:
        """Each video once all its segments are finished, in order; raises the first error in that order."""
        for index, video in enumerate(self._videos):
            while not video.finished:
                self._raise_first_error(index)
                self._pump()
            self._raise_first_error(index)
            assert video.segments is not None
            yield DecodedVideo(
                video.job,
                video.store,
                tuple(video.segments),
                tuple(video.records[s.index] for s in video.segments),
            )

    def _raise_first_error(self, index: int) -> None:
        """Raise the first error in order once nothing before it can still fail (as one process would)."""
        if not self._errors:
            return
        first = min(self._errors)
        video_index, segment = first
        if video_index != index:
            return  # a later video's: the videos before it are handed back (or fail) first
        video = self._videos[index]
        earlier = [s.index for s in video.segments or [] if s.index < segment]
        if all(i in video.records for i in earlier):
            raise self._errors[first]

    def _pump(self) -> None:
        """Wait a little for workers; handle what finished; update the progress bar."""
        if not self._futures:
            raise RuntimeError("parallel decoding is waiting for a video that no worker is decoding")
        self._seen_processes.update(getattr(self._executor, "_processes", None) or {})
        done, _ = wait(list(self._futures), timeout=POLL_S, return_when=FIRST_COMPLETED)
        for future in done:
            if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
                raise self._crashed() from future.exception()
        for future in done:
            self._handle(self._futures.pop(future), future)
        self._update_bar()

    def _handle(self, tag: _Tag, future: Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        video = self._videos[tag.video]
        if tag.generation != video.generation:
            return  # from a plan given up since (the video is decoded in one piece now)
        if error is not None:
            self._errors[tag.order] = error
        elif tag.segment < 0:
            self._plan(tag.video, future.result())
        else:
            outcome: SegmentOutcome = future.result()
            assert video.segments is not None
            segment = video.segments[tag.segment]
            if outcome.misaligned is not None:
                self._decode_whole(tag.video, segment, outcome)
            else:
                self._record_finished(video, segment, outcome)

    def _record_finished(self, video: _Video, segment: Segment, outcome: SegmentOutcome) -> None:
        video.records[segment.index] = SegmentRecord(
            segment.index, outcome.decoded, outcome.kept, outcome.faces_blurred, 0, outcome.last_time
        )

    # ---- planning -----------------------------------------------------------------------------

    def _plan(self, index: int, scan: KeyframeScan) -> None:
        """Cut a scanned video into its share of segments, record the plan, and queue the segments."""
        video = self._videos[index]
        segments = split_at_keyframes(scan, video.pieces)
        reason = scan.reason or "too few keyframes"
        if len(segments) > 1:
            try:
                check_complete(video.job.info, scan.frames, scan.span_s)
            except DoraUserError:
                segments, reason = whole_video(), "demuxing found fewer frames than the container states"
        if video.pieces > 1 and len(segments) == 1:
            self.say(f"{video.name}: decoded by one process ({reason} to cut it at keyframes)")
        video.segments = segments
        video.store.save_plan(video.key, segments)
        self._submit_segments(index)

    def _decode_whole(self, index: int, segment: Segment, outcome: SegmentOutcome) -> None:
        """A segment did not decode as the scan said: give up the cut and decode the video from its start."""
        video = self._videos[index]
        self.say(
            f"{video.name}: segment {segment.index} ({segment.describe()}): {outcome.misaligned}; "
            "decoding the whole video in one process instead"
        )
        self._discarded += outcome.decoded + sum(r.decoded for r in video.records.values())
        video.generation += 1
        for future, tag in list(self._futures.items()):
            if tag.video == index:
                future.cancel()
        self._errors = {k: v for k, v in self._errors.items() if k[0] != index}
        video.segments, video.records = whole_video(), {}
        video.store.save_plan(video.key, video.segments)
        self._submit_segments(index)

    def _submit_segments(self, index: int) -> None:
        video = self._videos[index]
        assert video.segments is not None
        threads = max(1, _cores() // self.num_workers)
        for segment in video.segments:
            if segment.index not in video.records:
                whole = segment.frames is None  # decoded as one process does, threads included
                task = SegmentTask(video.job.info, video.job.settings, segment, video.store.folder, 0 if whole else threads)
                self._submit(_Tag(index, video.generation, segment.index), decode_segment, task)

    def _submit(self, tag: _Tag, fn: Callable[..., Any], *args: Any) -> None:
        assert self._executor is not None
        try:
            future = self._executor.submit(fn, *args)
        except BrokenProcessPool as err:
            raise self._crashed() from err
        self._futures[future] = tag

    # ---- progress and failures ----------------------------------------------------------------

    def _update_bar(self) -> None:
        if self._bar is None or self._counters is None:
            return
        value = self._initial + sum(self._counters) - self._discarded
        if value > self._bar.n:
            self._bar.update(value - self._bar.n)

    def _crashed(self) -> DoraUserError:
        """The one error for a worker process that died (killed, out of memory, a crash in a decoder)."""
        # A worker started since the last poll is only in the pool's own table (while it lasts).
        self._seen_processes.update(getattr(self._executor, "_processes", None) or {})
        for process in self._seen_processes.values():
            if process.exitcode is None:
                process.join(CRASH_REAP_S)  # the pool stops the others; an exit code is known once reaped
        codes = {p.exitcode for p in self._seen_processes.values() if p.exitcode not in (None, 0)}
        unexpected = codes - {-signal.SIGTERM} or codes  # the pool terminates the others once one died
        how = ", ".join(sorted(_describe_exit(code) for code in unexpected)) or "it ended abruptly"
        # Workers take segments in the order they were queued: the earliest outstanding ones were running.
        outstanding = [t for t in self._futures.values() if t.segment >= 0][: self.num_workers]
        running = list(dict.fromkeys(self._videos[t.video].name for t in outstanding))
        where = f" while decoding {', '.join(running)}" if running else ""
        return DoraUserError(
            f"a decoding process stopped{where} ({how}; out of memory, or killed?); "
            "run the same command again to resume from the finished segments"
        )


def _expected_frames(info: VideoInfo) -> int:
    """Frames the container states or implies (0 when unknown), to share out the segments."""
    if info.num_frames is not None:
        return info.num_frames
    return round((info.duration_s or 0) * info.fps)


def _cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _processes(executor: ProcessPoolExecutor | None) -> list[multiprocessing.Process]:
    """The pool's worker processes (``ProcessPoolExecutor`` keeps them in ``_processes``)."""
    processes = getattr(executor, "_processes", None) or {}
    return list(processes.values())


def _terminate(executor: ProcessPoolExecutor) -> None:
    """Stop every worker now (SIGTERM, then SIGKILL), without waiting for the segments they decode."""
    processes = _processes(executor)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
