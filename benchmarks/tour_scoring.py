"""Scores of the controlled-tour benchmark (`bench_tour.py`): a model's tracked masks and
[CLS] box against the tour's known objects, DAVIS J&F on its held-out sequences, the ceiling the
patch grid sets, and the information in the teacher's targets."""

from __future__ import annotations

from pathlib import Path

import dora_hf  # noqa: F401  (before torch: OpenMP reads its wait policy when torch loads it)
import numpy as np
import torch

from dora_hf.demo.main_job import DEMO_DISCOVERY
from dora_hf.evaluation.davis.evaluate import BackbonePatchFeatures, evaluate_davis
from dora_hf.evaluation.davis.folder import read_davis
from dora_hf.evaluation.discovery.known_objects import box_corloc, mask_boxes, score_known_objects
from dora_hf.evaluation.discovery.scoring import random_masks_like
from dora_hf.evaluation.discovery.video import backbone_tracker, default_num_objects
from dora_hf.evaluation.encoder import FrozenEncoder
from dora_hf.evaluation.protocols import PropagationSettings
from dora_hf.evaluation.tracker_features import read_tracker_features
from dora_hf.evaluation.visualize.mask_figure import clip_to_pixel_values
from dora_hf.folders.checkpoint_layout import RUN_STATE_FILE
from dora_hf.publish.export import load_teacher

SCORES = ("matched_iou", "found", "identity", "corloc")
TABLE_SCORES = (*SCORES, "davis_jf")
"""The learning curve's scores at every checkpoint; DAVIS J&F (label propagation, minutes per
model on the CPU) is taken for the final models only."""
ATTENTION_MASS = 0.6
"""Share of the [CLS] attention kept for its box: DINO's attention-map threshold."""



