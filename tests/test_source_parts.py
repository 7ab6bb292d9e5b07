"""Walking Tours at full scale: the authors' list forms, lists on the hub or a URL, and one list
prepared in parts (`prepare-data --part I/N`) that train as one dataset.

A list of five synthetic videos (frame indices drawn in, see conftest.py) is prepared whole and
in three parts; the parts, given in any order, must read as the whole list does in both modes
(the same clips, numbered alike, the same epoch) and train to the same weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from accelerate import Accelerator
from conftest import write_synthetic_video
from test_pretrain import final_weights, run_pretrain, tiny_recipe
from video_server import VideoServer

from dora_hf.cli import main
from dora_hf.dataset.clip_index import count_clips
from dora_hf.dataset.random_access import open_random_access
from dora_hf.dataset.streaming import ClipStream
from dora_hf.errors import DoraUserError
from dora_hf.prepare.inputs import gather_sources, read_list_entries, video_id_from_name
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.pretrain import pretrain
from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.training.data_loading import build_clip_loader
from dora_hf.training.recipe import add_recipe_arguments, load_recipe, recipe_from_args

TESTS_DIR = Path(__file__).resolve().parent
FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress"]
"""prepare-data options that keep the synthetic videos quick to decode (those of the tiny recipe)."""
OPTIONS = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=2, frames_per_shard=20)
T, STEP = 2, 6

VIDEOS = {"alpha": 30, "beta": 36, "gamma": 44, "delta": 50, "epsilon": 40}
"""Stem -> frames of the five listed videos."""
LIST = (
    "# Walking Tours, in the forms of the authors' WTour.txt\n"
    "alpha.mp4, Amsterdam\n"
    "beta.mp4, São Paulo   # a trailing comment\n"
    "\n"
    "gamma.mp4\n"
    "delta.mp4 , Kyoto\n"
    "epsilon.mp4,Bangkok\n"
)
LIST_IDS = ["amsterdam", "sao-paulo", "gamma", "kyoto", "bangkok"]
"""The video_ids of the list's entries, in order."""


def quiet(**kwargs):
    return dict(progress=False, log=lambda *_: None, **kwargs)


@dataclasses.dataclass
class Prepared:
    root: Path
    listing: Path
    whole: Path
    parts: list[Path]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """The list prepared whole and in parts 1/3, 2/3 and 3/3."""
    root = tmp_path_factory.mktemp("split")
    tours = root / "tours"
    tours.mkdir()
    for stem, frames in VIDEOS.items():
        write_synthetic_video(tours / f"{stem}.mp4", frames=frames)
    listing = tours / "WTour.txt"
    listing.write_text(LIST)
    whole = root / "whole"
    prepare_dataset([], whole, OPTIONS, source_lists=[str(listing)], **quiet())
    parts = [root / f"part{i}" for i in (1, 2, 3)]
    for i, folder in enumerate(parts, start=1):
        prepare_dataset([], folder, OPTIONS, source_lists=[str(listing)], part=f"{i}/3", **quiet())
    return Prepared(root, listing, whole, parts)


def info_of(folder: Path) -> dict:
    return json.loads((folder / "prepare_info.json").read_text())


