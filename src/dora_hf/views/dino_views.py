"""DINO's multi-crop views of video frames, built with batched tensor ops (the DINO baseline).

DINO (Caron et al. 2021, ``DataAugmentationDINO`` in facebookresearch/dino's ``main_dino.py``)
treats every frame as an image of its own and draws everything per image and per crop:

1. **Two global crops**: RandomResizedCrop of the frame to ``global_size``, scale (0.4, 1),
   horizontal flip p 0.5, colour jitter p 0.8, grayscale p 0.2, Gaussian blur with p 1.0 on the
   first crop and p 0.1 on the second, solarisation with p 0.2 on the second crop only.
2. **Local crops**: ``num_local_views`` RandomResizedCrops of the frame to ``local_size``,
   scale (0.05, 0.4), with the same flip, jitter and grayscale and blur p 0.5.

Then ImageNet normalisation. Every crop is resized with PIL-style antialiased bicubic, as DINO's
``RandomResizedCrop(interpolation=BICUBIC)`` on PIL images does, and clipped to [0, 1].

There is no clip crop and nothing is shared between the frames of a clip: the frames DoRA reads
as ``B`` clips of ``T`` frames are ``B * T`` DINO images. The sizes, scales, jitter strengths and
the shared probabilities come from the recipe's ``views:`` section
(:attr:`DinoViewsConfig.views`), so DINO and DoRA see the same resolutions.

As in :mod:`.views`, all random choices are drawn on the CPU from an optional CPU
``torch.Generator`` (:meth:`DinoViews.sample_params`) and applied on the frames' device
(:meth:`DinoViews.render`): one resampling call per crop size over the whole batch
(:func:`.resample.resample_transposed`) and one photometric call per crop size
(:meth:`.color_augment.ColorAugment.apply`), with no Python loop over images or crops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .color_augment import ColorAugment, ColorParams, solarize_, stack_params
from .crop_boxes import sample_boxes
from .dora_views import ClipViewsConfig, check_frames, normalisation
from .resample import flip_taps, resample_transposed, resize_taps


@dataclass(frozen=True)
class DinoViewsConfig:
    """DINO's multi-crop recipe: the settings it shares with DoRA's views, and its own.

    ``views`` gives the sizes, the crop scales and aspect ratios, the flip probability, the colour
    jitter, the grayscale and local blur probabilities, the blur sigmas and the normalisation. Its
    clip crop, its single global blur probability and its interpolation choices have no DINO
    counterpart and are not read. Defaults are ``main_dino.py``'s (ViT-S/16: 8 local crops of 96).
    """

    views: ClipViewsConfig = field(default_factory=lambda: ClipViewsConfig(num_local_views=8, local_size=96))
    global_crops_blur_p: tuple[float, float] = (1.0, 0.1)
    """Blur probability of global crop 1 and of global crop 2."""
    global_crops_solarize_p: tuple[float, float] = (0.0, 0.2)
    """Solarisation probability of global crop 1 and of global crop 2 (DINO: only the second)."""
    antialias: bool = True
    """PIL-style antialiased bicubic resizing of every crop (DINO resizes PIL images)."""

    def __post_init__(self) -> None:
        for name in ("global_crops_blur_p", "global_crops_solarize_p"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not all(0.0 <= v <= 1.0 for v in value):
                raise ValueError(f"DinoViewsConfig.{name} must be two probabilities, got {value}")
            object.__setattr__(self, name, value)

    def color_augments(self) -> tuple[ColorAugment, ColorAugment, ColorAugment]:
        """The photometric recipes of global crop 1, global crop 2 and the local crops."""
        global_color = self.views.color_augment(local=False)
        first, second = (dataclasses.replace(global_color, blur_p=p) for p in self.global_crops_blur_p)
        return first, second, self.views.color_augment(local=True)


@dataclass
class DinoCropParams:
    """Every random choice behind a batch of DINO crops (CPU tensors), for rendering and debugging.

    ``N`` is the number of images (frames); boxes are ``(top, left, height, width)`` in frame pixels.
    """

    global_boxes: Tensor  # int64 (N, 2, 4)
    global_flips: Tensor  # bool (N, 2)
    local_boxes: Tensor  # int64 (N, L, 4)
    local_flips: Tensor  # bool (N, L)
    global_color: ColorParams  # batch shape (N, 2)
    local_color: ColorParams  # batch shape (N, L)
    solarize: Tensor  # bool (N, 2)


@dataclass
class DinoCrops:
    """The crops of a batch of ``N = B * T`` images; image ``b * T + t`` is frame ``t`` of clip ``b``."""

    global_views: Tensor  # float32 (N, 2, 3, global_size, global_size), normalised
    local_views: Tensor  # float32 (N, L, 3, local_size, local_size), normalised
    params: DinoCropParams


class DinoViews:
    """Callable building :class:`DinoCrops` from frames ``(B, T, 3, H, W)``, uint8 or float in [0, 1].

    ``crops = DinoViews(config)(frames, generator)``; the output is on the frames' device.
    """

    def __init__(self, config: DinoViewsConfig | None = None) -> None:
        self.config = config or DinoViewsConfig()
        self.first_color, self.second_color, self.local_color = self.config.color_augments()

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> DinoCrops:
        b, t, _, h, w = check_frames(frames)
        return self.render(frames, self.sample_params(b * t, h, w, generator))

    def sample_params(
        self, images: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> DinoCropParams:
        """Draw all random choices for ``images`` images of ``height x width``, each on its own.

        ``generator`` must be a CPU generator (``None`` uses torch's global CPU generator).
        """
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("DinoViews draws its random choices on the CPU: pass a CPU torch.Generator")
        if images < 1:
            raise ValueError(f"need at least one image, got {images}")
        cfg, solarize_p = self.config.views, self.config.global_crops_solarize_p
        local_shape = (images, cfg.num_local_views)
        return DinoCropParams(
            global_boxes=sample_boxes((images, 2), height, width, cfg.global_scale, cfg.ratio, generator),
            global_flips=torch.rand((images, 2), generator=generator) < cfg.flip_p,
            local_boxes=sample_boxes(local_shape, height, width, cfg.local_scale, cfg.ratio, generator),
            local_flips=torch.rand(local_shape, generator=generator) < cfg.flip_p,
            global_color=stack_params(
                [self.first_color.sample((images,), generator), self.second_color.sample((images,), generator)], 1
            ),
            local_color=self.local_color.sample(local_shape, generator),
            solarize=torch.rand((images, 2), generator=generator) < torch.tensor(solarize_p),
        )

    @torch.no_grad()
    def render(self, frames: Tensor, params: DinoCropParams) -> DinoCrops:
        """Apply ``params``: crops and resizes, then jitter, grayscale, blur, solarisation, normalisation."""
        b, t, c, h, w = check_frames(frames)
        n, cfg = b * t, self.config.views
        if params.global_boxes.shape[0] != n or params.local_boxes.shape[1] != cfg.num_local_views:
            raise ValueError("crop parameters were drawn for another batch shape")
        # Frames transposed to (N, C, W, H), once in float: each resampling filters columns, then
        # rows, and returns upright crops. uint8 is scaled to [0, 1] inside the first pass.
        pixels = frames.reshape(n, c, h, w).transpose(-1, -2).to(torch.float32, memory_format=torch.contiguous_format)
        gain = 1.0 / 255.0 if frames.dtype == torch.uint8 else 1.0
        scale, shift = (x.view(1, c, 1, 1) for x in normalisation(cfg.mean, cfg.std, frames.device))

        global_views = self._crops(pixels, params.global_boxes, params.global_flips, cfg.global_size, gain)
        # Both global crops in one call: they differ only in their drawn blur flags.
        global_views = self.first_color.apply(global_views, params.global_color)
        global_views = solarize_(global_views, params.solarize.reshape(-1)).mul_(scale).add_(shift)
        local_views = self._crops(pixels, params.local_boxes, params.local_flips, cfg.local_size, gain)
        if local_views.shape[0]:
            local_views = self.local_color.apply(local_views, params.local_color).mul_(scale).add_(shift)
        return DinoCrops(
            global_views=global_views.view(n, 2, c, cfg.global_size, cfg.global_size),
            local_views=local_views.view(n, cfg.num_local_views, c, cfg.local_size, cfg.local_size),
            params=params,
        )

    def _crops(self, pixels: Tensor, boxes: Tensor, flips: Tensor, size: int, gain: float) -> Tensor:
        """The ``(N * V, C, size, size)`` crops ``boxes`` ``(N, V, 4)`` of the transposed frames, in [0, 1]."""
        n, views = boxes.shape[:2]
        if not views:
            return pixels.new_empty((0, pixels.shape[1], size, size))
        antialias = self.config.antialias
        cols = flip_taps(resize_taps(boxes[..., 1], boxes[..., 3], size, "bicubic", antialias), flips)
        rows = resize_taps(boxes[..., 0], boxes[..., 2], size, "bicubic", antialias)
        cols, rows = ((index.flatten(0, 1), weight.flatten(0, 1)) for index, weight in (cols, rows))
        source = torch.arange(n).repeat_interleave(views)
        crops = resample_transposed(pixels, source, cols, rows, gain=gain)
        return crops.clamp_(0.0, 1.0)  # bicubic overshoots; DINO's PIL crops are clipped to [0, 255]

