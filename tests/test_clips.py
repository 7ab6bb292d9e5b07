"""The streaming clip reader against plain enumerations of the clips a prepared dataset holds.

Every frame is a flat JPEG whose red channel encodes its row within the video (4 * row) and whose
green channel encodes the video, so a decoded clip shows which frames it really holds.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image as PILImage

from conftest import read_frame_index
from dora_hf.dataset.streaming import ClipStream
from dora_hf.dataset.batches import collate_clips
from dora_hf.prepare.shard_writer import FRAME_FEATURES
from dora_hf.dataset.shards import RowGroup, RowGroupReader
from dora_hf.errors import DoraUserError

GREEN = {"a": 40, "b": 200, "c": 120}
VIDEOS = {"a": 60, "b": 45}  # kept frames per video
KEEP_EVERY = 10
T, STEP = 4, 60  # 4 frames, 60 source frames apart = 6 kept rows apart; one clip spans 19 rows


def jpeg(row: int, video: str, size: tuple[int, int] = (32, 24)) -> bytes:
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[..., 0] = (4 * row) % 256
    pixels[..., 1] = GREEN[video]
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def make_rows(
    videos: dict[str, int], keep_every: int = KEEP_EVERY, fps: float = 60.0, size: tuple[int, int] = (32, 24)
) -> list[dict]:
    return [
        {
            "image": {"bytes": jpeg(r, v, size), "path": None},
            "video_id": v,
            "frame_index": r * keep_every,
            "timestamp": r * keep_every / fps,
            "source_fps": fps,
            "keep_every": keep_every,
            "width": size[0],
            "height": size[1],
        }
        for v, n in videos.items()
        for r in range(n)
    ]


def write_dataset(folder: Path, rows: list[dict], num_shards: int, rows_per_group: int | None = None) -> Path:
    """Shards in the prepared format, split by row count (so videos straddle shard boundaries).

    ``rows_per_group`` sets the parquet row-group size (one row group per shard by default here).
    """
    (folder / "data").mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(rows)), num_shards)):
        columns = {k: [rows[j][k] for j in part] for k in FRAME_FEATURES}
        path = folder / "data" / f"train-{i:05d}-of-{num_shards:05d}.parquet"
        datasets.Dataset.from_dict(columns, features=FRAME_FEATURES).to_parquet(str(path), batch_size=rows_per_group)
    return folder


def row_groups(folder: Path) -> list[tuple[int, int]]:
    """``(first row, stop row)`` of every row group, rows numbered over all shards, from the parquet footers."""
    spans, first = [], 0
    for path in sorted((folder / "data").glob("*.parquet")):
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            spans.append((first, first + meta.row_group(g).num_rows))
            first += meta.row_group(g).num_rows
    return spans


def clip_rows(videos: dict[str, int], clip: tuple[str, tuple[int, ...]], keep_every: int = KEEP_EVERY) -> list[int]:
    """Dataset rows of a clip's frames: videos are stored one after another, one row per kept frame."""
    offset = dict(zip(videos, np.cumsum([0, *videos.values()]).tolist()))
    return [offset[clip[0]] + f // keep_every for f in clip[1]]


class ReadLog:
    """Records the (shard, row group) of every row-group read, in this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads: list[tuple[int, int]] = []
        real = RowGroupReader._read

        def read(reader: RowGroupReader, group: RowGroup, rows: int) -> list[bytes | None]:
            self.reads.append((group.shard, group.index))
            return real(reader, group, rows)

        monkeypatch.setattr(RowGroupReader, "_read", read)

    def take(self) -> list[tuple[int, int]]:
        reads, self.reads = self.reads, []
        return reads


def as_worker(s: ClipStream, worker: int, workers: int, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """What DataLoader worker ``worker`` of ``workers`` yields, iterated here (get_worker_info stood in for)."""
    info = SimpleNamespace(id=worker, num_workers=workers, seed=0, dataset=s)
    with monkeypatch.context() as m:
        m.setattr(torch.utils.data, "get_worker_info", lambda: info)
        return list(s)


def expected_clips(
    videos: dict[str, int], frames: int = T, step: int = STEP, keep_every: int = KEEP_EVERY, stride: int = 1
) -> list[tuple[str, tuple[int, ...]]]:
    """Every valid clip, plainly: each kept frame with room for the clip after it starts one."""
    k = step // keep_every
    return [
        (v, tuple((r + i * k) * keep_every for i in range(frames)))
        for v, n in videos.items()
        for r in range(0, n - (frames - 1) * k)
        if r % stride == 0
    ]


def key(sample: dict) -> tuple[str, tuple[int, ...]]:
    return sample["video_id"], tuple(sample["frame_indices"].tolist())


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("wt") / "prepared", make_rows(VIDEOS), 4)


def stream(folder: Path, **kwargs) -> ClipStream:
    kwargs = {"frames_per_clip": T, "clip_step": STEP, "shuffle_buffer": 16, **kwargs}
    return ClipStream.from_source(folder, **kwargs)


# ---- clip contents ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK"])
def test_frames_stored_in_other_colour_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    # prepare-data writes RGB JPEGs (read without a conversion copy); other writers may not.
    rows = make_rows({"a": 20})
    expected = []
    for r, row in enumerate(rows):
        rgb = np.zeros((24, 32, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 4 * r, 200 - 4 * r, 90
        image = PILImage.fromarray(rgb).convert(mode)
        out = io.BytesIO()
        image.save(out, format="PNG" if mode == "RGBA" else "JPEG" if mode == "L" else "TIFF")
        row["image"] = {"bytes": out.getvalue(), "path": None}
        # What the frame is as RGB, converted plainly through PIL.
        decoded = PILImage.open(io.BytesIO(out.getvalue())).convert("RGB")
        expected.append(torch.from_numpy(np.asarray(decoded).copy()).permute(2, 0, 1))
    folder = write_dataset(tmp_path / "d", rows, 1)
    samples = list(stream(folder, shuffle=False))
    assert samples
    for s in samples:
        assert s["frames"].shape == (T, 3, 24, 32)
        for t, frame_index in enumerate(s["frame_indices"].tolist()):
            assert torch.equal(s["frames"][t], expected[frame_index // KEEP_EVERY])
    if mode == "L":  # grey frames come out with three equal channels
        frames = samples[0]["frames"]
        assert torch.equal(frames[:, 0], frames[:, 1]) and torch.equal(frames[:, 1], frames[:, 2])


@pytest.mark.parametrize("num_shards", [1, 4, 11])
def test_unshuffled_clips_are_the_plain_enumeration_with_the_right_pixels(tmp_path: Path, num_shards: int) -> None:
    # 11 shards of about 10 rows are shorter than one clip's 19-row span: clips read on over
    # several later shards.
    folder = write_dataset(tmp_path / "d", make_rows(VIDEOS), num_shards)
    samples = list(stream(folder, shuffle=False))
    assert [key(s) for s in samples] == expected_clips(VIDEOS)
    for s in samples:
        assert s["frames"].dtype == torch.uint8 and s["frames"].shape == (T, 3, 24, 32)
        assert s["start_frame"] == s["frame_indices"][0].item()
        red = s["frames"][:, 0].float().mean(dim=(1, 2))
        green = s["frames"][:, 1].float().mean(dim=(1, 2))
        assert torch.round(red / 4).long().tolist() == [f // KEEP_EVERY for f in key(s)[1]]
        assert (green - GREEN[s["video_id"]]).abs().max() < 4


def test_clip_step_seconds_rounds_to_a_multiple_of_keep_every(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_dataset(tmp_path / "d", make_rows(VIDEOS, fps=59.94), 2)
    with caplog.at_level(logging.INFO, logger="dora_hf.dataset"):
        got = [key(s) for s in stream(folder, clip_step=None, clip_step_seconds=1.0, shuffle=False)]
    assert got == expected_clips(VIDEOS, step=60)  # 59.94 source frames -> 60
    said = [r.getMessage() for r in caplog.records if "clip_step_seconds" in r.getMessage()]
    assert sorted(m.split("'")[1] for m in said) == ["a", "b"]  # once per video, not per shard
    assert "rounded to 60" in said[0]
    got = [key(s) for s in stream(folder, clip_step=None, clip_step_seconds=0.3, shuffle=False)]
    assert got == expected_clips(VIDEOS, step=20)  # 17.98 -> 20, the nearest multiple of 10


def test_clip_stride_thins_the_starts(four_shards: Path) -> None:
    got = [key(s) for s in stream(four_shards, shuffle=False, clip_stride=3)]
    assert got == expected_clips(VIDEOS, stride=3)


def test_single_frame_clips(four_shards: Path) -> None:
    got = [key(s) for s in stream(four_shards, shuffle=False, frames_per_clip=1)]
    assert got == expected_clips(VIDEOS, frames=1)


def test_reads_what_prepare_data_writes(synthetic_video: Path, tmp_path: Path) -> None:
    from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset

    options = PrepareOptions(clip_step=30, keep_every=5, frames_per_clip=4, short_side=96, frames_per_shard=15)
    prepare_dataset([synthetic_video], tmp_path / "prepared", options, progress=False, log=None)
    samples = list(ClipStream.from_source(tmp_path / "prepared", frames_per_clip=4, clip_step=30, shuffle=False))
    kept = 200 // 5
    assert [s["start_frame"] for s in samples] == [5 * r for r in range(kept - 3 * 6)]
    for s in samples:
        shown = [read_frame_index(frame.permute(1, 2, 0).numpy()) for frame in s["frames"]]
        assert shown == s["frame_indices"].tolist() == [s["start_frame"] + 30 * i for i in range(4)]


# ---- one epoch: no loss, no duplicate, across ranks and workers -----------------------------------


def test_shuffled_epoch_holds_every_clip_once_and_is_not_in_time_order(four_shards: Path) -> None:
    got = [key(s) for s in stream(four_shards, seed=3)]
    assert Counter(got) == Counter(expected_clips(VIDEOS))
    assert got != expected_clips(VIDEOS)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_split_the_epoch_disjointly_and_equally(four_shards: Path, world_size: int) -> None:
    per_rank = [[key(s) for s in stream(four_shards, rank=r, world_size=world_size)] for r in range(world_size)]
    everything = [clip for clips in per_rank for clip in clips]
    expected = expected_clips(VIDEOS)  # 69 clips: 1 (2 ranks) or 0 (3 ranks) left out of the epoch
    assert [len(clips) for clips in per_rank] == [len(expected) // world_size] * world_size
    assert len(set(everything)) == len(everything) and set(everything) <= set(expected)
    assert len(set(expected) - set(everything)) == len(expected) % world_size


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("num_workers", [2, 5])
def test_dataloader_workers_split_the_epoch_disjointly(four_shards: Path, num_workers: int) -> None:
    # 5 workers for 4 row groups (one per shard): readers share a row group, each taking its own clips.
    loader = torch.utils.data.DataLoader(
        stream(four_shards), batch_size=5, num_workers=num_workers, collate_fn=collate_clips
    )
    got = [(v, tuple(f)) for b in loader for v, f in zip(b["video_id"], b["frame_indices"].tolist())]
    assert Counter(got) == Counter(expected_clips(VIDEOS))


def test_two_ranks_with_two_workers_each(four_shards: Path) -> None:
    per_rank = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(
            stream(four_shards, rank=rank, world_size=2), batch_size=4, num_workers=2, collate_fn=collate_clips
        )
        per_rank.append([(v, tuple(f)) for b in loader for v, f in zip(b["video_id"], b["frame_indices"].tolist())])
    expected = expected_clips(VIDEOS)
    assert [len(clips) for clips in per_rank] == [len(expected) // 2] * 2
    everything = per_rank[0] + per_rank[1]
    assert len(set(everything)) == len(everything) == len(expected) - 1 and set(everything) <= set(expected)


# ---- spreading row groups over many readers ---------------------------------------------------------

# 19 shards of 20-21 rows in row groups of 5 rows (78 row groups), tiny frames: 8 ranks x 8 workers
# = 64 readers. 134 + 112 + 82 = 328 clips, a multiple of 8, so no clip waits for another epoch.
MANY = {"a": 152, "b": 130, "c": 100}


@pytest.fixture(scope="module")
def nineteen_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = make_rows(MANY, size=(8, 8))
    return write_dataset(tmp_path_factory.mktemp("wt19") / "prepared", rows, 19, rows_per_group=5)


def test_eight_ranks_of_eight_workers_over_nineteen_shards(
    nineteen_shards: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    groups = row_groups(nineteen_shards)
    assert len(groups) == 78 and len(list((nineteen_shards / "data").glob("*.parquet"))) == 19
    expected = expected_clips(MANY)
    assert len(expected) == 328
    log = ReadLog(monkeypatch)
    readers: dict[tuple[int, int], list] = {}
    reads: dict[tuple[int, int], list] = {}
    with caplog.at_level(logging.WARNING, logger="dora_hf.dataset"):
        for rank in range(8):
            s = stream(nineteen_shards, rank=rank, world_size=8, seed=11)
            for worker in range(8):
                readers[rank, worker] = [key(c) for c in as_worker(s, worker, 8, monkeypatch)]
                reads[rank, worker] = log.take()
    assert not caplog.records  # no worker without clips, no shared row groups

    assert all(readers.values())  # every worker has clips
    per_rank = [sum(len(readers[rank, w]) for w in range(8)) for rank in range(8)]
    assert per_rank == [328 // 8] * 8
    everything = [clip for clips in readers.values() for clip in clips]
    assert Counter(everything) == Counter(expected)  # each clip once, none missing

    # Each reader fetched only row groups holding frames of its own clips (its units and the rows
    # after them), a small part of the dataset, not every shard.
    shard_groups = [(shard, g) for shard, path in enumerate(sorted((nineteen_shards / "data").glob("*.parquet")))
                    for g in range(pq.read_metadata(path).num_row_groups)]
    for reader, clips in readers.items():
        rows = {r for clip in clips for r in clip_rows(MANY, clip)}
        holding = {shard_groups[i] for i, (lo, hi) in enumerate(groups) if any(lo <= r < hi for r in rows)}
        assert set(reads[reader]) <= holding, reader
        assert len(set(reads[reader])) < len(groups) / 4, reader


def test_one_shard_feeds_two_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One shard of 5 row groups (21 rows each), as prepare-data writes for a short video.
    folder = write_dataset(tmp_path / "d", make_rows(VIDEOS), 1, rows_per_group=21)
    assert len(row_groups(folder)) == 5
    expected = expected_clips(VIDEOS)
    per_rank = [[key(s) for s in stream(folder, rank=rank, world_size=2)] for rank in range(2)]
    assert [len(clips) for clips in per_rank] == [len(expected) // 2] * 2
    assert not set(per_rank[0]) & set(per_rank[1]) and set(per_rank[0] + per_rank[1]) <= set(expected)
    # Two workers each: four readers on five row groups, all busy, the same clips per rank.
    per_worker = {(r, w): [key(s) for s in as_worker(stream(folder, rank=r, world_size=2), w, 2, monkeypatch)]
                  for r in range(2) for w in range(2)}
    assert all(per_worker.values())
    assert [len(per_worker[r, 0]) + len(per_worker[r, 1]) for r in range(2)] == [len(expected) // 2] * 2
    assert sorted(sum(per_worker.values(), [])) == sorted(per_rank[0] + per_rank[1])


def test_fewer_row_groups_than_readers_still_splits_but_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_dataset(tmp_path / "d", make_rows(VIDEOS), 1)  # one shard of one row group
    assert len(row_groups(folder)) == 1
    with caplog.at_level(logging.WARNING, logger="dora_hf.dataset"):
        per_rank = [[key(s) for s in stream(folder, rank=rank, world_size=2)] for rank in range(2)]
    expected = expected_clips(VIDEOS)
    assert [len(clips) for clips in per_rank] == [len(expected) // 2] * 2
    assert not set(per_rank[0]) & set(per_rank[1]) and set(per_rank[0] + per_rank[1]) <= set(expected)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "1 row group(s) for 2 process(es) x 1 data-loader worker(s) = 2 readers" in warning


def test_more_processes_than_clips_is_refused(four_shards: Path) -> None:
    with pytest.raises(DoraUserError, match=r"holds 69 clip\(s\) of 4 frames .* fewer than world_size=70"):
        stream(four_shards, rank=0, world_size=70)
    assert len(list(stream(four_shards, rank=68, world_size=69))) == 1


# ---- order: deterministic per seed and epoch -----------------------------------------------------


def test_order_is_fixed_by_seed_and_epoch(four_shards: Path) -> None:
    first = [key(s) for s in stream(four_shards, seed=1)]
    assert [key(s) for s in stream(four_shards, seed=1)] == first
    assert [key(s) for s in stream(four_shards, seed=2)] != first
    other_epoch = stream(four_shards, seed=1)
    other_epoch.set_epoch(1)
    second = [key(s) for s in other_epoch]
    assert second != first and Counter(second) == Counter(first)
    other_epoch.set_epoch(0)
    assert [key(s) for s in other_epoch] == first


def test_persistent_workers_follow_set_epoch(four_shards: Path) -> None:
    def keys(loader: torch.utils.data.DataLoader) -> list:
        return [(v, f) for b in loader for v, f in zip(b["video_id"], b["start_frame"].tolist())]

    def loader(s: ClipStream, **kwargs) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(s, batch_size=4, num_workers=2, collate_fn=collate_clips, **kwargs)

    persistent = stream(four_shards, seed=4)
    workers = loader(persistent, persistent_workers=True)
    first = keys(workers)
    persistent.set_epoch(1)
    second = keys(workers)
    fresh = stream(four_shards, seed=4)
    fresh.set_epoch(1)
    assert second == keys(loader(fresh)) and second != first and Counter(second) == Counter(first)


# ---- resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [0, 2])
def test_resume_continues_exactly_where_it_stopped(four_shards: Path, epoch: int) -> None:
    reference = stream(four_shards, seed=5)
    reference.set_epoch(epoch)
    uninterrupted = [key(s) for s in reference]

    interrupted = stream(four_shards, seed=5)
    interrupted.set_epoch(epoch)
    it = iter(interrupted)
    head = [key(next(it)) for _ in range(7)]
    state = json.loads(json.dumps(interrupted.state_dict()))

    resumed = stream(four_shards, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # what a training loop does when it re-enters the saved epoch
    tail = [key(s) for s in resumed]
    assert head + tail == uninterrupted
    assert resumed.state_dict()["positions"] == [len(uninterrupted)]

    resumed.set_epoch(epoch + 1)  # the next epoch starts from its beginning
    assert len(list(resumed)) == len(uninterrupted)


def test_resume_with_dataloader_workers_continues_the_batch_sequence(four_shards: Path) -> None:
    def loader(s: ClipStream) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(s, batch_size=2, num_workers=2, collate_fn=collate_clips)

    def keys(batch: dict) -> list:
        return list(zip(batch["video_id"], batch["start_frame"].tolist()))

    uninterrupted = [keys(b) for b in loader(stream(four_shards, seed=7))]

    first = stream(four_shards, seed=7)
    head = []
    for batch in loader(first):
        head.append(keys(batch))
        first.mark_consumed(batch)
        if len(head) == 3:
            break
    state = json.loads(json.dumps(first.state_dict()))
    assert state["num_workers"] == 2 and sum(state["positions"]) == 6

    resumed = stream(four_shards, seed=7)
    resumed.load_state_dict(state)
    assert head + [keys(b) for b in loader(resumed)] == uninterrupted

    at_zero_workers = stream(four_shards, seed=7)
    at_zero_workers.load_state_dict(state)
    with pytest.raises(DoraUserError, match="2 data-loader worker"):
        next(iter(at_zero_workers))


def test_resume_mid_epoch_rereads_only_what_is_still_due(
    nineteen_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = ReadLog(monkeypatch)
    uninterrupted = [key(s) for s in stream(nineteen_shards, rank=1, world_size=2, seed=3, shuffle_buffer=12)]
    all_reads = log.take()

    interrupted = stream(nineteen_shards, rank=1, world_size=2, seed=3, shuffle_buffer=12)
    it = iter(interrupted)
    head = [key(next(it)) for _ in range(100)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    assert state["positions"] == [100] and state["format"] == "dora_hf.ClipStream/2"
    log.take()

    resumed = stream(nineteen_shards, rank=1, world_size=2, seed=3, shuffle_buffer=12)
    resumed.load_state_dict(state)
    tail = [key(s) for s in resumed]
    assert head + tail == uninterrupted and len(uninterrupted) == 328 // 2
    # Units whose clips had all been handed out are not read again; what is read was read before.
    resume_reads = log.take()
    assert set(resume_reads) <= set(all_reads) and len(resume_reads) < len(all_reads) / 2


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_resume_with_three_workers_on_many_row_groups(nineteen_shards: Path) -> None:
    def loader(s: ClipStream) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(s, batch_size=4, num_workers=3, collate_fn=collate_clips)

    def keys(batch: dict) -> list:
        return list(zip(batch["video_id"], batch["start_frame"].tolist()))

    def opened() -> ClipStream:
        s = stream(nineteen_shards, rank=0, world_size=2, seed=9, shuffle_buffer=8)
        s.set_epoch(1)
        return s

    uninterrupted = [keys(b) for b in loader(opened())]
    assert sum(map(len, uninterrupted)) == 328 // 2

    first = opened()
    head = []
    for batch in loader(first):
        head.append(keys(batch))
        first.mark_consumed(batch)
        if len(head) == 13:  # mid-epoch, the three workers at different points of their units
            break
    state = json.loads(json.dumps(first.state_dict()))
    assert state["num_workers"] == 3 and sum(state["positions"]) == 52 and state["epoch"] == 1

    resumed = stream(nineteen_shards, rank=0, world_size=2, seed=9, shuffle_buffer=8)
    resumed.load_state_dict(state)
    assert head + [keys(b) for b in loader(resumed)] == uninterrupted


def test_resume_refuses_a_changed_setup(four_shards: Path) -> None:
    state = stream(four_shards, seed=1).state_dict()
    with pytest.raises(DoraUserError, match="seed"):
        stream(four_shards, seed=2).load_state_dict(state)
    with pytest.raises(DoraUserError, match="world_size"):
        stream(four_shards, seed=1, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(DoraUserError, match="not a clip reader state"):  # saved before clips were spread by row group
        stream(four_shards, seed=1).load_state_dict({**state, "format": "dora_hf.ClipStream/1"})


# ---- batching ---------------------------------------------------------------------------------


def test_collate_stacks_clips_and_rejects_mixed_sizes(four_shards: Path) -> None:
    samples = list(stream(four_shards, shuffle=False))[:3]
    batch = collate_clips(samples)
    assert batch["frames"].shape == (3, T, 3, 24, 32) and batch["frames"].dtype == torch.uint8
    assert batch["frame_indices"].shape == (3, T) and batch["start_frame"].tolist() == [0, 10, 20]
    odd = dict(samples[1], frames=torch.zeros(T, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(DoraUserError, match="different shapes"):
        collate_clips([samples[0], odd])


# ---- sources ----------------------------------------------------------------------------------


def test_hub_repo_ids_go_through_datasets_resolution(four_shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: stand in for the hub with the local folder, checking what is asked for.
    import huggingface_hub

    from dora_hf.dataset import shards as shard_source

    asked = []
    real = shard_source.datasets.load_dataset_builder

    def fake_builder(path: str, revision: str | None = None, **kwargs):
        asked.append((path, revision))
        return real(str(four_shards) if path == "someone/wt-tiny" else path, **kwargs)

    def fake_download(repo: str, **kwargs) -> str:
        asked.append((repo, kwargs))
        return str(four_shards)

    monkeypatch.setattr(shard_source.datasets, "load_dataset_builder", fake_builder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    clips = [key(s) for s in stream("someone/wt-tiny", revision="v1", shuffle=False)]
    assert clips == expected_clips(VIDEOS) and asked == [("someone/wt-tiny", "v1")]
    asked.clear()
    assert len(list(stream("someone/wt-tiny", revision="v1", streaming=False))) == len(clips)
    assert asked == [("someone/wt-tiny", {"repo_type": "dataset", "revision": "v1"}), (str(four_shards), None)]


# ---- bad input ----------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DoraUserError, match="not found.*nowhere"):
        ClipStream.from_source(tmp_path / "nowhere")


def test_folder_without_shards(tmp_path: Path) -> None:
    (tmp_path / "empty" / "data").mkdir(parents=True)
    (tmp_path / "empty" / "README.md").write_text("# nothing here\n")
    with pytest.raises(DoraUserError, match=r"empty.*no data shards"):
        ClipStream.from_source(tmp_path / "empty")


@pytest.mark.parametrize("bad", [0, 2])
def test_corrupt_shard_is_named(tmp_path: Path, bad: int) -> None:
    folder = write_dataset(tmp_path / "d", make_rows(VIDEOS), 4)
    shard = sorted((folder / "data").glob("*.parquet"))[bad]
    shard.write_bytes(b"this is not parquet" * 100)
    with pytest.raises(DoraUserError, match=shard.name):
        list(stream(folder, shuffle=False))


def with_a_corrupt_row_group(folder: Path) -> Path:
    """A dataset whose second shard's row group 1 has damaged image pages; its footer is intact (the
    shard opens, sizes and row counts match). Returns that shard."""
    write_dataset(folder, make_rows(VIDEOS), 2, rows_per_group=20)
    shard = sorted((folder / "data").glob("*.parquet"))[1]
    chunk = pq.read_metadata(shard).row_group(1).column(0)  # image.bytes
    data = bytearray(shard.read_bytes())
    data[chunk.data_page_offset : chunk.data_page_offset + 64] = b"\xff" * 64
    shard.write_bytes(bytes(data))
    return shard


def test_corrupt_row_group_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    shard = with_a_corrupt_row_group(folder)
    s = stream(folder, shuffle=False)
    with pytest.raises(DoraUserError, match=rf"cannot read shard .*{shard.name} \(row group 1\)"):
        list(s)


def test_corrupt_frame_names_shard_video_and_frame(tmp_path: Path) -> None:
    rows = make_rows(VIDEOS)
    rows[70]["image"] = {"bytes": b"\xff\xd8\xff garbage", "path": None}  # video b, row 10
    folder = write_dataset(tmp_path / "d", rows, 4)
    with pytest.raises(DoraUserError, match=r"train-00002-of-00004\.parquet: video 'b' frame_index 100"):
        list(stream(folder, shuffle=False))


def test_video_shorter_than_a_clip_warns_once_and_yields_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    videos = {"a": 60, "c": 12, "b": 45}  # c: 12 kept frames < 19 that one clip spans
    folder = write_dataset(tmp_path / "d", make_rows(videos), 3)
    with caplog.at_level(logging.WARNING, logger="dora_hf.dataset"):
        got = [key(s) for s in stream(folder, shuffle=False)]
    assert got == expected_clips(VIDEOS)
    warnings = [r.getMessage() for r in caplog.records if "'c'" in r.getMessage()]
    assert len(warnings) == 1 and "12 kept frames" in warnings[0]
    assert not [r for r in caplog.records if "'a'" in r.getMessage() or "'b'" in r.getMessage()]


def test_step_must_be_a_multiple_of_keep_every(four_shards: Path) -> None:
    with pytest.raises(DoraUserError, match=r"clip_step=55.*keep_every=10"):
        next(iter(stream(four_shards, clip_step=55)))


def test_gap_inside_a_video_is_an_error(tmp_path: Path) -> None:
    rows = make_rows(VIDEOS)
    del rows[30]
    folder = write_dataset(tmp_path / "d", rows, 2)
    with pytest.raises(DoraUserError, match=r"video 'a' goes from frame_index 290 .* to 310"):
        list(stream(folder, shuffle=False))


def test_bad_settings(four_shards: Path) -> None:
    with pytest.raises(DoraUserError, match="rank=2, world_size=2"):
        stream(four_shards, rank=2, world_size=2)
    with pytest.raises(DoraUserError, match="not both"):
        stream(four_shards, clip_step_seconds=1.0)
    with pytest.raises(DoraUserError, match="frames_per_clip"):
        stream(four_shards, frames_per_clip=0)


def test_training_loader_keeps_its_workers_across_epochs_and_reads_what_one_process_reads(
    four_shards: Path, tmp_path: Path
) -> None:
    from dora_hf.training.data_loading import build_clip_loader
    from dora_hf.dataset.batches import endless_batches
    from dora_hf.training.recipe import load_recipe

    # Streaming mode takes the epoch length from prepare_info.json, which these shards lack.
    folder = tmp_path / "with-info"
    folder.mkdir()
    (folder / "data").symlink_to(four_shards / "data")
    videos = [{"video_id": v, "keep_every": KEEP_EVERY, "kept_frames": n, "decoded_frames": n * KEEP_EVERY} for v, n in VIDEOS.items()]
    (folder / "prepare_info.json").write_text(json.dumps({"videos": videos}))

    def batches(num_workers: int) -> tuple[torch.utils.data.DataLoader, list]:
        recipe = load_recipe(
            None,
            {"dataset": str(folder), "streaming": True, "frames_per_clip": T, "clip_step": STEP, "shuffle_buffer": 16,
             "batch_size_per_device": 5, "num_workers": num_workers},
        )
        stream, loader, plan = build_clip_loader(recipe, rank=0, world_size=1, device=torch.device("cpu"))
        assert plan.clips_per_epoch == KEEP_EVERY * plan.distinct_clips == KEEP_EVERY * len(expected_clips(VIDEOS))
        per_epoch = len(expected_clips(VIDEOS)) // 5
        got = [[key(s) for s in split_batch(b)] for b in islice(endless_batches(loader, stream), 3 * per_epoch + 1)]
        return loader, got

    def split_batch(batch: dict) -> list[dict]:
        return [{"video_id": v, "frame_indices": f} for v, f in zip(batch["video_id"], batch["frame_indices"])]

    in_process, expected = batches(0)
    loader, got = batches(1)
    assert loader.persistent_workers and not in_process.persistent_workers
    # Three epochs and one batch of the fourth, in the same order as in-process reading: the
    # persistent worker followed every set_epoch.
    assert got == expected
    per_epoch = len(expected_clips(VIDEOS)) // 5
    epochs = [sum(expected[i * per_epoch : (i + 1) * per_epoch], []) for i in range(3)]
    assert all(len(set(clips)) == len(clips) == 5 * per_epoch for clips in epochs)
    assert epochs[0] != epochs[1] != epochs[2]  # a new order each epoch
