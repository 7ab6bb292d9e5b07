"""A split's images through a per-image transform, in batches from torch's DataLoader.

Online linear evaluation decodes and augments every training image again in every epoch, so
the work goes to DataLoader worker processes, as DINO's ``eval_linear.py`` does. Three choices
keep that reproducible and its errors readable:

- the order of each epoch is DINO's ``DistributedSampler`` for one process: ``torch.randperm``
  with a generator seeded ``seed + epoch``;
- each image's random draws come from a generator seeded by ``(seed, epoch, row)``, so a run
  gives the same batches whatever the number of workers;
- an image that cannot be read comes back as its `DoraUserError` value and is raised in the main
  process (raised in a worker, DataLoader would wrap it in the worker's traceback).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import datasets
import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ...errors import DoraUserError
from .features import decode_image
from .image_dataset import ImageSplit

ImageTransform = Callable[[PIL.Image.Image, torch.Generator], torch.Tensor]
Sample = tuple[torch.Tensor, int]


def sample_generator(seed: int, epoch: int, row: int) -> torch.Generator:
    """The generator of one image's augmentation in one epoch (independent streams per image)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{row}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class TransformedImages(Dataset):
    """Indexed by ``(epoch, row)``: the row's image through ``transform``, and its label."""

    def __init__(self, split: ImageSplit, labels: torch.Tensor, transform: ImageTransform, seed: int = 0):
        if not isinstance(split.rows, datasets.Dataset):
            raise DoraUserError(f"{split.describe()}: online training needs random access to the images (not --streaming)")
        rows = split.rows.select_columns([split.image_column])
        self.rows = rows.cast_column(split.image_column, datasets.Image(decode=False))
        self.split = split
        self.labels = labels
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> Sample | DoraUserError:
        epoch, row = key
        try:
            image = decode_image(self.rows[row][self.split.image_column], row, self.split)
        except DoraUserError as err:
            return err
        return self.transform(image, sample_generator(self.seed, epoch, row)), int(self.labels[row])


class EpochOrder(Sampler):
    """``(epoch, row)`` keys: rows in DINO's per-epoch shuffled order, or in order (``shuffle=False``)."""

    def __init__(self, num_rows: int, seed: int = 0, shuffle: bool = True):
        self.num_rows, self.seed, self.shuffle = num_rows, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rows(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # DistributedSampler's rule
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, row) for row in self.rows()])

    def __len__(self) -> int:
        return self.num_rows


def collate(samples: list[Sample | DoraUserError]) -> tuple[torch.Tensor, torch.Tensor] | DoraUserError:
    for sample in samples:
        if isinstance(sample, DoraUserError):
            return sample
    return torch.stack([pixels for pixels, _ in samples]), torch.tensor([label for _, label in samples])


def image_loader(
    images: TransformedImages, order: EpochOrder, batch_size: int, num_workers: int, pin_memory: bool = False
) -> DataLoader:
    """Batches of ``images`` in ``order`` (call ``order.set_epoch`` before each pass)."""
    return DataLoader(
        images, batch_size=batch_size, sampler=order, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory,
    )


def checked_batches(loader: Iterable) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches; an unreadable image is raised here, in the main process."""
    for batch in loader:
        if isinstance(batch, DoraUserError):
            raise batch
        yield batch