def prepare_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run prepare-data expecting one user-error line (exit 2, no traceback); return it."""
    rc = main(["prepare-data", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dora-hf prepare-data: error:") and "Traceback" not in err, err
    return lines[0]


# ---- the list ----------------------------------------------------------------------------------


def test_the_authors_line_forms_bare_urls_and_paths(tmp_path: Path) -> None:
    listing = tmp_path / "WTour.txt"
    listing.write_text(
        "# Walking Tours\n"
        "https://www.youtube.com/watch?v=E07rTPgIvn0, Amsterdam\n"
        "https://www.youtube.com/watch?v=2Dj8mC6QSFs Bangkok\n"  # the earlier form: a space, no comma
        "https://www.youtube.com/watch?v=aBc1,São Paulo   # a comment\n"
        "https://www.youtube.com/watch?v=bare\n"
        "\n"
        "venice.mp4\n"
        "/data/tours/rome old town.mp4, Rome (Old Town)\n"
        "https://example.org/videos/wt-kyoto.mp4\n"
    )
    entries = read_list_entries(listing)
    assert [(e.spec, e.name, e.video_id, e.origin) for e in entries] == [
        ("https://www.youtube.com/watch?v=E07rTPgIvn0", "Amsterdam", "amsterdam", f"{listing} line 2"),
        ("https://www.youtube.com/watch?v=2Dj8mC6QSFs", "Bangkok", "bangkok", f"{listing} line 3"),
        ("https://www.youtube.com/watch?v=aBc1", "São Paulo", "sao-paulo", f"{listing} line 4"),
        ("https://www.youtube.com/watch?v=bare", None, None, f"{listing} line 5"),  # known after yt-dlp
        (str(tmp_path / "venice.mp4"), None, "venice", f"{listing} line 7"),
        ("/data/tours/rome old town.mp4", "Rome (Old Town)", "rome-old-town", f"{listing} line 8"),
        ("https://example.org/videos/wt-kyoto.mp4", None, "wt-kyoto", f"{listing} line 9"),
    ]
    assert [e.written for e in entries][4] == "venice.mp4"  # as written: the same on every machine
    assert [e.entry for e in gather_sources(["first.mp4"], [listing])] == list(range(8))
    # the slug: lower-case ascii letters and digits, anything else one '-'
    for name, slug in [("Zürich", "zurich"), ("  New  York City!  ", "new-york-city"), ("Wien 2 ", "wien-2"),
                       ("Kraków-Old_Town", "krakow-old-town"), ("東京", "")]:
        assert video_id_from_name(name) == slug


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (["{a}, São Paulo", "{b}", "{c}, Sao Paulo"], 3, "the name 'Sao Paulo' makes the video_id 'sao-paulo', as {list} line 1's 'São Paulo' does"),
        (["{a}, Amsterdam", "{b},"], 2, "empty name after the comma"),
        (["{a}, Amsterdam", "{b} ,   "], 2, "empty name after the comma"),
        ([", Amsterdam"], 1, "the line starts with a comma"),
        (["{a}, Amsterdam", "ftp://127.0.0.1/b.mp4, Bangkok"], 2, "ftp:// is not a source prepare-data reads"),
        (["{a} {b}"], 1, "two sources on one line"),
        (["{a}, 東京"], 1, "the name '東京' has no ascii letter or digit"),
        (["{a}, Gamma", "{c}"], 2, "its video_id 'gamma' (the file name stem) is also that of {list} line 1: {a} (from the name 'Gamma')"),
        (["{a}, Amsterdam", "{a}, Bangkok"], 2, "given twice (also {list} line 1)"),
    ],
    ids=["name-collision", "empty-name", "empty-name-spaces", "no-source", "other-scheme", "two-urls", "no-ascii",
         "name-vs-stem", "same-url-twice"],
)
def test_list_errors_are_one_line_naming_the_list_and_line_before_anything_is_written(
    server: VideoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], line: int, message: str
) -> None:
    urls = {k: f"{server.url}/tours/{k}.mp4" for k in ("a", "b")} | {"c": f"{server.url}/tours/gamma.mp4"}
    listing = tmp_path / "WTour.txt"
    listing.write_text("\n".join(entry.format(**urls) for entry in lines) + "\n")
    out = tmp_path / "out"
    err = prepare_error(capsys, ["--source-list", str(listing), "--out", str(out), "--download-dir", str(tmp_path / "c")])
    assert f"{listing} line {line}" in err and message.format(list=listing, **urls) in err, err
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == ["WTour.txt"]


def test_named_urls_and_a_list_served_over_http(
    server: VideoServer, video_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    videos = {name: video_factory(name=name, frames=30 + 4 * i) for i, name in enumerate(["E07rTPgIvn0", "xK2", "gamma"])}
    urls = {name: server.serve(f"/media/{name}.mp4", path) for name, path in videos.items()}
    listing = tmp_path / "WTour.txt"
    listing.write_text(f"{urls['E07rTPgIvn0']}, Amsterdam\n{urls['xK2']} São Paulo\n{urls['gamma']}\n")
    list_url = server.serve("/lists/WTour.txt", listing)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # where the list is downloaded to
    out = tmp_path / "frames"
    argv = ["prepare-data", "--source-list", list_url, "--out", str(out), "--download-dir", str(tmp_path / "cache")]
    assert main(argv + FAST) == 0, capsys.readouterr().err
    assert list(temporary.iterdir()) == []  # the downloaded list is removed once read

    info = info_of(out)
    assert [v["video_id"] for v in info["videos"]] == ["amsterdam", "sao-paulo", "gamma"]
    assert [(s["video_id"], s["file"], s.get("name"), s["url"]) for s in info["sources"]] == [
        ("amsterdam", "E07rTPgIvn0.mp4", "Amsterdam", urls["E07rTPgIvn0"]),
        ("sao-paulo", "xK2.mp4", "São Paulo", urls["xK2"]),
        ("gamma", "gamma.mp4", None, urls["gamma"]),
    ]
    rows = [r for shard in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]
    assert Counter(r["video_id"] for r in rows) == {"amsterdam": 15, "sao-paulo": 17, "gamma": 19}
    assert rows[0]["image"]["path"] == "amsterdam-00000000.jpg"
    card = (out / "README.md").read_text()
    table = [line.split(" | ")[:2] for line in card.splitlines() if line.startswith(("| amsterdam ", "| sao-paulo ", "| gamma "))]
    assert table == [["| amsterdam", "E07rTPgIvn0.mp4"], ["| sao-paulo", "xK2.mp4"], ["| gamma", "gamma.mp4"]], card

    missing = f"{server.url}/lists/missing.txt"
    err = prepare_error(capsys, ["--source-list", missing, "--out", str(tmp_path / "x")])
    assert f"--source-list {missing}: download failed: HTTP 404" in err


HUB_LIST_REPO = "testorg/walking-tours-list"


def client_env(hf_home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """A client process's environment: the local hub's endpoint and an empty HF_HOME of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "TRANSFORMERS_CACHE"}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(TESTS_DIR))
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dora_hf.cli", *argv], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.integration
def test_a_list_on_the_hub_is_downloaded_once_and_read_offline_from_the_cache(
    server: VideoServer, video_factory, tmp_path: Path
) -> None:
    from hub_server import LocalHub

    videos = {name: video_factory(name=name, frames=30 + 2 * i) for i, name in enumerate(["v1", "v2", "v3"])}
    urls = [server.serve(f"/{name}.mp4", path) for name, path in videos.items()]
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "WTour.txt").write_text(f"{urls[0]}, Amsterdam\n{urls[1]} Bangkok\n{urls[2]}\n")
    hub = LocalHub(tmp_path / "hub").start()
    spec = f"hf://datasets/{HUB_LIST_REPO}/WTour.txt"
    common = ["--download-dir", str(tmp_path / "cache"), *FAST]
    try:
        hub.publish(HUB_LIST_REPO, repo, ["WTour.txt"], repo_type="dataset")
        env = client_env(tmp_path / "hf_home", hub.endpoint)
        done = run_cli(env, "prepare-data", "--source-list", spec, "--part", "1/2", "--out", str(tmp_path / "p1"), *common)
        assert done.returncode == 0, done.stderr
        missing = run_cli(env, "prepare-data", "--source-list", spec.replace("WTour", "Other"), "--out", str(tmp_path / "x"))
    finally:
        hub.stop()
    assert missing.returncode == 2 and f"--source-list {spec.replace('WTour', 'Other')}: cannot get it from the hub" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr

    # The hub is gone: the list comes from the cache, with or without HF_HUB_OFFLINE.
    for offline, out in (({"HF_HUB_OFFLINE": "1"}, "p2"), ({}, "p2-again")):
        done = run_cli(client_env(tmp_path / "hf_home", hub.endpoint, **offline), "prepare-data", "--source-list", spec,
                       "--part", "2/2", "--out", str(tmp_path / out), *common)
        assert done.returncode == 0, done.stderr
    one, two = info_of(tmp_path / "p1"), info_of(tmp_path / "p2")
    assert [v["video_id"] for v in one["videos"]] == ["amsterdam", "v3"] and [v["video_id"] for v in two["videos"]] == ["bangkok"]
    assert one["part"]["lists"] == [spec] and one["part"]["split_id"] == two["part"]["split_id"]
    assert [e["source"] for e in one["part"]["entries"]] == urls
    assert info_of(tmp_path / "p2-again")["videos"] == two["videos"]


