"""`prepare-data` inputs: URLs downloaded over real HTTP (a local server), list files, video sites."""

from __future__ import annotations

import json
import sys
import types
import urllib.request

import pyarrow.parquet as pq
import pytest

from dora_hf.cli import main
from dora_hf.prepare.inputs import download, read_source_list, resolve_sources
from dora_hf.errors import DoraUserError
from conftest import files_under

FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress"]
"""prepare-data options that keep the synthetic videos quick to decode."""


def prepare_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run prepare-data expecting a user error (exit 2, one line, no traceback); return stderr."""
    rc = main(["prepare-data", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error:" in err and "Traceback" not in err
    return err


def test_list_file_of_urls_and_a_url_argument_make_one_dataset_with_a_video_id_each(
    server, video_factory, tmp_path, capsys
):
    alpha = video_factory(name="alpha", frames=40)
    beta = video_factory(name="beta", frames=50)
    gamma = video_factory(name="gamma", frames=30)
    listing = tmp_path / "WTour.txt"
    listing.write_text(
        "# Walking Tours\n\n"
        f"{server.serve('/tours/alpha.mp4', alpha)}\n"
        f"  {server.serve('/other/beta.mp4', beta)}   # the second tour\n"
    )
    url = server.serve("/gamma.mp4", gamma)
    out, cache = tmp_path / "frames", tmp_path / "cache"
    argv = ["prepare-data", url, "--source-list", str(listing), "--out", str(out), "--download-dir", str(cache)]
    assert main(argv + FAST) == 0, capsys.readouterr().err

    info = json.loads((out / "prepare_info.json").read_text())
    assert [(v["video_id"], v["decoded_frames"]) for v in info["videos"]] == [("gamma", 30), ("alpha", 40), ("beta", 50)]
    rows = [r for shard in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]
    assert [r["video_id"] for r in rows] == ["gamma"] * 15 + ["alpha"] * 20 + ["beta"] * 25
    card = (out / "README.md").read_text()
    table = [line.split(" | ")[:2] for line in card.splitlines() if line.startswith(("| gamma ", "| alpha ", "| beta "))]
    assert table == [["| gamma", "gamma.mp4"], ["| alpha", "alpha.mp4"], ["| beta", "beta.mp4"]], card
    cached = files_under(cache)
    assert sorted(p.name for p in cached) == ["alpha.mp4", "beta.mp4", "gamma.mp4"]
    assert {p.name: p.read_bytes() for p in cached} == {f.name: f.read_bytes() for f in (alpha, beta, gamma)}
    assert all(rng is None for _, rng in server.requests) and len(server.requests) == 3

    # a second run decodes from the cache: no request at all
    assert main(argv[:-3] + [str(tmp_path / "again"), "--download-dir", str(cache)] + FAST) == 0
    assert len(server.requests) == 3


def test_local_paths_in_a_list_are_relative_to_the_list_and_comments_are_skipped(tmp_path):
    (tmp_path / "tours").mkdir()
    listing = tmp_path / "tours" / "list.txt"
    listing.write_text(
        "# header\n venice.mp4  # trailing comment\n\n/data/abs.mp4\nhttp://127.0.0.1/a%20b.mp4#t=3\n   # indented comment\n"
    )
    assert read_source_list(listing) == [
        str(tmp_path / "tours" / "venice.mp4"),
        "/data/abs.mp4",
        "http://127.0.0.1/a%20b.mp4#t=3",
    ]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DoraUserError, match="lists no video"):
        read_source_list(tmp_path / "empty.txt")
    with pytest.raises(DoraUserError, match="no such file"):
        read_source_list(tmp_path / "missing.txt")


def test_not_found_names_the_url_and_leaves_nothing(server, tmp_path, capsys):
    url = server.url + "/tours/missing.mp4"
    out, cache = tmp_path / "frames", tmp_path / "cache"
    err = prepare_error(capsys, [url, "--out", str(out), "--download-dir", str(cache)] + FAST)
    assert f"{url}: download failed: HTTP 404" in err
    assert files_under(cache) == [] and list(cache.iterdir()) == []
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_connection_closed_mid_file_fails_clearly_then_resumes_with_a_range_request(
    server, video_factory, tmp_path, capsys
):
    video = video_factory(name="venice", frames=40)
    url = server.serve("/tours/venice.mp4", video)
    size = len(server.files["/tours/venice.mp4"])
    server.cut["/tours/venice.mp4"] = size // 3
    out, cache = tmp_path / "frames", tmp_path / "cache"
    argv = [url, "--out", str(out), "--download-dir", str(cache)] + FAST

    err = prepare_error(capsys, argv)
    assert f"{url}: download incomplete: {size // 3} of {size} bytes" in err and "run again to resume" in err
    part, validators = files_under(cache)
    assert part.name == "venice.mp4.part" and part.stat().st_size == size // 3  # never named like a complete file
    assert validators.name == "venice.mp4.part.json" and json.loads(validators.read_text())["total"] == size
    assert not out.exists()

    del server.cut["/tours/venice.mp4"]
    assert main(["prepare-data", *argv]) == 0, capsys.readouterr().err
    assert server.requests == [("/tours/venice.mp4", None), ("/tours/venice.mp4", f"bytes={size // 3}-")]
    (complete,) = files_under(cache)
    assert complete.name == "venice.mp4" and complete.read_bytes() == video.read_bytes()
    assert json.loads((out / "prepare_info.json").read_text())["videos"][0]["video_id"] == "venice"


def test_a_server_ignoring_ranges_restarts_the_file_and_a_complete_part_is_kept(server, video_factory, tmp_path):
    video = video_factory(name="rome", frames=30)
    url = server.serve("/rome.mp4", video)
    body = video.read_bytes()
    logged: list[str] = []
    # a .part from an earlier run; the server answers 200 with the whole file, which replaces it
    server.cut["/rome.mp4"] = 1000
    with pytest.raises(DoraUserError, match="download incomplete: 1000 of"):
        download(url, tmp_path, log=logged.append)
    server.ranges = False
    del server.cut["/rome.mp4"]
    assert download(url, tmp_path, log=logged.append).read_bytes() == body
    assert server.requests[-1] == ("/rome.mp4", "bytes=1000-")
    assert not any("resuming" in line for line in logged)

    # a .part already holding every byte (stopped between the last byte and the rename): the
    # server's 416 (range past the end) completes it
    server.ranges = True
    other = server.serve("/milan.mp4", video)

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dora_hf.prepare.download.os.replace", stopped)
        with pytest.raises(KeyboardInterrupt):
            download(other, tmp_path / "b")
    (part,) = [p for p in files_under(tmp_path / "b") if p.suffix == ".part"]
    assert part.read_bytes() == body
    assert download(other, tmp_path / "b").read_bytes() == body
    assert server.requests[-1] == ("/milan.mp4", f"bytes={len(body)}-") and not part.exists()
    assert [p.name for p in files_under(tmp_path / "b")] == ["milan.mp4"]


def test_clashing_video_ids_are_refused_before_any_download(server, video_factory, tmp_path, capsys):
    video = video_factory(name="venice", frames=40)
    first, second = server.serve("/a/venice.mp4", video), server.serve("/b/venice.mkv", video)
    err = prepare_error(capsys, [first, second, "--out", str(tmp_path / "out"), "--download-dir", str(tmp_path / "c")])
    assert f"{second}: its video_id 'venice' (the file name stem) is also that of {first}" in err
    err = prepare_error(capsys, [first, first, "--out", str(tmp_path / "out"), "--download-dir", str(tmp_path / "c")])
    assert f"{first}: given twice" in err
    missing = str(tmp_path / "typo.mp4")
    err = prepare_error(capsys, [first, missing, "--out", str(tmp_path / "out"), "--download-dir", str(tmp_path / "c")])
    assert f"{missing}: no such file" in err
    assert server.requests == [] and not (tmp_path / "c").exists()


def test_no_input_at_all_is_a_user_error(tmp_path, capsys):
    err = prepare_error(capsys, ["--out", str(tmp_path / "out")])
    assert "no VIDEO given" in err and "--source-list" in err


def test_video_site_links_without_yt_dlp_name_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # import yt_dlp raises ImportError
    url = "https://www.youtube.com/watch?v=abc123"
    err = prepare_error(capsys, [url, "--out", str(tmp_path / "out"), "--download-dir", str(tmp_path / "c")])
    assert url in err and "pip install yt-dlp" in err and "dora-hf[download]" in err


def test_video_site_links_go_through_yt_dlp(server, video_factory, monkeypatch, tmp_path):
    """A stand-in yt_dlp module (same API) that fetches from the local server: checks the options
    and the file prepare-data gets back."""
    video = video_factory(name="clip", frames=30)
    direct = server.serve("/media/abc123.mp4", video)
    seen: dict[str, object] = {}

    class YoutubeDL:
        def __init__(self, options: dict) -> None:
            seen["options"] = options

        def __enter__(self) -> YoutubeDL:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def extract_info(self, url: str, download: bool) -> dict:
            seen["url"], seen["download"] = url, download
            info = {"id": "abc123", "ext": "mp4"}
            urllib.request.urlretrieve(direct, self.prepare_filename(info))
            return info

        def prepare_filename(self, info: dict) -> str:
            return seen["options"]["outtmpl"].replace("%(id)s", info["id"]).replace("%(ext)s", info["ext"])  # type: ignore[index,union-attr]

    fake = types.ModuleType("yt_dlp")
    fake.YoutubeDL = YoutubeDL  # type: ignore[attr-defined]
    fake.utils = types.SimpleNamespace(DownloadError=RuntimeError)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "yt_dlp", fake)

    url = "https://youtu.be/abc123"
    (path,) = resolve_sources([url], download_dir=tmp_path, log=lambda _: None)
    assert path == tmp_path / "yt-dlp" / "abc123.mp4" and path.read_bytes() == video.read_bytes()
    assert seen["url"] == url and seen["download"] is True
    assert seen["options"]["noplaylist"] is True and seen["options"]["continuedl"] is True  # type: ignore[index]
