"""The prepared frame shards of a dataset, opened row group by row group, local or on the Hub.

A prepared dataset (docs/DATA_FORMAT.md) is a list of parquet shards in time order, each made of
row groups of (by default) 100 rows. :class:`ShardSource` resolves that list once through
``datasets`` (the same resolution ``load_dataset(source, split=..., streaming=True)`` does, so a
dataset card's ``configs`` and the ``data/`` layout are both honoured, and a hub dataset resolves
to ``hf://`` URLs pinned to one commit). It then reads every shard's parquet footer and the small
metadata columns (:data:`META_COLUMNS`, a column projection: no image is fetched) through
``datasets``' ``xopen``, which opens local paths and hub URLs alike, with the hub's endpoint and
token, fetching only the byte ranges pyarrow asks for (plus a small read-ahead).

Before anything else is used, the shards are checked against the dataset's manifest
(:mod:`~dora_hf.dataset.manifest`): their names, the file sizes and the footers' row counts, all of
which opening learns anyway, so a missing, extra or truncated shard stops a run at its start.

Images are read later, one row group at a time, by each reader for its own row groups only
(:class:`RowGroupReader`). A row group is the grain at which the clip reader spreads a dataset
over processes and data-loader workers: ``datasets``' own shuffling mixes rows, which breaks time
order, and ``split_dataset_by_node`` hands out whole shards (or every n-th row), too coarse for a
dataset of a few shards read by many workers.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import unquote

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DoraUserError
from .info import find_prepare_info, looks_local
from .manifest import ShardRecord, check_against_manifest, manifest_of, relative_name

logger = logging.getLogger(__name__)

#: Columns the clip reader needs; the others of the format (timestamp, width, height) are not read.
COLUMNS: tuple[str, ...] = ("image", "video_id", "frame_index", "keep_every", "source_fps")

#: The small columns read for every row when a source is opened, to plan the clips without images.
META_COLUMNS: tuple[str, ...] = ("video_id", "frame_index", "keep_every", "source_fps")

#: fsspec read-ahead past each read of a remote file. pyarrow asks for whole ranges (the footer, a
#: row group's metadata columns, an image column chunk) in one read each, so a small read-ahead
#: loses no request and avoids fetching the next row group's images along with its metadata.
_REMOTE_BLOCK_SIZE = 32 * 1024

#: Bytes pyarrow reads at a time when only the first rows of a row group are needed (read-ahead
#: for clips that start in the previous row group): the read stops at the data page holding them.
_PREFIX_BUFFER = 1 << 20

#: Shards whose footer and metadata columns are read at once when opening (hub latency).
_OPEN_THREADS = 8

#: Shard files a reader keeps open between row groups.
_OPEN_FILES = 4

#: Readers not yet closed. Closed at exit, while pyarrow is still loaded: a reader left open
#: mid-epoch (a run stopped early) would otherwise print a traceback at shutdown.
_OPEN_READERS: weakref.WeakSet = weakref.WeakSet()
atexit.register(lambda: [reader.close() for reader in list(_OPEN_READERS)])


class RowGroup(NamedTuple):
    """One parquet row group: the unit of reading and of spreading the data over readers."""

    shard: int
    index: int
    """Row group number within its shard."""
    first_row: int
    """Its first row in the whole split (rows of all shards numbered in time order)."""
    num_rows: int


def _open_file(name: str) -> IO[bytes]:
    """Open a resolved data file (local path or hub URL) for ranged reads."""
    from datasets.utils.file_utils import xopen

    return xopen(name, "rb", block_size=_REMOTE_BLOCK_SIZE)


@dataclass(frozen=True)
class ResolvedSplit:
    """One split of a prepared dataset as `datasets` resolves it, before anything is read."""

    builder: datasets.DatasetBuilder
    shard_names: tuple[str, ...]
    label: str
    """How messages name the dataset."""
    folder: Path | None
    """The local folder (a hub snapshot when downloaded); None when streaming from the hub."""
    manifest: tuple[ShardRecord, ...] | None = None
    """The shards ``prepare_info.json`` records; None when the dataset has no manifest."""

    def check_manifest(self, sizes: Sequence[int | None], rows: Sequence[int | None]) -> None:
        """Compare the shards as found (file sizes, footers' row counts; None: unknown) with the manifest."""
        found = [
            ShardRecord(relative_name(name, self.folder), rows=count, size_bytes=size)
            for name, size, count in zip(self.shard_names, sizes, rows)
        ]
        check_against_manifest(self.label, self.manifest, found)


def resolve_split(
    source: str | Path,
    *,
    split: str = "train",
    revision: str | None = None,
    streaming: bool = True,
    cache_dir: str | None = None,
) -> ResolvedSplit:
    """Resolve ``source`` (a prepared folder or a hub dataset repo id) to its parquet shards.

    The same resolution ``load_dataset`` does, so a dataset card's ``configs`` and the ``data/``
    layout are both honoured. With ``streaming=False`` a hub repo is downloaded once into the
    Hugging Face cache; a local folder is always read in place.
    """
    local = looks_local(source)
    folder: Path | None
    if local:
        folder = Path(source).expanduser()
        if not folder.exists():
            raise DoraUserError(f"prepared dataset folder not found: {folder}")
        if not folder.is_dir():
            raise DoraUserError(f"{folder} is not a folder: pass the folder written by `dora-hf prepare-data`")
        where, label = str(folder), f"folder {folder}"
    elif streaming:
        folder = None
        where, label = str(source), f"hub dataset {source}" + (f" (revision {revision})" if revision else "")
    else:
        folder = Path(_download(str(source), revision))
        where, label = str(folder), f"hub dataset {source} (downloaded to {folder})"
        revision = None
    try:
        builder = datasets.load_dataset_builder(where, revision=revision, cache_dir=cache_dir)
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
    manifest = _read_manifest(source if folder is None else folder, _pinned_revision(names) or revision, label)
    return ResolvedSplit(builder=builder, shard_names=names, label=label, folder=folder, manifest=manifest)


def _pinned_revision(names: Sequence[str]) -> str | None:
    """The commit hub URLs are pinned to (``hf://datasets/ORG/NAME@COMMIT/...``), so the manifest is read there too."""
    first = names[0] if names else ""
    if not first.startswith("hf://"):
        return None
    repo = first.split("://", 1)[1].split("/", 3)[2]
    return unquote(repo.split("@", 1)[1]) if "@" in repo else None


def _read_manifest(where: str | Path, revision: str | None, label: str) -> tuple[ShardRecord, ...] | None:
    """The dataset's shard manifest from its ``prepare_info.json`` (a small file; on the hub, one download)."""
    try:
        return manifest_of(find_prepare_info(where, revision))
    except DoraUserError:
        raise
    except Exception as err:  # the hub client raises many kinds
        raise DoraUserError(f"cannot read the manifest (prepare_info.json) of {label}: {type(err).__name__}: {err}") from err


@dataclass
class ShardSource:
    """The resolved shards of one split of a prepared dataset: footers, row groups, metadata columns."""

    source: str
    split: str
    shard_names: tuple[str, ...]
    footers: tuple[pq.FileMetaData, ...]
    row_groups: tuple[RowGroup, ...]
    """Every row group of every shard, in time order."""
    metadata: pa.Table
    """:data:`META_COLUMNS` of every row of the split, in time order."""

    @property
    def num_shards(self) -> int:
        return len(self.shard_names)

    @property
    def num_rows(self) -> int:
        return self.metadata.num_rows

    def shard_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """The shard holding each of ``rows`` (split row numbers)."""
        ends = np.cumsum([footer.num_rows for footer in self.footers])
        return np.searchsorted(ends, rows, side="right")

    @classmethod
    def open(
        cls,
        source: str | Path,
        *,
        split: str = "train",
        revision: str | None = None,
        streaming: bool = True,
    ) -> ShardSource:
        """Resolve ``source`` (a prepared folder or a hub dataset repo id) and read its metadata.

        With ``streaming=False`` a hub repo is downloaded once into the Hugging Face cache and read
        from there; a local folder is always read in place.
        """
        resolved = resolve_split(source, split=split, revision=revision, streaming=streaming)
        names, label = resolved.shard_names, resolved.label
        with ThreadPoolExecutor(max_workers=min(_OPEN_THREADS, len(names))) as pool:
            reads = list(pool.map(lambda name: _read_shard_metadata(name, label), names))
        # The manifest first: a truncated shard is named as truncated, not as an unreadable footer.
        resolved.check_manifest([r.size for r in reads], [r.footer.num_rows if r.footer else None for r in reads])
        for read in reads:  # in shard order, so the error names the first bad shard
            if read.error is not None:
                raise read.error
        shards = [(read.footer, read.table) for read in reads]
        row_groups: list[RowGroup] = []
        first_row = 0
        for shard, (footer, _) in enumerate(shards):
            for index in range(footer.num_row_groups):
                rows = footer.row_group(index).num_rows
                row_groups.append(RowGroup(shard, index, first_row, rows))
                first_row += rows
        metadata = pa.concat_tables([table for _, table in shards], promote_options="permissive")
        if not metadata.num_rows:
            raise DoraUserError(f"{label} holds no rows in split '{split}'")
        return cls(
            source=str(source),
            split=split,
            shard_names=names,
            footers=tuple(footer for footer, _ in shards),
            row_groups=tuple(row_groups),
            metadata=metadata,
        )

    @classmethod
    def combine(cls, parts: Sequence[ShardSource]) -> ShardSource:
        """Several opened datasets as one: their shards, row groups and rows one after the other.

        Nothing is read again. A clip never spans two of them, since no video does (`combined`
        checks that every video_id is in one dataset only), so reading on for a clip's later
        frames stays within its dataset.
        """
        if len(parts) == 1:
            return parts[0]
        row_groups: list[RowGroup] = []
        shard_offset = row_offset = 0
        for part in parts:
            row_groups += [
                RowGroup(g.shard + shard_offset, g.index, g.first_row + row_offset, g.num_rows) for g in part.row_groups
            ]
            shard_offset += part.num_shards
            row_offset += part.num_rows
        return cls(
            source=" + ".join(part.source for part in parts),
            split=parts[0].split,
            shard_names=tuple(name for part in parts for name in part.shard_names),
            footers=tuple(footer for part in parts for footer in part.footers),
            row_groups=tuple(row_groups),
            metadata=pa.concat_tables([part.metadata for part in parts], promote_options="permissive"),
        )

    def reader(self) -> RowGroupReader:
        """A reader of image rows; each data-loader worker makes its own (open files do not fork)."""
        return RowGroupReader(self)


class _ShardRead(NamedTuple):
    """What opening one shard found: its size, footer and metadata columns, or the error naming it."""

    size: int | None
    footer: pq.FileMetaData | None
    table: pa.Table | None
    error: DoraUserError | None


def _read_shard_metadata(name: str, label: str) -> _ShardRead:
    """One shard's size, footer and metadata columns; an error is returned (naming the shard), not raised."""
    size = None
    try:
        with _open_file(name) as f:
            size = f.seek(0, 2)  # the size is known without a read: local stat, remote HEAD
            f.seek(0)
            file = pq.ParquetFile(f)
            footer = file.metadata
            present = set(file.schema_arrow.names)
            missing = [c for c in COLUMNS if c not in present]
            if missing:
                error = DoraUserError(
                    f"{label} is not a prepared frame dataset: shard {name} lacks column(s) "
                    f"{', '.join(missing)} (see docs/DATA_FORMAT.md)"
                )
                return _ShardRead(size, footer, None, error)
            table = file.read(columns=list(META_COLUMNS), use_threads=False)
    except Exception as err:  # noqa: BLE001 - pyarrow, fsspec and the hub client raise many kinds
        error = DoraUserError(f"cannot read shard {name}: {type(err).__name__}: {err}")
        error.__cause__ = err
        return _ShardRead(size, None, None, error)
    nulls = [c for c in META_COLUMNS if table.column(c).null_count]
    if nulls:
        error = DoraUserError(f"shard {name}: column(s) {', '.join(nulls)} hold missing values (see docs/DATA_FORMAT.md)")
        return _ShardRead(size, footer, None, error)
    return _ShardRead(size, footer, table, None)


class RowGroupReader:
    """Reads the stored images of a range of rows, row group by row group, keeping a few files open."""

    def __init__(self, shards: ShardSource) -> None:
        self._shards = shards
        self._first_rows = np.array([g.first_row for g in shards.row_groups], dtype=np.int64)
        self._files: OrderedDict[int, IO[bytes]] = OrderedDict()
        _OPEN_READERS.add(self)

    def images(self, rows: np.ndarray) -> dict[int, bytes | None]:
        """The compressed images of ``rows`` (split row numbers), reading only the row groups holding them."""
        rows = np.unique(rows)
        groups = np.searchsorted(self._first_rows, rows, side="right") - 1
        out: dict[int, bytes | None] = {}
        for g in np.unique(groups).tolist():
            group = self._shards.row_groups[g]
            wanted = (rows[groups == g] - group.first_row).tolist()
            images = self._read(group, wanted[-1] + 1)
            out.update((group.first_row + r, images[r]) for r in wanted)
        return out

    def _read(self, group: RowGroup, rows: int) -> list[bytes | None]:
        """The images of the first ``rows`` rows of ``group``."""
        name = self._shards.shard_names[group.shard]
        footer = self._shards.footers[group.shard]
        try:
            f = self._file(group.shard)
            if rows < group.num_rows:  # only a prefix: stop reading at the page that holds it
                file = pq.ParquetFile(f, metadata=footer, pre_buffer=False, buffer_size=_PREFIX_BUFFER)
                batches = file.iter_batches(rows, row_groups=[group.index], columns=["image"], use_threads=False)
                table = pa.Table.from_batches([next(batches)])
            else:
                file = pq.ParquetFile(f, metadata=footer)
                table = file.read_row_group(group.index, columns=["image"], use_threads=False)
        except Exception as err:  # pyarrow, fsspec and the hub client raise many kinds
            self._drop(group.shard)
            raise DoraUserError(
                f"cannot read shard {name} (row group {group.index}): {type(err).__name__}: {err}"
            ) from err
        image = table.column("image").combine_chunks()
        column = image.field("bytes") if pa.types.is_struct(image.type) else image
        return column.to_pylist()

    def _file(self, shard: int) -> IO[bytes]:
        if shard in self._files:
            self._files.move_to_end(shard)
            return self._files[shard]
        while len(self._files) >= _OPEN_FILES:
            self._files.popitem(last=False)[1].close()
        self._files[shard] = _open_file(self._shards.shard_names[shard])
        return self._files[shard]

    def _drop(self, shard: int) -> None:
        file = self._files.pop(shard, None)
        if file is not None:
            file.close()

    def close(self) -> None:
        """Close the open shard files."""
        while self._files:
            self._files.popitem()[1].close()


def _download(repo_id: str, revision: str | None) -> str:
    """Fetch a hub dataset repo into the local cache (``streaming=False``)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, repo_type="dataset", revision=revision)
    except Exception as err:
        raise DoraUserError(f"cannot download hub dataset {repo_id}: {type(err).__name__}: {err}") from err
