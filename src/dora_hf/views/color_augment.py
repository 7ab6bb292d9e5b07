"""DINO's per-image photometric augmentations, with batched random parameters.

Each DoRA view (DORA_SPEC §2) gets, independently per image: colour jitter with probability
``jitter_p`` (torchvision ``ColorJitter`` semantics: brightness, contrast, saturation and hue in
a random order, factors uniform in ``[max(0, 1 - s), 1 + s]``, hue shift uniform in
``[-h, h]``), then grayscale with probability ``grayscale_p``, then a Gaussian blur with
probability ``blur_p`` and sigma uniform in ``blur_sigma``.

Parameters are drawn on the CPU (:meth:`ColorAugment.sample`) and applied to a whole batch
(:meth:`ColorAugment.apply`, or :meth:`ColorAugment.apply_normalized`, which also normalises)
with tensor ops on the images' device. Because the parameters are known on the host, images
that skip an operation are left out of it by index or by slicing, without a device
synchronisation. The random order of the four jitter operations is applied without a loop over
images: brightness, contrast and saturation are each a blend ``f * x + (1 - f) * target``
(target black, the mean grey level, or the grey image), so the ``k``-th blend of every image,
whichever operation it is, runs in one batched step (images that are not jittered take
``f = 1``, which leaves them exactly as they are); hue rotation, the costly one, runs once per
image, between the blend steps where that image's order puts it.

DINO's second global crop is also solarised with some probability (:func:`solarize_`, after the
blur), and its two global crops differ in their blur probability; :func:`stack_params` lets them
share one call.

Every operation works in place and uses only arithmetic, ``clamp``, ``sign``, ``round`` and
plain reductions: on the CPU, comparisons, ``where``, ``remainder``, gathers of image subsets
and freshly allocated temporaries each cost several times an in-place arithmetic pass. So
:meth:`ColorAugment.apply_normalized` first puts the images in an order (:func:`working_order`)
where every subset an operation touches is a contiguous run: blurred images last and, within
each part, images sorted by where hue falls in their jitter order. Grayscale and blur are both
linear (grayscale mixes channels, the blur mixes pixels with weights summing to one), so they
commute; the blur therefore comes before grayscale, which is folded into the final
normalisation.

The formulas are torchvision's tensor ones (grey = 0.2989 R + 0.587 G + 0.114 B, HSV hue
rotation); the reference applies them to PIL uint8 images, so its results are quantised to 256
levels (its hue to 256 steps of a turn).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
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
    """One view type's photometric recipe (jitter, grayscale, blur).

    Built by :meth:`ClipViewsConfig.color_augment`, which holds the reference values.
    """

    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    blur_radius: int

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
        p = _checked(images, params)
        x = _jitter_(images, p.factors, p.order, p.jitter)
        x = _on_subset(x, p.grayscale, lambda sub, idx: to_grayscale(sub).expand_as(sub).contiguous())
        return _on_subset(x, p.blur, lambda sub, idx: gaussian_blur(sub, p.sigma[idx], self.blur_radius))

    def apply_normalized(
        self, images: Tensor, params: ColorParams, scale: Tensor, shift: Tensor, out: Tensor | None = None
    ) -> Tensor:
        """:meth:`apply`, then ``x * scale + shift`` per channel, written to ``out`` (or a new tensor).

        ``scale`` and ``shift`` are float ``(3,)`` on the images' device (``1 / std`` and
        ``-mean / std`` for ImageNet normalisation).
        """
        p = _checked(images, params)
        order = working_order(p)
        x = images.index_select(0, order.to(images.device, non_blocking=True))
        out = torch.empty_like(x) if out is None else out
        return self.apply_normalized_in_order_(x, select_params(p, order), scale, shift, out, order)

    def apply_normalized_in_order_(
        self,
        x: Tensor,
        params: ColorParams,
        scale: Tensor,
        shift: Tensor,
        out: Tensor | None = None,
        order: Tensor | None = None,
    ) -> Tensor:
        """:meth:`apply_normalized` of contiguous images already in :func:`working_order`.

        Overwrites ``x``. With ``out`` and ``order`` (CPU int64), image ``i`` of the result goes
        to ``out[order[i]]`` and ``out`` is returned; otherwise the result stays in ``x``.
        Grayscale images get ``grey * scale + shift`` in every channel, which is grayscale then
        normalisation; blur, which commutes with grayscale, comes first.
        """
        p = params.flatten()
        n, c = x.shape[:2]
        if p.jitter.numel() != n:
            raise ValueError(f"{p.jitter.numel()} parameter sets for {n} images")
        if not x.is_contiguous():
            raise ValueError("images must be contiguous")
        _jitter_in_order_(x, p)
        # The unblurred images (leading) are finished in place; the blurred ones (trailing, a few
        # at a time) from the blur's output, which goes on to ``out`` without a copy back.
        sharp = n - int(p.blur.sum())
        parts = [(0, sharp, x[:sharp])] if sharp else []
        for a in range(sharp, n, _BLUR_CHUNK):
            b = min(a + _BLUR_CHUNK, n)
            parts.append((a, b, gaussian_blur(x[a:b], p.sigma[a:b], self.blur_radius)))
        scatter = out is not None and order is not None
        for a, b, part in parts:
            if scatter and part.device.type == "cpu":
                _normalise_into(part, p.grayscale[a:b], scale, shift, out, order[a:b])
                continue
            _normalise_(part, p.grayscale[a:b], scale, shift)
            if scatter:
                out.index_copy_(0, order[a:b].to(x.device, non_blocking=True), part)
            elif a >= sharp:
                x[a:b].copy_(part)
        return out if scatter else x


def working_order(params: ColorParams) -> Tensor:
    """A permutation (CPU int64) of flattened ``params``' images that makes every subset contiguous.

    Images that are blurred come last; within each of the two parts, images are sorted by how
    many blends precede their hue rotation (0 to 3; 4 when they get none), and images without
    colour jitter come last. Stable, so ties keep their order.
    """
    p = params.flatten()
    key = 10 * p.blur.to(torch.int64) + 2 * _hue_rank(p) + (~p.jitter).to(torch.int64)
    return torch.sort(key, stable=True).indices


def select_params(params: ColorParams, idx: Tensor) -> ColorParams:
    """The flattened parameters of images ``idx`` (CPU int64), in that order."""
    p = params.flatten()
    return ColorParams(p.jitter[idx], p.factors[idx], p.order[idx], p.grayscale[idx], p.blur[idx], p.sigma[idx])


def stack_params(params: Sequence[ColorParams], dim: int) -> ColorParams:
    """Parameters drawn for several view types, stacked into one batch along batch dimension ``dim``.

    DINO's two global crops share a recipe except for the blur probability: each is drawn with
    its own :class:`ColorAugment`, and the stack is then applied to all of them at once.
    """
    return ColorParams(*(torch.stack([getattr(p, f.name) for p in params], dim) for f in fields(ColorParams)))


# ---- colour jitter -------------------------------------------------------------------------


def color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """torchvision ``ColorJitter`` with per-image ``factors`` ``(N, 4)`` and ``order`` ``(N, 4)`` (CPU).

    May write into ``images``.

    Each image runs its three blends (brightness, contrast, saturation in its order) as three
    batched steps; its hue rotation is inserted before blend step ``r``, where ``r`` is the
    number of blends that precede hue in its order (``r = 3``: after the last step).
    """
    return _jitter_(images, factors, order, torch.ones(images.shape[0], dtype=torch.bool))


def _jitter_(images: Tensor, factors: Tensor, order: Tensor, active: Tensor) -> Tensor:
    """:func:`color_jitter` of the images where the CPU mask ``active`` is true; the others are kept."""
    n = images.shape[0]
    no = torch.zeros(n, dtype=torch.bool)
    params = ColorParams(active, factors, order, no, no, torch.zeros(n))
    idx = working_order(params)
    dev_idx = idx.to(images.device, non_blocking=True)
    x = images.index_select(0, dev_idx)
    _jitter_in_order_(x, select_params(params, idx))
    return images.index_copy_(0, dev_idx, x)


def _jitter_in_order_(x: Tensor, p: ColorParams) -> None:
    """Colour jitter of the images where ``p.jitter``, in place; images in :func:`working_order`."""
    if not bool(p.jitter.any()):
        return
    n = x.shape[0]
    device = x.device
    # Blend factor and blend weights of every image at each of the three blend steps (CPU, then
    # one transfer): f, (1 - f) for saturation, (1 - f) for contrast; f = 1 where not jittered.
    blend_ops = p.order[p.order != HUE].view(n, 3)
    f = torch.where(p.jitter.unsqueeze(1), p.factors.gather(1, blend_ops), torch.ones(()))
    changed = f != 1
    saturation = changed & (blend_ops == SATURATION)
    contrast = changed & (blend_ops == CONTRAST)
    zero = torch.zeros(())
    table = torch.stack([f, torch.where(saturation, 1.0 - f, zero), torch.where(contrast, 1.0 - f, zero)])
    table = table.to(device, non_blocking=True).transpose(1, 2).unsqueeze(-1)  # (3, step, n, 1)
    flags = torch.stack([changed.any(0), saturation.any(0), contrast.any(0)]).tolist()
    ranks = _hue_rank(p).tolist()
    hue = p.factors[:, HUE].to(device, non_blocking=True)
    # Blends skip the images without jitter (for them f = 1): a trailing run of each blur part.
    jittered = p.jitter.tolist()
    spans = [(a, b) for a, b in _runs(jittered) if jittered[a]]
    for step in range(4):
        for a, b in _runs(ranks):  # images whose hue rotation comes before blend step ``step``
            if ranks[a] == step:
                _adjust_hue_(x[a:b], hue[a:b])
        if step < 3 and flags[0][step]:
            for a, b in spans:
                w_sat = table[1, step, a:b] if flags[1][step] else None
                w_con = table[2, step, a:b] if flags[2][step] else None
                _blend_(x[a:b], table[0, step, a:b], w_sat, w_con)


def _runs(values: list) -> list[tuple[int, int]]:
    """``[start, stop)`` of every maximal run of equal values."""
    starts = [i for i in range(len(values)) if i == 0 or values[i] != values[i - 1]]
    return list(zip(starts, starts[1:] + [len(values)]))


def _hue_rank(p: ColorParams) -> Tensor:
    """Blends before hue in each image's jitter order (0 to 3), or 4 if it gets no hue rotation."""
    rank = (p.order == HUE).to(torch.int64).argmax(dim=1)
    rotates = p.jitter & (p.factors[:, HUE] != 0)
    return torch.where(rotates, rank, torch.full_like(rank, 4))