def view_window(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which frame rows and columns the tracker's centre square covers, and the square's pixel
    each of them falls on: ``rows``, ``cols`` (frame indices) and ``square_rows``,
    ``square_cols`` (indices into the ``size`` x ``size`` square), as `clip_to_pixel_values`
    resizes the short side to ``size`` and crops the centre."""
    scale = size / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))

    def axis(length: int, new_length: int) -> tuple[np.ndarray, np.ndarray]:
        offset = (new_length - size) // 2
        square = np.floor((np.arange(length) + 0.5) * new_length / length).astype(np.int64) - offset
        inside = (square >= 0) & (square < size)
        return np.flatnonzero(inside), square[inside]

    rows, square_rows = axis(height, resized[0])
    cols, square_cols = axis(width, resized[1])
    return rows, cols, square_rows, square_cols


def attention_masks(cls_attention: torch.Tensor, grid: int, mass: float = ATTENTION_MASS) -> np.ndarray:
    """`(T, grid, grid)` bool: per frame, the largest 4-connected group of the patches that hold
    ``mass`` of the heads' mean [CLS] attention `(T, heads, patches)`."""
    from scipy import ndimage

    attention = cls_attention.float().mean(1)
    order = attention.argsort(-1, descending=True)
    cumulative = attention.gather(-1, order).cumsum(-1) / attention.sum(-1, keepdim=True)
    keep = torch.zeros_like(attention, dtype=torch.bool)
    keep.scatter_(-1, order, cumulative <= mass)
    keep.scatter_(-1, order[:, :1], True)  # at least the strongest patch
    result = np.zeros((attention.shape[0], grid, grid), dtype=bool)
    for t, frame in enumerate(keep.reshape(-1, grid, grid).numpy()):
        parts, count = ndimage.label(frame)
        if count:
            sizes = np.bincount(parts.reshape(-1), minlength=count + 1)[1:]
            result[t] = parts == int(sizes.argmax()) + 1
    return result


# ----------------------------------------------------------------------------- scoring


def score_backbone(
    backbone: FrozenEncoder, frames: torch.Tensor, truth: np.ndarray, clip_starts: list[int], seed: int = 0
) -> dict:
    """Mean scores over the held-out clips of the backbone's tracked masks and [CLS] box, of random
    masks of the same areas, and what the masks cover (their share on objects against the
    objects' share of the view)."""
    size = backbone.image_size
    num_objects = default_num_objects(backbone)
    track = backbone_tracker(backbone, size, num_objects, seed)
    rows, cols, square_rows, square_cols = view_window(frames.shape[-2], frames.shape[-1], size)
    mean, std = backbone.pixel_mean_std()
    generator = torch.Generator().manual_seed(seed)
    grid = size // backbone.patch_size
    per_clip: dict[str, list[float]] = {f"{w}_{s}": [] for w in ("model", "random") for s in SCORES[:3]}
    per_clip.update(corloc=[], mask_on_objects=[], object_share=[], mask_area=[])
    length = DEMO_DISCOVERY.clip_frames
    for start in clip_starts:
        clip = frames[start : start + length]
        square = track(clip)  # (k, T, size, size)
        masks = square[:, :, square_rows][:, :, :, square_cols]  # (k, T, view h, view w) at the frame's pixels
        view_truth = truth[start : start + length][:, rows][:, :, cols]
        for which, candidate in (("model", masks), ("random", random_masks_like(masks, generator))):
            scores = score_known_objects(candidate, view_truth)
            per_clip[f"{which}_matched_iou"].append(scores.mean_iou)
            per_clip[f"{which}_found"].append(scores.found)
            per_clip[f"{which}_identity"].append(scores.identity_overall)
        pixel_values = clip_to_pixel_values(clip, size, mean, std)[0].to(backbone.device)
        features = read_tracker_features(backbone.model, pixel_values, False)
        attention = attention_masks(features.cls_attention.cpu(), grid)
        attention = np.repeat(np.repeat(attention, backbone.patch_size, 1), backbone.patch_size, 2)
        boxes, _ = mask_boxes(attention[:, square_rows][:, :, square_cols])
        per_clip["corloc"].append(box_corloc(boxes, view_truth)[2])
        on_objects = torch.from_numpy(view_truth > 0)
        per_clip["mask_on_objects"].append(float((masks & on_objects).sum() / max(int(masks.sum()), 1)))
        per_clip["object_share"].append(float(on_objects.float().mean()))
        per_clip["mask_area"].append(float(masks.float().mean()))
    summary = {name: float(np.nanmean(values)) if not np.all(np.isnan(values)) else None
               for name, values in per_clip.items()}
    return {
        "model": {s: summary[f"model_{s}"] for s in SCORES[:3]} | {"corloc": summary["corloc"]},
        "random": {s: summary[f"random_{s}"] for s in SCORES[:3]} | {"corloc": None},
        "mask_on_objects": summary["mask_on_objects"],
        "object_share_of_view": summary["object_share"],
        "mask_area_per_object": summary["mask_area"],
        "num_objects": num_objects,
        "size": size,
        "clips": len(clip_starts),
    }


def davis_scores(backbone: FrozenEncoder, davis_root: Path) -> dict[str, float]:
    """J&F, J and F of label propagation from each held-out sequence's ground-truth first masks
    (`dora-hf eval davis`'s default, DINO's released protocol) on the tour's DAVIS folder."""
    sequences = read_davis(davis_root, "val", "480p")
    settings = PropagationSettings()
    scores = evaluate_davis(sequences, BackbonePatchFeatures(backbone, settings), settings, progress=False,
                            patch_size=backbone.patch_size)
    return {"jaccard_and_f": float(scores["J&F"]), "jaccard": float(scores["J"]), "f": float(scores["F"])}


def patch_grid_masks(view_truth: np.ndarray, cells: np.ndarray, k: int) -> np.ndarray:
    """The best masks a tracker working on patches can give: `(k, T, H, W)` bool.

    The tracker's masks are unions of patches (`cells`, `(H, W)`: the patch each view pixel
    falls in). Per object and frame, the union of patches with the largest IoU with the object
    is a prefix of the patches sorted by the share of them the object covers; per object these
    per-frame masks give its clip IoU, and the ``k`` objects with the largest are kept (empty
    masks where the clip shows fewer). Scored like a model's masks, they are the ceiling that
    the patch grid sets on the figures, whatever the features.
    """
    frames = view_truth.shape[0]
    flat_cells = cells.reshape(-1)
    num_cells = int(flat_cells.max()) + 1
    cell_pixels = np.maximum(np.bincount(flat_cells, minlength=num_cells), 1)
    candidates, clip_ious = [], []
    for object_id in np.unique(view_truth[view_truth > 0]):
        masks = np.zeros(view_truth.shape, dtype=bool)
        intersection = union = 0.0
        for t in range(frames):
            covered = np.bincount(flat_cells, weights=(view_truth[t] == object_id).reshape(-1), minlength=num_cells)
            area = covered.sum()
            if area == 0:
                continue
            order = np.argsort(-covered / cell_pixels, kind="stable")
            inter = np.cumsum(covered[order])
            ious = inter / (area + np.cumsum(cell_pixels[order]) - inter)
            best = int(ious.argmax()) + 1
            masks[t] = np.isin(cells, order[:best])
            intersection += inter[best - 1]
            union += area + cell_pixels[order[:best]].sum() - inter[best - 1]
        candidates.append(masks)
        clip_ious.append(intersection / union if union else 0.0)
    kept = [candidates[i] for i in np.argsort(clip_ious, kind="stable")[::-1][:k]]
    kept += [np.zeros(view_truth.shape, dtype=bool)] * (k - len(kept))
    return np.stack(kept)


def patch_grid_ceiling(truth: np.ndarray, frame_shape: tuple[int, int], clip_starts: list[int], size: int,
                       patch_size: int, k: int) -> dict[str, float]:
    """Mean scores of `patch_grid_masks` over the held-out clips, as `score_backbone` scores a model's."""
    rows, cols, square_rows, square_cols = view_window(*frame_shape, size)
    cells = (square_rows // patch_size)[:, None] * (size // patch_size) + (square_cols // patch_size)[None, :]
    scores: dict[str, list[float]] = {name: [] for name in SCORES[:3]}
    for start in clip_starts:
        view_truth = truth[start : start + DEMO_DISCOVERY.clip_frames][:, rows][:, :, cols]
        result = score_known_objects(patch_grid_masks(view_truth, cells, k), view_truth)
        scores["matched_iou"].append(result.mean_iou)
        scores["found"].append(result.found)
        scores["identity"].append(result.identity_overall)
    return {name: float(np.nanmean(values)) for name, values in scores.items()} | {"corloc": None}


def target_information(logits: torch.Tensor, center: torch.Tensor, temperature: float) -> dict[str, float]:
    """How much the teacher's targets depend on the picture: the signal the loss can teach.

    DINO's collapse diagnostics (Caron et al. 2021, section 5.3): the entropy ``H(p)`` of the
    teacher's centred, sharpened output ``p = softmax((z - center) / tau)`` per frame, and that
    of its mean over the frames. Their difference is the information the targets carry about
    which frame they came from; it is 0 when every frame gets one target (collapse, to one
    dimension or to the uniform ``ln K``) and ``ln(frames)`` at most.
    """
    probabilities = torch.softmax((logits - center) / temperature, dim=-1)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1).mean()
    pooled = probabilities.mean(0)
    pooled_entropy = -(pooled * pooled.clamp_min(1e-12).log()).sum()
    return {"teacher_entropy": float(entropy), "mean_output_entropy": float(pooled_entropy),
            "target_information": float(pooled_entropy - entropy), "uniform_entropy": float(np.log(logits.shape[-1]))}


def teacher_information(checkpoint: Path, frames: torch.Tensor, size: int) -> dict[str, float]:
    """`target_information` of a checkpoint's teacher, with its centre and temperature, on `frames`."""
    state = torch.load(checkpoint / RUN_STATE_FILE, map_location="cpu", weights_only=True)  # the loss's centre
    teacher, recipe, _ = load_teacher(checkpoint)
    pixel_values = clip_to_pixel_values(frames, size)[0]  # ImageNet's normalisation, as the training views
    with torch.no_grad():
        logits = teacher(pixel_values).logits
    return target_information(logits, state["loss"]["center"], recipe["teacher_temp"])
