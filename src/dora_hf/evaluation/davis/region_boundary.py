"""DAVIS region similarity J and boundary accuracy F of one binary mask against its ground truth.

Computed as the DAVIS-2017 evaluation toolkit computes them, so numbers are comparable with
published J&F:

- J is the intersection over union; a frame where both masks are empty scores 1.
- F is the F-measure of boundary pixels matched within a tolerance of ``ceil(0.008 * diagonal)``
  pixels (a disc); boundaries are the toolkit's "crack" boundaries (a pixel is a boundary pixel
  when it differs from its right, lower or lower-right neighbour).
- Void pixels (label 255 in DAVIS annotations) are ignored by both.

Plain numpy, no OpenCV or scikit-image: the dilation by a disc is a union of shifted copies.
"""

from __future__ import annotations

import math

import numpy as np

BOUNDARY_TOLERANCE = 0.008
"""Boundary match tolerance as a fraction of the image diagonal (DAVIS)."""


def jaccard(prediction: np.ndarray, truth: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J: |P & G| / |P | G| over non-void pixels; 1 when both are empty."""
    prediction, truth = _binary(prediction, void), _binary(truth, void)
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boolean boundary pixels of a binary mask, as the DAVIS toolkit's ``seg2bmap``."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    boundary[-1, :] = seg[-1, :] ^ east[-1, :]
    boundary[:, -1] = seg[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def dilate_disc(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disc of ``radius`` pixels (offsets with dy^2 + dx^2 <= radius^2).

    Row dilations of growing half-width are built incrementally, then each row of the disc is a
    vertical shift of one of them: about ``4 * radius`` array ORs instead of one per disc pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.copy()
    height = mask.shape[0]
    rows = [mask]  # rows[w]: each pixel ORed with the w pixels either side of it on its row
    for half in range(1, radius + 1):
        grown = rows[-1].copy()
        grown[:, half:] |= mask[:, :-half]
        grown[:, :-half] |= mask[:, half:]
        rows.append(grown)
    out = np.zeros_like(mask)
    for dy in range(-min(radius, height - 1), min(radius, height - 1) + 1):
        src = rows[math.isqrt(radius * radius - dy * dy)]
        if dy >= 0:
            out[: height - dy] |= src[dy:]
        else:
            out[-dy:] |= src[: height + dy]
    return out


def boundary_tolerance_pixels(shape: tuple[int, int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """The match radius in pixels: ``tolerance`` itself when >= 1, else a fraction of the diagonal."""
    if tolerance >= 1:
        return int(tolerance)
    return math.ceil(tolerance * math.hypot(*shape))


def boundary_f(
    prediction: np.ndarray,
    truth: np.ndarray,
    void: np.ndarray | None = None,
    tolerance: float = BOUNDARY_TOLERANCE,
) -> float:
    """Boundary accuracy F: harmonic mean of boundary precision and recall within the tolerance."""
    prediction, truth = _binary(prediction, void), _binary(truth, void)
    radius = boundary_tolerance_pixels(truth.shape, tolerance)
    predicted_boundary = boundary_map(prediction)
    true_boundary = boundary_map(truth)
    num_predicted, num_true = int(predicted_boundary.sum()), int(true_boundary.sum())
    if num_predicted == 0 and num_true == 0:
        return 1.0
    if num_predicted == 0 or num_true == 0:
        return 0.0  # precision or recall is 0 (the toolkit sets the other to 1)
    precision = float((predicted_boundary & dilate_disc(true_boundary, radius)).sum()) / num_predicted
    recall = float((true_boundary & dilate_disc(predicted_boundary, radius)).sum()) / num_true
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _binary(mask: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"masks must be 2-D (height, width), got shape {mask.shape}")
    if void is not None:
        mask = mask & ~np.asarray(void, dtype=bool)
    return mask


VOID_LABEL = 255
"""Label of pixels that DAVIS annotations leave out of the evaluation."""


def object_scores(
    predictions: list[np.ndarray], references: list[np.ndarray], num_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """J and F `(num_objects, frames)` of objects 1..num_objects in label maps of one sequence.

    A label map holds 0 for background and ``i`` for object ``i``; ``VOID_LABEL`` in a
    reference marks pixels to ignore.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted frames but {len(references)} reference frames")
    j_scores = np.zeros((num_objects, len(references)))
    f_scores = np.zeros((num_objects, len(references)))
    for t, (predicted, truth) in enumerate(zip(predictions, references)):
        predicted, truth = np.asarray(predicted), np.asarray(truth)
        if predicted.shape != truth.shape:
            raise ValueError(f"frame {t}: prediction is {predicted.shape} but the reference is {truth.shape}")
        void = truth == VOID_LABEL
        for obj in range(num_objects):
            j_scores[obj, t] = jaccard(predicted == obj + 1, truth == obj + 1, void)
            f_scores[obj, t] = boundary_f(predicted == obj + 1, truth == obj + 1, void)
    return j_scores, f_scores
