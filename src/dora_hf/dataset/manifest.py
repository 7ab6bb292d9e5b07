"""`dora-hf verify-data DIR`: check a prepared dataset's shards against the manifest prepare-data wrote.

This module holds the manifest and the checks that a dataset still matches it.

`prepare-data` records every shard it writes in `prepare_info.json`'s ``shards`` list: its file
name, rows, size and sha256, the hash computed while the bytes are written (:class:`HashingFile`),
so it costs no second read. Everything that uses a dataset checks it against that list first, and
a missing, extra, truncated or altered shard is one error naming the shard and what differs:

- the readers (random access and streaming, local or on the Hub) compare the shard names, file
  sizes and parquet row counts, which they learn from the footers they read anyway: no shard is
  read whole, so this costs the same on a 20 GB dataset on the Hub as on a small folder;
- `dora-hf push` and `dora-hf verify-data DIR` also hash every shard (about a second per GB),
  which also catches a shard altered in place at its old size.

A dataset without a manifest (an older or hand-made one) still loads, with a warning, once per
dataset and process, that it cannot be verified.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DoraUserError
from .info import INFO_FILE, read_prepare_info

_SHOWN_PROBLEMS = 5
"""Differences named in one error; the rest are counted."""

_WARNED: set[str] = set()
"""Datasets already warned about in this process (no manifest, no checksums)."""


class UnverifiedDatasetWarning(UserWarning):
    """A dataset's shards cannot be (fully) checked: it has no manifest, or one without checksums."""


@dataclass(frozen=True)
class ShardRecord:
    """One shard as the manifest records it (or as it is found); None: not recorded or not read."""

    file: str
    """Path relative to the dataset folder, with '/' separators, e.g. 'data/train-00000-of-00003.parquet'."""
    rows: int | None = None
    size_bytes: int | None = None
    sha256: str | None = None


