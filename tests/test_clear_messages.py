"""One clear line for the careless user's inputs (docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dora_hf.cli import main
from dora_hf.prepare import PrepareOptions, prepare_dataset

FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress"]


def one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_ftp_url_is_not_taken_for_a_path(tmp_path, capsys):
    line = one_error_line(capsys, ["prepare-data", "ftp://example.com/tour.mp4", "--out", str(tmp_path / "o"), *FAST])
    assert line.endswith("ftp://example.com/tour.mp4: ftp:// is not a source prepare-data reads: give an http(s) URL or a local path")
    assert not (tmp_path / "o").exists()


def test_a_list_saved_with_a_byte_order_mark_reads_its_first_line(synthetic_video, tmp_path, capsys):
    listing = tmp_path / "tours.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + str(synthetic_video).encode() + b"\n")
    assert main(["prepare-data", "--source-list", str(listing), "--out", str(tmp_path / "o"), *FAST]) == 0
    assert (tmp_path / "o" / "prepare_info.json").is_file()


def test_more_workers_than_cores_are_capped_with_a_line(synthetic_video, tmp_path):
    said: list[str] = []
    options = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=2)
    prepare_dataset([synthetic_video], tmp_path / "o", options, progress=False, log=said.append, num_workers=100)
    assert any(line.startswith("--num-workers 100 is more than the") and "using" in line for line in said)


@pytest.mark.parametrize("kind", ["empty", "dataset"])
def test_export_of_something_that_is_no_checkpoint_says_what_it_is(kind, synthetic_video, tmp_path, capsys):
    folder = tmp_path / "src"
    if kind == "empty":
        folder.mkdir()
        expected = "is an empty folder, not a training checkpoint"
    else:
        options = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=2)
        prepare_dataset([synthetic_video], folder, options, progress=False, log=None)
        expected = "holds a prepared dataset (prepare_info.json), not a training checkpoint"
    line = one_error_line(capsys, ["export", str(folder), "--out", str(tmp_path / "m")])
    assert expected in line and "interrupted" not in line
    assert not (tmp_path / "m").exists()


def test_too_short_asks_for_the_frames_one_clip_spans(video_factory, tmp_path, capsys):
    """A clip of T frames s apart spans (T-1) x s + 1 source frames, not T x s."""
    exact = video_factory(name="exact", frames=13)  # (3 - 1) x 6 + 1: one clip
    options = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=3)
    summary = prepare_dataset([exact], tmp_path / "ok", options, progress=False, log=None)
    assert summary.videos[0].clip_starts == 1
    short = video_factory(name="short", frames=12)
    line = one_error_line(capsys, ["prepare-data", str(short), "--out", str(tmp_path / "no"), "--clip-step", "6",
                                   "--keep-every", "2", "--frames-per-clip", "3", "--no-progress"])
    assert "too short for one clip: 12 frames" in line and "needs 13 frames" in line
