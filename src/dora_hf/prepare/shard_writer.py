"""Rows -> parquet shards with the `datasets` features, each file hashed as it is written."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, Image, Value

from ..dataset.manifest import HashingFile
from .summary import ShardSummary

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


ROW_GROUP_SIZE = 100
"""Rows per parquet row group: the unit a streaming reader fetches (as ``datasets`` does for images)."""


class ShardWriter:
    """Append rows and cut them into parquet shards of ``frames_per_shard`` rows.

    Shards are written as ``part-*.parquet`` and renamed to ``train-XXXXX-of-YYYYY.parquet``
    by :meth:`finish`, once the total is known. The schema carries the ``datasets`` features
    metadata, so loaders decode ``image`` to PIL images. Each file is hashed as it is written
    (:class:`~dora_hf.dataset.manifest.HashingFile`), for the manifest in ``prepare_info.json``.
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
