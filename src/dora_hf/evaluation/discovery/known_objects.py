"""Tracked objects scored against known objects: a synthetic video's ground-truth instance masks.

Where every object's mask is known (`dora_hf.demo.controlled_tour`, or CLEVRER and MOVi in
object-centric learning), discovery and tracking can be scored directly rather than against a
moving foreground. Inputs are the masks of K tracked objects over one clip, `(K, T, H, W)` bool,
and the ground-truth instance map of each frame, `(T, H, W)` int (0 background, one id per
object, occlusion already resolved). The ground-truth objects of a clip are the ids that occur in
it: an object of the video that this clip never shows is not counted.

- ``matched_iou``: each tracked object's mask IoU over the whole clip (intersections and unions
  summed over its frames) with the ground-truth object it is matched to, one to one. Matching
  maximises the total IoU (Hungarian, scipy's ``linear_sum_assignment``) where scipy is
  installed, else takes the largest remaining IoU first (greedy); ``matching`` says which. A
  tracked object matched to nothing, or only at IoU 0, scores 0.
- ``found``: the share of the clip's ground-truth objects whose matched tracked object has IoU
  >= 0.5 (at most K / G when K tracked objects face G > K objects).
- ``identity``: per frame, each tracked object's best-matching ground-truth object (largest IoU
  in that frame; none where it overlaps no object). Of the consecutive frame pairs in which the
  object matched in the earlier frame is still visible in the later one, the share where the
  tracked object matches the same object again: a switch to another object, or losing a visible
  one, counts against it; an object that leaves the view does not.
- ``corloc``: the share of frames whose predicted box (e.g. from [CLS] attention) has IoU >= 0.5
  with the box of some visible ground-truth object, with LOST's box IoU
  (`dora_hf.evaluation.corloc.scoring.box_iou`). Frames that show no object have no CorLoc and
  are left out, as LOST has no CorLoc for an image without boxes.

Boxes are integer pixel boxes ``(x1, y1, x2, y2)`` with exclusive ``x2, y2`` (the pixel edges
around the mask), the convention of LOST's VOC boxes. Everything is vectorised over pixels and
frames with numpy; torch tensors are accepted and read as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..corloc.scoring import box_iou

FOUND_IOU = 0.5
"""IoU at which a ground-truth object counts as found (the usual detection threshold)."""

CORLOC_IOU = 0.5
"""Box IoU at which a frame counts as correctly localised (LOST's CorLoc)."""


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _check_shapes(masks: np.ndarray, truth: np.ndarray) -> None:
    if truth.ndim != 3:
        raise ValueError(f"ground truth must be (T, H, W) instance ids, got shape {truth.shape}")
    if masks.ndim != 4 or masks.shape[1:] != truth.shape:
        expected = ", ".join(map(str, truth.shape))
        raise ValueError(f"masks must be (K, {expected}) to fit the ground truth, got {masks.shape}")


def object_index(truth: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the objects in `truth` `(T, H, W)`, ascending, and each pixel's position among
    them + 1 (0: background)."""
    truth = _as_numpy(truth)
    ids = np.unique(truth)
    ids = ids[ids != 0]
    index = np.where(truth != 0, np.searchsorted(ids, truth) + 1, 0)
    return ids, index


def clip_ious(masks: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`(K, G)` IoU over the whole clip of each tracked object with each ground-truth object, and the G ids."""
    masks, truth = _as_numpy(masks).astype(bool), _as_numpy(truth)
    _check_shapes(masks, truth)
    ids, index = object_index(truth)
    flat_index = index.reshape(-1)
    flat_masks = masks.reshape(masks.shape[0], -1)
    slots = len(ids) + 1
    intersection = np.stack([np.bincount(flat_index[m], minlength=slots) for m in flat_masks]) if len(flat_masks) else (
        np.zeros((0, slots), dtype=np.int64)
    )
    truth_area = np.bincount(flat_index, minlength=slots)[1:]
    mask_area = flat_masks.sum(1)
    intersection = intersection[:, 1:]
    union = mask_area[:, None] + truth_area[None, :] - intersection
    return intersection / np.maximum(union, 1), ids


def match_objects(ious: np.ndarray, method: str | None = None) -> tuple[np.ndarray, str]:
    """`(K,)` column of `ious` `(K, G)` each tracked object is matched to (-1: none), and the method.

    ``method``: ``"hungarian"`` (the largest total IoU; needs scipy) or ``"greedy"`` (the largest
    remaining IoU first, ties to the lower row then column); None picks Hungarian where scipy is
    installed. Pairs at IoU 0 are no match.
    """
    if method is None:
        method = "hungarian" if _have_scipy() else "greedy"
    k, g = ious.shape
    assignment = np.full(k, -1, dtype=np.int64)
    if method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(ious, maximize=True)
        assignment[rows] = cols
    elif method == "greedy":
        remaining = ious.astype(np.float64).copy()
        for _ in range(min(k, g)):
            row, col = np.unravel_index(np.argmax(remaining), remaining.shape)
            if remaining[row, col] <= 0:
                break
            assignment[row] = col
            remaining[row, :] = -1.0
            remaining[:, col] = -1.0
    else:
        raise ValueError(f"matching method must be 'hungarian' or 'greedy', not {method!r}")
    matched = assignment >= 0
    zero = np.zeros(k, dtype=bool)
    zero[matched] = ious[np.flatnonzero(matched), assignment[matched]] <= 0
    assignment[zero] = -1
    return assignment, method


def _have_scipy() -> bool:
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        return False
    return True


def matched_ious(ious: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """`(K,)` IoU of each tracked object with its matched ground-truth object; 0 where unmatched."""
    rows = np.flatnonzero(assignment >= 0)
    result = np.zeros(ious.shape[0], dtype=np.float64)
    result[rows] = ious[rows, assignment[rows]]
    return result


def found_share(ious: np.ndarray, assignment: np.ndarray, threshold: float = FOUND_IOU) -> float:
    """The share of the G ground-truth objects matched at IoU >= `threshold`; NaN when G is 0."""
    if ious.shape[1] == 0:
        return float("nan")
    return float((matched_ious(ious, assignment) >= threshold).sum() / ious.shape[1])


def frame_matches(masks: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> np.ndarray:
    """`(K, T)` id of each tracked object's best-matching ground-truth object in each frame (largest
    IoU in that frame, the lower id on a tie); 0 where it overlaps no object."""
    masks, truth = _as_numpy(masks).astype(bool), _as_numpy(truth)
    _check_shapes(masks, truth)
    k, num_frames = masks.shape[:2]
    ids, index = object_index(truth)
    slots = len(ids) + 1
    keys = (np.arange(num_frames).reshape(-1, 1, 1) * slots + index).reshape(-1)
    truth_area = np.bincount(keys, minlength=num_frames * slots).reshape(num_frames, slots)
    result = np.zeros((k, num_frames), dtype=np.int64)
    if not len(ids):
        return result
    for obj, mask in enumerate(masks.reshape(k, -1)):
        inter = np.bincount(keys[mask], minlength=num_frames * slots).reshape(num_frames, slots)[:, 1:]
        area = mask.reshape(num_frames, -1).sum(1)
        iou = inter / np.maximum(area[:, None] + truth_area[:, 1:] - inter, 1)
        best = iou.argmax(1)
        result[obj] = np.where(iou.max(1) > 0, ids[best], 0)
    return result


def identity_share(masks: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> tuple[np.ndarray, float]:
    """Per tracked object `(K,)`, and over all of them, the share of consecutive frame pairs whose
    earlier match is still visible in which the object matches it again; NaN where no pair counts."""
    truth = _as_numpy(truth)
    matches = frame_matches(masks, truth)
    k, num_frames = matches.shape
    if num_frames < 2:
        return np.full(k, np.nan), float("nan")
    previous, current = matches[:, :-1], matches[:, 1:]
    visible = _visible_ids(truth)  # (T, max id + 1)
    still_visible = visible[np.arange(1, num_frames)[None, :], previous] & (previous > 0)
    same = still_visible & (current == previous)
    counted, kept = still_visible.sum(1), same.sum(1)
    per_object = np.where(counted > 0, kept / np.maximum(counted, 1), np.nan)
    overall = float(kept.sum() / counted.sum()) if counted.sum() else float("nan")
    return per_object, overall


def _visible_ids(truth: np.ndarray) -> np.ndarray:
    """`(T, max id + 1)` bool: whether each id has a pixel in each frame."""
    num_frames = truth.shape[0]
    top = int(truth.max(initial=0)) + 1
    keys = (np.arange(num_frames).reshape(-1, 1, 1) * top + truth).reshape(-1)
    return (np.bincount(keys, minlength=num_frames * top) > 0).reshape(num_frames, top)


def mask_boxes(masks: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`(..., 4)` integer box ``(x1, y1, x2, y2)`` (exclusive ``x2, y2``) of each mask `(..., H, W)`, and
    whether the mask has any pixel `(...)` (the box of an empty mask is all zeros)."""
    masks = _as_numpy(masks).astype(bool)
    height, width = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)
    present = rows.any(-1)
    y1 = rows.argmax(-1)
    y2 = height - rows[..., ::-1].argmax(-1)
    x1 = cols.argmax(-1)
    x2 = width - cols[..., ::-1].argmax(-1)
    boxes = np.stack([x1, y1, x2, y2], -1).astype(np.int64)
    boxes[~present] = 0
    return boxes, present


def instance_boxes(truth: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ids `(G,)` in `truth` `(T, H, W)`, each one's box in each frame `(T, G, 4)`, and where
    it is visible `(T, G)`."""
    truth = _as_numpy(truth)
    ids = np.unique(truth)
    ids = ids[ids != 0]
    if not len(ids):
        return ids, np.zeros((truth.shape[0], 0, 4), dtype=np.int64), np.zeros((truth.shape[0], 0), dtype=bool)
    per_id = [mask_boxes(truth == i) for i in ids]
    boxes = np.stack([b for b, _ in per_id], 1)
    present = np.stack([p for _, p in per_id], 1)
    return ids, boxes, present


def box_corloc(
    boxes: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, threshold: float = CORLOC_IOU
) -> tuple[np.ndarray, np.ndarray, float]:
    """Whether each frame's predicted box `(T, 4)` hits a ground-truth box `(T,)`, which frames show
    an object and so are scored `(T,)`, and CorLoc over those (NaN when none is)."""
    boxes, truth = _as_numpy(boxes).astype(np.int64), _as_numpy(truth)
    if boxes.shape != (truth.shape[0], 4):
        raise ValueError(f"boxes must be ({truth.shape[0]}, 4) for {truth.shape[0]} frames, got {boxes.shape}")
    _, gt_boxes, present = instance_boxes(truth)
    frames, objects = np.nonzero(present)
    hits = np.zeros(truth.shape[0], dtype=bool)
    if len(frames):
        # box_iou's box (4,) broadcast as (4, pairs): the IoU of each (frame's box, one of its objects' boxes) pair.
        ious = box_iou(torch.from_numpy(boxes[frames]).T, torch.from_numpy(gt_boxes[frames, objects]))
        np.logical_or.at(hits, frames, (ious >= threshold).numpy())
    scored = present.any(1)
    corloc = float(hits[scored].mean()) if scored.any() else float("nan")
    return hits, scored, corloc


@dataclass(frozen=True)
class KnownObjectScores:
    """The scores of one clip's tracked objects against its ground-truth objects."""

    object_ids: list[int]
    """The clip's ground-truth objects (the ids that occur in it)."""
    matched_object: list[int]
    """Per tracked object, the id it is matched to over the clip (0: none)."""
    matched_iou: list[float]
    """Per tracked object, the clip IoU with that object (0 where unmatched)."""
    mean_iou: float
    """The mean of ``matched_iou`` over the tracked objects."""
    found: float
    """The share of ground-truth objects matched at IoU >= 0.5 (NaN without objects)."""
    identity: list[float]
    """Per tracked object, its consecutive-frame identity share (NaN where no pair counts)."""
    identity_overall: float
    """Consecutive-frame identity over all tracked objects' counted pairs."""
    matching: str
    """``hungarian`` or ``greedy``."""


def score_known_objects(
    masks: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, method: str | None = None
) -> KnownObjectScores:
    """All mask scores of tracked masks `(K, T, H, W)` against instance maps `(T, H, W)` (see the module doc)."""
    ious, ids = clip_ious(masks, truth)
    assignment, used = match_objects(ious, method)
    matched = matched_ious(ious, assignment)
    per_object, overall = identity_share(masks, truth)
    return KnownObjectScores(
        object_ids=[int(i) for i in ids],
        matched_object=[int(ids[a]) if a >= 0 else 0 for a in assignment],
        matched_iou=[float(v) for v in matched],
        mean_iou=float(matched.mean()) if len(matched) else float("nan"),
        found=found_share(ious, assignment),
        identity=[float(v) for v in per_object],
        identity_overall=overall,
        matching=used,
    )