def _blend_(x: Tensor, f: Tensor, w_sat: Tensor | None, w_con: Tensor | None) -> None:
    """One brightness, contrast or saturation blend per image, ``f * x + (1 - f) * target``, in place.

    ``f``, ``w_sat`` and ``w_con`` are ``(N, 1)`` on the images' device: the factor, and
    ``1 - f`` for images whose blend is saturation (target: the grey image) or contrast (target:
    the mean grey level), 0 otherwise (``None``: none of them); brightness blends to black.
    ``f = 1`` leaves an image exactly as it is. Per-image factors multiply ``(N, 1)`` columns of
    the ``(N, C * H * W)`` view, the fast broadcast on the CPU.
    """
    n, c = x.shape[:2]
    flat = x.view(n, -1)
    grey = _grey(x).view(n, -1) if w_sat is not None else None
    shift = None  # (1 - f) * mean grey level for contrast images
    if w_con is not None:
        if grey is not None:
            level = grey.mean(dim=1, keepdim=True)
        else:
            level = x.view(n, c, -1).mean(dim=2) @ torch.tensor(_GREY_WEIGHTS, device=x.device, dtype=x.dtype)
            level = level.view(n, 1)
        shift = level.mul_(w_con)
    if grey is not None:
        grey.mul_(w_sat)
        if shift is not None:
            grey.add_(shift)
        planes = x.view(n, c, -1)
        torch.addcmul(grey.unsqueeze(1), planes, f.view(n, 1, 1), out=planes)
    else:
        flat.mul_(f)
        if shift is not None:
            flat.add_(shift)
    flat.clamp_(0.0, 1.0)


