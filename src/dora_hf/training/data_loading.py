"""The run's clips: a reader for this process, the loader that batches it, and the epoch it reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..dataset.batches import ClipReader, collate_clips
from ..dataset.clip_index import count_clips
from ..dataset.combined import dataset_sources, open_dataset_set
from ..folders.read_claim import claim_for_reading
from ..dataset.info import read_prepare_info
from ..dataset.random_access import open_random_access
from ..dataset.streaming import ClipStream
from .interrupt import leave_stop_signals_to_the_main_process
from .recipe import PretrainRecipe


@dataclass(frozen=True)
class EpochPlan:
    """How many clips an epoch holds and how they are read, for the schedules and the start-up line."""

    clips_per_epoch: int
    """The reference's count: one clip per source-frame start of every video (DORA_SPEC §1)."""
    distinct_clips: int
    """Kept frames that start a clip; each is drawn about keep_every times per reference epoch."""
    mode: str
    """How the data is read, in words."""


def build_clip_loader(
    recipe: PretrainRecipe, rank: int, world_size: int, device: torch.device
) -> tuple[ClipReader, torch.utils.data.DataLoader, EpochPlan]:
    """This process's clip reader, the loader that batches it, and the epoch it reads.

    By default (``streaming: false``) the frames are read with random access from a memory-mapped
    Arrow copy (a hub dataset is downloaded first) and each epoch is a seeded permutation of all
    clip starts over the whole dataset, split exactly over processes; ``streaming: true`` reads a
    hub dataset without downloading it, row groups spread over readers through a shuffle buffer.
    Several datasets (``dataset: [A, B, C]``) are read as one in either mode (`dataset.combined`).
    """
    loader_options = dict(
        batch_size=recipe.batch_size_per_device,
        num_workers=recipe.num_workers,
        collate_fn=collate_clips,
        drop_last=True,
        pin_memory=device.type == "cuda",
        # Workers live across data epochs, so a new epoch does not restart them and re-open the data.
        persistent_workers=recipe.num_workers > 0,
        # Its own generator: creating a loader iterator must not draw from the global RNG, which
        # drop path uses and a checkpoint restores (a resumed run would otherwise drift).
        generator=torch.Generator().manual_seed(recipe.seed + rank),
        # Ctrl-C and SIGTERM reach the whole process group: workers leave them to this process.
        worker_init_fn=leave_stop_signals_to_the_main_process if recipe.num_workers > 0 else None,
    )
    # What both readers take: which clips, and this process's share of them.
    reader_options = dict(
        frames_per_clip=recipe.frames_per_clip,
        clip_step=recipe.clip_step,
        revision=recipe.dataset_revision,
        rank=rank,
        world_size=world_size,
        seed=recipe.seed,
    )
    sources = dataset_sources(recipe.dataset)
    of_datasets = f" of {len(sources)} datasets" if len(sources) > 1 else ""
    if recipe.streaming:
        if len(sources) > 1:
            infos = open_dataset_set(sources, recipe.dataset_revision).infos
        else:
            infos = (read_prepare_info(sources[0], recipe.dataset_revision),)
        # Opened (and checked against the manifests) before the epoch is counted: a damaged shard is named first.
        stream = ClipStream.from_source(sources, shuffle_buffer=recipe.shuffle_buffer, **reader_options)
        plan = EpochPlan(
            clips_per_epoch=sum(count_clips(info, recipe.frames_per_clip, recipe.clip_step) for info in infos),
            distinct_clips=stream.num_clips,  # counted from the shards' rows while opening
            mode=f"streaming ({len(stream.shard_names)} shard(s){of_datasets}, shuffle buffer {recipe.shuffle_buffer} clips)",
        )
        return stream, torch.utils.data.DataLoader(stream, **loader_options), plan
    clips, sampler = open_random_access(sources, cache_dir=recipe.dataset_cache_dir, **reader_options)
    plan = EpochPlan(
        clips_per_epoch=clips.index.num_clips,
        distinct_clips=clips.index.num_kept_starts,
        mode=f"random access over {len(clips.index.videos)} video(s){of_datasets}, uniform over the whole dataset",
    )
    return sampler, torch.utils.data.DataLoader(clips, sampler=sampler, **loader_options), plan


def stop_loader_workers(loader: torch.utils.data.DataLoader) -> None:
    """Shut the loader's persistent workers down now, when the run stops on an error.

    The workers ignore SIGTERM (`leave_stop_signals_to_the_main_process`), so Python's exit, which
    terminates daemonic children before joining them, would wait for them forever if the loader's
    iterator were still alive then (it is, when an error's traceback or a reference cycle holds it).
    """
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    loader._iterator = None


@contextlib.contextmanager
def reading_datasets(recipe: PretrainRecipe) -> Iterator[None]:
    """Hold a shared claim on every local dataset folder the run reads, for as long as it runs, so
    that `prepare-data --overwrite` refuses to replace one under it (`folders/read_claim.py`);
    other runs may read the same folders. Hub datasets are not claimed."""
    with contextlib.ExitStack() as claims:
        for source in dataset_sources(recipe.dataset):
            if Path(source).is_dir():
                claim = claim_for_reading(source)
                if claim is not None:
                    claims.enter_context(claim)
        yield
