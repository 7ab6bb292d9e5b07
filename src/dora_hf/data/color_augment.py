"""DINO's per-image photometric augmentations, with batched random parameters.

Each DoRA view (DORA_SPEC §2) gets, independently per image: colour jitter with probability
``jitter_p`` (torchvision ``ColorJitter`` semantics: brightness, contrast, saturation and hue in
a random order, factors uniform in ``[max(0, 1 - s), 1 + s]``, hue shift uniform in
``[-h, h]``), then grayscale with probability ``grayscale_p``, then a Gaussian blur with
probability ``blur_p`` and sigma uniform in ``blur_sigma``.

Parameters are drawn on the CPU (:meth:`ColorAugment.sample`) and applied to a whole batch
(:meth:`ColorAugment.apply`) with tensor ops on the images' device. Because the parameters are
known on the host, images that skip an operation are left out of it by index, without a device
synchronisation. The random order of the four jitter operations is applied without a loop over
images: brightness, contrast and saturation are each a blend ``f * x + (1 - f) * target``
(target black, the mean grey level, or the grey image), so the ``k``-th blend of every image,
whichever operation it is, runs in one batched step; hue rotation, the costly one, runs once
per image, between the blend steps where that image's order puts it.

The formulas are torchvision's tensor ones (grey = 0.2989 R + 0.587 G + 0.114 B, HSV hue
rotation); the reference applies them to PIL uint8 images, so its results are quantised to 256
levels (its hue to 256 steps of a turn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .resample import gaussian_taps, separable_resample

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
"""Operation ids used in :attr:`ColorParams.order`."""

_GREY_WEIGHTS = (0.2989, 0.587, 0.114)


@dataclass
class ColorParams:
    """Random choices for a batch of images; every field has the batch shape ``S`` first.

    ``factors`` holds ``(brightness, contrast, saturation, hue)`` per image (the drawn values,
    used only where ``jitter``); ``order`` is the permutation of operation ids in which jitter
    applies them. All tensors live on the CPU.
    """

    jitter: Tensor  # bool S
    factors: Tensor  # float32 (*S, 4)
    order: Tensor  # int64 (*S, 4)
    grayscale: Tensor  # bool S
    blur: Tensor  # bool S
    sigma: Tensor  # float32 S

    def flatten(self) -> ColorParams:
        """The same parameters with the batch shape flattened to one dimension."""
        n = self.jitter.numel()
        return ColorParams(
            self.jitter.reshape(n),
            self.factors.reshape(n, 4),
            self.order.reshape(n, 4),
            self.grayscale.reshape(n),
            self.blur.reshape(n),
            self.sigma.reshape(n),
        )


@dataclass(frozen=True)
class ColorAugment:
    """One view type's photometric recipe (jitter, grayscale, blur)."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_radius: int = 6

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> ColorParams:
        """Draw parameters for ``shape`` images on the CPU."""
        n = int(torch.Size(shape).numel())
        u = torch.rand((n, 8), generator=generator)
        order = torch.rand((n, 4), generator=generator).argsort(dim=-1)
        lo = torch.tensor([max(0.0, 1.0 - s) for s in (self.brightness, self.contrast, self.saturation)] + [-self.hue])
        hi = torch.tensor([1.0 + s for s in (self.brightness, self.contrast, self.saturation)] + [self.hue])
        factors = lo + (hi - lo) * u[:, 1:5]
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, 7]
        return ColorParams(
            jitter=(u[:, 0] < self.jitter_p).reshape(shape),
            factors=factors.reshape(*shape, 4),
            order=order.reshape(*shape, 4),
            grayscale=(u[:, 5] < self.grayscale_p).reshape(shape),
            blur=(u[:, 6] < self.blur_p).reshape(shape),
            sigma=sigma.reshape(shape),
        )

    def apply(self, images: Tensor, params: ColorParams) -> Tensor:
        """Augment float ``(N, 3, H, W)`` images in [0, 1] with parameters of batch size ``N``.

        May write into ``images``; returns the augmented batch.
        """
        p = params.flatten()
        if p.jitter.numel() != images.shape[0]:
            raise ValueError(f"{p.jitter.numel()} parameter sets for {images.shape[0]} images")
        x = _on_subset(images, p.jitter, lambda sub, idx: color_jitter(sub, p.factors[idx], p.order[idx]))
        x = _on_subset(x, p.grayscale, lambda sub, idx: to_grayscale(sub).expand_as(sub).contiguous())
        return _on_subset(x, p.blur, lambda sub, idx: gaussian_blur(sub, p.sigma[idx], self.blur_radius))


