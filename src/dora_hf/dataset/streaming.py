"""Streaming clip reader: DoRA's clips of ``T`` frames, ``s`` source frames apart (DORA_SPEC §1).

The prepared dataset (docs/DATA_FORMAT.md) stores one row per kept frame, every ``keep_every``
(n) source frames, in time order, in parquet row groups of (by default) 100 rows. A clip with step
``s`` takes rows ``r, r + s/n, ..., r + (T-1)s/n`` of one video. Every kept frame is a clip start,
as in the reference where every source frame is one (``clip_stride`` thins the starts). This is
the streaming mode: it reads a hub dataset (or a folder) without downloading it, each reader
fetching only its own row groups.

Plan. Opening reads the small metadata columns (video id, frame index, keep_every, source fps) of
every row, not the images (:class:`~dora_hf.dataset.shards.ShardSource`), and numbers every
clip of the dataset in time order. So every process knows, without reading an image, how many
clips start in each row group, and the layout errors (a gap inside a video, a step that
keep_every does not divide) are raised before training starts.

Splitting. The unit is one row group of one shard. Each epoch permutes the units (seeded by
``seed`` and the epoch) and lays their clips end to end in that order; like
``DistributedSampler(drop_last=True)`` over that sequence, rank ``k`` of ``W`` takes the ``k``-th
of ``W`` equal runs of ``N // W`` clips (the last ``N % W`` clips of the sequence, fewer than
``W`` and different ones each epoch, are left out), and each data-loader worker takes an equal
part (to one clip) of its rank's run. So every rank yields the same number of clips per epoch,
and every worker is busy whatever the number of shards: a 1-shard dataset feeds several
processes. A unit at the edge of two runs is shared: each reader takes its own clips of it. A
reader owns the clips that start in its part of a unit and reads on into the following row groups
(across shards) for the rest of their frames, so no clip is lost or duplicated across readers; it
reads no row group that holds none of its frames. Reading on costs up to one more row group per
unit: pyarrow stops at the data page holding the last frame needed, and a row group written as
a single page (what ``dora-hf prepare-data`` writes) is read whole.

Order. Rows must stay in time order, so ``datasets``' row-level shuffle is not used: beyond the
unit permutation, clips are mixed in a seeded buffer of ``shuffle_buffer`` clips per reader. Only
the frames of emitted clips are decoded, when they leave the buffer.

Several datasets. ``source`` may be several prepared folders or hub ids (the parts of a split
preparation, or any with the same frame settings): they are checked against each other first
(`combined`), opened each (each against its own manifest) and laid end to end in the order
`combined` gives, as one dataset of all their shards and row groups. No video is in two of them,
so no clip crosses from one into the next.

Resume. A reader's clip order is a pure function of (seed, epoch, world size, rank, workers per
process, worker), so the state is the number of clips each reader has handed out. A restored
reader replays its buffer draws on clip numbers alone, reads only the units whose clips were not
all handed out yet, and goes on from there. See :meth:`ClipStream.state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from itertools import chain, islice, repeat
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch

from ..errors import DoraUserError
from .clip_images import decode_clip_images
from .combined import DatasetValue, clip_numbering_id, dataset_sources, open_dataset_set
from .shards import RowGroupReader, ShardSource
from .stream_plan import ClipSettings, plan_stream

logger = logging.getLogger(__name__)


_STATE_FORMAT = "dora_hf.ClipStream/2"

_T = TypeVar("_T")


class _Clip(NamedTuple):
    """A clip before decoding: which frames, their compressed images and their shards."""

    video_id: str
    frame_indices: tuple[int, ...]
    images: tuple[bytes | None, ...]
    shards: tuple[int, ...]


def _buffer_shuffle(items: Iterable[_T], size: int, rng: np.random.Generator) -> Iterator[_T]:
    """Mix a stream through a buffer of ``size`` items: each arrival evicts a random one.

    The draws depend only on the number of items, so the same rng on clip numbers alone gives the
    order in which clips leave the buffer (used to resume without reading what was handed out).
    """
    buffer: list[_T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    yield from (buffer[j] for j in rng.permutation(len(buffer)))


class ClipStream(torch.utils.data.IterableDataset):
    """Clips of consecutive-in-time frames, streamed from a prepared dataset.

    Each item is ``{"frames": uint8 (T, 3, H, W), "video_id": str, "start_frame": int,
    "frame_indices": int64 (T,), "stream_position": int64 (3,)}``; ``stream_position`` is
    bookkeeping for resuming (worker slot, workers, clip number) that :meth:`mark_consumed` reads.
    Every process yields :attr:`clips_per_process` clips per epoch. Build it with
    :meth:`from_source`; batch it with :func:`collate_clips`::

        stream = ClipStream.from_source("me/walking-tours-venice", rank=rank, world_size=world_size)
        loader = DataLoader(stream, batch_size=16, num_workers=4, collate_fn=collate_clips)
        stream.load_state_dict(saved)  # when resuming; before the loader starts its workers
        for epoch in range(saved["epoch"], epochs):
            stream.set_epoch(epoch)
            for batch in loader:
                ...
                stream.mark_consumed(batch)  # then stream.state_dict() goes into the checkpoint
    """

    def __init__(self, shards: ShardSource, settings: ClipSettings, *, rank: int = 0, world_size: int = 1) -> None:
        settings.check()
        if world_size < 1 or not 0 <= rank < world_size:
            raise DoraUserError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        plan = plan_stream(shards, settings)
        if plan.num_clips < world_size:
            raise DoraUserError(
                f"{shards.source} holds {plan.num_clips} clip(s) of {settings.frames_per_clip} frames "
                f"({shards.num_shards} shard(s), {plan.num_units} row group(s)), fewer than world_size={world_size}: "
                f"every process needs at least one; use fewer processes, shorter clips or more data"
            )
        self._shards = shards
        self._plan = plan
        self.settings = settings
        self.rank = rank
        self.world_size = world_size
        # In shared memory so that persistent DataLoader workers see set_epoch() calls.
        self._shared_epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._warned_sharing = False
        # Clips consumed so far this epoch, per worker slot; the layout is the number of slots.
        self._layout: int | None = None
        self._positions: list[int] = []
        # Where the next iteration of ``_resume_epoch`` starts, set by load_state_dict.
        self._resume: tuple[int, list[int]] | None = None
        self._resume_epoch = 0

    @classmethod
    def from_source(
        cls,
        source: DatasetValue,
        *,
        frames_per_clip: int = 8,
        clip_step: int | None = None,
        clip_step_seconds: float | None = None,
        clip_stride: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        split: str = "train",
        streaming: bool = True,
        rank: int = 0,
        world_size: int = 1,
        revision: str | None = None,
    ) -> ClipStream:
        """Open a prepared folder or hub dataset repo id as a clip stream.

        Args:
            source: folder written by ``dora-hf prepare-data``, or a hub dataset repo id; or several,
                read as one (see the module doc).
            frames_per_clip: ``T``, frames per clip (reference 8).
            clip_step: source frames between a clip's frames (reference 60); must be a multiple of
                every video's ``keep_every``. Default 60 unless ``clip_step_seconds`` is given.
            clip_step_seconds: the step in seconds instead, converted per video with its
                ``source_fps`` and rounded to the nearest multiple of its ``keep_every`` (logged).
            clip_stride: kept frames between clip starts (1 = every kept frame starts a clip).
            shuffle: permute the row groups per epoch and mix clips in a buffer; ``False`` gives
                each reader its clips in time order (one process, no workers: the whole dataset).
            shuffle_buffer: clips held for mixing (memory: compressed images of about this many
                clips times ``T``, shared between overlapping clips).
            seed: seed of the row-group order and of the buffer; with ``set_epoch`` it fixes the order.
            split: dataset split.
            streaming: ``False`` downloads a hub repo to the local cache first.
            rank, world_size: this process among the training processes; each epoch's clips are
                split equally between them (and again between this process's data-loader workers).
            revision: hub revision (branch, tag or commit).
        """
        settings = ClipSettings(
            frames_per_clip=frames_per_clip,
            clip_step=clip_step,
            clip_step_seconds=clip_step_seconds,
            clip_stride=clip_stride,
            shuffle=shuffle,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
        )
        settings.check()
        sources = dataset_sources(source)
        if len(sources) > 1:
            sources = open_dataset_set(sources, revision).sources
        shards = ShardSource.combine(
            [ShardSource.open(s, split=split, revision=revision, streaming=streaming) for s in sources]
        )
        return cls(shards, settings, rank=rank, world_size=world_size)

    @property
    def shard_names(self) -> tuple[str, ...]:
        return self._shards.shard_names

    @property
    def num_row_groups(self) -> int:
        """Units the data is spread in: parquet row groups of all shards."""
        return self._plan.num_units

    @property
    def num_clips(self) -> int:
        """Clips of the whole dataset (every kept frame with room for a clip, thinned by clip_stride)."""
        return self._plan.num_clips

    @property
    def clips_per_process(self) -> int:
        """Clips every process yields per epoch: ``num_clips // world_size``, the same for all ranks."""
        return self._plan.num_clips // self.world_size

    @property
    def _epoch(self) -> int:
        return int(self._shared_epoch.item())

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``: a new row-group order and buffer draw (a loaded state's epoch resumes)."""
        if epoch != self._epoch:
            self._layout, self._positions = None, []
        if self._resume is not None and epoch != self._resume_epoch:
            self._resume = None
        self._shared_epoch.fill_(epoch)

    # ---- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        epoch = self._epoch
        start = self._take_resume(workers, epoch, in_process=info is None)
        # Slot = which reader this worker plays. After a resume the slots are rotated so that the
        # DataLoader's round-robin over workers continues with the slot that was due next.
        slot = (worker + int(np.argmin(start))) % workers
        if info is None:
            self._layout, self._positions = workers, list(start)
        pieces = self.reader_clips(epoch, slot, workers)
        self._warn_about_sharing(slot, workers, pieces)
        sizes = [stop - first for first, stop in pieces]
        skip = start[slot]
        rng_key = [self.settings.seed, epoch, self.rank, slot]
        needed = self._pieces_to_read(sizes, skip, rng_key)
        reader = self._shards.reader()
        try:
            clips: Iterable[_Clip | None] = chain.from_iterable(
                self._piece_clips(piece, reader) if need else repeat(None, size)
                for piece, size, need in zip(pieces, sizes, needed)
            )
            if self._buffered:
                clips = _buffer_shuffle(clips, self.settings.shuffle_buffer, np.random.default_rng(rng_key))
            for position, clip in enumerate(islice(clips, skip, None), start=skip):
                assert clip is not None, "a clip of a unit skipped on resume was due after the resume point"
                sample = self._decode(clip)
                sample["stream_position"] = torch.tensor([slot, workers, position], dtype=torch.long)
                if info is None:
                    self._positions[slot] = position + 1
                yield sample
        finally:
            reader.close()

    def reader_clips(self, epoch: int, slot: int, workers: int) -> list[tuple[int, int]]:
        """The clip numbers one reader yields in ``epoch``, as ``[first, stop)`` ranges in reading order.

        The units are permuted and their clips laid end to end; this rank takes the ``rank``-th
        run of :attr:`clips_per_process` clips of that sequence and worker ``slot`` of ``workers``
        an equal part of it. Each range lies in one unit.
        """
        plan = self._plan
        counts = np.diff(plan.unit_clips)
        order = self._unit_order(epoch)
        ends = np.cumsum(counts[order])
        per_rank = self.clips_per_process
        lo = self.rank * per_rank + per_rank * slot // workers
        hi = self.rank * per_rank + per_rank * (slot + 1) // workers
        pieces: list[tuple[int, int]] = []
        j = int(np.searchsorted(ends, lo, side="right"))
        while lo < hi:
            unit, begin = int(order[j]), int(ends[j] - counts[order[j]])
            stop = min(hi, int(ends[j]))
            if stop > lo:
                pieces.append((int(plan.unit_clips[unit]) + lo - begin, int(plan.unit_clips[unit]) + stop - begin))
            lo, j = stop, j + 1
        return pieces

    @property
    def _buffered(self) -> bool:
        return self.settings.shuffle and self.settings.shuffle_buffer > 1

    def _unit_order(self, epoch: int) -> np.ndarray:
        """The same permutation of the units in every process and worker of one (seed, epoch)."""
        n = self._plan.num_units
        if not self.settings.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.settings.seed, epoch]).permutation(n)

    def _pieces_to_read(self, sizes: list[int], skip: int, rng_key: list[int]) -> list[bool]:
        """Which pieces hold a clip handed out at or after position ``skip`` (all, unless resuming).

        The buffer's draws are replayed on clip numbers: no image of a piece whose clips all left
        the buffer before ``skip`` is read again.
        """
        if not skip:
            return [True] * len(sizes)
        n = sum(sizes)
        when = np.arange(n)
        if self._buffered:
            rng = np.random.default_rng(rng_key)
            order = np.fromiter(_buffer_shuffle(range(n), self.settings.shuffle_buffer, rng), dtype=np.int64, count=n)
            when[order] = np.arange(n)
        bounds = np.cumsum([0, *sizes])
        return [bool(size) and int(when[a:b].max()) >= skip for a, b, size in zip(bounds[:-1], bounds[1:], sizes)]

    def _piece_clips(self, piece: tuple[int, int], reader: RowGroupReader) -> Iterator[_Clip]:
        """The clips numbered ``[first, stop)`` (one unit), reading on into later row groups for their frames."""
        plan, first, stop = self._plan, *piece
        offsets = np.arange(self.settings.frames_per_clip)
        rows = plan.starts[first:stop, None] + plan.rows_per_step[first:stop, None] * offsets
        images = reader.images(rows.ravel())
        frames = plan.frame_index[rows].tolist()
        shards = self._shards.shard_of_rows(rows).tolist()
        videos = plan.video[rows[:, 0]].tolist()
        for clip_rows, frame_indices, clip_shards, video in zip(rows.tolist(), frames, shards, videos):
            yield _Clip(
                video_id=plan.video_ids[video],
                frame_indices=tuple(frame_indices),
                images=tuple(images[r] for r in clip_rows),
                shards=tuple(clip_shards),
            )

    def _warn_about_sharing(self, slot: int, workers: int, pieces: list[tuple[int, int]]) -> None:
        """Say when readers outnumber the units (they share row groups) or a worker gets no clip."""
        readers = self.world_size * workers
        if self.rank == 0 and slot == 0 and self._plan.num_units < readers and not self._warned_sharing:
            self._warned_sharing = True
            logger.warning(
                "%s: %d row group(s) for %d process(es) x %d data-loader worker(s) = %d readers: readers share "
                "row groups (each reads the ones its clips start in, so some are read more than once); use "
                "fewer workers or smaller row groups",
                self._shards.source,
                self._plan.num_units,
                self.world_size,
                workers,
                readers,
            )
        if not pieces:
            logger.warning(
                "rank %d, data-loader worker %d of %d gets no clip (%d clips per process for %d workers): "
                "use fewer workers",
                self.rank,
                slot,
                workers,
                self.clips_per_process,
                workers,
            )

    def _take_resume(self, workers: int, epoch: int, *, in_process: bool) -> list[int]:
        """Clips per slot to skip at the start of this iteration (all zero unless resuming)."""
        resume = self._resume if self._resume_epoch == epoch else None
        if in_process:
            self._resume = None  # applies to one iteration; a worker copy is dropped with the worker
        if resume is None:
            return [0] * workers
        layout, positions = resume
        if layout != workers:
            raise DoraUserError(
                f"the clip reader state was saved with {layout} data-loader worker(s) per process; "
                f"resume with the same number (now {workers}; num_workers=0 counts as 1)"
            )
        return list(positions)

    def _decode(self, clip: _Clip) -> dict[str, Any]:
        """Decode a clip's frames to uint8 (T, 3, H, W); errors name shard, video and frame."""
        names = self._shards.shard_names
        where = [
            f"shard {names[shard]}: video '{clip.video_id}' frame_index {frame_index}"
            for frame_index, shard in zip(clip.frame_indices, clip.shards)
        ]
        frames = decode_clip_images(clip.images, where)
        return {
            "frames": torch.from_numpy(frames),
            "video_id": clip.video_id,
            "start_frame": clip.frame_indices[0],
            "frame_indices": torch.tensor(clip.frame_indices, dtype=torch.long),
        }

    # ---- state -------------------------------------------------------------------------------

    def mark_consumed(self, batch: Mapping[str, Any]) -> None:
        """Record that the clips of ``batch`` (a sample or a collated batch) were used.

        Needed with DataLoader workers, whose progress the main process cannot see; harmless at
        ``num_workers=0``, where iteration records progress itself.
        """
        rows = torch.as_tensor(batch["stream_position"]).reshape(-1, 3).tolist()
        for slot, workers, position in rows:
            if self._layout != workers:
                if self._layout is not None and any(self._positions):
                    raise DoraUserError(
                        f"clips from {workers} data-loader workers marked after clips from {self._layout}: "
                        f"keep num_workers fixed within an epoch"
                    )
                self._layout, self._positions = workers, [0] * workers
            self._positions[slot] = max(self._positions[slot], position + 1)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable progress of this process's reader within the current epoch.

        ``positions[k]`` is the number of clips worker slot ``k`` has handed out (``num_workers=0``
        is one slot). At ``num_workers=0`` progress is tracked by iterating; with workers call
        :meth:`mark_consumed` on each batch, and resume with the same number of workers. The
        dataset's shape (shards, row groups, clips) is recorded to refuse a resume on other data.
        """
        return {
            "format": _STATE_FORMAT,
            "epoch": self._epoch,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_shards": self._shards.num_shards,
            "num_row_groups": self._plan.num_units,
            "num_clips": self._plan.num_clips,
            "clip_numbering": clip_numbering_id(self._plan.video_ids),
            "settings": asdict(self.settings),
            "num_workers": self._layout,
            "positions": list(self._positions),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields exactly the clips not yet handed out."""
        if state.get("format") != _STATE_FORMAT:
            raise DoraUserError(f"not a clip reader state (format {state.get('format')!r}, expected {_STATE_FORMAT!r})")
        mine = self.state_dict()
        changed = [
            f"{key}: saved {state.get(key)!r}, now {mine[key]!r}"
            for key in ("rank", "world_size", "num_shards", "num_row_groups", "num_clips", "settings")
            if state.get(key) != mine[key]
        ]
        saved_numbering = state.get("clip_numbering")  # absent from states saved before it was recorded
        if saved_numbering is not None and saved_numbering != mine["clip_numbering"]:
            changed.append(
                "the videos, or their order, differ from the saved run's (the same datasets in another order, or "
                "other data): give the datasets as the run was started with"
            )
        if changed:
            raise DoraUserError("cannot resume the clip reader, its setup changed: " + "; ".join(changed))
        self._resume_epoch = int(state["epoch"])
        self._shared_epoch.fill_(self._resume_epoch)
        layout, positions = state.get("num_workers"), [int(p) for p in state.get("positions") or []]
        if layout is None or not positions:
            self._layout, self._positions, self._resume = None, [], None
            return
        if len(positions) != layout:
            raise DoraUserError(f"clip reader state has {len(positions)} positions for {layout} workers")
        self._layout, self._positions = int(layout), list(positions)
        self._resume = (int(layout), list(positions))

    def __repr__(self) -> str:
        return (
            f"ClipStream(source={self._shards.source!r}, shards={self._shards.num_shards}, "
            f"row_groups={self._plan.num_units}, clips={self._plan.num_clips}, "
            f"rank={self.rank}/{self.world_size}, epoch={self._epoch}, {self.settings})"
        )