# ---- parts ---------------------------------------------------------------------------------------


def test_parts_cover_the_list_once_by_entry_number(prepared: Prepared) -> None:
    whole_ids = [v["video_id"] for v in info_of(prepared.whole)["videos"]]
    assert whole_ids == LIST_IDS
    seen: list[str] = []
    for index, folder in enumerate(prepared.parts, start=1):
        info = info_of(folder)
        expected_entries = [k for k in range(len(LIST_IDS)) if k % 3 == index - 1]  # the documented rule
        assert [s["list_entry"] for s in info["sources"]] == expected_entries
        assert [v["video_id"] for v in info["videos"]] == [LIST_IDS[k] for k in expected_entries]
        record = info["part"]
        assert (record["index"], record["count"], record["lists"]) == (index, 3, [str(prepared.listing)])
        assert [(e["source"], e["video_id"], e["part"]) for e in record["entries"]] == [
            ("alpha.mp4", "amsterdam", 1), ("beta.mp4", "sao-paulo", 2), ("gamma.mp4", None, 3),
            ("delta.mp4", "kyoto", 1), ("epsilon.mp4", "bangkok", 2),
        ]
        seen += [v["video_id"] for v in info["videos"]]
        card = (folder / "README.md").read_text()
        assert f"| part | {index} of 3 of {prepared.listing}" in card and f"(part {index} of 3)" in card
    assert sorted(seen) == sorted(whole_ids) and len(seen) == len(set(seen))
    assert len({info_of(f)["part"]["split_id"] for f in prepared.parts}) == 1
    assert "part" not in info_of(prepared.whole)