# ---- hue, grey, blur, normalisation ------------------------------------------------------


def adjust_hue(images: Tensor, hue: Tensor) -> Tensor:
    """Rotate hue by ``hue`` (``(N,)``, fraction of a turn) in HSV, as torchvision's ``adjust_hue``.

    Returns a new tensor; see :func:`_adjust_hue_` for the formula.
    """
    return _adjust_hue_(images.clone(memory_format=torch.contiguous_format), hue.to(images.device))


def _adjust_hue_(x: Tensor, hue: Tensor) -> Tensor:
    """Rotate the hue of float ``(N, 3, H, W)`` images in place; ``hue`` is ``(N,)`` on their device.

    RGB -> HSV -> RGB with value and chroma unchanged. With ``c`` the chroma (max - min) and
    ``h`` the hue in sixths of a turn after the shift, channel ``n`` (5, 3, 1 for R, G, B) is
    ``max - c * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h) mod 6``, which equals
    ``min - c + c * clamp(d, 1, 2)`` where ``d`` is the distance from ``n + h - 2`` to the
    nearest multiple of 6.

    The hue itself, torchvision's piecewise ``(G - B) / c`` (R largest), ``2 + (B - R) / c``
    (G largest, R not) or ``4 + (R - G) / c``, is written without comparisons: with
    ``s_r = sign(max - R)`` and ``s_g = sign(max - G)`` (0 where that channel is the largest)
    and ``S = R + G + B``, ``h * c = (G - B) + s_r * ((3B - S + 2c) + s_g * (3R - S + 2c))``.
    Grey pixels (``c = 0``) have ``h * c = 0`` and keep their value.
    """
    n = x.shape[0]
    r, g, b = x.unbind(1)
    top = x.amax(dim=1)
    low = x.amin(dim=1)
    chroma = torch.sub(top, low)
    s_r = torch.sub(top, r).sign_()
    s_g = torch.sub(top, g).sign_()
    base = torch.add(r, g).add_(b).sub_(chroma, alpha=2.0)  # S - 2c
    neg_b = torch.sub(base, b, alpha=3.0)  # -(3B - S + 2c)
    neg_b.addcmul_(s_g, base.sub_(r, alpha=3.0))  # -(3B - S + 2c) - s_g * (3R - S + 2c)
    hue6 = torch.sub(g, b, out=top).addcmul_(s_r, neg_b, value=-1.0)  # h * c
    hue6.div_(chroma.clamp_min(1e-30))  # h in [-1, 5]
    # t = h + ((n + 6 * shift) mod 6) - 2, which is n + h - 2 up to whole turns, lies in [-3, 9),
    # where the distance to the nearest multiple of 6 (0 or 6) is | |t - 3| - 3 |.
    phase = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3) + 6.0 * hue.view(n, 1).to(torch.float32)
    phase = torch.remainder(phase, 6.0).sub_(5.0)  # t - 3 = h + phase
    d = torch.add(hue6.unsqueeze(1), phase.view(n, 3, 1, 1))
    d.abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)
    low.sub_(chroma)
    return torch.addcmul(low.unsqueeze(1), chroma.unsqueeze(1), d, out=x)


