"""What LOST reads from an image: the last block's keys at the image's own resolution.

Follows valeoai/LOST ``datasets.py`` (``ToTensor()`` then ``Normalize((0.485, 0.456, 0.406),
(0.229, 0.224, 0.225))``, no resizing) and ``main_lost.py``: the normalised image is padded with
zeros on the bottom and right to a multiple of the patch size; a forward hook on the last
block's ``qkv`` gives the keys, heads concatenated (``k.transpose(1, 2).reshape(nb_im,
nb_tokens, -1)``), and the first token ([CLS]) is dropped (``k[:, 1:, :]``). Here the keys come
from `tracker_features.last_block_features`, which recomputes them from the last block's input
for DoRA and transformers' ViT alike and keeps the patch tokens only ([CLS] and any register
tokens dropped). The patch grid is ``(padded height // patch, padded width // patch)``, row-major.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import DoraUserError
from ..encoder import FrozenEncoder
from ..tracker_features import last_block_features
from .protocol import IMAGE_MEAN, IMAGE_STD


def load_image(path: Path) -> Image.Image:
    """The image as RGB, as torchvision's ``VOCDetection``/``CocoDetection`` open it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DoraUserError(f"{path}: not a readable image ({err})") from err


def normalised_tensor(image: Image.Image) -> torch.Tensor:
    """`(3, H, W)` float32: ``ToTensor()`` (divide by 255) then ``Normalize`` with LOST's mean and std."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32).view(3, 1, 1)
    return pixels.sub_(mean).div_(std)


def pad_to_patches(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`(3, H, W)` padded with zeros on the bottom and right to multiples of `patch_size` (``main_lost.py``)."""
    channels, height, width = pixels.shape
    padded = torch.zeros(
        channels, -(-height // patch_size) * patch_size, -(-width // patch_size) * patch_size, dtype=pixels.dtype
    )
    padded[:, :height, :width] = pixels
    return padded


class LastBlockKeys:
    """A padded image `(3, H, W)` -> its `(num_patches, heads * head_dim)` last-block keys, float32."""

    def __init__(self, backbone: FrozenEncoder) -> None:
        self.model = backbone.model
        self.patch_size = backbone.patch_size

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        pixel_values = pixels[None].to(device=self.model.device, dtype=self.model.dtype)
        keys = last_block_features(self.model, pixel_values, interpolate_pos_encoding=True).keys
        return keys[0].transpose(0, 1).reshape(keys.shape[2], -1).float()
