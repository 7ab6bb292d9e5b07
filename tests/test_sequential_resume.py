"""With one worker, a corrupt last video loses none of the earlier videos' decoding: they are kept
in the resume folder as a parallel run keeps its segments, and the same command resumes from them
(docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

import shutil

from test_prepare_parallel import assert_same_dataset, leftovers

from dora_hf.cli import main

FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress", "--num-workers", "1"]


def test_a_corrupt_last_video_keeps_the_earlier_videos_decoding(video_factory, tmp_path, capsys):
    first, second = video_factory(name="first", frames=60), video_factory(name="second", frames=60)
    whole = video_factory(name="third", frames=120, faststart=True)  # its index first: it opens, then stops decoding
    third = tmp_path / "third.mp4"
    third.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    argv = ["prepare-data", str(first), str(second), str(third), "--out", str(tmp_path / "ds"), *FAST]

    assert main(argv) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert f"error: {third}: decoding stopped after frame" in line and "truncated or corrupt" in line
    partial = tmp_path / ".ds.partial"
    assert f"{partial}: keeps 2 finished segment(s): the same command resumes from them" in out
    assert leftovers(tmp_path / "ds") == [".ds.partial"]
    kept = {p: p.stat().st_mtime_ns for p in partial.glob("*/00000.arrow")}
    assert sorted(p.parent.name for p in kept) == ["first", "second"]

    shutil.copy(whole, third)  # the file fixed: the rerun decodes only it
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "first.mp4: resuming: 1 of 1 segment(s) were decoded by an earlier run of this command" in out
    assert "second.mp4: resuming: 1 of 1 segment(s)" in out and "third.mp4: resuming" not in out
    assert leftovers(tmp_path / "ds") == ["ds"]

    clean = tmp_path / "clean"
    assert main(["prepare-data", str(first), str(second), str(third), "--out", str(clean), *FAST]) == 0
    assert_same_dataset(tmp_path / "ds", clean)
    assert leftovers(clean) == ["clean"]  # no resume folder left by a run that finished


def test_one_video_keeps_no_copy(video_factory, tmp_path, capsys, monkeypatch):
    """The last video needs no copy: nothing after it can fail its decoding."""
    from dora_hf.prepare.parallel import segment_store

    opened: list[object] = []
    monkeypatch.setattr(segment_store.SegmentFileWriter, "__init__", lambda *a: opened.append(a) or None)
    argv = ["prepare-data", str(video_factory(name="only", frames=60)), "--out", str(tmp_path / "ds"), *FAST]
    assert main(argv) == 0
    assert opened == [] and leftovers(tmp_path / "ds") == ["ds"]