def _grey(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma of ``(N, 3, H, W)``: ``(N, 1, H, W)``, in three in-place passes."""
    r, g, b = images.unbind(-3)
    grey = torch.mul(r, _GREY_WEIGHTS[0])
    grey.add_(g, alpha=_GREY_WEIGHTS[1]).add_(b, alpha=_GREY_WEIGHTS[2])
    return grey.unsqueeze(-3)


def solarize_(images: Tensor, mask: Tensor) -> Tensor:
    """Solarise the images where the CPU ``mask`` is true: ``x -> 1 - x`` where ``x >= 0.5``.

    torchvision's ``RandomSolarize(threshold=0.5)`` on float images in [0, 1] (DINO's PIL
    ``ImageOps.solarize`` inverts the levels >= 128). Writes into ``images`` unless every image
    is selected; returns the result.
    """
    return _on_subset(images, mask, lambda sub, idx: torch.where(sub >= 0.5, 1.0 - sub, sub))


def to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma, ``(N, 1, H, W)``, as torchvision's ``rgb_to_grayscale``."""
    return _grey(images)


def gaussian_blur(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Blur each image with its own ``sigma`` (CPU ``(N,)``), kernel ``2 * radius + 1``, reflect edges.

    Same kernel as torchvision's tensor ``gaussian_blur``. On the CPU it runs as two depthwise
    convolutions (one kernel per image and channel); elsewhere, and for images no larger than
    the radius, through gathered taps (exact float32 on every device).
    """
    n, c, h, w = images.shape
    if images.device.type != "cpu" or min(h, w) <= radius:
        return _gaussian_blur_taps(images, sigma, radius)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma.to(torch.float64).unsqueeze(-1)) ** 2)
    kernel = (kernel / kernel.sum(-1, keepdim=True)).to(images.dtype)  # (N, K)
    kernel = kernel.repeat_interleave(c, dim=0)  # one per image and channel
    size = 2 * radius + 1
    padded = F.pad(images, (radius,) * 4, mode="reflect").view(1, n * c, h + 2 * radius, w + 2 * radius)
    rows = F.conv2d(padded, kernel.view(n * c, 1, 1, size), groups=n * c)
    return F.conv2d(rows, kernel.view(n * c, 1, size, 1), groups=n * c).view(n, c, h, w)


def _gaussian_blur_taps(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """:func:`gaussian_blur` by separable gathered taps, on any device."""
    n, _, h, w = images.shape
    rows = gaussian_taps(h, sigma, radius)
    cols = gaussian_taps(w, sigma, radius)
    return separable_resample(images, torch.arange(n), rows, cols)


_BLUR_CHUNK = 8
"""Images per blur call on the CPU: bounds the number of distinct convolution shapes (oneDNN
compiles a kernel for each new one)."""


def _normalise_(x: Tensor, grayscale: Tensor, scale: Tensor, shift: Tensor) -> None:
    """``x * scale + shift`` per channel in place; images where CPU ``grayscale`` use their grey level."""
    n, c = x.shape[:2]
    grey = None
    if bool(grayscale.any()):
        idx = grayscale.nonzero().squeeze(1).to(x.device, non_blocking=True)
        grey = _grey(x.index_select(0, idx))  # before normalisation overwrites x
    rows = x.view(n * c, -1)  # per-row factors: the fast broadcast on the CPU
    rows.mul_(scale.view(1, c).expand(n, c).reshape(n * c, 1))
    rows.add_(shift.view(1, c).expand(n, c).reshape(n * c, 1))
    if grey is not None:
        x.index_copy_(0, idx, torch.addcmul(shift.view(1, c, 1, 1), grey, scale.view(1, c, 1, 1)))


def _normalise_into(x: Tensor, grayscale: Tensor, scale: Tensor, shift: Tensor, out: Tensor, index: Tensor) -> None:
    """``out[index[i]] = x[i] * scale + shift`` (grey level for grayscale images), on the CPU.

    Image by image with numpy, writing each result straight to its place in ``out``: one pass
    over the output instead of normalising in place and then scattering.
    """
    source, target = x.numpy(), out.numpy()
    c = source.shape[1]
    weights = np.asarray(_GREY_WEIGHTS, dtype=source.dtype).reshape(1, c, 1, 1)
    a = scale.numpy().reshape(c, 1, 1)
    b = shift.numpy().reshape(c, 1, 1)
    for i, (j, grey) in enumerate(zip(index.tolist(), grayscale.tolist())):
        image = source[i]
        if grey:
            image = np.einsum("chw,c->hw", image, weights.reshape(c))[None]
        np.multiply(image, a, out=target[j])
        target[j] += b


# ---- helpers -------------------------------------------------------------------------------


def _checked(images: Tensor, params: ColorParams) -> ColorParams:
    """``params`` flattened, after checking that there is one set per image."""
    p = params.flatten()
    if p.jitter.numel() != images.shape[0]:
        raise ValueError(f"{p.jitter.numel()} parameter sets for {images.shape[0]} images")
    return p


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
