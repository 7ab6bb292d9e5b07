"""Frames and first-frame labels prepared as DINO's ``read_frame`` and ``read_seg`` prepare them.

From facebookresearch/dino ``eval_video_segmentation.py``:

- ``read_frame(scale_size=[480])``: a portrait frame (``h > w``) gets width 480 and height
  ``int(((480 * h / w) // 64) * 64)``; any other frame height 480 and width
  ``int(((480 * w / h) // 64) * 64)`` (the short side itself is not floored). Resized with
  ``cv2.resize`` (bilinear, 8-bit; `opencv_resize`), then ``/ 255.0`` in float32 and
  ``color_normalize``: minus mean ``(0.485, 0.456, 0.406)``, divided by std
  ``(0.228, 0.224, 0.225)`` (0.228, not ImageNet's usual 0.229), channel by channel.
- ``read_seg(factor=patch_size)``: the size rule again, but its branches test ``w > h``, so a
  square frame gets 480 x 448 here and 448 x 480 in ``read_frame``; the annotation is resized
  with PIL nearest to ``(tw // patch, th // patch)`` and one-hot encoded by ``to_one_hot``
  with ``max label + 1`` channels: every label from 0 to the largest one left on the patch grid
  (an object whose id is above every id left after downscaling is dropped; none is merged).

``cv2.imread`` gives BGR and ``read_frame`` flips it to RGB before normalising; the resize works
per channel, so the frame is decoded as RGB here (PIL and OpenCV decode JPEGs identically).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import DoraUserError
from .opencv_resize import resize_bilinear_uint8

DINO_PIXEL_MEAN = (0.485, 0.456, 0.406)
"""``color_normalize``'s mean."""
DINO_PIXEL_STD = (0.228, 0.224, 0.225)
"""``color_normalize``'s std (0.228 in the released code)."""
LONG_SIDE_MULTIPLE = 64
"""``read_frame`` and ``read_seg`` floor the long side to a multiple of 64."""


def dino_frame_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """`(height, width)` a frame is resized to (``read_frame``'s rule)."""
    if height > width:
        target_width = short_side
        target_height = int(((target_width * height) / width // LONG_SIDE_MULTIPLE) * LONG_SIDE_MULTIPLE)
    else:
        target_height = short_side
        target_width = int(((target_height * width) / height // LONG_SIDE_MULTIPLE) * LONG_SIDE_MULTIPLE)
    return target_height, target_width


def dino_mask_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """`(height, width)` an annotation is sized for before the patch grid (``read_seg``'s rule)."""
    if width > height:
        target_height = short_side
        target_width = int(((target_height * width) / height // LONG_SIDE_MULTIPLE) * LONG_SIDE_MULTIPLE)
    else:
        target_width = short_side
        target_height = int(((target_width * height) / width // LONG_SIDE_MULTIPLE) * LONG_SIDE_MULTIPLE)
    return target_height, target_width


def prepare_dino_frame(frame: np.ndarray, short_side: int) -> torch.Tensor:
    """`(3, th, tw)` float32 normalised pixels of an `(H, W, 3)` uint8 RGB frame (``read_frame``)."""
    size = dino_frame_size(frame.shape[0], frame.shape[1], short_side)
    if min(size) < 1:
        raise DoraUserError(
            f"--short-side {short_side}: DINO's protocol resizes a {frame.shape[0]}x{frame.shape[1]} frame to "
            f"{size[0]}x{size[1]} (long side floored to a multiple of {LONG_SIDE_MULTIPLE}); use a larger --short-side"
        )
    pixels = resize_bilinear_uint8(np.ascontiguousarray(frame, dtype=np.uint8), size)
    pixels = pixels.astype(np.float32) / 255.0
    tensor = torch.from_numpy(np.transpose(pixels, (2, 0, 1)).copy()).float()
    for channel, mean, std in zip(tensor, DINO_PIXEL_MEAN, DINO_PIXEL_STD):
        channel.sub_(mean)
        channel.div_(std)
    return tensor


def dino_first_frame_labels(annotation: np.ndarray, short_side: int, patch_size: int) -> torch.Tensor:
    """One-hot `(max label + 1, h, w)` labels of the first annotation on the patch grid (``read_seg``)."""
    height, width = dino_mask_size(annotation.shape[0], annotation.shape[1], short_side)
    grid = (height // patch_size, width // patch_size)
    if min(grid) < 1:
        raise DoraUserError(
            f"--short-side {short_side}: DINO's protocol puts a {annotation.shape[0]}x{annotation.shape[1]} "
            f"annotation on a {grid[0]}x{grid[1]} patch grid; use a larger --short-side"
        )
    small = Image.fromarray(np.asarray(annotation, dtype=np.uint8)).resize((grid[1], grid[0]), Image.NEAREST)
    labels = torch.from_numpy(np.array(small, dtype=np.int64))
    return F.one_hot(labels, int(labels.max()) + 1).permute(2, 0, 1).float()
