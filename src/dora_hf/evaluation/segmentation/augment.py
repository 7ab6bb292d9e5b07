"""mmseg's ADE20K pipelines, as iBOT trains and tests with them, on numpy arrays and PIL.

Training (`configs/_base_/datasets/ade20k.py` of bytedance/ibot's `evaluation/semantic_segmentation`,
the transforms of mmseg 0.x's `mmseg/datasets/pipelines/transforms.py`): `Resize` with a random
ratio, `RandomCrop` with `cat_max_ratio`, `RandomFlip`, `PhotoMetricDistortion`, `Normalize`,
`Pad`. Testing: `Resize` to `img_scale` with the aspect kept. Each function transcribes its mmseg
transform; the differences are the resampling library (PIL's bilinear filter where mmcv calls
OpenCV's, so downscaled images are smoothed a little more) and the randomness, which comes from
one `numpy.random.Generator` per sample so that a run is reproducible with any number of
data-loading workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .protocol import IGNORE_INDEX, SegmentationRecipe


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's `imrescale` size: the largest that fits `scale` (long, short) with the aspect kept."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(H, W, 3)` uint8 image to `size` (width, height), bilinear."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(H, W)` class ids to `size` (width, height), nearest neighbour as OpenCV's `INTER_NEAREST`
    (output pixel `i` takes source pixel `floor(i * source / output)`): ids are never blended."""
    if (label.shape[1], label.shape[0]) == size:
        return label
    rows = np.minimum(np.arange(size[1]) * label.shape[0] // size[1], label.shape[0] - 1)
    cols = np.minimum(np.arange(size[0]) * label.shape[1] // size[0], label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class TrainAugmentation:
    """One training sample through the recipe's pipeline, up to (not including) normalisation."""

    recipe: SegmentationRecipe

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.random_resize(image, label, rng)
        image, label = self.random_crop(image, label, rng)
        if rng.random() < self.recipe.flip_probability:
            image, label = image[:, ::-1], label[:, ::-1]
        image = self.photometric_distortion(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)

    def random_resize(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """`Resize(img_scale, ratio_range)`: `img_scale` times a uniform ratio, aspect kept."""
        low, high = self.recipe.scale_ratio_range
        ratio = rng.uniform(low, high)
        long, short = self.recipe.image_scale
        size = rescale_size(image.shape[1], image.shape[0], (int(long * ratio), int(short * ratio)))
        return resize_image(image, size), resize_label(label, size)

    def random_crop(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """`RandomCrop(crop_size, cat_max_ratio)`: up to 10 draws for a crop no class dominates."""
        crop = self.recipe.crop_size

        def draw() -> tuple[int, int]:
            top = int(rng.integers(0, max(image.shape[0] - crop, 0) + 1))
            left = int(rng.integers(0, max(image.shape[1] - crop, 0) + 1))
            return top, left

        top, left = draw()
        if self.recipe.cat_max_ratio < 1.0:
            for _ in range(10):
                ids, counts = np.unique(label[top : top + crop, left : left + crop], return_counts=True)
                counts = counts[ids != IGNORE_INDEX]
                if len(counts) > 1 and counts.max() / counts.sum() < self.recipe.cat_max_ratio:
                    break
                top, left = draw()
        return image[top : top + crop, left : left + crop], label[top : top + crop, left : left + crop]

    def photometric_distortion(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`PhotoMetricDistortion`: brightness, then contrast before or after saturation and hue,
        each applied with probability 1/2, on 8-bit values as mmseg does."""
        recipe = self.recipe
        if rng.integers(2):
            image = _convert(image, beta=rng.uniform(-recipe.brightness_delta, recipe.brightness_delta))
        contrast_first = rng.integers(2) == 1
        if contrast_first and rng.integers(2):
            image = _convert(image, alpha=rng.uniform(*recipe.contrast_range))
        if rng.integers(2):
            hsv = rgb_to_hsv(image)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*recipe.saturation_range))
            image = hsv_to_rgb(hsv)
        if rng.integers(2):
            hsv = rgb_to_hsv(image)
            shift = int(rng.integers(-recipe.hue_delta, recipe.hue_delta))
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
            image = hsv_to_rgb(hsv)
        if not contrast_first and rng.integers(2):
            image = _convert(image, alpha=rng.uniform(*recipe.contrast_range))
        return image


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's `PhotoMetricDistortion.convert`: `values * alpha + beta`, clipped to uint8."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB to uint8 HSV as OpenCV's `COLOR_RGB2HSV` (H in 0..179, S and V in 0..255)."""
    rgb = image.astype(np.float32)
    value = rgb.max(axis=-1)
    spread = value - rgb.min(axis=-1)
    saturation = np.where(value > 0, 255.0 * spread / np.maximum(value, 1e-12), 0.0)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(spread, 1e-12)
    hue = np.where(
        value == red, 60.0 * (green - blue) / safe,
        np.where(value == green, 120.0 + 60.0 * (blue - red) / safe, 240.0 + 60.0 * (red - green) / safe),
    )
    hue = np.where(spread > 0, hue, 0.0)
    hue = np.where(hue < 0, hue + 360.0, hue)
    hsv = np.stack([np.round(hue / 2.0) % 180, np.round(saturation), value], axis=-1)
    return hsv.astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """uint8 HSV (OpenCV's ranges) back to uint8 RGB."""
    hue = hsv[..., 0].astype(np.float32) * 2.0 / 60.0
    saturation = hsv[..., 1].astype(np.float32) / 255.0
    value = hsv[..., 2].astype(np.float32)
    sector = np.floor(hue).astype(np.int64) % 6
    fraction = hue - np.floor(hue)
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    choices = [
        (value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q),
    ]
    rgb = np.zeros(hsv.shape, dtype=np.float32)
    for index, (red, green, blue) in enumerate(choices):
        chosen = sector == index
        rgb[chosen] = np.stack([red[chosen], green[chosen], blue[chosen]], axis=-1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def normalise_and_pad(
    image: np.ndarray, label: np.ndarray, mean: np.ndarray, std: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """`Normalize` then `Pad(size, pad_val=0, seg_pad_val=255)`: a `(3, size, size)` float32 image
    (the padding is 0 after normalisation) and a `(size, size)` int64 label map."""
    height, width = label.shape
    pixels = np.zeros((3, size, size), dtype=np.float32)
    pixels[:, :height, :width] = ((image.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
    labels = np.full((size, size), IGNORE_INDEX, dtype=np.int64)
    labels[:height, :width] = label
    return pixels, labels
