"""Semi-supervised video object segmentation by label propagation over patch features.

DINO's protocol (after Jabri et al.'s space-time correspondence): the first frame's mask, as
one-hot labels on the patch grid, is carried to each next frame by a soft nearest-neighbour
vote. A target patch looks at the patches of the first frame and of a queue of the previous
frames (their propagated soft labels), keeps only sources within a square spatial
neighbourhood, takes the top-k most cosine-similar ones and averages their labels with weights
``softmax(similarity / temperature)`` over those k.

Everything here is a pure function of per-frame patch features `(h, w, d)`: the model, the
frame size and the file format live in `davis.py`, so the propagation can be tested with any
feature function (even raw colours).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..protocols import PropagationSettings


def first_frame_labels(annotation: np.ndarray, grid: tuple[int, int], num_objects: int) -> torch.Tensor:
    """One-hot `(1 + num_objects, h, w)` labels of a label map, resized to the patch grid (nearest).

    Labels above ``num_objects`` (DAVIS's void 255) count as background.
    """
    small = np.asarray(Image.fromarray(np.asarray(annotation, dtype=np.uint8)).resize((grid[1], grid[0]), Image.NEAREST))
    small = torch.from_numpy(small.astype(np.int64))
    small[small > num_objects] = 0
    return F.one_hot(small, 1 + num_objects).permute(2, 0, 1).float()


def neighbourhood_mask(grid: tuple[int, int], radius: int, device: torch.device | None = None) -> torch.Tensor:
    """`(P, P)` True where source patch j is within ``radius`` patches of target patch i on both axes."""
    rows, cols = torch.meshgrid(torch.arange(grid[0], device=device), torch.arange(grid[1], device=device), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)


def propagate_step(
    target_features: torch.Tensor,
    source_features: torch.Tensor,
    source_labels: torch.Tensor,
    settings: PropagationSettings,
    neighbourhood: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft labels `(C, h, w)` of one target frame from its context frames.

    Args:
        target_features: `(h, w, d)` patch features of the target frame.
        source_features: `(n, h, w, d)` patch features of the n context frames.
        source_labels: `(n, C, h, w)` their (soft) labels.
        neighbourhood: `(P, P)` allowed source positions per target (see `neighbourhood_mask`).
    """
    height, width, dim = target_features.shape
    num_sources, num_labels = source_labels.shape[:2]
    patches = height * width
    target = F.normalize(target_features.reshape(patches, dim).float(), dim=1)
    sources = F.normalize(source_features.reshape(num_sources, patches, dim).float(), dim=2)
    labels = source_labels.reshape(num_sources, num_labels, patches).permute(0, 2, 1).reshape(-1, num_labels).float()
    top_k = min(settings.top_k, num_sources * patches)
    out = torch.empty(patches, num_labels, device=target.device)
    for start in range(0, patches, settings.target_chunk):
        stop = min(start + settings.target_chunk, patches)
        similarity = torch.einsum("td,npd->tnp", target[start:stop], sources)
        if neighbourhood is not None:
            similarity = similarity.masked_fill(~neighbourhood[start:stop, None, :], float("-inf"))
        top_similarity, top_index = similarity.reshape(stop - start, -1).topk(top_k, dim=1)
        weights = torch.softmax(top_similarity / settings.temperature, dim=1)
        out[start:stop] = torch.einsum("tk,tkc->tc", weights, labels[top_index])
    return out.T.reshape(num_labels, height, width)


def propagate_labels(
    frame_features: Iterable[torch.Tensor], first_labels: torch.Tensor, settings: PropagationSettings = PropagationSettings()
) -> Iterator[torch.Tensor]:
    """Soft labels `(C, h, w)` of every frame after the first, one frame at a time.

    Args:
        frame_features: `(h, w, d)` patch features of every frame, the first one included;
            consumed lazily, so a long sequence never has all its features in memory.
        first_labels: `(C, h, w)` labels of the first frame (see `first_frame_labels`).
    """
    features = iter(frame_features)
    try:
        first_features = next(features)
    except StopIteration:
        return
    grid = tuple(first_features.shape[:2])
    if tuple(first_labels.shape[1:]) != grid:
        raise ValueError(f"first labels are on a {tuple(first_labels.shape[1:])} grid but the features on {grid}")
    first_labels = first_labels.to(first_features.device).float()
    neighbourhood = neighbourhood_mask(grid, settings.radius, first_features.device) if settings.radius > 0 else None
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(settings.context_frames, 1))
    for target in features:
        if tuple(target.shape[:2]) != grid:
            raise ValueError(f"frame features on a {tuple(target.shape[:2])} grid, the first frame's is {grid}")
        context = [(first_features, first_labels)] + list(queue)
        labels = propagate_step(
            target,
            torch.stack([f for f, _ in context]),
            torch.stack([lab for _, lab in context]),
            settings,
            neighbourhood,
        )
        if settings.context_frames:
            queue.append((target, labels))
        yield labels


def labels_to_mask(soft_labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """`(C, h, w)` soft labels to a `(H, W)` uint8 label map, as DINO decodes them.

    Bilinear upsampling, each label's map rescaled to [0, 1] (so a small object is not drowned by
    the background's larger values), then the arg-max label per pixel.
    """
    upsampled = F.interpolate(soft_labels[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    high = upsampled.amax(dim=(1, 2), keepdim=True)
    positive = high.flatten() > 0
    upsampled[positive] = ((upsampled - low) / (high - low).clamp_min(1e-12))[positive]
    return upsampled.argmax(dim=0).to(torch.uint8).cpu().numpy()
