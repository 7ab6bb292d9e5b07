"""Streaming clip reader: DoRA's clips of ``T`` frames, ``s`` source frames apart (DORA_SPEC §1).

The prepared dataset (docs/DATA_FORMAT.md) stores one row per kept frame, every ``keep_every``
(n) source frames, in time order. A clip with step ``s`` takes rows ``r, r + s/n, ..., r +
(T-1)s/n`` of one video, so the reader keeps a sliding window of the last ``(T-1)s/n + 1`` rows of
the current video (images still compressed) and emits the clip that starts at the window's first
row as soon as its last frame arrives. Every kept frame is a clip start, as in the reference
where every source frame is one (``clip_stride`` thins the starts). Only the frames of emitted
clips are decoded, when they leave the shuffle buffer.

Order. Rows must stay in time order, so ``datasets``' row-level shuffle is not used. Instead the
shard order is permuted (seeded by ``seed`` and the epoch) and clips are mixed in a seeded buffer
of ``shuffle_buffer`` clips. Splitting. Whole shards go to ranks and then to data-loader workers
(:func:`~dora_hf.data.shard_source.assign_shards`). A clip belongs to the shard that holds its
first frame; its reader reads on into the following shards for the rest of its frames, so a video
that spans shards read by different readers loses no clip and duplicates none.

Resume. A reader's clip order is a pure function of (seed, epoch, world size, rank, workers per
process, worker), so the state is the number of clips each reader has handed out; a restored
reader replays its stream up to that point without decoding any image (it still reads the parquet
rows) and goes on from there. See :meth:`ClipStream.state_dict`.

Shards decide the balance: processes get whole shards, so they see different numbers of clips per
epoch (a shard more, a shorter last shard); a training loop bounds its steps per epoch.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image

from ..errors import DoraUserError
from .shard_source import FrameRow, ShardSource, assign_shards

logger = logging.getLogger(__name__)

#: The reference spacing: 60 source frames, one second of the 60 fps Walking Tours videos.
DEFAULT_CLIP_STEP = 60

_STATE_FORMAT = "dora_hf.ClipStream/1"

_T = TypeVar("_T")


@dataclass(frozen=True)
class ClipSettings:
    """What a clip is and how clips are ordered; saved in the state to refuse a mismatched resume."""

    frames_per_clip: int = 8
    clip_step: int | None = None
    clip_step_seconds: float | None = None
    clip_stride: int = 1
    shuffle: bool = True
    shuffle_buffer: int = 1000
    seed: int = 0

    def check(self) -> None:
        """Reject settings that cannot work, naming the setting."""
        if self.frames_per_clip < 1:
            raise DoraUserError(f"frames_per_clip must be at least 1, got {self.frames_per_clip}")
        if self.clip_step is not None and self.clip_step_seconds is not None:
            raise DoraUserError("give clip_step (source frames) or clip_step_seconds, not both")
        if self.clip_step is not None and self.clip_step < 1:
            raise DoraUserError(f"clip_step must be at least 1 source frame, got {self.clip_step}")
        if self.clip_step_seconds is not None and not self.clip_step_seconds > 0:
            raise DoraUserError(f"clip_step_seconds must be positive, got {self.clip_step_seconds}")
        if self.clip_stride < 1:
            raise DoraUserError(f"clip_stride must be at least 1 kept frame, got {self.clip_stride}")
        if self.shuffle_buffer < 0:
            raise DoraUserError(f"shuffle_buffer must be 0 or more clips, got {self.shuffle_buffer}")


class _Clip(NamedTuple):
    """A clip before decoding: which frames, their compressed images and their shards."""

    video_id: str
    frame_indices: tuple[int, ...]
    images: tuple[bytes | None, ...]
    shards: tuple[int, ...]


class _ClipAssembler:
    """Turns rows in time order into clips, one video at a time, with a sliding window."""

    def __init__(self, settings: ClipSettings, shard_names: tuple[str, ...], noted: set[tuple[str, str]]) -> None:
        self._settings = settings
        self._shard_names = shard_names
        self._noted = noted  # (message kind, video id) already logged, shared by the reader's shards
        self.video: str | None = None
        self._window: deque[tuple[FrameRow, bool]] = deque()
        self._rows_per_step = 1
        self._keep_every = 1
        self._run_length = 0
        self._run_starts_video = False

    @property
    def rows_to_read_ahead(self) -> int:
        """Rows past this shard that the last clips starting in it may still need."""
        return self._window.maxlen - 1 if self._window and self._window.maxlen else 0

    def push(self, row: FrameRow, owned: bool) -> _Clip | None:
        """Add the next row; return the clip it completes, if that clip starts in an owned row."""
        if row.video_id != self.video:
            starts_video = self.video is not None or row.frame_index < row.keep_every
            self.finish()
            self._start_video(row, starts_video)
        elif (last := self._window[-1][0]).frame_index + row.keep_every != row.frame_index or (
            row.keep_every != self._keep_every
        ):
            raise DoraUserError(
                f"shard {self._shard_names[row.shard]}: video '{row.video_id}' goes from frame_index "
                f"{last.frame_index} (keep_every {last.keep_every}) to {row.frame_index} (keep_every "
                f"{row.keep_every}); rows of one video must be consecutive kept frames in time order"
            )
        self._window.append((row, owned))
        self._run_length += 1
        if len(self._window) < self._window.maxlen:
            return None
        first, first_owned = self._window[0]
        if not first_owned or (first.frame_index // self._keep_every) % self._settings.clip_stride:
            return None
        rows = [self._window[i * self._rows_per_step][0] for i in range(self._settings.frames_per_clip)]
        return _Clip(
            video_id=first.video_id,
            frame_indices=tuple(r.frame_index for r in rows),
            images=tuple(r.image for r in rows),
            shards=tuple(r.shard for r in rows),
        )

    def finish(self) -> None:
        """End the current video's run; warn (once) about a video too short for one clip.

        Only a run seen from the video's start counts: one that follows another video in the same
        shard, or whose first frame_index is below keep_every (prepare-data keeps frame 0). A run
        at a shard's start that continues a video from the previous shard is a video's tail.
        """
        if (
            self.video is not None
            and self._run_starts_video
            and self._run_length < self._window.maxlen
            and ("short", self.video) not in self._noted
        ):
            self._noted.add(("short", self.video))
            logger.warning(
                "video '%s' has %d kept frames, fewer than the %d one clip spans (%d frames, %d kept "
                "frames apart): it yields no clips",
                self.video,
                self._run_length,
                self._window.maxlen,
                self._settings.frames_per_clip,
                self._rows_per_step,
            )
        self.video = None
        self._window = deque()

    def _start_video(self, row: FrameRow, starts_video: bool) -> None:
        self.video = row.video_id
        self._keep_every = row.keep_every
        self._rows_per_step = self._step_in_rows(row)
        self._window = deque(maxlen=(self._settings.frames_per_clip - 1) * self._rows_per_step + 1)
        self._run_length = 0
        self._run_starts_video = starts_video

    def _step_in_rows(self, row: FrameRow) -> int:
        """The clip step of this video in kept rows (s / n), checking that n divides s."""
        n, shard = row.keep_every, self._shard_names[row.shard]
        if n < 1:
            raise DoraUserError(f"shard {shard}: video '{row.video_id}' has keep_every={n}; it must be at least 1")
        seconds = self._settings.clip_step_seconds
        if seconds is None:
            step = self._settings.clip_step if self._settings.clip_step is not None else DEFAULT_CLIP_STEP
            if step % n:
                raise DoraUserError(
                    f"clip_step={step} source frames is not a multiple of keep_every={n} of video "
                    f"'{row.video_id}' (shard {shard}): use a multiple of {n}, or prepare the data "
                    f"with a keep_every that divides {step}"
                )
            return step // n
        if not row.source_fps > 0:
            raise DoraUserError(
                f"shard {shard}: video '{row.video_id}' has source_fps={row.source_fps}, so "
                f"clip_step_seconds cannot be converted to frames; give clip_step instead"
            )
        rows = max(1, round(seconds * row.source_fps / n))
        if ("step", row.video_id) in self._noted:
            return rows
        self._noted.add(("step", row.video_id))
        logger.info(
            "video '%s': clip_step_seconds=%g at %g fps is %g source frames, rounded to %d "
            "(a multiple of keep_every=%d)",
            row.video_id,
            seconds,
            row.source_fps,
            seconds * row.source_fps,
            rows * n,
            n,
        )
        return rows


def _buffer_shuffle(items: Iterable[_T], size: int, rng: np.random.Generator) -> Iterator[_T]:
    """Mix a stream through a buffer of ``size`` items: each arrival evicts a random one."""
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
    Build it with :meth:`from_source`; batch it with :func:`collate_clips`::

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
        if world_size > shards.num_shards:
            raise DoraUserError(
                f"{shards.source} has {shards.num_shards} shard(s), fewer than world_size={world_size}: "
                f"every process needs at least one; prepare the data with more shards"
            )
        if shards.num_shards % world_size and rank == 0:
            logger.warning(
                "%s: %d shards do not split evenly over %d processes: some get one shard more, so "
                "processes see different numbers of clips per epoch (bound the steps per epoch)",
                shards.source,
                shards.num_shards,
                world_size,
            )
        self._shards = shards
        self.settings = settings
        self.rank = rank
        self.world_size = world_size
        # In shared memory so that persistent DataLoader workers see set_epoch() calls.
        self._shared_epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._noted: set[tuple[str, str]] = set()
        # Clips consumed so far this epoch, per worker slot; the layout is the number of slots.
        self._layout: int | None = None
        self._positions: list[int] = []
        # Where the next iteration of ``_resume_epoch`` starts, set by load_state_dict.
        self._resume: tuple[int, list[int]] | None = None
        self._resume_epoch = 0

    @classmethod
    def from_source(
        cls,
        source: str | Path,
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
            source: folder written by ``dora-hf prepare-data``, or a hub dataset repo id.
            frames_per_clip: ``T``, frames per clip (reference 8).
            clip_step: source frames between a clip's frames (reference 60); must be a multiple of
                every video's ``keep_every``. Default 60 unless ``clip_step_seconds`` is given.
            clip_step_seconds: the step in seconds instead, converted per video with its
                ``source_fps`` and rounded to the nearest multiple of its ``keep_every`` (logged).
            clip_stride: kept frames between clip starts (1 = every kept frame starts a clip).
            shuffle: permute the shard order per epoch and mix clips in a buffer; ``False`` gives
                clips in time order within each shard.
            shuffle_buffer: clips held for mixing (memory: compressed images of about this many
                clips times ``T``, shared between overlapping clips).
            seed: seed of the shard order and of the buffer; with ``set_epoch`` it fixes the order.
            split: dataset split.
            streaming: ``False`` downloads a hub repo to the local cache first.
            rank, world_size: this process among the training processes; shards are divided
                between them (and again between this process's data-loader workers).
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
        shards = ShardSource.open(source, split=split, revision=revision, streaming=streaming)
        return cls(shards, settings, rank=rank, world_size=world_size)

    @property
    def shard_names(self) -> tuple[str, ...]:
        return self._shards.shard_names

    @property
    def _epoch(self) -> int:
        return int(self._shared_epoch.item())

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``: a new shard order and buffer draw (a loaded state's epoch resumes)."""
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
        order = self._shard_order(epoch)
        mine = assign_shards(order, rank=self.rank, world_size=self.world_size, worker=slot, num_workers=workers)
        if not mine:
            logger.warning(
                "rank %d, data-loader worker %d of %d gets no shard (%d shards for %d processes): "
                "use fewer workers or more shards",
                self.rank,
                slot,
                workers,
                len(order),
                self.world_size,
            )
        clips: Iterable[_Clip] = chain.from_iterable(self._shard_clips(shard) for shard in mine)
        if self.settings.shuffle and self.settings.shuffle_buffer > 1:
            rng = np.random.default_rng([self.settings.seed, epoch, self.rank, slot])
            clips = _buffer_shuffle(clips, self.settings.shuffle_buffer, rng)
        for position, clip in enumerate(islice(clips, start[slot], None), start=start[slot]):
            sample = self._decode(clip)
            sample["stream_position"] = torch.tensor([slot, workers, position], dtype=torch.long)
            if info is None:
                self._positions[slot] = position + 1
            yield sample

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

    def _shard_order(self, epoch: int) -> list[int]:
        """The same permutation in every process and worker of one (seed, epoch)."""
        n = self._shards.num_shards
        if not self.settings.shuffle:
            return list(range(n))
        return np.random.default_rng([self.settings.seed, epoch]).permutation(n).tolist()

    def _shard_clips(self, shard: int) -> Iterator[_Clip]:
        """Clips whose first frame lies in ``shard``, reading ahead into later shards if needed."""
        assembler = _ClipAssembler(self.settings, self._shards.shard_names, self._noted)
        for row in self._shards.rows(shard):
            clip = assembler.push(row, owned=True)
            if clip is not None:
                yield clip
        ahead = assembler.rows_to_read_ahead
        if ahead:
            later = self._shards.rows_from(shard + 1)
            for row in islice(later, ahead):
                if row.video_id != assembler.video:
                    break
                clip = assembler.push(row, owned=False)
                if clip is not None:
                    yield clip
            later.close()
        assembler.finish()

    def _decode(self, clip: _Clip) -> dict[str, Any]:
        """Decode a clip's frames to uint8 (T, 3, H, W); errors name shard, video and frame."""
        frames: np.ndarray | None = None
        for t, (frame_index, data, shard) in enumerate(zip(clip.frame_indices, clip.images, clip.shards)):
            where = f"shard {self._shards.shard_names[shard]}: video '{clip.video_id}' frame_index {frame_index}"
            try:
                if data is None:
                    raise ValueError("the row holds no image bytes")
                with Image.open(io.BytesIO(data)) as image:
                    # Per-band copies write channels-first directly: about 3x cheaper than
                    # permuting an (H, W, 3) array afterwards. RGB JPEGs (what prepare-data
                    # writes) skip `convert`, which would copy the whole image.
                    image.load()
                    bands = (image if image.mode == "RGB" else image.convert("RGB")).split()
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad data
                raise DoraUserError(f"{where}: cannot decode the frame image ({type(err).__name__}: {err})") from err
            size = (bands[0].height, bands[0].width)
            if frames is None:
                frames = np.empty((len(clip.images), 3, *size), dtype=np.uint8)
            elif size != frames.shape[2:]:
                raise DoraUserError(
                    f"{where}: frame is {size[1]}x{size[0]} but the clip's first frame is "
                    f"{frames.shape[3]}x{frames.shape[2]}; frames of one video must share one size"
                )
            for channel, band in enumerate(bands):
                frames[t, channel] = np.asarray(band)
        assert frames is not None
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
        :meth:`mark_consumed` on each batch, and resume with the same number of workers.
        """
        return {
            "format": _STATE_FORMAT,
            "epoch": self._epoch,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_shards": self._shards.num_shards,
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
            for key in ("rank", "world_size", "num_shards", "settings")
            if state.get(key) != mine[key]
        ]
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
            f"rank={self.rank}/{self.world_size}, epoch={self._epoch}, {self.settings})"
        )


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips into ``frames`` uint8 (B, T, 3, H, W); one prepared dataset has one frame size."""
    if not samples:
        raise ValueError("cannot collate an empty list of clips")
    shapes = {tuple(s["frames"].shape) for s in samples}
    if len(shapes) > 1:
        found = ", ".join(f"'{s['video_id']}' {tuple(s['frames'].shape)}" for s in samples)
        raise DoraUserError(
            f"clips of one batch have different shapes (T, 3, H, W): {found}; use one frames_per_clip "
            f"and frames of one size (one prepared dataset), or resize before batching"
        )
    batch: dict[str, Any] = {
        "frames": torch.stack([s["frames"] for s in samples]),
        "video_id": [s["video_id"] for s in samples],
        "start_frame": torch.tensor([s["start_frame"] for s in samples], dtype=torch.long),
        "frame_indices": torch.stack([s["frame_indices"] for s in samples]),
    }
    if all("stream_position" in s for s in samples):
        batch["stream_position"] = torch.stack([s["stream_position"] for s in samples])
    return batch
