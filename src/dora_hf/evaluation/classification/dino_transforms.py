"""The image transforms of DINO's linear evaluation, on PIL images, without torchvision.

facebookresearch/dino ``eval_linear.py`` trains on

    RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

and validates on

    Resize(256, interpolation=3), CenterCrop(224), ToTensor(), Normalize(same)

torchvision is not a dependency (its wheels are built against one torch release each), so the
four operations are written here after torchvision's own code:

- ``torchvision/transforms/transforms.py`` ``RandomResizedCrop.get_params``: up to 10 attempts,
  each drawing an area fraction uniformly in ``scale = (0.08, 1)`` and an aspect ratio
  log-uniformly in ``ratio = (3/4, 4/3)``, ``w = round(sqrt(area * r))``, ``h = round(sqrt(area / r))``,
  accepted when ``0 < w <= W`` and ``0 < h <= H``, then a uniform top-left corner; otherwise the
  central fallback (the whole image, or its central crop at the nearest allowed ratio). The
  crop is resized bilinearly (the transform's default, ``F.resized_crop``).
- ``RandomHorizontalFlip``: flip when ``torch.rand(1) < 0.5``, drawn after the crop's numbers.
- ``torchvision/transforms/functional.py`` ``resize`` with an int: the shorter side becomes the
  size, the longer ``int(size * long / short)`` (PIL bicubic: DINO's ``interpolation=3``), and an
  image already that size is left alone; ``center_crop``: offsets ``int(round((H - h) / 2))``.
- ``to_tensor`` + ``normalize``: ``(pixels / 255 - mean) / std`` in float32, channels first.

The draws are torchvision's, in its order, but from an explicit generator instead of the global
one, so an image's augmentation depends only on the seed it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from ..protocols import (
    DINO_LINEAR_CROP_RATIO,
    DINO_LINEAR_CROP_SCALE,
    DINO_LINEAR_CROP_SIZE,
    DINO_LINEAR_MEAN,
    DINO_LINEAR_RESIZE_SIZE,
    DINO_LINEAR_STD,
)

RESIZE_INTERPOLATION = PIL.Image.Resampling.BICUBIC
"""DINO's ``Resize(256, interpolation=3)``: 3 is PIL's BICUBIC."""
CROP_INTERPOLATION = PIL.Image.Resampling.BILINEAR
"""``RandomResizedCrop``'s default interpolation."""


def random_resized_crop_params(
    width: int,
    height: int,
    generator: torch.Generator,
    scale: tuple[float, float] = DINO_LINEAR_CROP_SCALE,
    ratio: tuple[float, float] = DINO_LINEAR_CROP_RATIO,
) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random crop: torchvision's ``RandomResizedCrop.get_params``."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = float(width) / float(height)  # fallback: a central crop
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop(image: PIL.Image.Image, top: int, left: int, height: int, width: int) -> PIL.Image.Image:
    return image.crop((left, top, left + width, top + height))


def random_resized_crop(image: PIL.Image.Image, size: int, generator: torch.Generator) -> PIL.Image.Image:
    """A random crop (`random_resized_crop_params`) resized bilinearly to ``size x size``."""
    top, left, height, width = random_resized_crop_params(image.width, image.height, generator)
    return crop(image, top, left, height, width).resize((size, size), CROP_INTERPOLATION)


def random_horizontal_flip(image: PIL.Image.Image, generator: torch.Generator, p: float = 0.5) -> PIL.Image.Image:
    if torch.rand(1, generator=generator) < p:
        return image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def resize_shorter_side(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """Shorter side to ``size``, longer side ``int(size * long / short)``, PIL bicubic."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_width, new_height) == (width, height):
        return image
    return image.resize((new_width, new_height), RESIZE_INTERPOLATION)


def center_crop(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """The central ``size x size`` crop of an image at least that large."""
    if image.width < size or image.height < size:
        raise ValueError(f"center_crop({size}) of a {image.width}x{image.height} image")
    if image.size == (size, size):
        return image
    top = round((image.height - size) / 2.0)
    left = round((image.width - size) / 2.0)
    return crop(image, top, left, size, size)


def normalised_tensor(image: PIL.Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """`(3, H, W)` float32: ToTensor (``/ 255``, channels first) then Normalize."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())
    tensor = pixels.permute(2, 0, 1).float().div(255)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return tensor.sub(mean_t).div(std_t)


@dataclass(frozen=True)
class DinoTrainTransform:
    """RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize."""

    crop_size: int = DINO_LINEAR_CROP_SIZE
    mean: tuple[float, ...] = DINO_LINEAR_MEAN
    std: tuple[float, ...] = DINO_LINEAR_STD

    def __call__(self, image: PIL.Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = random_resized_crop(image, self.crop_size, generator)
        return normalised_tensor(random_horizontal_flip(image, generator), self.mean, self.std)

    def describe(self) -> str:
        return (
            f"RandomResizedCrop({self.crop_size}, scale={DINO_LINEAR_CROP_SCALE}, ratio=(3/4, 4/3), bilinear) "
            "+ RandomHorizontalFlip(0.5) + Normalize"
        )


@dataclass(frozen=True)
class DinoValTransform:
    """Resize (shorter side, bicubic) + CenterCrop + ToTensor + Normalize; deterministic."""

    resize_size: int = DINO_LINEAR_RESIZE_SIZE
    crop_size: int = DINO_LINEAR_CROP_SIZE
    mean: tuple[float, ...] = DINO_LINEAR_MEAN
    std: tuple[float, ...] = DINO_LINEAR_STD

    def __call__(self, image: PIL.Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = center_crop(resize_shorter_side(image, self.resize_size), self.crop_size)
        return normalised_tensor(image, self.mean, self.std)

    def describe(self) -> str:
        return f"Resize({self.resize_size}, bicubic) + CenterCrop({self.crop_size}) + Normalize"
