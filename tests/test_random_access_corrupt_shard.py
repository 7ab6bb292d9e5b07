"""A corrupt shard read in random-access mode is named, as the streaming reader names it
(docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_clips import STEP, T, with_a_corrupt_row_group

from dora_hf.dataset.random_access import open_random_access
from dora_hf.errors import DoraUserError


def test_a_corrupt_row_group_names_the_shard_and_the_check(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    shard = with_a_corrupt_row_group(folder)
    with pytest.raises(DoraUserError) as err:
        open_random_access(folder, frames_per_clip=T, clip_step=STEP, cache_dir=str(tmp_path / "cache"))
    message = str(err.value)
    assert re.match(rf"cannot read shard \S*{shard.name} \(row group 1\): ", message), message
    assert message.endswith(f"`dora-hf verify-data {folder}` checks every shard against the manifest prepare-data wrote")
    assert "\n" not in message
