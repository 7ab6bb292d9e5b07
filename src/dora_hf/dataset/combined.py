"""Several prepared datasets read as one: the parts of a split preparation, or any datasets made
with the same frame settings.

Training takes one dataset or several (``dataset: [A, B, C]`` in a recipe, ``--dataset A B C``).
Several are checked against each other from their ``prepare_info.json`` alone (a small file, also
on the Hub), so a mistake stops a run before any shard is downloaded or any run folder written:

- each was written by ``prepare-data``: its info is what tells the settings and videos compared;
- the same frame settings (kept-frame spacing, stored frame size, image format and quality, faces
  blurred or not), since a batch stacks clips of one shape and an epoch should not mix kinds of frame;
- no video_id in two of them: readers key clips on it, and a video given twice is drawn twice as often;
- the parts of a split preparation (`split_parts`) come all together, each holding what the split
  gave it: a missing part is named with its videos, a part of another split or list is named.

They are then read in one order: datasets as given, except that the parts of a split are read in
part order, and their videos in list order. So the ``N`` parts of a list number their clips exactly
as one dataset prepared from the whole list does (the same clip numbers, hence the same epochs and,
in random access, the same batches). Each dataset's shards are still checked against its own
manifest by the reader that opens it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DoraUserError
from .info import INFO_FILE, find_prepare_info, looks_local
from .split_parts import ENTRY_KEY, SplitRecord, source_entries

DatasetValue = str | Path | Sequence[str | Path]
"""What readers and recipes take: one prepared folder or hub id, or several."""


def dataset_sources(dataset: DatasetValue) -> tuple[str, ...]:
    """One dataset or several as a tuple of sources (folders or hub ids), in the order given."""
    items = [dataset] if isinstance(dataset, (str, Path)) else list(dataset)
    sources = tuple(str(item) for item in items)
    if not sources or any(not source.strip() for source in sources):
        raise DoraUserError(f"no dataset given (got {dataset!r}): a prepared folder or hub dataset id, or several")
    return sources


def source_label(source: str) -> str:
    """How messages name a dataset: ``folder PATH`` or ``hub dataset ORG/NAME``."""
    return f"folder {source}" if looks_local(source) else f"hub dataset {source}"


def clip_numbering_id(video_ids: Sequence[str]) -> str:
    """A short id of the videos in reading order: a reader state saved on other data, or on the same
    datasets given in another order, numbers its clips differently and must not be resumed."""
    return hashlib.sha256("\n".join(video_ids).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSet:
    """Several prepared datasets, checked against each other, in the order they are read."""

    sources: tuple[str, ...]
    """Folders or hub ids in reading order (the parts of a split in part order)."""
    infos: tuple[dict, ...]
    """Their ``prepare_info.json``, in the same order."""
    video_order: tuple[str, ...]
    """Every video_id, in the order clips are numbered (a split's videos in list order)."""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(source_label(s) for s in self.sources)

    def describe(self) -> str:
        """``3 datasets (parts 1/3, 2/3, 3/3 of ...)``, for the start-up line."""
        records = {r.split_id: r for r in (SplitRecord.from_info(i, l) for i, l in zip(self.infos, self.labels)) if r}
        splits = "; ".join(r.describe_split() for r in records.values())
        return f"{len(self.sources)} datasets" + (f" ({splits})" if splits else "")


def open_dataset_set(dataset: DatasetValue, revision: str | None = None) -> DatasetSet:
    """Read the ``prepare_info.json`` of every dataset and check they can be read as one (module doc)."""
    sources = dataset_sources(dataset)
    seen: dict[str, str] = {}
    for source in sources:
        key = os.path.realpath(Path(source).expanduser()) if looks_local(source) else source
        if key in seen:
            raise DoraUserError(f"{source_label(source)} is given twice (as {seen[key]!r} and {source!r})")
        seen[key] = source
    return plan_dataset_set(sources, [_read_info(source, revision) for source in sources])


def _read_info(source: str, revision: str | None) -> dict:
    """A dataset's ``prepare_info.json``; several datasets are read as one only with one each."""
    label = source_label(source)
    if looks_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise DoraUserError(f"prepared dataset folder not found: {folder}")
        info = find_prepare_info(folder)
    else:
        try:
            info = find_prepare_info(source, revision)
        except DoraUserError:
            raise
        except Exception as err:  # the hub client raises many kinds
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise DoraUserError(f"cannot read {INFO_FILE} of {label}: {type(err).__name__}: {first_line}") from err
    if info is None:
        raise DoraUserError(
            f"{label} has no {INFO_FILE}: several datasets are read as one only when each was written by "
            f"`dora-hf prepare-data` (its {INFO_FILE} gives the frame settings and video ids they are checked on)"
        )
    return info


def plan_dataset_set(sources: Sequence[str], infos: Sequence[dict]) -> DatasetSet:
    """Check datasets against each other (module doc) and put them in reading order."""
    labels = [source_label(s) for s in sources]
    _check_frame_settings(labels, infos)
    records = [SplitRecord.from_info(info, label) for info, label in zip(infos, labels)]
    _check_splits(labels, infos, records)
    _check_unique_videos(labels, infos)
    order = _reading_order(records)
    return DatasetSet(
        sources=tuple(sources[i] for i in order),
        infos=tuple(infos[i] for i in order),
        video_order=_video_order([infos[i] for i in order], [records[i] for i in order]),
    )


def frame_settings(info: dict) -> dict[str, str]:
    """What makes a dataset's frames what they are, as text for messages."""
    settings = info.get("settings") or {}
    videos = info.get("videos") or []
    keep = sorted({int(v["keep_every"]) for v in videos if v.get("keep_every") is not None})
    sizes = sorted({(int(v["stored_width"]), int(v["stored_height"])) for v in videos if v.get("stored_width")})
    return {
        "keep_every": ", ".join(map(str, keep)) or "not recorded",
        "frame size": ", ".join(f"{w}x{h}" for w, h in sizes) or "not recorded",
        "image format": str(settings.get("image_format", "not recorded")),
        "quality": str(settings.get("quality", "not recorded")),
        "faces blurred": "yes" if settings.get("blur_faces") else "no",
    }


def _check_frame_settings(labels: Sequence[str], infos: Sequence[dict]) -> None:
    first = frame_settings(infos[0])
    for label, info in zip(labels[1:], infos[1:]):
        mine = frame_settings(info)
        differ = [name for name in first if mine[name] != first[name]]
        if differ:
            shown = "; ".join(f"{name} {mine[name]} there, {first[name]} in {labels[0]}" for name in differ)
            raise DoraUserError(
                f"{label} was prepared with other frame settings than {labels[0]} ({shown}): datasets read as one "
                "need the same keep_every, frame size, image format, quality and face blurring; prepare them with the same "
                "prepare-data options"
            )


def _check_unique_videos(labels: Sequence[str], infos: Sequence[dict]) -> None:
    owner: dict[str, str] = {}
    for label, info in zip(labels, infos):
        for video in info.get("videos") or []:
            video_id = str(video["video_id"])
            if video_id in owner and owner[video_id] != label:
                raise DoraUserError(
                    f"video_id {video_id!r} is in both {owner[video_id]} and {label}: datasets read as one must hold "
                    "different videos (is one video in two of them?)"
                )
            owner[video_id] = label


def _check_splits(labels: Sequence[str], infos: Sequence[dict], records: Sequence[SplitRecord | None]) -> None:
    """All parts of each split present, once each, each holding the entries the split gave it."""
    if len(labels) < 2:
        return
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if record is not None:
            groups.setdefault(record.split_id, []).append(i)
    for members in groups.values():
        record = records[members[0]]
        assert record is not None
        by_part: dict[int, int] = {}
        for i in members:
            index = records[i].index  # type: ignore[union-attr]
            if index in by_part:
                raise DoraUserError(
                    f"{labels[by_part[index]]} and {labels[i]} are both part {index}/{record.count} of "
                    f"{record.describe_split()}: give each part once"
                )
            by_part[index] = i
        for i in members:
            _check_part_contents(labels[i], infos[i], records[i])  # type: ignore[arg-type]
        missing = [p for p in range(1, record.count + 1) if p not in by_part]
        if missing:
            given = ", ".join(f"{labels[by_part[p]]} (part {p}/{record.count})" for p in sorted(by_part))
            absent = "; ".join(
                f"part {p}/{record.count} (videos: {_entry_names(record.entries_of(p))})" for p in missing
            )
            lists = " ".join(f"--source-list {x}" for x in record.lists)
            other = _other_split_hint(record, members, records, labels)
            raise DoraUserError(
                f"{given} are parts of {record.describe_split()}, but {absent} is missing{other}: give all "
                f"{record.count} parts (prepare a missing one with `dora-hf prepare-data {lists} --part "
                f"{missing[0]}/{record.count}`), or train on one part alone"
            )


def _check_part_contents(label: str, info: dict, record: SplitRecord) -> None:
    """A part holds exactly the entries its split record gives it, under the video ids it names."""
    expected = {e.entry: e for e in record.entries_of(record.index)}
    found = source_entries(info, label)
    if set(found) != set(expected):
        raise DoraUserError(
            f"{label} says it is {record.label} of {record.describe_split()}, but holds list entries "
            f"{sorted(found)} ({', '.join(found.values())}) where that part has entries {sorted(expected)}: it was "
            f"altered or not prepared with --part {record.index}/{record.count}; prepare that part again"
        )
    for entry, video_id in found.items():
        named = expected[entry].video_id
        if named is not None and named != video_id:
            raise DoraUserError(
                f"{label} says it is {record.label} of {record.describe_split()}, but holds list entry {entry} as "
                f"video_id {video_id!r} where the list names it {named!r}: prepare that part again"
            )


def _other_split_hint(
    record: SplitRecord, members: Sequence[int], records: Sequence[SplitRecord | None], labels: Sequence[str]
) -> str:
    """Point at a dataset that is a part of another split of the same list (the list changed?)."""
    for i, other in enumerate(records):
        if i not in members and other is not None and other.lists == record.lists:
            return (
                f" ({labels[i]} is {other.label} of another split of {', '.join(record.lists)}: the list or the "
                "number of parts changed between the preparations?)"
            )
    return ""


def _entry_names(entries: Sequence) -> str:
    return ", ".join(e.video_id or e.name or e.source for e in entries) or "none"


def _reading_order(records: Sequence[SplitRecord | None]) -> list[int]:
    """Datasets as given, except that a split's parts are read together, in part order, where its first one was given."""
    first: dict[str, int] = {}
    keys = []
    for i, record in enumerate(records):
        if record is None:
            keys.append((i, 0))
        else:
            keys.append((first.setdefault(record.split_id, i), record.index))
    return sorted(range(len(records)), key=lambda i: keys[i])


def _video_order(infos: Sequence[dict], records: Sequence[SplitRecord | None]) -> tuple[str, ...]:
    """Every video_id in clip-numbering order: a split's videos in list order, other datasets' as stored."""
    order: list[str] = []
    i = 0
    while i < len(infos):
        record = records[i]
        if record is None:
            order += [str(v["video_id"]) for v in infos[i].get("videos") or []]
            i += 1
            continue
        keyed = []
        while i < len(infos) and records[i] is not None and records[i].split_id == record.split_id:  # type: ignore[union-attr]
            entries = {str(s["video_id"]): int(s[ENTRY_KEY]) for s in infos[i].get("sources", []) if ENTRY_KEY in s}
            for position, video in enumerate(infos[i].get("videos") or []):
                source = str(video.get("source_video_id") or video["video_id"])
                keyed.append((entries.get(source, -1), i, position, str(video["video_id"])))
            i += 1
        order += [video_id for *_, video_id in sorted(keyed)]
    return tuple(order)
