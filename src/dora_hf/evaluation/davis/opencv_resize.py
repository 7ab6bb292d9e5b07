"""OpenCV's bilinear resize of 8-bit images (``cv2.resize(img, (w, h))``), bit for bit, in numpy.

DINO's ``read_frame`` resizes DAVIS frames with ``cv2.resize`` and its default ``INTER_LINEAR``.
On ``uint8`` images OpenCV does not interpolate in floating point: it rounds each tap's weight to
11 fractional bits (``INTER_RESIZE_COEF_SCALE = 2048``), sums the two horizontal taps exactly in
integers, then blends two such rows with its vectorised fixed-point step
``((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16)``, rounded by ``(v + 2) >> 2`` and saturated
to ``uint8``. Sample positions are OpenCV's pixel centres, ``(d + 0.5) * scale - 0.5`` computed in
double and cast to float, clamped to the edge pixels; no antialiasing on downscaling. The
result is what OpenCV 4.5, 5.0 and 5.1 return for any size (PIL's and torch's bilinear differ), so
frames are prepared as DINO prepared them without depending on OpenCV.
"""

from __future__ import annotations

import numpy as np

COEF_SCALE = 2048
"""OpenCV's ``INTER_RESIZE_COEF_SCALE``: tap weights in 11-bit fixed point."""


def resize_bilinear_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(H, W, C)` or `(H, W)` uint8 resized to ``size = (height, width)`` as ``cv2.resize`` does."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {height}x{width}")
    plane = image if image.ndim == 3 else image[:, :, None]
    left, right, alpha0, alpha1 = _taps(plane.shape[1], width, edge_weights=True)
    pixels = plane.astype(np.int64)
    rows = pixels[:, left] * alpha0[None, :, None] + pixels[:, right] * alpha1[None, :, None]
    top, bottom, beta0, beta1 = _taps(plane.shape[0], height, edge_weights=False)
    blended = ((rows[top] >> 4) * beta0[:, None, None] >> 16) + ((rows[bottom] >> 4) * beta1[:, None, None] >> 16)
    out = np.clip((blended + 2) >> 2, 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[:, :, 0]


def _taps(source: int, target: int, edge_weights: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output position: the two source indices and their fixed-point weights (OpenCV's rule).

    Beyond the edge pixel centres OpenCV clamps the indices on both axes, but only resets the
    weights to ``(1, 0)`` horizontally (``edge_weights``): vertically both taps read the edge
    row with the unclamped weights, which rounds differently in the fixed-point blend.
    """
    scale = 1.0 / (target / source)  # OpenCV: inv_scale = dsize / ssize, scale = 1 / inv_scale
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if edge_weights:
        fraction[(first < 0) | (first >= source - 1)] = 0
    weight0 = np.rint((np.float32(1) - fraction) * np.float32(COEF_SCALE)).astype(np.int64)
    weight1 = np.rint(fraction * np.float32(COEF_SCALE)).astype(np.int64)
    return np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), weight0, weight1