def test_a_part_decoded_by_several_processes_is_the_same_part(prepared: Prepared, tmp_path: Path) -> None:
    """The named videos' video_ids travel to the decoding processes (spawned) and back."""
    out = tmp_path / "part2"
    prepare_dataset([], out, OPTIONS, source_lists=[str(prepared.listing)], part="2/3", num_workers=2, **quiet())
    ours, theirs = info_of(out), info_of(prepared.parts[1])
    for key in ("videos", "sources", "part", "shards"):
        assert ours[key] == theirs[key], key


def distinct_clips_by_plain_loop(folder: Path) -> set[tuple[str, tuple[int, ...]]]:
    """Every distinct clip of a prepared folder: kept rows of one video, STEP source frames apart."""
    rows = [r for shard in sorted((folder / "data").glob("*.parquet"))
            for r in pq.read_table(shard, columns=["video_id", "frame_index", "keep_every"]).to_pylist()]
    clips = set()
    for i, row in enumerate(rows):
        wanted = [row["frame_index"] + j * STEP for j in range(T)]
        later = [r["frame_index"] for r in rows[i : i + STEP * T] if r["video_id"] == row["video_id"]]
        if all(f in later for f in wanted):
            clips.add((row["video_id"], tuple(wanted)))
    return clips


def test_parts_read_as_one_give_the_whole_lists_clips_and_epoch(prepared: Prepared, tmp_path: Path) -> None:
    parts = [str(p) for p in (prepared.parts[2], prepared.parts[0], prepared.parts[1])]  # given out of order
    whole = str(prepared.whole)
    expected = distinct_clips_by_plain_loop(prepared.whole)
    assert expected == set().union(*(distinct_clips_by_plain_loop(p) for p in prepared.parts))
    epoch = count_clips(info_of(prepared.whole), T, STEP)
    assert sum(count_clips(info_of(p), T, STEP) for p in prepared.parts) == epoch
    assert epoch == sum(n - (T - 1) * STEP for n in VIDEOS.values())  # one clip per source-frame start

    # random access: the same clip numbers hold the same clips
    options = dict(frames_per_clip=T, clip_step=STEP, cache_dir=str(tmp_path / "cache"))
    one, _ = open_random_access(whole, **options)
    split, _ = open_random_access(parts, **options)
    assert split.index.num_clips == one.index.num_clips == epoch
    assert split.index.num_kept_starts == one.index.num_kept_starts == len(expected)
    assert [v.video_id for v in split.index.videos] == LIST_IDS
    numbers = np.arange(epoch)

    def numbered(clips) -> list[tuple[str, tuple[int, ...]]]:
        videos, rows = clips.index.clip_rows(numbers)
        return [(clips.index.videos[v].video_id, tuple(clips._frame_indices[r].tolist())) for v, r in zip(videos, rows)]

    assert numbered(split) == numbered(one) and set(numbered(split)) == expected
    sample = split[int(numbers[-1])]
    assert sample["video_id"] == "bangkok" and sample["frames"].shape == (T, 3, 96, 160)

    # streaming: every distinct clip once per pass, none across videos
    streamed = ClipStream.from_source(parts, frames_per_clip=T, clip_step=STEP, shuffle=False)
    keys = [(c["video_id"], tuple(c["frame_indices"].tolist())) for c in streamed]
    assert len(keys) == streamed.num_clips == len(expected) and set(keys) == expected
    assert len(streamed.shard_names) == sum(len(list((p / "data").glob("*.parquet"))) for p in prepared.parts)

    # what training plans, in both modes
    for streaming in (False, True):
        plans = []
        for dataset in (whole, parts):
            recipe = dataclasses.replace(
                tiny_recipe(prepared.whole, tmp_path / "run", streaming=streaming, dataset_cache_dir=str(tmp_path / "cache")),
                dataset=dataset,
            )
            plans.append(build_clip_loader(recipe, 0, 1, torch.device("cpu"))[2])
        assert plans[0].clips_per_epoch == plans[1].clips_per_epoch == epoch
        assert plans[0].distinct_clips == plans[1].distinct_clips == len(expected)
        assert "of 3 datasets" in plans[1].mode


