"""The download cache under fire: two runs at once, web pages, cut bodies, stray and stale parts,
a trickling server, and a bad file an older version cached as complete."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dora_hf.cli import main
from dora_hf.errors import DoraUserError
from dora_hf.prepare import download as download_module
from dora_hf.prepare.download import cache_path, download
from conftest import files_under

FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress"]


def test_two_runs_sharing_a_download_dir_fetch_one_url_once_and_both_succeed(server, video_factory, tmp_path):
    video = video_factory(name="slowtour", frames=60)
    url = server.serve("/slowtour.mp4", video)
    size = len(server.files["/slowtour.mp4"])
    server.delay["/slowtour.mp4"] = (max(size // 20, 1), 0.2)  # about 4 s for the whole file
    cache = tmp_path / "cache"
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "dora_hf.cli", "prepare-data", url, "--out", str(tmp_path / name),
             "--download-dir", str(cache), *FAST],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("first", "second")
    ]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    (cached,) = files_under(cache)
    assert cached.read_bytes() == video.read_bytes()
    assert [r for r in server.requests if r[0] == "/slowtour.mp4"] == [("/slowtour.mp4", None)]  # fetched once
    said = "".join(err for _, err in outputs) + "".join(out for out, _ in outputs)
    assert "cached at" in said  # the second run used the first one's file
    first, second = (json.loads((tmp_path / n / "prepare_info.json").read_text())["shards"] for n in ("first", "second"))
    assert [s["sha256"] for s in first] == [s["sha256"] for s in second]


def test_a_download_waits_for_the_process_holding_its_cache_folder(server, video_factory, tmp_path):
    video = video_factory(name="held", frames=30)
    url = server.serve("/held.mp4", video)
    folder = cache_path(url, tmp_path).parent
    folder.mkdir(parents=True)
    holder = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another run, mid-download
    said: list[str] = []
    result: list[Path] = []
    worker = threading.Thread(target=lambda: result.append(download(url, tmp_path, log=said.append)))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive() and not server.requests  # it waits, and asks the server nothing
    assert any("another process is downloading it" in line for line in said)
    os.close(holder)
    worker.join(timeout=60)
    assert result and result[0].read_bytes() == video.read_bytes()


def test_a_web_page_served_as_mp4_is_refused_and_not_cached(server, tmp_path):
    server.files["/tour.mp4"] = b"<!doctype html><title>Sign in</title>" * 50
    server.content_type["/tour.mp4"] = "text/html; charset=utf-8"
    with pytest.raises(DoraUserError, match=r"/tour\.mp4: the server sent text/html, not a video file"):
        download(server.url + "/tour.mp4", tmp_path)
    assert files_under(tmp_path) == []


def test_a_page_without_content_type_is_caught_by_the_probe(server, tmp_path):
    server.files["/tour.mp4"] = b"<html>not found</html>" * 100
    with pytest.raises(DoraUserError, match=r"/tour\.mp4: the download is not a readable video .*nothing was kept in the cache"):
        download(server.url + "/tour.mp4", tmp_path)
    assert files_under(tmp_path) == []


def test_a_body_cut_without_content_length_is_not_cached(server, video_factory, tmp_path):
    video = video_factory(name="cut", frames=40)
    url = server.serve("/cut.mp4", video)
    server.no_length.add("/cut.mp4")
    server.cut["/cut.mp4"] = len(server.files["/cut.mp4"]) // 2  # the mp4 index is at the end: cut off
    with pytest.raises(DoraUserError, match=r"/cut\.mp4: the download is not a readable video"):
        download(url, tmp_path)
    assert files_under(tmp_path) == []
    del server.cut["/cut.mp4"]
    assert download(url, tmp_path).read_bytes() == video.read_bytes()  # whole, it is cached


def test_a_stray_part_is_not_resumed(server, video_factory, tmp_path):
    video = video_factory(name="stray", frames=30)
    url = server.serve("/stray.mp4", video)
    target = cache_path(url, tmp_path)
    target.parent.mkdir(parents=True)
    target.with_name("stray.mp4.part").write_bytes(b"x" * 5000)  # another file's bytes, no record of this URL
    said: list[str] = []
    assert download(url, tmp_path, log=said.append).read_bytes() == video.read_bytes()
    assert server.requests == [("/stray.mp4", None)]
    assert any("was not left by a download of this URL" in line for line in said)


def test_a_part_of_a_file_that_changed_on_the_server_starts_again(server, video_factory, tmp_path):
    old, new = video_factory(name="v1", frames=30), video_factory(name="v2", frames=50)
    server.files["/tour.mp4"] = old.read_bytes()
    server.etag["/tour.mp4"] = '"v1"'
    server.cut["/tour.mp4"] = 2000
    url = server.url + "/tour.mp4"
    with pytest.raises(DoraUserError, match="download incomplete"):
        download(url, tmp_path)
    server.files["/tour.mp4"] = new.read_bytes()  # replaced on the server
    server.etag["/tour.mp4"] = '"v2"'
    del server.cut["/tour.mp4"]
    assert download(url, tmp_path).read_bytes() == new.read_bytes()
    assert server.requests[-1] == ("/tour.mp4", "bytes=2000-")  # asked to resume, If-Range sent the whole file


def test_a_trickling_server_is_given_up_on_resumably(server, video_factory, tmp_path, monkeypatch):
    video = video_factory(name="drip", frames=30)
    url = server.serve("/drip.mp4", video)
    server.delay["/drip.mp4"] = (64, 0.05)  # about 1.3 kB/s
    monkeypatch.setattr(download_module, "RATE_WINDOW_S", 1.0)
    monkeypatch.setattr(download_module, "MIN_RATE_BYTES_S", 10_000)
    with pytest.raises(DoraUserError, match=r"/drip\.mp4: download too slow: \d+ bytes/s over the last 1 s .*run again to resume it"):
        download(url, tmp_path)
    (part, _) = files_under(tmp_path)
    assert part.name == "drip.mp4.part" and part.stat().st_size > 0


def test_a_bad_file_cached_by_an_older_version_names_its_url_and_the_file_to_delete(server, video_factory, tmp_path, capsys):
    video = video_factory(name="old", frames=40)
    url = server.serve("/old.mp4", video)
    cache = tmp_path / "cache"
    target = cache_path(url, cache)
    target.parent.mkdir(parents=True)
    target.write_bytes(video.read_bytes()[: len(video.read_bytes()) // 2])  # cached, unverified, cut
    assert main(["prepare-data", url, "--out", str(tmp_path / "out"), "--download-dir", str(cache), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"[downloaded from {url}; delete {target} to download it again]" in err[0]
