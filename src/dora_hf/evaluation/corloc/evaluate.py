"""LOST on every image of a dataset, scored with CorLoc (valeoai/LOST ``main_lost.py``'s loop).

One image at a time, at its own resolution (images differ in size): normalised, padded to a
multiple of the patch size, its keys read, LOST's box predicted and compared with the ground
truth. The key function is a parameter so that any model, or constructed features, can be scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .datasets import DiscoveryDataset
from .features import load_image, normalised_tensor, pad_to_patches
from .lost import lost
from .protocol import IOU_THRESHOLD, K_PATCHES
from .scoring import localizes

KeyFunction = Callable[[torch.Tensor], torch.Tensor]
"""Padded normalised image `(3, H, W)` -> `(num_patches, d)` keys on its row-major patch grid."""


@dataclass
class CorLocRun:
    """CorLoc over the images, and each image's prediction."""

    corloc: float
    num_images: int
    num_correct: int
    predictions: dict[str, dict]
    """Image name -> ``{"box": [x1, y1, x2, y2], "iou": best IoU, "correct": bool, "seed": patch index}``."""


def evaluate_corloc(
    dataset: DiscoveryDataset,
    keys_of: KeyFunction,
    patch_size: int,
    *,
    k_patches: int = K_PATCHES,
    progress: bool = True,
) -> CorLocRun:
    """LOST's box for each image of `dataset` from the keys `keys_of` gives, and the share that localise an object."""
    predictions: dict[str, dict] = {}
    correct = 0
    bar = tqdm(dataset.images, desc=f"LOST on {dataset.name}", unit="image", disable=not progress)
    for count, image in enumerate(bar, start=1):
        pixels = normalised_tensor(load_image(image.path))
        height, width = pixels.shape[1:]
        padded = pad_to_patches(pixels, patch_size)
        grid = (padded.shape[1] // patch_size, padded.shape[2] // patch_size)
        with torch.inference_mode():
            prediction = lost(keys_of(padded), grid, patch_size, (height, width), k_patches=k_patches)
        hit, iou = localizes(prediction.box, image.boxes, IOU_THRESHOLD)
        correct += hit
        predictions[image.name] = {"box": list(prediction.box), "iou": iou, "correct": hit, "seed": prediction.seed}
        bar.set_postfix_str(f"found {correct}/{count}", refresh=False)
    total = len(dataset.images)
    return CorLocRun(corloc=correct / total, num_images=total, num_correct=correct, predictions=predictions)
