"""The random-access reader against plain enumerations: the reference's epoch, uniform draws,
exact splits over ranks and workers, and exact resume.

Frames are the flat JPEGs of test_clips (red = 4 * row within the video, green = the video), so a
decoded clip shows which frames it holds.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from dora_hf.dataset.clip_index import ClipIndex
from dora_hf.dataset.batches import collate_clips
from dora_hf.dataset.clip_index import count_clips
from dora_hf.dataset.info import read_prepare_info
from dora_hf.dataset.random_access import EpochClipSampler, open_random_access
from dora_hf.errors import DoraUserError
from test_clips import GREEN, KEEP_EVERY, STEP, T, VIDEOS, expected_clips, key, make_rows, write_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ra") / "prepared", make_rows(VIDEOS), 3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("datasets-cache"))


def open_clips(folder: Path, cache_dir: str, **kwargs):
    return open_random_access(folder, frames_per_clip=T, clip_step=STEP, cache_dir=cache_dir, **kwargs)


def reference_starts(videos: dict[str, int], frames: int = T, step: int = STEP, keep_every: int = KEEP_EVERY) -> list:
    """The reference's epoch, plainly: every source frame with room for a clip starts one, and is
    read from the kept frame at or before it. (Without prepare_info, a video of n kept frames is
    taken to have n * keep_every source frames.)"""
    out = []
    for v, n in videos.items():
        source_frames = n * keep_every
        for s in range(source_frames - (frames - 1) * step):
            first = (s // keep_every) * keep_every
            out.append((v, tuple(first + i * step for i in range(frames))))
    return out


# ---- the reference's epoch -----------------------------------------------------------------------


def test_epoch_counts_source_frame_starts_on_a_60fps_video_at_the_defaults(video_factory, tmp_path: Path) -> None:
    # 1500 source frames at 60 fps prepared at the defaults (step 60, keep every 10th, T = 8):
    # the reference has 1500 - 7 * 60 = 1080 clips per epoch; kept frames alone give 108.
    from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset

    video = video_factory(name="sixty", frames=1500, fps=60, size=(64, 48))
    out = tmp_path / "prepared"
    prepare_dataset([video], out, PrepareOptions(), progress=False, log=None)
    info = read_prepare_info(out)
    assert info["videos"][0]["keep_every"] == 10 and info["videos"][0]["decoded_frames"] == 1500
    assert count_clips(info, 8, 60) == 1080
    clips, sampler = open_random_access(out, frames_per_clip=8, clip_step=60, cache_dir=str(tmp_path / "cache"))
    assert len(clips) == clips.index.num_clips == 1080 and clips.index.num_kept_starts == 108
    starts = Counter(int(s) for s in clips.index.clip_rows(np.arange(1080))[1][:, 0])
    assert starts == Counter({row: 10 for row in range(108)})  # each kept start drawn keep_every times


def test_every_source_start_reads_the_kept_frame_at_or_before_it(prepared: Path, cache_dir: str) -> None:
    clips, _ = open_clips(prepared, cache_dir)
    assert len(clips) == sum(n * KEEP_EVERY - (T - 1) * STEP for n in VIDEOS.values())
    got = [key(clips[i]) for i in range(len(clips))]
    assert got == reference_starts(VIDEOS)
    for i in (0, 7, len(clips) - 1):
        s = clips[i]
        red = s["frames"][:, 0].float().mean(dim=(1, 2))
        green = s["frames"][:, 1].float().mean(dim=(1, 2))
        assert torch.round(red / 4).long().tolist() == [f // KEEP_EVERY for f in key(s)[1]]
        assert (green - GREEN[s["video_id"]]).abs().max() < 4


def test_source_frame_count_that_is_not_a_multiple_of_keep_every() -> None:
    # 1505 decoded frames, every 10th kept (151 kept, frames 0..1500): 1505 - 7 * 60 = 1085 starts;
    # the last kept start (frame 1080) stands for the five source starts 1080..1084 only.
    kept = 151
    index = ClipIndex.from_columns(
        np.array(["v"] * kept, dtype=object), np.arange(kept) * 10, np.full(kept, 10),
        frames_per_clip=8, clip_step=60, source_frames={"v": 1505},
    )
    assert index.num_clips == 1085 and index.num_kept_starts == kept - 42
    rows = index.clip_rows(np.arange(1085))[1]
    assert rows[:, -1].max() == kept - 1  # no clip reads past the video
    assert Counter(rows[:, 0].tolist()) == Counter({**{r: 10 for r in range(kept - 43)}, kept - 43: 5})


def test_layout_errors_name_the_shard_and_row(prepared: Path, tmp_path: Path, cache_dir: str) -> None:
    rows = make_rows({"a": 30})
    rows[17]["frame_index"] += 5
    folder = write_dataset(tmp_path / "bad", rows, 2)
    with pytest.raises(DoraUserError, match=r"train-00001-of-00002\.parquet row 2: video 'a' goes from frame_index 160"):
        open_clips(folder, cache_dir)
    with pytest.raises(DoraUserError, match="not a multiple of keep_every=10"):
        open_random_access(prepared, frames_per_clip=T, clip_step=25, cache_dir=cache_dir)
    with pytest.raises(DoraUserError, match="prepared dataset folder not found"):
        open_clips(tmp_path / "nowhere", cache_dir)


def test_too_short_for_any_clip_is_an_error(tmp_path: Path, cache_dir: str) -> None:
    folder = write_dataset(tmp_path / "short", make_rows({"a": 10}), 1)
    with pytest.raises(DoraUserError, match="no video of the dataset is long enough"):
        open_clips(folder, cache_dir)


# ---- uniform over the whole dataset ----------------------------------------------------------------


def test_draws_are_uniform_over_the_whole_dataset(prepared: Path, cache_dir: str) -> None:
    clips, _ = open_clips(prepared, cache_dir)
    n = len(clips)
    sampler = EpochClipSampler(n, seed=5)
    batch = 16
    draws, spreads = [], []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        ids = np.fromiter(sampler, dtype=np.int64)
        assert sorted(ids.tolist()) == list(range(n))  # one epoch is every clip once
        draws.append(ids)
        spreads += [ids[i : i + batch].std() for i in range(0, n - batch + 1, batch)]
    draws = np.concatenate(draws)
    # Every position of every epoch is uniform over all clips: chi-square of the clips drawn at
    # the first 64 positions of 40 epochs, binned in 10 bins over the whole dataset.
    early = np.concatenate([d[:64] for d in np.split(draws, 40)])
    observed = np.bincount(early * 10 // n, minlength=10)
    expected = len(early) / 10
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 27.9  # 99.9% point of chi-square with 9 degrees of freedom
    # Batches span the whole dataset: the spread of clip numbers within a batch is that of a
    # uniform draw (n / sqrt(12)), not that of a stretch of time.
    assert abs(np.mean(spreads) / (n / math.sqrt(12)) - 1) < 0.05
    # Plain loop: a time-ordered batch (the streaming reader without shuffling) spreads ~batch/sqrt(12).
    ordered = [np.arange(i, i + batch).std() for i in range(0, n - batch + 1, batch)]
    assert np.mean(ordered) < 0.05 * np.mean(spreads)


def test_order_is_fixed_by_seed_and_epoch() -> None:
    a, b = EpochClipSampler(500, seed=1), EpochClipSampler(500, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == sorted(first)
    assert list(EpochClipSampler(500, seed=2)) != first


# ---- exact splits over ranks and workers ------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_two_ranks_with_two_workers_partition_the_epoch(prepared: Path, cache_dir: str) -> None:
    got, per_rank = [], []
    for rank in range(2):
        clips, sampler = open_clips(prepared, cache_dir, rank=rank, world_size=2, seed=3)
        assert set(sampler.epoch_clips(0).tolist()).isdisjoint(
            EpochClipSampler(len(clips), rank=1 - rank, world_size=2, seed=3).epoch_clips(0).tolist()
        )
        loader = torch.utils.data.DataLoader(
            clips, sampler=sampler, batch_size=5, num_workers=2, collate_fn=collate_clips
        )
        mine = [(v, tuple(f)) for b in loader for v, f in zip(b["video_id"], b["frame_indices"].tolist())]
        per_rank.append(len(mine))
        got += mine
    assert per_rank[0] == per_rank[1] == len(reference_starts(VIDEOS)) // 2
    assert Counter(got) == Counter(reference_starts(VIDEOS))  # the whole epoch, each clip once
    assert Counter(reference_starts(VIDEOS)) == Counter({c: KEEP_EVERY for c in expected_clips(VIDEOS)})


def test_eight_ranks_of_eight_workers_over_nineteen_shards_all_get_clips() -> None:
    # WT-Venice at the defaults: about 19 shards of 2000 kept frames, i.e. 379,000 kept frames and
    # 3.79 million source starts. Every rank gets the same number of clips and, with batches of 16,
    # far more batches than its 8 workers, which the DataLoader serves in turn.
    num_clips = 19 * 2000 * 10 - 7 * 60
    samplers = [EpochClipSampler(num_clips, rank=r, world_size=8, seed=0) for r in range(8)]
    counts = {len(s.epoch_clips(0)) for s in samplers}
    assert counts == {num_clips // 8}
    every = np.concatenate([s.epoch_clips(0) for s in samplers])
    assert len(np.unique(every)) == len(every) == num_clips - num_clips % 8
    batches = (num_clips // 8) // 16
    for worker in range(8):  # worker w of each rank serves batches w, w + 8, ...
        assert len(range(worker, batches, 8)) > 0


class _WorkerTagged(torch.utils.data.Dataset):
    """Tags each item with the DataLoader worker that read it."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict:
        info = torch.utils.data.get_worker_info()
        return {"worker": info.id if info else -1, "clip": i, "video_id": self.inner[i]["video_id"]}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_one_shard_feeds_every_worker(tmp_path: Path, cache_dir: str) -> None:
    folder = write_dataset(tmp_path / "one", make_rows(VIDEOS), 1)
    clips, sampler = open_clips(folder, cache_dir, rank=1, world_size=2)
    loader = torch.utils.data.DataLoader(_WorkerTagged(clips), sampler=sampler, batch_size=4, num_workers=4)
    workers = Counter(w for b in loader for w in b["worker"].tolist())
    assert set(workers) == {0, 1, 2, 3}


