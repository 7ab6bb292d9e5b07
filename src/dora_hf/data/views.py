"""DoRA's training views of a batch of clips, built with batched tensor ops (DORA_SPEC §2).

For every clip of ``T`` frames:

1. **Clip crop** (clip-level): a RandomResizedCrop of the frames to ``clip_size`` (300),
   scale (0.2, 1), bilinear.
2. **Global view** per frame: a clip-level RandomResizedCrop of the clip crop to
   ``global_size`` (224), scale (0.4, 1), bilinear, and a clip-level horizontal flip; then per
   frame colour jitter (p 0.8), grayscale (p 0.2), Gaussian blur (p 0.1), ImageNet
   normalisation.
3. **Local views**: ``num_local_views`` (6) per frame, each an independent per-frame
   RandomResizedCrop of the clip crop to ``local_size`` (112), scale (0.05, 0.4), bicubic,
   then the same jitter and grayscale, blur with p 0.5, and normalisation. No flip (the
   reference comments it out).

Clip-level choices are shared by all frames of a clip and differ between clips; per-frame
choices are drawn anew for every frame and every local view. All random choices are drawn on
the CPU, from an optional CPU ``torch.Generator`` (:meth:`ClipViews.sample_params`), and then
applied on the frames' device (:meth:`ClipViews.render`), so a seed gives the same views on CPU
and CUDA up to float rounding. The whole batch goes through one resampling call per view type
(:mod:`.resample`), without Python loops over clips, frames or crops.

Relation to the reference data pipeline (the authors' ``DataAugmentationDINO``):

* Resampling matches it: the reference resizes the clip crop and the global view with
  ``F.interpolate`` (bilinear, no antialiasing) and the local views with PIL (antialiased
  bicubic), which the defaults ``clip_antialias=False``, ``global_antialias=False``,
  ``local_antialias=True`` reproduce. Set all three to ``True`` to avoid aliasing when frames
  are much larger than the crops (the reference fed 4K frames to the clip crop).
* The reference turns every frame into a PIL uint8 image before colour jitter, so it rounds to
  256 levels; here images stay float32 and jitter follows torchvision's tensor formulas.
* PIL's ``GaussianBlur(radius=sigma)`` approximates a Gaussian with box filters; here the blur
  is a true Gaussian of that sigma, truncated at ``blur_radius`` (6 = 3 sigma at sigma 2).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .color_augment import ColorAugment, ColorParams
from .crop_boxes import sample_boxes
from .resample import Interpolation, Taps, flip_taps, resample_transposed, resize_taps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PAIRS = ("clip_scale", "global_scale", "local_scale", "ratio", "blur_sigma")
_TRIPLES = ("mean", "std")
_PROBABILITIES = ("flip_p", "jitter_p", "grayscale_p", "global_blur_p", "local_blur_p")


@dataclass(frozen=True)
class ClipViewsConfig:
    """The view recipe; defaults are the reference values (DORA_SPEC §2)."""

    clip_size: int = 300
    clip_scale: tuple[float, float] = (0.2, 1.0)
    global_size: int = 224
    global_scale: tuple[float, float] = (0.4, 1.0)
    flip_p: float = 0.5
    num_local_views: int = 6
    local_size: int = 112
    local_scale: tuple[float, float] = (0.05, 0.4)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    """Aspect-ratio range of every RandomResizedCrop (torchvision's default)."""
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    global_blur_p: float = 0.1
    local_blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_radius: int = 6
    """Gaussian kernel half-width in pixels (kernel size ``2 * blur_radius + 1``)."""
    clip_antialias: bool = False
    global_antialias: bool = False
    local_antialias: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        # Accept lists (as YAML gives them) for the tuple fields, and refuse nonsense early.
        for name in _PAIRS + _TRIPLES:
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != (2 if name in _PAIRS else 3):
                raise ValueError(f"ClipViewsConfig.{name} must have {2 if name in _PAIRS else 3} values, got {value}")
            object.__setattr__(self, name, value)
        for name in _PAIRS:
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"ClipViewsConfig.{name} must be 0 < low <= high, got {(lo, hi)}")
        for name in _PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ClipViewsConfig.{name} must be a probability, got {getattr(self, name)}")
        for name in ("clip_size", "global_size", "local_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClipViewsConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_local_views < 0 or self.blur_radius < 0:
            raise ValueError("ClipViewsConfig.num_local_views and blur_radius must not be negative")
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            raise ValueError("ClipViewsConfig: jitter strengths must be >= 0 and hue in [0, 0.5]")
        if min(self.std) <= 0:
            raise ValueError(f"ClipViewsConfig.std must be positive, got {self.std}")

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> ClipViewsConfig:
        """Build from a mapping (e.g. a YAML section), naming any unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ClipViewsConfig keys: {', '.join(unknown)}")
        return cls(**values)  # type: ignore[arg-type]

    def color_augment(self, *, local: bool) -> ColorAugment:
        """The photometric recipe of the global (``local=False``) or the local views."""
        return ColorAugment(
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            hue=self.hue,
            jitter_p=self.jitter_p,
            grayscale_p=self.grayscale_p,
            blur_p=self.local_blur_p if local else self.global_blur_p,
            blur_sigma=self.blur_sigma,
            blur_radius=self.blur_radius,
        )


@dataclass
class ViewParams:
    """Every random choice behind a batch of views (CPU tensors), for rendering and debugging.

    Boxes are ``(top, left, height, width)`` in whole pixels: clip boxes in input-frame pixels,
    global and local boxes in pixels of the ``clip_size`` clip crop.
    """

    clip_boxes: Tensor  # int64 (B, 4), clip-level
    global_boxes: Tensor  # int64 (B, 4), clip-level
    global_flips: Tensor  # bool (B,), clip-level
    local_boxes: Tensor  # int64 (B, L, T, 4), per frame and local view
    global_color: ColorParams  # batch shape (B, T)
    local_color: ColorParams  # batch shape (B, L, T)


@dataclass
class DoraViews:
    """The views of a batch of clips.

    ``local_views`` is stacked so the student can run all of them in one call;
    :meth:`locals_list` (or ``local_views.unbind(1)``) gives the ``L`` separate views.
    """

    global_views: Tensor  # float32 (B, T, 3, global_size, global_size), normalised
    local_views: Tensor  # float32 (B, L, T, 3, local_size, local_size), normalised
    params: ViewParams

    def locals_list(self) -> list[Tensor]:
        """The ``L`` local views, each ``(B, T, 3, local_size, local_size)``."""
        return list(self.local_views.unbind(1))


class ClipViews:
    """Callable building :class:`DoraViews` from frames ``(B, T, 3, H, W)``, uint8 or float in [0, 1].

    ``views = ClipViews()(frames, generator)``; the output is on the frames' device.
    """

    def __init__(self, config: ClipViewsConfig | None = None) -> None:
        self.config = config or ClipViewsConfig()
        self.global_color = self.config.color_augment(local=False)
        self.local_color = self.config.color_augment(local=True)

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> DoraViews:
        b, t, _, h, w = _check_frames(frames)
        return self.render(frames, self.sample_params(b, t, h, w, generator))

    def sample_params(
        self, batch: int, frames: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> ViewParams:
        """Draw all random choices for ``batch`` clips of ``frames`` frames of ``height x width``.

        ``generator`` must be a CPU generator (``None`` uses torch's global CPU generator).
        """
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("ClipViews draws its random choices on the CPU: pass a CPU torch.Generator")
        if batch < 1 or frames < 1:
            raise ValueError(f"need at least one clip of one frame, got batch={batch}, frames={frames}")
        cfg = self.config
        size = cfg.clip_size
        clip_boxes = sample_boxes((batch,), height, width, cfg.clip_scale, cfg.ratio, generator)
        global_boxes = sample_boxes((batch,), size, size, cfg.global_scale, cfg.ratio, generator)
        global_flips = torch.rand(batch, generator=generator) < cfg.flip_p
        local_shape = (batch, cfg.num_local_views, frames)
        local_boxes = sample_boxes(local_shape, size, size, cfg.local_scale, cfg.ratio, generator)
        return ViewParams(
            clip_boxes=clip_boxes,
            global_boxes=global_boxes,
            global_flips=global_flips,
            local_boxes=local_boxes,
            global_color=self.global_color.sample((batch, frames), generator),
            local_color=self.local_color.sample(local_shape, generator),
        )

    @torch.no_grad()
    def render(self, frames: Tensor, params: ViewParams) -> DoraViews:
        """Apply ``params`` to ``frames``: crops and resizes, then photometric ops, then normalisation."""
        b, t, c, h, w = _check_frames(frames)
        cfg = self.config
        n_local = cfg.num_local_views
        if params.clip_boxes.shape[0] != b or params.local_boxes.shape[1:3] != (n_local, t):
            raise ValueError("view parameters were drawn for another batch shape")
        frame_ids = torch.arange(b * t)
        gain = 1.0 / 255.0 if frames.dtype == torch.uint8 else 1.0  # uint8 is scaled inside the first pass

        # Clip crop: one box per clip, shared by its frames. It is left transposed, (N, C, W, H),
        # so that the next two resamplings, which filter columns first, return upright views.
        clip_t = resample_transposed(
            frames.reshape(b * t, c, h, w),
            frame_ids,
            _per_frame(_axis_taps(params.clip_boxes, 0, cfg.clip_size, "bilinear", cfg.clip_antialias), t),
            _per_frame(_axis_taps(params.clip_boxes, 1, cfg.clip_size, "bilinear", cfg.clip_antialias), t),
            gain=gain,
        )

        # Global views: one box and one flip per clip.
        g_cols = _axis_taps(params.global_boxes, 1, cfg.global_size, "bilinear", cfg.global_antialias)
        global_views = resample_transposed(
            clip_t,
            frame_ids,
            _per_frame(flip_taps(g_cols, params.global_flips), t),
            _per_frame(_axis_taps(params.global_boxes, 0, cfg.global_size, "bilinear", cfg.global_antialias), t),
        )

        # Local views: one box per (clip, local view, frame), read from that frame's clip crop.
        if n_local:
            local_source = (torch.arange(b).view(b, 1, 1) * t + torch.arange(t).view(1, 1, t)).expand(b, n_local, t)
            local_views = resample_transposed(
                clip_t,
                local_source.reshape(-1),
                _flat(_axis_taps(params.local_boxes, 1, cfg.local_size, "bicubic", cfg.local_antialias)),
                _flat(_axis_taps(params.local_boxes, 0, cfg.local_size, "bicubic", cfg.local_antialias)),
            ).clamp_(0.0, 1.0)  # bicubic overshoots; the reference's PIL output is clipped to [0, 255]
        else:
            local_views = clip_t.new_empty((0, c, cfg.local_size, cfg.local_size))

        global_views = self._finish(self.global_color, global_views, params.global_color)
        local_views = self._finish(self.local_color, local_views, params.local_color)
        return DoraViews(
            global_views=global_views.view(b, t, c, cfg.global_size, cfg.global_size),
            local_views=local_views.view(b, n_local, t, c, cfg.local_size, cfg.local_size),
            params=params,
        )

    def _finish(self, augment: ColorAugment, images: Tensor, params: ColorParams) -> Tensor:
        """Photometric augmentation, then ImageNet normalisation."""
        images = augment.apply(images, params)
        std = torch.tensor(self.config.std, dtype=torch.float64)
        scale = (1.0 / std).to(torch.float32).view(1, 3, 1, 1)
        shift = (-torch.tensor(self.config.mean, dtype=torch.float64) / std).to(torch.float32).view(1, 3, 1, 1)
        # (x - mean) / std as one fused pass: x * (1 / std) - mean / std.
        return torch.addcmul(shift.to(images.device), images, scale.to(images.device))


def _check_frames(frames: Tensor) -> tuple[int, int, int, int, int]:
    """Validate the frames tensor and return its shape."""
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise ValueError(f"frames must be uint8 or float in [0, 1], got {frames.dtype}")
    b, t, c, h, w = frames.shape
    return b, t, c, h, w


def _axis_taps(boxes: Tensor, axis: int, out_size: int, mode: Interpolation, antialias: bool) -> Taps:
    """Resize taps along rows (``axis=0``: top, height) or columns (``axis=1``: left, width)."""
    return resize_taps(boxes[..., axis], boxes[..., axis + 2], out_size, mode, antialias)


def _per_frame(taps: Taps, frames: int) -> Taps:
    """Repeat clip-level taps ``(B, out, K)`` for every frame: ``(B * T, out, K)``."""
    index, weight = (x.unsqueeze(1).expand(x.shape[0], frames, *x.shape[1:]).flatten(0, 1) for x in taps)
    return index, weight


def _flat(taps: Taps) -> Taps:
    """Taps ``(*S, out, K)`` with the batch shape flattened: ``(prod(S), out, K)``."""
    index, weight = (x.reshape(-1, *x.shape[-2:]) for x in taps)
    return index, weight
