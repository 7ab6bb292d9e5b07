"""The prepared frame shards of a dataset: where they come from and which reader reads which.

A prepared dataset (docs/DATA_FORMAT.md) is a list of parquet shards in time order, local or on
the Hub. :class:`ShardSource` resolves that list once through ``datasets`` (the same resolution
``load_dataset(source, split=..., streaming=True)`` does, so a dataset card's ``configs`` and the
``data/`` layout are both honoured) and then streams one shard at a time. Reading shard by shard
is what lets the clip reader name the shard at fault in an error, choose the shard order itself
(``datasets``' own shuffling mixes rows, which breaks time order) and give whole shards to nodes
and data-loader workers (``split_dataset_by_node`` falls back to taking every n-th *row* when the
shard count does not divide the world size, which breaks clip assembly).
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DoraUserError

logger = logging.getLogger(__name__)

#: Columns the clip reader needs; the others of the format (timestamp, width, height) are not read.
COLUMNS: tuple[str, ...] = ("image", "video_id", "frame_index", "keep_every", "source_fps")

#: Rows per Arrow batch when streaming a shard.
_BATCH_ROWS = 64

#: Shard readers not yet finished. Closed at exit, while pyarrow is still loaded: a reader left
#: open mid-shard (a run stopped mid-epoch) would otherwise print a traceback at shutdown.
_OPEN_READERS: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [reader.close() for reader in list(_OPEN_READERS)])


class FrameRow(NamedTuple):
    """One kept frame, image still compressed (decoding waits until a clip is emitted)."""

    video_id: str
    frame_index: int
    keep_every: int
    source_fps: float
    image: bytes | None
    shard: int


def _looks_local(source: str | Path) -> bool:
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


@dataclass
class ShardSource:
    """The resolved shards of one split of a prepared dataset, streamed one shard at a time."""

    source: str
    split: str
    shard_names: tuple[str, ...]
    dataset: datasets.IterableDataset

    @property
    def num_shards(self) -> int:
        return len(self.shard_names)

    @classmethod
    def open(
        cls,
        source: str | Path,
        *,
        split: str = "train",
        revision: str | None = None,
        streaming: bool = True,
    ) -> ShardSource:
        """Resolve ``source`` (a prepared folder or a hub dataset repo id) to its shards.

        With ``streaming=False`` a hub repo is downloaded once into the Hugging Face cache and read
        from there; a local folder is always read in place.
        """
        local = _looks_local(source)
        if local:
            folder = Path(source).expanduser()
            if not folder.exists():
                raise DoraUserError(f"prepared dataset folder not found: {folder}")
            if not folder.is_dir():
                raise DoraUserError(f"{folder} is not a folder: pass the folder written by `dora-hf prepare-data`")
            where, label = str(folder), f"folder {folder}"
        elif streaming:
            where, label = str(source), f"hub dataset {source}" + (f" (revision {revision})" if revision else "")
        else:
            where, label = _download(str(source), revision), f"hub dataset {source}"
            revision = None
        try:
            builder = datasets.load_dataset_builder(where, revision=revision)
        except FileNotFoundError as err:  # EmptyDatasetError is one; on the hub so is a missing repo
            if not local:
                raise DoraUserError(f"cannot open {label}: {type(err).__name__}: {err}") from err
            raise DoraUserError(
                f"{label} holds no data shards (expected data/{split}-*.parquet from `dora-hf prepare-data`): {err}"
            ) from err
        except Exception as err:
            raise DoraUserError(f"cannot open {label} as a prepared dataset: {type(err).__name__}: {err}") from err

        from datasets.packaged_modules.parquet.parquet import Parquet

        data_files = builder.config.data_files or {}
        if not isinstance(builder, Parquet):
            raise DoraUserError(
                f"{label} holds no parquet shards (its files load as '{builder.name}'); "
                "expected the data/*.parquet written by `dora-hf prepare-data`"
            )
        if split not in data_files:
            raise DoraUserError(f"{label} has no split '{split}' (splits: {', '.join(sorted(data_files)) or 'none'})")
        names = tuple(str(f) for f in data_files[split])
        if not names:
            raise DoraUserError(f"{label} holds no shards for split '{split}'")
        try:
            dataset = builder.as_streaming_dataset(split=split)
        except Exception as err:  # the first shard's schema is read here when the card declares no features
            bad = _first_unreadable(names)
            at = f"shard {bad}" if bad else label
            raise DoraUserError(f"cannot read {at}: {type(err).__name__}: {err}") from err
        if dataset.num_shards != len(names):
            raise DoraUserError(
                f"{label}: split '{split}' resolves to {len(names)} files but streams as "
                f"{dataset.num_shards} shards; expected one shard per parquet file"
            )
        missing = [c for c in COLUMNS if dataset.features is not None and c not in dataset.features]
        if missing:
            raise DoraUserError(
                f"{label} is not a prepared frame dataset: column(s) {', '.join(missing)} missing "
                f"(see docs/DATA_FORMAT.md)"
            )
        dataset = dataset.select_columns(list(COLUMNS)).with_format("arrow")
        return cls(source=str(source), split=split, shard_names=names, dataset=dataset)

    def rows(self, shard: int) -> Iterator[FrameRow]:
        """Stream the rows of one shard in stored order; read errors name the shard."""
        name = self.shard_names[shard]
        # ``IterableDataset.iter`` rather than ``iter(ds)``: inside a DataLoader worker plain
        # iteration would split the (single) shard among workers again.
        batches = self.dataset.shard(num_shards=self.num_shards, index=shard).iter(batch_size=_BATCH_ROWS)
        _OPEN_READERS.add(batches)
        try:
            while True:
                try:
                    table = next(batches, None)
                except Exception as err:
                    raise DoraUserError(f"cannot read shard {name}: {type(err).__name__}: {err}") from err
                if table is None:
                    return
                yield from _table_rows(table, shard)
        finally:
            batches.close()  # a reader that stops early (reading ahead) releases the file now

    def rows_from(self, shard: int) -> Iterator[FrameRow]:
        """Rows of ``shard`` and every later shard, in time order (for completing clips)."""
        for index in range(shard, self.num_shards):
            yield from self.rows(index)


def _table_rows(table: pa.Table, shard: int) -> Iterator[FrameRow]:
    image = table.column("image").combine_chunks()
    images = image.field("bytes").to_pylist() if pa.types.is_struct(image.type) else image.to_pylist()
    yield from (
        FrameRow(str(v), int(f), int(n), float(fps), b, shard)
        for v, f, n, fps, b in zip(
            table.column("video_id").to_pylist(),
            table.column("frame_index").to_pylist(),
            table.column("keep_every").to_pylist(),
            table.column("source_fps").to_pylist(),
            images,
        )
    )


def _first_unreadable(names: tuple[str, ...]) -> str | None:
    """The first shard whose parquet footer cannot be read, to name it in an error."""
    from datasets.utils.file_utils import xopen

    for name in names:
        try:
            with xopen(name, "rb") as f:
                pq.read_schema(f)
        except Exception:
            return name
    return None


def _download(repo_id: str, revision: str | None) -> str:
    """Fetch a hub dataset repo into the local cache (``streaming=False``)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type="dataset", revision=revision)
    except Exception as err:
        raise DoraUserError(f"cannot download hub dataset {repo_id}: {type(err).__name__}: {err}") from err


def assign_shards(order: list[int], *, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
    """The shards one reader takes: every ``world_size``-th shard of ``order`` goes to a rank, and
    every ``num_workers``-th of those to a worker.

    Every reader computes the same ``order``, so the readers' shard sets are disjoint and cover all
    shards, and a rank's share does not depend on how many workers it runs. Clips whose frames run
    into a shard given to another reader are not lost: the clip reader owns a clip by the shard of
    its first frame and reads ahead into the following shards for the rest.
    """
    return order[rank::world_size][worker::num_workers]
