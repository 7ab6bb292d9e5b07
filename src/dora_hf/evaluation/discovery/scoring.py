"""Object discovery without labels: tracked masks scored against a video's moving foreground.

On a static-camera video whatever moves is a label-free reference. A pixel is foreground where
it differs from the per-pixel temporal median of the frames around it by more than a threshold;
an opening then a closing remove speckle and fill holes. For each clip, the masks a model
discovers in the first frame and tracks are scored by

- ``precision``: the share of mask area on the foreground (a mask placed anywhere scores the
  foreground's share of the frame, ``chance``),
- ``best_iou``: per object and frame, the IoU with the best-matching foreground region (an
  8-connected component of that frame's foreground), averaged over frames and objects,
- ``mutual_iou``: the mean IoU between the k objects' masks (low: distinct objects),
- ``temporal_iou``: the mean IoU of each object's mask between consecutive frames (stability).

The same scores for random masks of the same area per object and frame are the baseline.
Everything here is batched torch on boolean tensors; `evaluate_discovery` takes the tracker as a
function so that any model, or a stand-in, can be scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..protocols import DiscoverySettings

METRIC_NAMES = ("precision", "chance", "best_iou", "mutual_iou", "temporal_iou")

Tracker = Callable[[torch.Tensor], torch.Tensor]
"""uint8 clip `(T, 3, H, W)` -> boolean masks `(k, T, h, w)` (any resolution, resized to the frame)."""


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean `(..., H, W)` dilated by a `(2r+1)^2` square (max-pool)."""
    if radius <= 0:
        return mask
    shape = mask.shape
    flat = mask.reshape(-1, 1, *shape[-2:]).float()
    return (F.max_pool2d(flat, 2 * radius + 1, stride=1, padding=radius) > 0).reshape(shape)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean `(..., H, W)` eroded by a `(2r+1)^2` square; outside the frame does not erode."""
    return ~dilate(~mask, radius) if radius > 0 else mask


def clean_foreground(mask: torch.Tensor, opening: int, closing: int) -> torch.Tensor:
    """Opening (drops specks smaller than the kernel) then closing (fills small holes).

    The closing runs on a frame padded with background, so that it does not grow a region
    touching the border.
    """
    opened = dilate(erode(mask, opening), opening)
    if closing <= 0:
        return opened
    padded = F.pad(opened, (closing, closing, closing, closing))
    closed = erode(dilate(padded, closing), closing)
    return closed[..., closing:-closing, closing:-closing]


def foreground_masks(frames: torch.Tensor, settings: DiscoverySettings) -> torch.Tensor:
    """Boolean `(T, H, W)` foreground of uint8 frames `(T, 3, H, W)` from a static camera.

    Frame t is compared with the per-pixel median of the ``w = settings.window`` frames centred on
    it, shifted (not shortened) at the sequence's ends so that a slow mover stays a minority; the largest channel difference above
    ``settings.threshold`` (0-255) is foreground, then cleaned morphologically.
    """
    num_frames = frames.shape[0]
    half = settings.window // 2
    difference = torch.empty((num_frames, *frames.shape[-2:]))
    for t in range(num_frames):  # one window at a time: long full-resolution videos stay uint8
        lo = min(max(0, t - half), max(0, num_frames - settings.window))
        hi = min(num_frames, lo + settings.window)
        median = frames[lo:hi].median(dim=0).values.float()
        difference[t] = (frames[t].float() - median).abs().amax(dim=0)
    return clean_foreground(difference > settings.threshold, settings.opening, settings.closing)


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """`(T, H, W)` int64 labels of each frame's 8-connected regions of a boolean mask; 0 = none.

    Each region takes the largest flat pixel index (+1) within it, spread by 3x3 max-pooling
    inside the mask until nothing changes. After each pass a pixel also takes the label now held
    by the pixel its label names (pointer jumping, as in union-find): that pixel is in the same
    region and its label is at least as large, so long snake-shaped regions need a few dozen
    passes rather than one per pixel of their length.
    """
    num_frames, height, width = mask.shape
    index = torch.arange(1, height * width + 1, dtype=torch.float64).view(1, height, width)
    zero = torch.zeros((), dtype=torch.float64)
    labels = torch.where(mask, index.expand(num_frames, -1, -1), zero)
    while True:
        spread = F.max_pool2d(labels.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
        spread = torch.where(mask, spread, zero).flatten(1)
        named = torch.gather(spread, 1, (spread.long() - 1).clamp(min=0))
        spread = torch.where(mask.flatten(1), torch.maximum(spread, named), zero).view_as(labels)
        if torch.equal(spread, labels):
            return labels.long()
        labels = spread


def _mean_of_defined(values: torch.Tensor) -> float:
    """Mean of the non-NaN entries; NaN when none is defined."""
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else float("nan")


def mask_precision(masks: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """`(k,)` share of each object's mask area `(k, T, H, W)` on the foreground `(T, H, W)`; NaN if empty."""
    area = masks.flatten(1).sum(1).double()
    on = (masks & foreground.unsqueeze(0)).flatten(1).sum(1).double()
    return torch.where(area > 0, on / area.clamp(min=1), torch.full_like(area, float("nan")))