def test_training_on_the_parts_is_training_on_the_whole_list(prepared: Prepared, tmp_path: Path, monkeypatch) -> None:
    """Two real steps of the tiny recipe: the parts, in any order, give the whole list's batches and weights."""
    cache = str(tmp_path / "cache")
    whole = run_pretrain(
        tiny_recipe(prepared.whole, tmp_path / "whole", dataset_cache_dir=cache, checkpointing_steps=100),
        monkeypatch, interrupt_at=2,
    )
    monkeypatch.undo()
    recipe = dataclasses.replace(
        tiny_recipe(prepared.whole, tmp_path / "parts", dataset_cache_dir=cache, checkpointing_steps=100),
        dataset=[str(prepared.parts[i]) for i in (1, 2, 0)],
    )
    parts = run_pretrain(recipe, monkeypatch, interrupt_at=2)
    assert whole.steps == parts.steps == 3 and whole.interrupted and parts.interrupted
    ours, theirs = final_weights(tmp_path / "parts"), final_weights(tmp_path / "whole")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0, msg=name)
    saved = json.loads((complete_checkpoints(tmp_path / "parts")[-1] / "recipe.json").read_text())
    assert saved["dataset"] == recipe.dataset


def test_a_run_on_the_parts_exports_its_teacher(prepared: Prepared, tmp_path: Path) -> None:
    recipe = dataclasses.replace(
        tiny_recipe(prepared.whole, tmp_path / "run", dataset_cache_dir=str(tmp_path / "cache"), max_steps=2),
        dataset=[str(p) for p in prepared.parts],
    )
    result = pretrain(recipe, Accelerator(cpu=True))
    assert result.steps == 2 and (result.export_dir / "model.safetensors").is_file()
    card = (result.export_dir / "README.md").read_text()
    assert all(str(p) in card for p in prepared.parts)


