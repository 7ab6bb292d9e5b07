"""One list of videos prepared in parts on several machines: what each part records about the split.

``prepare-data --source-list L --part I/N`` prepares the videos of part ``I`` and writes, under
``part`` in its ``prepare_info.json``, the whole split: every entry of the input sequence (as
written, so the record is the same on every machine), the part each entry went to, and an id of
the split (a hash of those entries and ``N``). Each source of the part records its entry number as
``list_entry``. The readers use that to take the parts back as one dataset: all ``N`` parts of a
split must be there (a missing one is named with its videos), and each must hold exactly the
entries the split gave it (a part prepared from another list, or altered, is named).

This module is the one place of that record's layout: `prepare` writes it with
:meth:`SplitRecord.to_dict`, the readers read it with :meth:`SplitRecord.from_info`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DoraUserError

PART_KEY = "part"
"""The key of the split record in ``prepare_info.json``."""

ENTRY_KEY = "list_entry"
"""The key, in each ``sources`` entry of a part, of the source's entry number in the split."""


@dataclass(frozen=True)
class SplitEntry:
    """One entry of the split input sequence."""

    entry: int
    """0-based position in the input sequence (command-line videos, then the lists' entries)."""
    source: str
    """The path or URL as written (a list's relative paths unresolved), the same on every machine."""
    name: str | None
    """The name the list gives the video, as written; None when it gives none."""
    video_id: str | None
    """The video_id the name makes; None when the id is only known after the download (a video-site link)."""
    part: int
    """The part (1-based) the entry went to."""


@dataclass(frozen=True)
class SplitRecord:
    """A part's record of its split: which part it is, of which split, and every entry's part."""

    index: int
    count: int
    split_id: str
    lists: tuple[str, ...]
    entries: tuple[SplitEntry, ...]
    rule: str = ""

    @classmethod
    def build(
        cls, index: int, count: int, lists: Sequence[str], entries: Sequence[SplitEntry], rule: str
    ) -> SplitRecord:
        """The record of part ``index`` of ``count``; the split id is a hash of the entries and ``count``."""
        canonical = json.dumps(
            {"count": count, "entries": [[e.source, e.name, e.part] for e in entries]}, sort_keys=True
        )
        split_id = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return cls(index, count, split_id, tuple(lists), tuple(entries), rule)

    @property
    def label(self) -> str:
        """``part 2/3``."""
        return f"part {self.index}/{self.count}"

    def describe_split(self) -> str:
        """``the split of WTour.txt (10 videos) in 3 parts``, for messages."""
        lists = ", ".join(self.lists) or "the command line's videos"
        return f"the split of {lists} ({len(self.entries)} videos) in {self.count} parts"

    def entries_of(self, part: int) -> tuple[SplitEntry, ...]:
        """The entries the split gave to ``part``."""
        return tuple(e for e in self.entries if e.part == part)

    def to_dict(self) -> dict:
        """The ``part`` value of ``prepare_info.json``."""
        return {
            "index": self.index,
            "count": self.count,
            "split_id": self.split_id,
            "rule": self.rule,
            "lists": list(self.lists),
            "entries": [
                {"entry": e.entry, "source": e.source, "name": e.name, "video_id": e.video_id, "part": e.part}
                for e in self.entries
            ],
        }

    @classmethod
    def from_info(cls, info: dict, label: str) -> SplitRecord | None:
        """The split record of a ``prepare_info.json``; None for a dataset prepared whole."""
        record = info.get(PART_KEY)
        if record is None:
            return None
        try:
            entries = tuple(
                SplitEntry(
                    entry=int(e["entry"]),
                    source=str(e["source"]),
                    name=None if e.get("name") is None else str(e["name"]),
                    video_id=None if e.get("video_id") is None else str(e["video_id"]),
                    part=int(e["part"]),
                )
                for e in record["entries"]
            )
            parsed = cls(
                index=int(record["index"]),
                count=int(record["count"]),
                split_id=str(record["split_id"]),
                lists=tuple(str(x) for x in record.get("lists", [])),
                entries=entries,
                rule=str(record.get("rule", "")),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise DoraUserError(f"{label}: its prepare_info.json has a malformed '{PART_KEY}' record ({err!r})") from err
        if not 1 <= parsed.index <= parsed.count:
            raise DoraUserError(f"{label}: its prepare_info.json says it is part {parsed.index} of {parsed.count}")
        return parsed


def source_entries(info: dict, label: str) -> dict[int, str]:
    """A part's sources by their entry number in the split: ``{entry: video_id}``."""
    found: dict[int, str] = {}
    for source in info.get("sources", []):
        if ENTRY_KEY not in source:
            raise DoraUserError(
                f"{label}: source {source.get('video_id')!r} of this part records no '{ENTRY_KEY}' in prepare_info.json"
            )
        found[int(source[ENTRY_KEY])] = str(source["video_id"])
    return found
