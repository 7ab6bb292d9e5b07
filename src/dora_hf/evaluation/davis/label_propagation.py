"""Semi-supervised video object segmentation by label propagation over patch features.

The first frame's mask, as one-hot labels on the patch grid, is carried to each next frame by a
soft nearest-neighbour vote: a target patch looks at the patches of the first frame and of a
queue of the previous frames (their propagated soft labels, never re-thresholded), keeps only
sources within a square spatial neighbourhood and averages the labels of its top-k most
cosine-similar ones. Two protocols (`PropagationSettings.protocol`):

``dino`` follows facebookresearch/dino ``eval_video_segmentation.py`` step for step:
``label_propagation`` (affinities ``exp(cosine / 0.1)`` of the target to every context patch,
multiplied by the 0/1 mask of ``restrict_neighborhood`` (radius 12), the top-5 taken over all
context patches at once, every affinity below the 5th largest set to 0 (ties kept), each
target's column divided by its sum, then the labels mixed by one matrix product); the context is
the first frame plus a queue of the 7 previous frames (``--n_last_frames``), the soft labels
``(1, C, h, w)`` are what the queue keeps, features enter as ``extract_feature(...).T``. Decoding
is its post-processing: ``F.interpolate(scale_factor=patch_size, mode='bilinear',
align_corners=False, recompute_scale_factor=False)``, ``norm_mask`` (each channel whose maximum
is positive shifted by its minimum and divided by its new maximum; a constant positive channel
becomes NaN there, and ``torch.max`` then picks it), ``torch.max`` over channels, ``uint8``, and
a PIL nearest resize to the frame's original size (``Image.resize((ori_w, ori_h), 0)``).

``paper-text`` is the earlier form: a softmax over exactly the top-k similarities (a queue of 20,
top-7, temperature 0.7), targets in chunks, bilinear upsampling straight to the frame's size.

Everything here is a pure function of per-frame patch features `(h, w, d)`: the model, the
frame size and the file format live in `evaluate.py`, so the propagation can be tested with any
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


def dino_propagate_step(
    target_features: torch.Tensor,
    source_features: list[torch.Tensor],
    source_labels: list[torch.Tensor],
    settings: PropagationSettings,
    neighbourhood: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft labels `(1, C, h, w)` of one target frame, as DINO's ``label_propagation``.

    Args:
        target_features: `(h, w, d)` patch features of the target frame.
        source_features: `(d, h*w)` features of each context frame (``extract_feature(...).T``).
        source_labels: `(1, C, h, w)` (soft) labels of each context frame.
        neighbourhood: `(P, P)` float 0/1 mask of allowed sources per target, or None.
    """
    height, width, dim = target_features.shape
    patches = height * width
    num_context = len(source_features)
    target = F.normalize(target_features.reshape(patches, dim).float(), dim=1, p=2)
    sources = F.normalize(torch.stack(source_features).float(), dim=1, p=2)  # n x d x P
    target = target.unsqueeze(0).repeat(num_context, 1, 1)
    affinity = torch.exp(torch.bmm(target, sources) / settings.temperature)  # n x P (targets) x P (sources)
    if neighbourhood is not None:
        affinity *= neighbourhood
    affinity = affinity.transpose(2, 1).reshape(-1, patches)  # n*P (sources) x P (targets)
    top, _ = torch.topk(affinity, dim=0, k=min(settings.top_k, affinity.shape[0]))
    top_min, _ = torch.min(top, dim=0)
    affinity[affinity < top_min] = 0
    affinity = affinity / torch.sum(affinity, keepdim=True, axis=0)
    labels = torch.cat(source_labels)
    num_labels = labels.shape[1]
    labels = labels.reshape(num_context, num_labels, -1).transpose(2, 1).reshape(-1, num_labels).T  # C x n*P
    return torch.mm(labels, affinity).reshape(1, num_labels, height, width)


def propagate_labels(
    frame_features: Iterable[torch.Tensor], first_labels: torch.Tensor, settings: PropagationSettings = PropagationSettings()
) -> Iterator[torch.Tensor]:
    """Soft labels `(C, h, w)` of every frame after the first, one frame at a time.

    Args:
        frame_features: `(h, w, d)` patch features of every frame, the first one included;
            consumed lazily, so a long sequence never has all its features in memory.
        first_labels: `(C, h, w)` labels of the first frame (`first_frame_labels` for
            ``paper-text``, `dino_frames.dino_first_frame_labels` for ``dino``).
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
    dino = settings.protocol == "dino"
    if dino:
        # DINO keeps features as `extract_feature(...).T` and labels as `(1, C, h, w)`.
        first_features, first_labels = first_features.reshape(-1, first_features.shape[-1]).T, first_labels[None]
        neighbourhood = neighbourhood.float() if neighbourhood is not None else None
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(settings.context_frames, 1))
    for target in features:
        if tuple(target.shape[:2]) != grid:
            raise ValueError(f"frame features on a {tuple(target.shape[:2])} grid, the first frame's is {grid}")
        context = [(first_features, first_labels)] + list(queue)
        if dino:
            labels = dino_propagate_step(
                target, [f for f, _ in context], [lab for _, lab in context], settings, neighbourhood
            )
            queued = (target.reshape(-1, target.shape[-1]).T, labels)
            labels = labels[0]
        else:
            labels = propagate_step(
                target,
                torch.stack([f for f, _ in context]),
                torch.stack([lab for _, lab in context]),
                settings,
                neighbourhood,
            )
            queued = (target, labels)
        if settings.context_frames:
            queue.append(queued)
        yield labels


def labels_to_mask(soft_labels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """`(C, h, w)` soft labels to a `(H, W)` uint8 label map, the ``paper-text`` way.

    Bilinear upsampling straight to the frame's size, each label's map rescaled to [0, 1] (so a
    small object is not drowned by the background's larger values), then the arg-max label per
    pixel. (``dino``: `dino_labels_to_mask`.)
    """
    upsampled = F.interpolate(soft_labels[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    high = upsampled.amax(dim=(1, 2), keepdim=True)
    positive = high.flatten() > 0
    upsampled[positive] = ((upsampled - low) / (high - low).clamp_min(1e-12))[positive]
    return upsampled.argmax(dim=0).to(torch.uint8).cpu().numpy()


def dino_labels_to_mask(soft_labels: torch.Tensor, patch_size: int, size: tuple[int, int]) -> np.ndarray:
    """`(C, h, w)` soft labels to a `(H, W)` uint8 label map, as DINO's post-processing.

    Upsampled by ``patch_size`` (bilinear), ``norm_mask``, ``torch.max`` over labels, then a PIL
    nearest resize from the prepared frame's size to the original ``size``.
    """
    upsampled = F.interpolate(
        soft_labels[None].float(), scale_factor=patch_size, mode="bilinear", align_corners=False,
        recompute_scale_factor=False,
    )[0]
    _, labels = torch.max(_norm_mask(upsampled), dim=0)
    labels = labels.cpu().numpy().astype(np.uint8)
    return np.array(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


def _norm_mask(mask: torch.Tensor) -> torch.Tensor:
    """DINO's ``norm_mask``: each channel with a positive maximum rescaled to [0, 1] by its min and max."""
    positive = mask.amax(dim=(1, 2)) > 0
    shifted = mask - mask.amin(dim=(1, 2), keepdim=True)
    scaled = shifted / shifted.amax(dim=(1, 2), keepdim=True)
    return torch.where(positive[:, None, None], scaled, mask)
