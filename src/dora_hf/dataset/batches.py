"""What the training loop asks of a clip reader, and the batches it reads.

Both readers (random access: `random_access.EpochClipSampler`; streaming: `streaming.ClipStream`)
follow `ClipReader`; `collate_clips` stacks their clips; `endless_batches` runs epoch after epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from ..errors import DoraUserError


class ClipReader(Protocol):
    """What the loop needs of a clip reader: epochs, progress, and state for exact resume.

    Both modes provide it: the random-access sampler (:class:`~dora_hf.dataset.random_access.EpochClipSampler`) and the streaming
    reader (:class:`~dora_hf.dataset.streaming.ClipStream`).
    """

    @property
    def epoch(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def mark_consumed(self, batch: dict) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips into ``frames`` uint8 (B, T, 3, H, W); one prepared dataset has one frame size."""
    if not samples:
        raise ValueError("cannot collate an empty list of clips")
    shapes = {tuple(s["frames"].shape) for s in samples}
    if len(shapes) > 1:
        found = ", ".join(f"'{s['video_id']}' {tuple(s['frames'].shape)}" for s in samples)
        raise DoraUserError(
            f"clips of one batch have different shapes (T, 3, H, W): {found}; use one frames_per_clip "
            f"and frames of one size (one prepared dataset), or resize before batching"
        )
    batch: dict[str, Any] = {
        "frames": torch.stack([s["frames"] for s in samples]),
        "video_id": [s["video_id"] for s in samples],
        "start_frame": torch.tensor([s["start_frame"] for s in samples], dtype=torch.long),
        "frame_indices": torch.stack([s["frame_indices"] for s in samples]),
    }
    if all("stream_position" in s for s in samples):
        batch["stream_position"] = torch.stack([s["stream_position"] for s in samples])
    if all("clip" in s for s in samples):  # the random-access reader's clip numbers
        batch["clip"] = torch.tensor([s["clip"] for s in samples], dtype=torch.long)
    return batch


def endless_batches(loader: torch.utils.data.DataLoader, reader: ClipReader) -> Iterator[dict]:
    """Batches epoch after epoch; each process moves to its next data epoch when its share ends."""
    while True:
        produced = False
        for batch in loader:
            produced = True
            yield batch
        if not produced:
            raise DoraUserError(
                f"{reader!r} produced no full batch for this process: use a smaller batch or more data"
            )
        reader.set_epoch(reader.epoch + 1)
