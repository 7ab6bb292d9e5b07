"""A ``#`` inside a local file name (docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

import json
import shutil

import pytest

from dora_hf.cli import main

FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress"]


@pytest.fixture
def walk_2(video_factory, tmp_path):
    path = tmp_path / "walk #2.mp4"
    shutil.copy(video_factory(name="short", frames=30), path)
    return path


@pytest.mark.parametrize("line", ["walk #2.mp4", "walk #2.mp4, Walk two", "{abs}", "{abs}  # the second walk"])
def test_a_list_line_naming_a_file_with_a_hash_reads_the_whole_name(walk_2, tmp_path, line):
    listing = tmp_path / "tours.txt"
    listing.write_text("# my walks\n" + line.format(abs=walk_2) + "\n")
    assert main(["prepare-data", "--source-list", str(listing), "--out", str(tmp_path / "o"), *FAST]) == 0
    (video,) = json.loads((tmp_path / "o" / "prepare_info.json").read_text())["videos"]
    assert video["file"] == "walk #2.mp4"
    assert video["video_id"] == ("walk-two" if "Walk two" in line else "walk #2")


def test_a_command_line_file_with_a_hash_keeps_it(walk_2, tmp_path):
    assert main(["prepare-data", str(walk_2), "--out", str(tmp_path / "o"), *FAST]) == 0
    (video,) = json.loads((tmp_path / "o" / "prepare_info.json").read_text())["videos"]
    assert video["file"] == "walk #2.mp4"


def test_a_missing_file_with_a_hash_is_named_whole(tmp_path, capsys):
    listing = tmp_path / "tours.txt"
    listing.write_text("walk #3.mp4\n")
    assert main(["prepare-data", "--source-list", str(listing), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].endswith(
        f"tours.txt line 1: {tmp_path / 'walk'}: no such file (the rest of the line, '#3.mp4', was read as a comment: "
        "a '#' at the start of a line or after a space starts one)"
    ), err
    assert not (tmp_path / "o").exists()