def test_reader_states_resume_exactly_and_only_on_the_same_clip_numbering(prepared: Prepared, tmp_path: Path) -> None:
    options = dict(frames_per_clip=T, clip_step=STEP, cache_dir=str(tmp_path / "cache"), seed=4)
    _, sampler = open_random_access([str(p) for p in prepared.parts], **options)
    uninterrupted = list(sampler)
    it = iter(sampler)
    head = [next(it) for _ in range(40)]
    sampler.mark_consumed({"video_id": head})
    state = json.loads(json.dumps(sampler.state_dict()))
    for dataset in ([str(prepared.parts[i]) for i in (2, 1, 0)], str(prepared.whole)):  # the same numbering
        _, resumed = open_random_access(dataset, **options)
        resumed.load_state_dict(state)
        assert head + list(resumed) == uninterrupted

    stream_options = dict(frames_per_clip=T, clip_step=STEP, seed=2, shuffle_buffer=16)

    def key(clip: dict) -> tuple[str, tuple[int, ...]]:
        return clip["video_id"], tuple(clip["frame_indices"].tolist())

    stream = ClipStream.from_source([str(p) for p in prepared.parts], **stream_options)
    everything = [key(c) for c in stream]
    stream = ClipStream.from_source([str(p) for p in prepared.parts], **stream_options)
    it = iter(stream)
    head = [key(next(it)) for _ in range(25)]
    state = json.loads(json.dumps(stream.state_dict()))
    del it
    resumed = ClipStream.from_source([str(prepared.parts[i]) for i in (1, 0, 2)], **stream_options)
    resumed.load_state_dict(state)
    assert head + [key(c) for c in resumed] == everything

    # Two datasets that are no split: their order is the numbering; the other order is refused.
    x, y = tmp_path / "x", tmp_path / "y"
    for folder, stem in ((x, "alpha"), (y, "beta")):
        prepare_dataset([prepared.listing.parent / f"{stem}.mp4"], folder, OPTIONS, **quiet())
    _, forward = open_random_access([str(x), str(y)], **options)
    _, backward = open_random_access([str(y), str(x)], **options)
    assert forward.num_clips == backward.num_clips
    with pytest.raises(DoraUserError, match="the videos, or their order, differ from the saved run's"):
        backward.load_state_dict(forward.state_dict())
    with pytest.raises(DoraUserError, match="the videos, or their order, differ from the saved run's"):
        ClipStream.from_source([str(y), str(x)], **stream_options).load_state_dict(
            ClipStream.from_source([str(x), str(y)], **stream_options).state_dict()
        )


def copy_part(prepared: Prepared, index: int, to: Path) -> Path:
    return Path(shutil.copytree(prepared.parts[index - 1], to))


