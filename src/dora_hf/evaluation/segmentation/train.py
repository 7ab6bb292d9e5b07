"""The training loop both segmentation recipes share: augmented crops, AdamW, poly schedule.

mmseg's `IterBasedRunner` as iBOT runs it: a fixed number of iterations over batches of
augmented crops drawn from a reshuffled pass over the training rows. Each sample's augmentation
draws from its own generator, seeded by the run's seed and the sample's draw number, so that a
run repeats exactly with any number of loading workers. A batch whose crops hold no scored pixel
(all 255) is skipped: its mean loss is undefined.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import TrainAugmentation, normalise_and_pad
from .dataset import SegmentationSplit
from .optimizer import build_optimizer, set_learning_rates
from .protocol import IGNORE_INDEX, SegmentationRecipe


class DrawSampler(Sampler):
    """`(draw, row)` pairs: every row once per pass over the split, each pass in a new order."""

    def __init__(self, num_rows: int, num_draws: int, seed: int):
        self.num_rows, self.num_draws, self.seed = num_rows, num_draws, seed

    def __len__(self) -> int:
        return self.num_draws

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.num_rows)
        for draw in range(self.num_draws):
            rounds, position = divmod(draw, self.num_rows)
            if position == 0:
                order = np.random.default_rng([self.seed, rounds]).permutation(self.num_rows)
            yield draw, int(order[position])


class AugmentedRows(Dataset):
    """A row of the split through the training pipeline, as `(3, c, c)` pixels and `(c, c)` labels."""

    def __init__(self, split: SegmentationSplit, recipe: SegmentationRecipe, mean, std, seed: int):
        self.split = split
        self.augmentation = TrainAugmentation(recipe)
        self.crop_size = recipe.crop_size
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        draw, row = key
        rng = np.random.default_rng([self.seed, draw, 1])
        image, label = self.augmentation(*self.split.example(row), rng)
        pixels, labels = normalise_and_pad(image, label, self.mean, self.std, self.crop_size)
        return torch.from_numpy(pixels), torch.from_numpy(labels)


@dataclass
class TrainingLog:
    losses: list[float] = field(default_factory=list)
    """The loss of every iteration that took a step."""
    skipped: int = 0
    """Iterations whose batch had no scored pixel."""


def train_segmenter(
    model: nn.Module,
    split: SegmentationSplit,
    recipe: SegmentationRecipe,
    *,
    depth: int,
    mean,
    std,
    device: torch.device,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = True,
) -> TrainingLog:
    """Train `model` (`model(pixel_values=, labels=).loss`) for `recipe.iterations` iterations."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.to(device).train()
    optimizer = build_optimizer(model, recipe, depth)
    loader = DataLoader(
        AugmentedRows(split, recipe, mean, std, seed),
        batch_size=recipe.batch_size,
        sampler=DrawSampler(len(split), recipe.iterations * recipe.batch_size, seed),
        num_workers=num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    amp = device.type == "cuda"
    log = TrainingLog()
    bar = tqdm(loader, total=recipe.iterations, desc=f"training {recipe.head}", disable=not progress)
    for iteration, (pixels, labels) in enumerate(bar):
        set_learning_rates(optimizer, iteration, recipe)
        labels = labels.to(device, non_blocking=True)
        if not bool((labels != IGNORE_INDEX).any()):
            log.skipped += 1
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(pixel_values=pixels.to(device, non_blocking=True), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}", refresh=False)
    return log