def _on_subset(images: Tensor, mask: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Replace the images where the CPU ``mask`` is true by ``fn(those images, their CPU indices)``.

    Writes into ``images`` unless every image is selected.
    """
    if not bool(mask.any()):
        return images
    if bool(mask.all()):
        return fn(images, torch.arange(mask.numel()))
    idx = mask.nonzero().squeeze(1)
    dev_idx = idx.to(images.device, non_blocking=True)
    return images.index_copy_(0, dev_idx, fn(images.index_select(0, dev_idx), idx))


def to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma, ``(N, 1, H, W)``, as torchvision's ``rgb_to_grayscale``."""
    r, g, b = images.unbind(-3)
    return (_GREY_WEIGHTS[0] * r + _GREY_WEIGHTS[1] * g + _GREY_WEIGHTS[2] * b).unsqueeze(-3)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """torchvision ``ColorJitter`` with per-image ``factors`` ``(N, 4)`` and ``order`` ``(N, 4)`` (CPU).

    May write into ``images``.

    Each image runs its three blends (brightness, contrast, saturation in its order) as three
    batched steps; its hue rotation is inserted before blend step ``r``, where ``r`` is the
    number of blends that precede hue in its order (``r = 3``: after the last step).
    """
    n = images.shape[0]
    device = images.device
    blend_ops = order[order != HUE].view(n, 3)  # the order without hue
    hue_rank = (order == HUE).to(torch.int64).argmax(dim=1)  # blends before hue
    hue = factors[:, HUE]
    x = images
    for step in range(4):
        rotate = (hue_rank == step) & (hue != 0)
        x = _on_subset(x, rotate, lambda sub, idx: adjust_hue(sub, hue[idx].to(device, non_blocking=True)))
        if step == 3:
            break
        op = blend_ops[:, step]
        f = factors.gather(1, op.unsqueeze(1)).squeeze(1)
        if bool((f == 1).all()):
            continue  # e.g. a strength of 0: torchvision skips that operation
        x = _blend(x, f, op)
    return x


def _blend(x: Tensor, factor: Tensor, op: Tensor) -> Tensor:
    """One brightness, contrast or saturation blend per image, ``f * x + (1 - f) * target``.

    ``factor`` and ``op`` are CPU ``(N,)``. The target is black (brightness), the mean grey
    level (contrast) or the grey image (saturation); ``f = 1`` leaves an image exactly as it is.
    """
    device = x.device
    f = factor.to(device, non_blocking=True).view(-1, 1, 1, 1)
    if bool((op == BRIGHTNESS).all()):
        return (x * f).clamp_(0.0, 1.0)
    one_minus = 1.0 - factor
    zero = torch.zeros_like(factor)
    w_sat = torch.where(op == SATURATION, one_minus, zero).to(device, non_blocking=True).view(-1, 1, 1, 1)
    w_con = torch.where(op == CONTRAST, one_minus, zero).to(device, non_blocking=True).view(-1, 1, 1, 1)
    grey = to_grayscale(x)  # (N, 1, H, W)
    target = torch.addcmul(w_con * grey.mean(dim=(-2, -1), keepdim=True), grey, w_sat)
    return torch.addcmul(target, x, f).clamp_(0.0, 1.0)


def adjust_hue(images: Tensor, hue: Tensor) -> Tensor:
    """Rotate hue by ``hue`` (``(N,)``, fraction of a turn) in HSV, as torchvision's ``adjust_hue``.

    RGB -> HSV -> RGB with value and chroma unchanged: channel ``n`` (5, 3, 1 for R, G, B)
    becomes ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``.
    """
    r, g, b = images.unbind(-3)
    maxc = images.amax(dim=-3)
    chroma = maxc - images.amin(dim=-3)
    divisor = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    # Hue in sixths of a turn, by which channel is the largest (torchvision's tie order).
    sixths = torch.where(
        maxc == r,
        g - b,
        torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0)),
    ).div_(divisor)
    h6 = torch.remainder(sixths.add_(6.0 * hue.view(-1, 1, 1)), 6.0).unsqueeze(-3)  # (N, 1, H, W)
    k = torch.remainder(h6 + torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(-3), chroma.unsqueeze(-3), ramp, value=-1.0)


def gaussian_blur(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Blur each image with its own ``sigma`` (CPU ``(N,)``), kernel ``2 * radius + 1``, reflect edges."""
    n, _, h, w = images.shape
    rows = gaussian_taps(h, sigma, radius)
    cols = gaussian_taps(w, sigma, radius)
    return separable_resample(images, torch.arange(n), rows, cols)