def test_a_missing_or_altered_part_is_refused_by_name(prepared: Prepared, tmp_path: Path, capsys) -> None:
    one, two, three = (str(p) for p in prepared.parts)
    options = dict(frames_per_clip=T, clip_step=STEP, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DoraUserError) as missing:
        open_random_access([one, three], **options)
    assert (
        f"folder {one} (part 1/3), folder {three} (part 3/3) are parts of the split of {prepared.listing} (5 videos) in "
        "3 parts, but part 2/3 (videos: sao-paulo, bangkok) is missing"
    ) in str(missing.value)
    assert f"dora-hf prepare-data --source-list {prepared.listing} --part 2/3" in str(missing.value)
    with pytest.raises(DoraUserError, match="part 2/3 .* is missing"):
        ClipStream.from_source([three, one], frames_per_clip=T, clip_step=STEP)

    # a shard cut short: the manifest check names the folder and the shard, in both modes
    cut = copy_part(prepared, 2, tmp_path / "cut")
    shard = max((cut / "data").glob("*.parquet"))
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[: size // 2])
    with pytest.raises(DoraUserError, match=f"folder {cut} does not match its manifest .* shard data/{shard.name} is {size // 2} bytes"):
        open_random_access([one, str(cut), three], **options)
    with pytest.raises(DoraUserError, match=f"folder {cut} does not match its manifest"):
        ClipStream.from_source([one, str(cut), three], frames_per_clip=T, clip_step=STEP)

    # a part whose record says it holds other entries, or that is of another split of the list
    edited = copy_part(prepared, 2, tmp_path / "edited")
    info = info_of(edited)
    info["sources"][1]["list_entry"] = 3
    (edited / "prepare_info.json").write_text(json.dumps(info))
    with pytest.raises(DoraUserError, match=rf"folder {edited} says it is part 2/3 of .* but holds list entries \[1, 3\]"):
        open_random_access([one, str(edited), three], **options)
    other = copy_part(prepared, 2, tmp_path / "other")
    info = info_of(other)
    info["part"]["split_id"] = "0" * 16
    (other / "prepare_info.json").write_text(json.dumps(info))
    with pytest.raises(DoraUserError, match=rf"part 2/3 .* is missing \(folder {other} is part 2/3 of another split"):
        open_random_access([one, str(other), three], **options)

    # the same part twice, and the same folder twice
    again = copy_part(prepared, 1, tmp_path / "again")
    with pytest.raises(DoraUserError, match=f"folder {one} and folder {again} are both part 1/3"):
        open_random_access([one, two, three, str(again)], **options)
    with pytest.raises(DoraUserError, match=f"folder {one} is given twice"):
        open_random_access([one, two, one], **options)

    # verify-data: every folder against its manifest, then the folders as one
    assert main(["verify-data", one, two, three]) == 0
    out = capsys.readouterr().out
    assert f"3 datasets (the split of {prepared.listing} (5 videos) in 3 parts): read as one dataset of 5 videos" in out
    assert main(["verify-data", three, one]) == 2
    assert "part 2/3 (videos: sao-paulo, bangkok) is missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--part", "4/3"], ["--part", "0/3"], ["--part", "two"], ["--part", "1/3", "--no-list"], ["--part", "2/6"]],
    ids=["past-the-end", "zero", "not-a-fraction", "without-a-list", "more-parts-than-videos"],
)
def test_bad_part_options_are_one_line_and_write_nothing(prepared: Prepared, tmp_path: Path, capsys, argv) -> None:
    out = tmp_path / "out"
    lists = [] if "--no-list" in argv else ["--source-list", str(prepared.listing)]
    videos = [str(prepared.listing.parent / "alpha.mp4")] if "--no-list" in argv else []
    err = prepare_error(capsys, [*videos, *lists, *[a for a in argv if a != "--no-list"], "--out", str(out), *FAST])
    expected = {
        "4/3": "--part 4/3: the part must be 1 to 3",
        "0/3": "--part 0/3: the part must be 1 to 3",
        "two": "--part must be I/N, the I-th of N parts, e.g. --part 2/3 (got 'two')",
        "1/3": "--part 1/3 splits a list of videos: give it with --source-list FILE",
        "2/6": "--part 2/6: the inputs hold 5 video(s), too few for 6 parts",
    }[argv[1]]
    assert expected in err
    assert list(tmp_path.iterdir()) == []


