"""Separable resampling by gathered filter taps, for many crops and kernels in one call.

Every geometric and blur step of the DoRA views (DORA_SPEC §2) is separable: an output row is
a weighted sum of a few input rows, then an output column a weighted sum of a few columns. A
:data:`Taps` pair holds, for every output image and output position along one axis, the input
positions it reads and their weights. Crops of different boxes, flips, different Gaussian
sigmas and antialiased or plain kernels are all just different taps, so one
:func:`resample_transposed` call handles a whole batch of them, on the device of the images,
with no per-crop Python loop. Each pass is a single ``embedding_bag`` (a weighted gather-sum
over rows of a matrix): its cost grows with the number of taps (2 to about 10), not with the
input size as a dense resampling matrix's would, and it is exact float32 arithmetic on CPU and
CUDA alike (no TF32 matmuls).

Kernels reproduce ``torch.nn.functional.interpolate(crop, size, align_corners=False)`` on the
cropped pixels, including its border handling at the crop's edges:

* ``antialias=True`` is PIL's (and torchvision's) antialiased resampling: when shrinking, the
  kernel is stretched by the shrink factor; bicubic uses ``a = -0.5``.
* ``antialias=False`` is plain interpolation: bilinear, or bicubic with ``a = -0.75`` and edge
  replication.

Taps are computed in float64 on the CPU (they are small) from boxes that live on the CPU,
then moved to the images' device.

Two ways to apply taps:

* :func:`resample_transposed` / :func:`separable_resample`: two ``embedding_bag`` passes over
  a whole batch, with a transpose between them. Device-generic and exact float32; what the views
  use on accelerators.
* :func:`gather_rows`: one pass along the outer axis (an ``embedding_bag`` that gathers whole
  rows), for the CPU renderer in :mod:`.views`, which arranges its own transposes.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Interpolation = Literal["bilinear", "bicubic"]

Taps = tuple[Tensor, Tensor]
"""``(index, weight)``, each ``(N, out_size, K)``: input positions (int64) and weights (float32)."""


def _triangle_(x: Tensor) -> Tensor:
    """The triangle (linear) kernel, computed in place on ``x``."""
    return x.abs_().neg_().add_(1.0).clamp_(min=0.0)


def _cubic_(x: Tensor, a: float) -> Tensor:
    """Keys' cubic convolution kernel with parameter ``a``; consumes ``x``.

    ``(a + 2)|x|^3 - (a + 3)|x|^2 + 1`` below 1, ``a (|x| - 1)(|x| - 2)^2`` from 1 to 2, 0 beyond:
    both pieces vanish at 1 and the second at 2, so the sum of the first at ``min(|x|, 1)`` and
    the second at ``clamp(|x|, 1, 2)`` is the kernel, without comparisons (and in place: large
    fresh temporaries and comparisons are what cost most here on the CPU).
    """
    x = x.abs_()
    near = x.clamp(max=1.0)
    kernel = near.mul(a + 2.0).sub_(a + 3.0).mul_(near).mul_(near).add_(1.0)
    far = x.clamp_(1.0, 2.0)
    return kernel.add_(torch.sub(far, 2.0).square_().mul_(far.sub_(1.0)).mul_(a))


def resize_taps(
    start: Tensor,
    length: Tensor,
    out_size: int,
    mode: Interpolation,
    antialias: bool,
) -> Taps:
    """Taps that resize the span ``[start, start + length)`` of one axis to ``out_size`` samples.

    Args:
        start, length: integer-valued tensors of any shape ``S``, one span per output image.
        out_size: samples along the axis after resizing.
        mode: ``"bilinear"`` or ``"bicubic"``.
        antialias: stretch the kernel when shrinking (PIL / torchvision ``antialias=True``).

    Returns:
        ``(index, weight)`` of shape ``(*S, out_size, K)``; indices are absolute positions on the
        axis, always inside the span.
    """
    start = start.to(torch.float64)
    length = length.to(torch.float64)
    if bool((length < 1).any()):
        raise ValueError("crop spans must be at least one pixel long")
    scale = (length / out_size).unsqueeze(-1)  # (*S, 1): input pixels per output pixel
    out = torch.arange(out_size, dtype=torch.float64)

    if mode == "bicubic" and not antialias:
        # torch's plain bicubic: 4 taps around the source position, indices clamped to the span.
        src = (out + 0.5) * scale - 0.5
        pos = src.floor().unsqueeze(-1) + torch.arange(-1, 3, dtype=torch.float64)
        weight = _cubic_(pos - src.unsqueeze(-1), -0.75)
    elif mode in ("bilinear", "bicubic"):
        # The antialiased formulation (ATen's _upsample_*_aa / PIL). Without antialiasing the
        # kernel is not stretched; for bilinear that is exactly plain interpolation, since
        # renormalising the truncated triangle equals clamping the source position.
        half_width = 1.0 if mode == "bilinear" else 2.0
        stretch = scale.clamp(min=1.0) if antialias else torch.ones_like(scale)
        support = half_width * stretch
        center = (out + 0.5) * scale
        first = (center - support + 0.5).floor().clamp(min=0.0)
        end = torch.minimum((center + support + 0.5).floor(), length.unsqueeze(-1))
        taps = int(math.floor(2.0 * float(support.max()))) + 1
        pos = first.unsqueeze(-1) + torch.arange(taps, dtype=torch.float64)
        x = torch.sub(pos, center.unsqueeze(-1)).add_(0.5).div_(stretch.unsqueeze(-1))
        weight = _triangle_(x) if mode == "bilinear" else _cubic_(x, -0.5)
        weight.mul_(torch.sub(end.unsqueeze(-1), pos).clamp_(0.0, 1.0))  # 0 at and past the end (integers)
        weight.div_(weight.sum(-1, keepdim=True))
    else:
        raise ValueError(f"unknown interpolation {mode!r}; use 'bilinear' or 'bicubic'")

    last = (length - 1).unsqueeze(-1).unsqueeze(-1)
    index = torch.minimum(pos.clamp_(min=0.0), last, out=pos).add_(start.unsqueeze(-1).unsqueeze(-1))
    return index.to(torch.int64), weight.to(torch.float32)


def flip_taps(taps: Taps, flip: Tensor) -> Taps:
    """Mirror the output order where ``flip`` (shape ``S``) is true: a horizontal flip for free."""
    index, weight = taps
    mask = flip.reshape(*flip.shape, 1, 1)
    return torch.where(mask, index.flip(-2), index), torch.where(mask, weight.flip(-2), weight)


def gaussian_taps(size: int, sigma: Tensor, radius: int) -> Taps:
    """Taps of a normalised Gaussian (one ``sigma`` per image, shape ``S``) with reflect padding.

    Same kernel as torchvision's tensor ``gaussian_blur`` with ``kernel_size = 2 * radius + 1``.
    """
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    sigma = sigma.to(torch.float64).unsqueeze(-1)
    weight = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weight = weight / weight.sum(-1, keepdim=True)  # (*S, K)
    pos = torch.arange(size, dtype=torch.float64).unsqueeze(-1) + offsets  # (size, K)
    pos = pos.abs()  # reflect at 0 (the edge pixel is not repeated)
    pos = torch.where(pos > size - 1, 2 * (size - 1) - pos, pos).clamp(0, size - 1)
    shape = (*sigma.shape[:-1], size, offsets.numel())
    index = pos.expand(shape).to(torch.int64)
    weight = weight.unsqueeze(-2).expand(shape).to(torch.float32)
    return index, weight


def resample_transposed(images: Tensor, source: Tensor, first: Taps, second: Taps, *, gain: float = 1.0) -> Tensor:
    """Filter the last two axes of ``images`` and return the result with those axes swapped.

    Output ``n`` reads ``images[source[n]]``. Each pass gathers whole rows of a matrix, and the
    rows of the second pass are columns of the first pass's result, so one transpose between
    the passes is needed; the output is left transposed. Feeding a transposed image back in
    (with the taps swapped accordingly) therefore yields an upright result with no extra copy.

    Args:
        images: ``(M, C, A, B)``, uint8 or float.
        source: int64 ``(N,)``, which input image each output is made from.
        first: taps ``(N, out_a, Ka)`` along axis ``A``.
        second: taps ``(N, out_b, Kb)`` along axis ``B``.
        gain: factor folded into the weights (``1 / 255`` turns uint8 into [0, 1] for free).

    Returns:
        float32 ``(N, C, out_b, out_a)``, contiguous, on the device of ``images``.
    """
    device = images.device
    m, c, a, b = images.shape
    idx_a, w_a = (t.to(device, non_blocking=True) for t in first)
    idx_b, w_b = (t.to(device, non_blocking=True) for t in second)
    n, out_a, ka = idx_a.shape
    out_b, kb = idx_b.shape[1:]
    channels = torch.arange(c, device=device)
    source = source.to(device, non_blocking=True)

    # Pass 1: records are rows along B, one per (image, channel, a); an output row is a weighted bag.
    records = images.reshape(m * c * a, b).float()
    base = ((source.view(n, 1) * c + channels) * a).view(n, c, 1, 1)
    bags = (idx_a.unsqueeze(1) + base).view(-1, ka)
    weights = (w_a * gain).unsqueeze(1).expand(n, c, out_a, ka).reshape(-1, ka)
    tmp = F.embedding_bag(bags, records, per_sample_weights=weights, mode="sum")  # (n, c, out_a, b)
    # Pass 2: the same along B, on the transposed intermediate.
    records = tmp.view(n, c, out_a, b).transpose(-1, -2).reshape(n * c * b, out_a)
    base = ((torch.arange(n, device=device).view(n, 1) * c + channels) * b).view(n, c, 1, 1)
    bags = (idx_b.unsqueeze(1) + base).view(-1, kb)
    weights = w_b.unsqueeze(1).expand(n, c, out_b, kb).reshape(-1, kb)
    out = F.embedding_bag(bags, records, per_sample_weights=weights, mode="sum")
    return out.view(n, c, out_b, out_a)


def separable_resample(images: Tensor, source: Tensor, rows: Taps, cols: Taps, *, gain: float = 1.0) -> Tensor:
    """Filter upright ``(M, C, H, W)`` images by ``rows`` then ``cols`` taps; upright ``(N, C, out_h, out_w)``."""
    return resample_transposed(images, source, rows, cols, gain=gain).transpose(-1, -2).contiguous()


def gather_rows(records: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
    """``out[m] = sum_k weights[m, k] * records[rows[m, k]]``: a weighted sum of whole rows.

    Args:
        records: float ``(R, L)``, contiguous.
        rows: int64 ``(M, K)``, row indices into ``records``.
        weights: ``(M, K)``, the same dtype as ``records``.

    Returns:
        ``(M, L)``.
    """
    return F.embedding_bag(rows, records, per_sample_weights=weights, mode="sum")
