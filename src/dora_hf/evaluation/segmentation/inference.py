"""iBOT's test mode: rescale, slide a crop-sized window, average the logits, back to the image's size.

mmseg 0.x `EncoderDecoder.slide_inference` with `test_cfg=dict(mode='slide', crop_size=(512, 512),
stride=(341, 341))` (bytedance/ibot's ADE20K configs), after the test pipeline's `Resize` to
`img_scale=(2048, 512)` with the aspect kept: windows start every `stride` pixels, the last one
of a row or column is moved back to end at the image border, every pixel's logits are the mean
over the windows that cover it, and the logits are resized bilinearly to the original image
(`rescale=True`) before the arg-max. A window is as large as the crop, or as the image where the
image is smaller; a window whose side is not a multiple of the patch size is padded at the
bottom and right with zeros (the mean colour after normalisation) and its logits cut back, where
mmseg's ViT drops the remainder pixels of the last patch row and column.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import rescale_size, resize_image
from .dataset import SegmentationSplit
from .protocol import SegmentationRecipe


def window_origins(length: int, crop: int, stride: int) -> list[int]:
    """Start of each window along one side of `length` pixels (mmseg's grid)."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(index * stride + crop, length) - crop, 0) for index in range(count)]


@torch.inference_mode()
def slide_logits(
    model: nn.Module, pixels: torch.Tensor, num_labels: int, crop: int, stride: int, patch_size: int,
    window_batch: int = 8,
) -> torch.Tensor:
    """`(1, classes, H, W)` logits of one normalised `(1, 3, H, W)` image, averaged over windows."""
    _, _, height, width = pixels.shape
    window_h, window_w = min(crop, height), min(crop, width)
    padded_h, padded_w = -(-window_h // patch_size) * patch_size, -(-window_w // patch_size) * patch_size
    boxes = [(top, left) for top in window_origins(height, crop, stride) for left in window_origins(width, crop, stride)]
    total = torch.zeros(1, num_labels, height, width, device=pixels.device)
    count = torch.zeros(1, 1, height, width, device=pixels.device)
    for start in range(0, len(boxes), window_batch):
        chunk = boxes[start : start + window_batch]
        windows = torch.stack([pixels[0, :, top : top + window_h, left : left + window_w] for top, left in chunk])
        windows = F.pad(windows, (0, padded_w - window_w, 0, padded_h - window_h))
        with torch.autocast(pixels.device.type, dtype=torch.bfloat16, enabled=pixels.device.type == "cuda"):
            logits = model(pixel_values=windows).logits
        logits = logits.float()[:, :, :window_h, :window_w]
        for (top, left), window_logits in zip(chunk, logits):
            total[0, :, top : top + window_h, left : left + window_w] += window_logits
            count[0, :, top : top + window_h, left : left + window_w] += 1
    return total / count


def predict_image(
    model: nn.Module, image: np.ndarray, recipe: SegmentationRecipe, num_labels: int, patch_size: int,
    mean, std, device: torch.device,
) -> np.ndarray:
    """`(H, W)` uint8 class ids predicted for an `(H, W, 3)` uint8 RGB image."""
    height, width = image.shape[:2]
    resized = resize_image(image, rescale_size(width, height, recipe.image_scale))
    normalised = (resized.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    pixels = torch.from_numpy(normalised.transpose(2, 0, 1).copy()).unsqueeze(0).to(device)
    logits = slide_logits(model, pixels, num_labels, recipe.crop_size, recipe.stride, patch_size)
    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def predict_split(
    model: nn.Module, split: SegmentationSplit, recipe: SegmentationRecipe, num_labels: int, patch_size: int,
    mean, std, device: torch.device, progress: bool = True,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """`(row, prediction, reference)` of every row, both `(H, W)` uint8 class-id maps (255: ignored)."""
    from tqdm.auto import tqdm

    model.to(device).eval()
    for index in tqdm(range(len(split)), desc=f"segmenting {split.split}", disable=not progress):
        image, label = split.example(index)
        prediction = predict_image(model, image, recipe, num_labels, patch_size, mean, std, device)
        yield index, prediction, label.astype(np.uint8)