def test_datasets_with_other_frame_settings_or_a_shared_video_are_refused_before_training(
    prepared: Prepared, tmp_path: Path
) -> None:
    one, three = str(prepared.parts[0]), str(prepared.parts[2])
    listing = str(prepared.listing)
    variants = {
        "keep_every 3 there, 2 in": PrepareOptions(clip_step=6, keep_every=3, frames_per_clip=2),
        "frame size 80x48 there, 160x96 in": dataclasses.replace(OPTIONS, short_side=48),
        "image format webp there, jpeg in": dataclasses.replace(OPTIONS, image_format="webp"),
    }
    for number, (message, options) in enumerate(variants.items()):
        two = tmp_path / f"two-{number}"
        prepare_dataset([], two, options, source_lists=[listing], part="2/3", **quiet())
        with pytest.raises(DoraUserError, match=f"folder {two} was prepared with other frame settings than folder {one} .*{message} folder {one}"):
            open_random_access([one, str(two), three], frames_per_clip=T, clip_step=6, cache_dir=str(tmp_path / "c"))
        run = tmp_path / f"run-{number}"
        recipe = dataclasses.replace(tiny_recipe(prepared.whole, run), dataset=[one, str(two), three])
        with pytest.raises(DoraUserError, match=f"recipe key 'dataset': folder {two} was prepared with other frame settings"):
            pretrain(recipe, Accelerator(cpu=True))
        assert not run.exists()  # refused before the run folder is written

    # two parts (of two lists) holding the same video id
    tours = prepared.listing.parent
    (tmp_path / "a.txt").write_text(f"{tours / 'alpha.mp4'}, Amsterdam\n{tours / 'beta.mp4'}, Bangkok\n")
    (tmp_path / "b.txt").write_text(f"{tours / 'gamma.mp4'}, Amsterdam\n")
    for name in ("a", "b"):
        prepare_dataset([], tmp_path / f"list-{name}", OPTIONS, source_lists=[str(tmp_path / f"{name}.txt")], part="1/1", **quiet())
    a, b = str(tmp_path / "list-a"), str(tmp_path / "list-b")
    with pytest.raises(DoraUserError, match=f"video_id 'amsterdam' is in both folder {a} and folder {b}"):
        ClipStream.from_source([a, b], frames_per_clip=T, clip_step=STEP)
    run = tmp_path / "run-shared"
    with pytest.raises(DoraUserError, match="video_id 'amsterdam' is in both"):
        pretrain(dataclasses.replace(tiny_recipe(prepared.whole, run), dataset=[a, b]), Accelerator(cpu=True))
    assert not run.exists()


def test_recipes_take_several_datasets_as_a_yaml_list_or_on_the_command_line(prepared: Prepared, tmp_path: Path) -> None:
    parts = [str(p) for p in prepared.parts]
    config = tmp_path / "recipe.yaml"
    config.write_text("dataset:\n" + "".join(f"  - {p}\n" for p in parts))
    assert load_recipe(config).dataset == parts
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--dataset", *parts[::-1], "--seed", "3"])
    recipe = recipe_from_args(args)  # validated: the parts are checked against each other
    assert recipe.dataset == parts[::-1] and recipe.seed == 3
    assert recipe_from_args(parser.parse_args(["--config", str(config), "--dataset", parts[0]])).dataset == parts[0]
    assert load_recipe(None, {"dataset": [parts[1]]}).dataset == parts[1]  # a list of one is that dataset
    with pytest.raises(DoraUserError, match="recipe key 'dataset' must be a string or a list of strings"):
        load_recipe(None, {"dataset": [parts[0], 3]})
    with pytest.raises(DoraUserError, match="recipe key 'dataset': .* part 3/3 .* is missing"):
        recipe_from_args(parser.parse_args(["--config", str(config), "--dataset", *parts[:2]]))