class HashingFile(io.RawIOBase):
    """A write-only file that hashes (sha256) and counts every byte on its way to disk.

    pyarrow's ``ParquetWriter`` writes strictly sequentially, so the digest is that of the file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        written = self._file.write(data)
        self._hash.update(memoryview(data)[:written])
        self.size += written
        return written

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

    def hexdigest(self) -> str:
        """sha256 of everything written so far."""
        return self._hash.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest_of(info: dict | None) -> tuple[ShardRecord, ...] | None:
    """The shards `prepare_info.json` records; None when it records none (an older or hand-made dataset)."""
    shards = info.get("shards") if isinstance(info, dict) else None
    if not shards:
        return None
    records = []
    for number, entry in enumerate(shards):
        try:
            size = entry.get("size_bytes")
            records.append(
                ShardRecord(
                    file=str(entry["file"]),
                    rows=int(entry["rows"]) if entry.get("rows") is not None else None,
                    size_bytes=int(size) if size else None,  # 0: not recorded by an older prepare-data
                    sha256=str(entry["sha256"]) if entry.get("sha256") else None,
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise DoraUserError(f"{INFO_FILE}: entry {number} of 'shards' is not a shard record ({entry!r})") from err
    return tuple(records)


def relative_name(name: str, folder: Path | None) -> str:
    """A resolved shard name (local path or ``hf://`` URL) as the manifest names it: relative to the dataset."""
    if name.startswith("hf://"):
        # hf://datasets/ORG/NAME@REVISION/PATH, or hf://datasets/ORG/NAME/PATH
        return name.split("://", 1)[1].split("/", 3)[3]
    if folder is not None:
        path = Path(os.path.abspath(name))
        # not path.resolve(): a hub snapshot's files are links into its blob store
        for candidate, root in ((path, Path(os.path.abspath(folder))), (path.parent.resolve() / path.name, folder.resolve())):
            try:
                return candidate.relative_to(root).as_posix()
            except ValueError:
                continue
    return name


def check_against_manifest(label: str, manifest: Sequence[ShardRecord] | None, found: Sequence[ShardRecord]) -> None:
    """Raise one :class:`DoraUserError` naming every shard of `found` that differs from `manifest`.

    Compared: the set of names (missing, extra), then per shard whatever both sides know (size,
    rows, sha256). Without a manifest, warn once that `label` cannot be verified.
    """
    if manifest is None:
        warn_once(
            label,
            f"{label} has no shard manifest (no {INFO_FILE} with a 'shards' list: made by hand or by an older "
            "dora-hf prepare-data), so a missing, truncated or altered shard cannot be detected",
        )
        return
    expected = {record.file: record for record in manifest}
    present = {record.file: record for record in found}
    problems = [f"shard {name} is missing" for name in expected if name not in present]
    problems += [f"shard {name} is not in the manifest (an extra file)" for name in present if name not in expected]
    for name, record in present.items():
        want = expected.get(name)
        if want is not None:
            problems += _differences(want, record)
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
    raise DoraUserError(
        f"{label} does not match its manifest ({INFO_FILE}, {len(manifest)} shards): {shown}{more}; "
        "restore the shards as prepare-data wrote them, or prepare the dataset again"
    )


def _differences(want: ShardRecord, got: ShardRecord) -> list[str]:
    """What differs between a recorded shard and the one found (only what both sides know)."""
    if want.size_bytes is not None and got.size_bytes is not None and want.size_bytes != got.size_bytes:
        how = "truncated" if got.size_bytes < want.size_bytes else "grown"
        return [f"shard {want.file} is {got.size_bytes} bytes, not the {want.size_bytes} recorded ({how} or replaced)"]
    if want.rows is not None and got.rows is not None and want.rows != got.rows:
        return [f"shard {want.file} holds {got.rows} rows, not the {want.rows} recorded"]
    if want.sha256 is not None and got.sha256 is not None and want.sha256 != got.sha256:
        return [f"shard {want.file} has sha256 {got.sha256[:16]}..., not the {want.sha256[:16]}... recorded (altered)"]
    return []


def warn_once(key: str, message: str) -> None:
    """Warn (:class:`UnverifiedDatasetWarning`) the first time `key` is seen in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UnverifiedDatasetWarning, stacklevel=3)


def local_manifest(folder: Path) -> tuple[ShardRecord, ...] | None:
    """The manifest of a local dataset folder; None without `prepare_info.json` or without a shard list."""
    if not (folder / INFO_FILE).is_file():
        return None
    return manifest_of(read_prepare_info(folder))


def local_shard_files(folder: Path) -> list[str]:
    """Every parquet file under `folder` (what a push would upload as data), relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet") if p.is_file())


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_folder` checked."""

    shards: int
    rows: int
    size_bytes: int
    hashed: bool
    """True when every shard's sha256 was compared."""
    seconds: float


def verify_folder(folder: Path, files: Iterable[str] | None = None, *, checksums: bool = True) -> VerifyReport:
    """Check a local dataset folder's shards (`files`, default every parquet file) against its manifest.

    Sizes first, then the parquet footers' row counts, then, with `checksums`, the sha256 of
    every shard (reads all bytes: about a second per GB).
    """
    import pyarrow.parquet as pq

    started = time.perf_counter()
    label = f"prepared dataset folder {folder}"
    manifest = local_manifest(folder)
    names = sorted(files) if files is not None else local_shard_files(folder)
    found = [ShardRecord(name, size_bytes=(folder / name).stat().st_size) for name in names]
    check_against_manifest(label, manifest, found)
    counted = []
    for record in found:
        try:
            rows = pq.read_metadata(folder / record.file).num_rows
        except Exception as err:  # pyarrow raises several kinds for a damaged footer
            raise DoraUserError(f"{label}: cannot read shard {record.file}: {type(err).__name__}: {err}") from err
        counted.append(ShardRecord(record.file, rows=rows, size_bytes=record.size_bytes))
    check_against_manifest(label, manifest, counted)
    recorded = manifest is not None and all(r.sha256 for r in manifest)
    hashed = checksums and recorded
    if hashed:
        check_against_manifest(
            label, manifest, [ShardRecord(r.file, sha256=sha256_file(folder / r.file)) for r in counted]
        )
    elif checksums and manifest is not None:
        warn_once(
            f"{label}:sha256",
            f"{label}: its manifest records no sha256 (an older dora-hf prepare-data): "
            "checked shard names, sizes and rows only",
        )
    return VerifyReport(
        shards=len(counted),
        rows=sum(r.rows or 0 for r in counted),
        size_bytes=sum(r.size_bytes or 0 for r in counted),
        hashed=hashed,
        seconds=time.perf_counter() - started,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dora-hf verify-data``."""
    parser.add_argument(
        "folders", type=Path, nargs="+", metavar="DIR",
        help="a `dora-hf prepare-data` dataset folder; several (the parts of a split preparation, or datasets "
        "trained on together) are also checked against each other",
    )
    parser.add_argument(
        "--no-checksums", action="store_true", help="compare names, sizes and row counts only (what training checks)"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``dora-hf verify-data``: exit 0 when every shard matches the manifest.

    With several folders, each is verified, then they are checked as training would read them
    together (`combined`): the same frame settings, no video in two of them, a split's parts all there.
    """
    folders = [Path(os.path.abspath(folder.expanduser())) for folder in args.folders]
    for folder in folders:  # every folder is found and has a manifest before any shard is read
        if not folder.is_dir():
            raise DoraUserError(f"prepared dataset folder not found: {folder}")
        if not (folder / INFO_FILE).is_file():
            raise DoraUserError(f"{folder} has no {INFO_FILE}: there is no manifest to verify it against")
        if local_manifest(folder) is None:
            raise DoraUserError(f"{folder}/{INFO_FILE} lists no shards: there is no manifest to verify it against")
    dataset_set = None
    if len(folders) > 1:
        from .combined import open_dataset_set

        dataset_set = open_dataset_set(folders)
    for folder in folders:
        report = verify_folder(folder, checksums=not args.no_checksums)
        checked = "names, sizes, rows and sha256" if report.hashed else "names, sizes and rows"
        size = f"{report.size_bytes / 1e9:.2f} GB" if report.size_bytes >= 1e9 else f"{report.size_bytes / 1e6:.1f} MB"
        print(
            f"{folder}: {report.shards} shard(s), {report.rows} rows, {size} match the manifest ({checked}; "
            f"{report.seconds:.1f} s)"
        )
    if dataset_set is not None:
        print(
            f"{dataset_set.describe()}: read as one dataset of {len(dataset_set.video_order)} videos "
            "(same frame settings, no video in two of them, every part of a split there)"
        )
    return 0
