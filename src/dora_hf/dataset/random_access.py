"""Random-access clips: the reference's sampler over a prepared dataset on local disk.

The reference draws every epoch's clips uniformly over the whole video through a shuffled
sampler. Here the prepared shards are opened as one memory-mapped Arrow ``datasets.Dataset``
(``datasets`` converts the parquet shards once into its cache; a hub dataset is downloaded
first), so any clip's ``T`` frames are read in O(1) wherever they lie. Clips are numbered by
:class:`~dora_hf.dataset.clip_index.ClipIndex` (one per source-frame start, the reference's epoch)
and :class:`EpochClipSampler` deals each epoch's seeded permutation of them to ranks exactly as
``torch.utils.data.DistributedSampler(drop_last=True)`` would: every rank gets the same number of
clips, no clip goes to two ranks, and the DataLoader hands batches to its workers in turn, so
every worker is busy whatever the number of shards.

Several datasets (the parts of a split preparation, or any with the same frame settings: see
`combined`) are checked against each other first, then opened each (each against its own
manifest) and concatenated, without a copy, into one Arrow dataset; their clips are numbered in
the order `combined` gives, so the parts of a list number their clips as the whole list would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch

from ..errors import DoraUserError
from .clip_images import decode_clip_images
from .clip_index import ClipIndex
from .combined import DatasetValue, clip_numbering_id, dataset_sources, open_dataset_set
from .info import decoded_frames_per_video
from .shards import resolve_split

logger = logging.getLogger(__name__)

_STATE_FORMAT = "dora_hf.EpochClipSampler/1"

#: The metadata columns the index is built from (no image is read to build it).
_META_COLUMNS = ("video_id", "frame_index", "keep_every")


def open_prepared_dataset(
    source: str | Path, *, split: str = "train", revision: str | None = None, cache_dir: str | None = None
) -> tuple[datasets.Dataset, tuple[str, ...], tuple[int, ...], Path]:
    """The prepared dataset as a memory-mapped Arrow dataset, with its shards' names and row counts.

    Returns ``(dataset, shard_names, shard_rows, folder)``; ``folder`` is the local prepared folder
    (the hub snapshot for a hub id), which holds ``prepare_info.json``. The shards are checked
    against its manifest (names, sizes, row counts) before ``datasets`` converts or reads them.
    """
    resolved = resolve_split(source, split=split, revision=revision, streaming=False, cache_dir=cache_dir)
    builder, names, label, folder = resolved.builder, resolved.shard_names, resolved.label, resolved.folder
    assert folder is not None  # not streaming: a local folder or a downloaded snapshot
    sizes = [os.path.getsize(name) for name in names]
    rows: list[int | None] = []
    errors: list[DoraUserError] = []
    for name in names:
        try:
            rows.append(pq.read_metadata(name).num_rows)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds; reported below
            rows.append(None)
            errors.append(DoraUserError(f"cannot read shard {name}: {type(err).__name__}: {err}"))
    # The manifest first: a truncated shard is named as truncated, not as an unreadable footer.
    resolved.check_manifest(sizes, rows)
    if errors:
        raise errors[0]
    shard_rows = tuple(r for r in rows if r is not None)
    try:
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=split)
    except Exception as err:
        raise _unreadable(label, names, folder, err) from err
    missing = [c for c in (*_META_COLUMNS, "image") if c not in dataset.column_names]
    if missing:
        raise DoraUserError(
            f"{label} is not a prepared frame dataset: column(s) {', '.join(missing)} missing (see docs/DATA_FORMAT.md)"
        )
    if len(dataset) != sum(shard_rows):
        raise DoraUserError(f"{label}: its shards hold {sum(shard_rows)} rows but the dataset cache holds {len(dataset)}")
    return dataset, names, shard_rows, folder


def _unreadable(label: str, names: Sequence[str], folder: Path, err: Exception) -> DoraUserError:
    """The error for a dataset ``datasets`` could not convert: it names no shard (a corrupt page
    says only "An error occurred while generating the dataset"), so the shards are read again,
    row group by row group, to name the first that fails, with the check that compares them all."""
    for name in names:
        group = None
        try:
            file = pq.ParquetFile(name)
            for group in range(file.num_row_groups):
                file.read_row_group(group, use_threads=False)
        except Exception as bad:  # noqa: BLE001 - pyarrow raises several kinds
            where = f" (row group {group})" if group is not None else ""
            return DoraUserError(
                f"cannot read shard {name}{where}: {type(bad).__name__}: {' '.join(str(bad).split())}; the shard is corrupt: "
                f"`dora-hf verify-data {folder}` checks every shard against the manifest prepare-data wrote"
            )
    return DoraUserError(f"cannot read {label}: {type(err).__name__}: {err}")


class ClipDataset(torch.utils.data.Dataset):
    """Map-style dataset of clips: item ``i`` is clip number ``i`` of the :class:`ClipIndex`.

    Items are ``{"frames": uint8 (T, 3, H, W), "video_id": str, "start_frame": int,
    "frame_indices": int64 (T,), "clip": int}``: the streaming reader's keys, plus the clip number
    (several clip numbers share a kept start, see :mod:`~dora_hf.dataset.clip_index`). ``__getitems__`` reads a
    whole batch's frames in one Arrow gather.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        index: ClipIndex,
        frame_indices: np.ndarray,
        shard_names: Sequence[str],
        shard_rows: Sequence[int],
    ) -> None:
        self._images = dataset.select_columns(["image"]).with_format("arrow")
        self.index = index
        self._frame_indices = np.asarray(frame_indices, dtype=np.int64)
        self._shard_names = tuple(shard_names)
        self._shard_ends = np.cumsum(shard_rows)

    def __len__(self) -> int:
        return self.index.num_clips

    def __getitem__(self, clip_id: int) -> dict[str, Any]:
        return self.__getitems__([clip_id])[0]

    def __getitems__(self, clip_ids: Sequence[int]) -> list[dict[str, Any]]:
        videos, rows = self.index.clip_rows(np.asarray(clip_ids, dtype=np.int64))
        column = self._images[rows.reshape(-1).tolist()].column("image").combine_chunks()
        images = column.field("bytes").to_pylist() if hasattr(column, "field") else column.to_pylist()
        T = self.index.frames_per_clip
        samples = []
        for i, (video, clip_rows) in enumerate(zip(videos.tolist(), rows)):
            video_id = self.index.videos[video].video_id
            frame_indices = self._frame_indices[clip_rows]
            where = [f"{self.where(int(r))}: video '{video_id}' frame_index {int(f)}" for r, f in zip(clip_rows, frame_indices)]
            frames = decode_clip_images(images[i * T : (i + 1) * T], where)
            samples.append(
                {
                    "frames": torch.from_numpy(frames),
                    "video_id": video_id,
                    "start_frame": int(frame_indices[0]),
                    "frame_indices": torch.from_numpy(frame_indices.copy()),
                    "clip": int(clip_ids[i]),
                }
            )
        return samples

    def where(self, row: int) -> str:
        """The shard (and its row) that stores dataset row ``row``, for messages."""
        return _row_name(self._shard_names, self._shard_ends, row)