def test_more_processes_than_clips_is_an_error() -> None:
    with pytest.raises(DoraUserError, match="fewer than world_size=8"):
        EpochClipSampler(5, rank=0, world_size=8)


# ---- exact resume mid-epoch --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_rest(prepared: Path, cache_dir: str, num_workers: int) -> None:
    def loader(clips, sampler):
        return torch.utils.data.DataLoader(
            clips, sampler=sampler, batch_size=6, num_workers=num_workers, collate_fn=collate_clips, drop_last=True
        )

    clips, sampler = open_clips(prepared, cache_dir, rank=1, world_size=2, seed=9)
    sampler.set_epoch(2)
    whole = [key_list(b) for b in loader(clips, sampler)]

    clips, sampler = open_clips(prepared, cache_dir, rank=1, world_size=2, seed=9)
    sampler.set_epoch(2)
    it = iter(loader(clips, sampler))
    seen = []
    for _ in range(7):  # the loader has prefetched further than what was consumed
        batch = next(it)
        sampler.mark_consumed(batch)
        seen.append(key_list(batch))
    state = sampler.state_dict()
    del it

    clips2, resumed = open_clips(prepared, cache_dir, rank=1, world_size=2, seed=9)
    resumed.load_state_dict(state)
    rest = [key_list(b) for b in loader(clips2, resumed)]
    assert seen + rest == whole
    resumed.set_epoch(3)  # the next epoch starts from its beginning
    assert len(list(resumed)) == resumed.per_rank

    with pytest.raises(DoraUserError, match="world_size: saved 2, now 1"):
        EpochClipSampler(len(clips), seed=9).load_state_dict(state)
    with pytest.raises(DoraUserError, match="other data mode"):
        EpochClipSampler(len(clips), seed=9).load_state_dict({"format": "dora_hf.ClipStream/1"})


def key_list(batch: dict) -> list:
    return list(zip(batch["video_id"], map(tuple, batch["frame_indices"].tolist())))
