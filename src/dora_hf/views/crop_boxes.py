"""RandomResizedCrop boxes for a whole batch at once.

DoRA's clip, global and local crops are all ``RandomResizedCrop``s (DORA_SPEC §2); the
reference draws each box with torchvision's ``RandomResizedCrop.get_params``. This module
implements that same algorithm vectorised over any number of boxes: up to ``attempts`` (10)
tries of an area fraction drawn uniformly from ``scale`` and an aspect ratio drawn
log-uniformly from ``ratio``, the first try whose rounded box fits the image wins and is placed
uniformly at random; when no try fits, the largest centred box with an aspect inside ``ratio``
is used.

Sampling is split in two so that it can be checked against the scalar algorithm: uniforms are
drawn first (:func:`draw_box_uniforms`), and :func:`boxes_from_uniforms` maps them to boxes
deterministically.

A box is ``(top, left, height, width)`` in whole pixels, ``int64``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CROP_ATTEMPTS = 10
"""torchvision's number of tries before the centre-crop fallback."""


def uniforms_per_box(attempts: int = CROP_ATTEMPTS) -> int:
    """Uniforms one box consumes: an area and a log-ratio per attempt, then top and left."""
    return 2 * attempts + 2


def draw_box_uniforms(
    shape: tuple[int, ...], generator: torch.Generator | None = None, attempts: int = CROP_ATTEMPTS
) -> Tensor:
    """Uniforms in [0, 1) for ``shape`` boxes, float64 on the CPU: ``(*shape, 2 * attempts + 2)``."""
    return torch.rand((*shape, uniforms_per_box(attempts)), generator=generator, dtype=torch.float64)


def boxes_from_uniforms(
    uniforms: Tensor,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> Tensor:
    """Map ``(..., 2 * attempts + 2)`` uniforms to ``(..., 4)`` boxes inside a ``height x width`` image.

    Equivalent to torchvision's ``RandomResizedCrop.get_params`` fed with the same uniforms
    (``torch.empty(1).uniform_(a, b)`` is ``a + (b - a) * u``, ``torch.randint(0, n)`` is
    ``floor(u * n)``).
    """
    attempts = (uniforms.shape[-1] - 2) // 2
    u = uniforms.to(torch.float64)
    u_area, u_ratio, u_top, u_left = u[..., :attempts], u[..., attempts:-2], u[..., -2], u[..., -1]

    area = float(height * width)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    # torch.round and Python's round both round half to even.
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)

    # The first attempt that fits (argmax returns the first maximum).
    first = fits.to(torch.uint8).argmax(dim=-1, keepdim=True)
    found = fits.any(dim=-1)
    w = w.gather(-1, first).squeeze(-1)
    h = h.gather(-1, first).squeeze(-1)

    fb_h, fb_w = _fallback_size(height, width, ratio)
    h = torch.where(found, h, torch.full_like(h, fb_h))
    w = torch.where(found, w, torch.full_like(w, fb_w))
    top = torch.where(found, torch.floor(u_top * (height - h + 1)), torch.full_like(h, (height - fb_h) // 2))
    left = torch.where(found, torch.floor(u_left * (width - w + 1)), torch.full_like(w, (width - fb_w) // 2))
    # Guards against u * n rounding up to n; unreachable in float64 for image-sized n.
    top = torch.minimum(top, height - h)
    left = torch.minimum(left, width - w)
    return torch.stack([top, left, h, w], dim=-1).to(torch.int64)


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's central-crop fallback: the whole image, trimmed to the nearest allowed aspect."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def sample_boxes(
    shape: tuple[int, ...],
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw ``(*shape, 4)`` RandomResizedCrop boxes on the CPU."""
    return boxes_from_uniforms(draw_box_uniforms(shape, generator), height, width, scale, ratio)