def _row_name(shard_names: Sequence[str], shard_ends: np.ndarray, row: int) -> str:
    """``shard NAME row R`` for dataset row ``row`` (shards concatenated in order)."""
    shard = int(np.searchsorted(shard_ends, row, side="right"))
    start = int(shard_ends[shard - 1]) if shard else 0
    return f"shard {shard_names[shard]} row {row - start}"


class EpochClipSampler(torch.utils.data.Sampler[int]):
    """This rank's clips of each epoch: a seeded permutation of all clips, dealt to ranks in turn.

    Every rank draws the same permutation of (seed, epoch) and takes every ``world_size``-th clip,
    cut to ``num_clips // world_size`` so that ranks stay in step (at most ``world_size - 1`` clips
    of an epoch are left out, a different few each epoch). Progress is counted by
    :meth:`mark_consumed` in the main process, so a checkpoint resumes with exactly the clips not
    yet trained on, whatever the DataLoader had prefetched.
    """

    def __init__(
        self,
        num_clips: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        clip_numbering: str | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise DoraUserError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        if num_clips < world_size:
            raise DoraUserError(f"the dataset holds {num_clips} clip(s), fewer than world_size={world_size}")
        self.num_clips = num_clips
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.clip_numbering = clip_numbering
        """An id of the videos in numbering order (`combined.clip_numbering_id`); None: not checked on resume."""
        self.per_rank = num_clips // world_size
        self._epoch = 0
        self._position = 0  # clips of this epoch consumed by training
        self._start = 0  # where this epoch's next iteration starts

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first clip (a loaded state's own epoch keeps its position)."""
        if epoch != self._epoch:
            self._epoch, self._position, self._start = epoch, 0, 0

    def epoch_clips(self, epoch: int) -> np.ndarray:
        """This rank's clip numbers of ``epoch``, in order."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_clips)
        else:
            order = np.arange(self.num_clips)
        return order[self.rank :: self.world_size][: self.per_rank]

    def __iter__(self) -> Iterator[int]:
        start = self._start
        self._start = 0  # a later iteration of the same epoch (a new loader) starts afresh
        yield from self.epoch_clips(self._epoch)[start:].tolist()

    def __len__(self) -> int:
        return self.per_rank - self._start

    def mark_consumed(self, batch: Mapping[str, Any]) -> None:
        """Count the clips of ``batch`` as trained on."""
        self._position += len(batch["video_id"])

    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": _STATE_FORMAT,
            "epoch": self._epoch,
            "position": self._position,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_clips": self.num_clips,
            "seed": self.seed,
            "shuffle": self.shuffle,
        }
        if self.clip_numbering is not None:
            state["clip_numbering"] = self.clip_numbering
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields the clips of its epoch not yet consumed."""
        if state.get("format") != _STATE_FORMAT:
            raise DoraUserError(
                f"the checkpoint's clip reader state has format {state.get('format')!r}, not {_STATE_FORMAT!r}: "
                f"it was saved by the other data mode (streaming vs random access); resume with the same one"
            )
        mine = self.state_dict()
        changed = [
            f"{key}: saved {state.get(key)!r}, now {mine[key]!r}"
            for key in ("rank", "world_size", "num_clips", "seed", "shuffle")
            if state.get(key) != mine[key]
        ]
        saved_numbering = state.get("clip_numbering")  # absent from states saved before it was recorded
        if saved_numbering is not None and self.clip_numbering is not None and saved_numbering != self.clip_numbering:
            changed.append(
                "the videos, or their order, differ from the saved run's (the same datasets in another order, or "
                "other data): give the datasets as the run was started with"
            )
        if changed:
            raise DoraUserError("cannot resume the clip sampler, its setup changed: " + "; ".join(changed))
        position = int(state["position"])
        if not 0 <= position <= self.per_rank:
            raise DoraUserError(f"clip sampler state has position {position}, outside [0, {self.per_rank}]")
        self._epoch, self._position, self._start = int(state["epoch"]), position, position

    def __repr__(self) -> str:
        return (
            f"EpochClipSampler(clips={self.num_clips}, rank={self.rank}/{self.world_size}, "
            f"per_rank={self.per_rank}, epoch={self._epoch}, seed={self.seed})"
        )


def open_random_access(
    source: DatasetValue,
    *,
    frames_per_clip: int,
    clip_step: int,
    source_frames: Mapping[str, int] | None = None,
    split: str = "train",
    revision: str | None = None,
    cache_dir: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    shuffle: bool = True,
) -> tuple[ClipDataset, EpochClipSampler]:
    """The clip dataset of ``source`` (a prepared folder or hub id, or several) and this rank's epoch sampler.

    ``source_frames`` (decoded source frames per video id) defaults to what the datasets'
    ``prepare_info.json`` records; it fixes the reference's clip count of each video. Several
    datasets are checked against each other (`combined`) before any is downloaded or converted.
    """
    sources = dataset_sources(source)
    dataset_set = open_dataset_set(sources, revision) if len(sources) > 1 else None
    opened = [
        open_prepared_dataset(s, split=split, revision=revision, cache_dir=cache_dir)
        for s in (dataset_set.sources if dataset_set is not None else sources)
    ]
    names = tuple(name for _, shard_names, _, _ in opened for name in shard_names)
    rows = tuple(count for _, _, shard_rows, _ in opened for count in shard_rows)
    if len(opened) == 1:
        dataset = opened[0][0]
    else:
        try:
            dataset = datasets.concatenate_datasets([d.select_columns([*_META_COLUMNS, "image"]) for d, *_ in opened])
        except ValueError as err:  # columns of other types: made by another prepare-data version
            raise DoraUserError(f"cannot read {', '.join(dataset_set.labels)} as one dataset: {err}") from err
    if source_frames is None:
        recorded = [decoded_frames_per_video(folder) for *_, folder in opened]
        source_frames = None if all(r is None for r in recorded) else {k: v for r in recorded if r for k, v in r.items()}
    meta = dataset.select_columns(list(_META_COLUMNS)).with_format("arrow")[:]
    ends = np.cumsum(rows)
    frame_indices = meta.column("frame_index").to_numpy()
    index = ClipIndex.from_columns(
        np.asarray(meta.column("video_id").to_pylist(), dtype=object),
        frame_indices,
        meta.column("keep_every").to_numpy(),
        frames_per_clip=frames_per_clip,
        clip_step=clip_step,
        source_frames=source_frames,
        row_names=lambda row: _row_name(names, ends, row),
    )
    if dataset_set is not None:
        index = index.in_order(dataset_set.video_order)
    clips = ClipDataset(dataset, index, frame_indices, names, rows)
    sampler = EpochClipSampler(
        index.num_clips,
        rank=rank,
        world_size=world_size,
        seed=seed,
        shuffle=shuffle,
        clip_numbering=clip_numbering_id([v.video_id for v in index.videos]),
    )
    return clips, sampler