def best_region_iou(
    masks: torch.Tensor, foreground: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """`(k, T)` IoU of each object's mask with its best-matching foreground region in each frame.

    0 where the mask or the frame's foreground is empty and the other is not; NaN where both are.
    ``labels``: the foreground's `connected_components`, when the caller has them already.
    """
    k, num_frames = masks.shape[:2]
    labels = connected_components(foreground) if labels is None else labels
    frame_of = torch.arange(num_frames).view(num_frames, 1, 1).expand_as(labels)
    keys = frame_of * (labels.max() + 1) + labels
    regions, inverse = torch.unique(keys[labels > 0], return_inverse=True)
    region_frame = regions // (labels.max() + 1)
    num_regions = regions.numel()
    region_area = torch.bincount(inverse, minlength=num_regions).double()
    on_foreground = masks[:, labels > 0].double()  # (k, foreground pixels)
    intersection = torch.zeros(k, num_regions, dtype=torch.float64).index_add_(1, inverse, on_foreground)
    mask_area = masks.flatten(2).sum(2).double()  # (k, T)
    union = mask_area[:, region_frame] + region_area - intersection
    iou = intersection / union.clamp(min=1)
    in_frame = region_frame.view(1, -1) == torch.arange(num_frames).view(-1, 1)  # (T, regions)
    best = torch.where(in_frame.unsqueeze(0), iou.unsqueeze(1), torch.zeros(())).amax(dim=2) if num_regions else (
        torch.zeros(k, num_frames, dtype=torch.float64)
    )
    has_foreground = foreground.flatten(1).any(1).unsqueeze(0)
    neither = (mask_area == 0) & ~has_foreground
    return torch.where(neither, torch.full_like(best, float("nan")), best)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks over their last dimension; NaN where both are empty."""
    intersection = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))


def mutual_iou(masks: torch.Tensor) -> torch.Tensor:
    """`(k*(k-1)/2,)` IoU of every pair of objects' masks `(k, T, H, W)` over the whole clip."""
    flat = masks.flatten(1)
    first, second = torch.triu_indices(flat.shape[0], flat.shape[0], offset=1)
    return pairwise_iou(flat[first], flat[second])


def temporal_iou(masks: torch.Tensor) -> torch.Tensor:
    """`(k, T-1)` IoU of each object's mask `(k, T, H, W)` between consecutive frames."""
    flat = masks.flatten(2)
    return pairwise_iou(flat[:, :-1], flat[:, 1:])


def random_masks_like(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random pixels with each object's area in each frame: the chance baseline."""
    k, num_frames, height, width = masks.shape
    area = masks.flatten(2).sum(2)
    ranks = torch.rand(k, num_frames, height * width, generator=generator).argsort(-1).argsort(-1)
    return (ranks < area.unsqueeze(-1)).view_as(masks)


def clip_scores(masks: torch.Tensor, foreground: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """The five scores of one clip's masks `(k, T, H, W)` against its foreground `(T, H, W)`
    (and its regions ``labels``, see `best_region_iou`)."""
    return {
        "precision": _mean_of_defined(mask_precision(masks, foreground)),
        "chance": float(foreground.double().mean()),
        "best_iou": _mean_of_defined(best_region_iou(masks, foreground, labels)),
        "mutual_iou": _mean_of_defined(mutual_iou(masks)),
        "temporal_iou": _mean_of_defined(temporal_iou(masks)),
    }


def clip_starts(num_frames: int, settings: DiscoverySettings) -> list[int]:
    """First frames of the clips of ``clip_frames`` frames every ``clip_step`` frames (at most ``max_clips``)."""
    starts = list(range(0, num_frames - settings.clip_frames + 1, settings.clip_step))
    return starts[: settings.max_clips] if settings.max_clips else starts


def downscale(frames: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 frames `(T, 3, H, W)` with the short side brought down to ``side`` by area averaging
    (OpenCV's INTER_AREA: each output pixel the mean of the input pixels it covers); 0: unchanged."""
    height, width = frames.shape[-2:]
    if side <= 0 or min(height, width) <= side:
        return frames
    scale = side / min(height, width)
    size = (max(side, round(height * scale)), max(side, round(width * scale)))
    resized = F.interpolate(frames.float(), size=size, mode="area")
    return resized.round().clamp(0, 255).to(torch.uint8)


def centre_square(tensor: torch.Tensor) -> torch.Tensor:
    """The centre square of the last two dimensions: the part of the frame the model sees."""
    height, width = tensor.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return tensor[..., top : top + side, left : left + side]


def _resize_masks(masks: torch.Tensor, side: int) -> torch.Tensor:
    if masks.shape[-2:] == (side, side):
        return masks.bool()
    return F.interpolate(masks.float().flatten(0, 1).unsqueeze(1), size=(side, side), mode="nearest").squeeze(1).view(
        *masks.shape[:2], side, side
    ) > 0.5


@dataclass(frozen=True)
class ForegroundReference:
    """What every model is scored against on one frame sequence: the moving foreground on the
    centre square, and its regions in the frames the clips cover (None when there is no clip)."""

    foreground: torch.Tensor
    labels: torch.Tensor | None


def foreground_reference(frames: torch.Tensor, settings: DiscoverySettings) -> ForegroundReference:
    """The foreground of the whole sequence (downscaled to ``settings.side``) on the centre
    square, the crop the model sees, and its regions once per frame (the clips overlap)."""
    foreground = centre_square(foreground_masks(downscale(frames, settings.side), settings))
    starts = clip_starts(frames.shape[0], settings)
    labels = connected_components(foreground[: starts[-1] + settings.clip_frames]) if starts else None
    return ForegroundReference(foreground, labels)


def evaluate_discovery(
    frames: torch.Tensor,
    tracker: Tracker,
    settings: DiscoverySettings,
    seed: int = 0,
    progress: bool = False,
    reference: ForegroundReference | None = None,
) -> dict:
    """Score ``tracker``'s masks, and random masks of the same area, on every clip of ``frames``.

    The masks are resized (nearest neighbours) to the foreground's centre square. ``reference``:
    `foreground_reference` of these frames and settings, when several models are scored on them.
    Returns ``{"model": {score: mean}, "random": {...}, "clips": [{"start", "model", "random"}]}``.
    """
    reference = reference or foreground_reference(frames, settings)
    foreground, labels = reference.foreground, reference.labels
    side = foreground.shape[-1]
    starts = clip_starts(frames.shape[0], settings)
    generator = torch.Generator().manual_seed(seed)
    clips = []
    for start in _iterate(starts, progress):
        window = slice(start, start + settings.clip_frames)
        masks = _resize_masks(tracker(frames[window]).cpu(), side)
        clips.append({
            "start": start,
            "model": clip_scores(masks, foreground[window], labels[window]),  # type: ignore[index]
            "random": clip_scores(random_masks_like(masks, generator), foreground[window], labels[window]),  # type: ignore[index]
        })
    summary = {
        which: {name: _mean_of_defined(torch.tensor([c[which][name] for c in clips], dtype=torch.float64))
                for name in METRIC_NAMES}
        for which in ("model", "random")
    }
    return _defined_or_none({**summary, "clips": clips, "settings": asdict(settings), "foreground_side": side})


def _defined_or_none(value: object) -> object:
    """NaN (a score with nothing to score) as None, so that the results are strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _defined_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_defined_or_none(item) for item in value]
    return value


def _iterate(starts: list[int], progress: bool) -> Iterator[int]:
    if not progress:
        return iter(starts)
    from tqdm.auto import tqdm

    return iter(tqdm(starts, desc="clips", unit="clip"))
