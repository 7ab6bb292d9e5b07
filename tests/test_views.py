"""DoRA clip views (DORA_SPEC §2): shapes, what is shared per clip or drawn per frame, geometry
against naive per-image references, colour operations against their formulas, box statistics
and determinism."""

from __future__ import annotations

import colorsys
import dataclasses
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from dora_hf.views.color_augment import (
    ColorParams,
    _gaussian_blur_taps,
    adjust_hue,
    color_jitter,
    gaussian_blur,
    select_params,
    working_order,
)
from dora_hf.views.crop_boxes import boxes_from_uniforms, draw_box_uniforms, sample_boxes
from dora_hf.views.resample import resize_taps, separable_resample
from dora_hf.views.dora_views import IMAGENET_MEAN, IMAGENET_STD, ClipViews, ClipViewsConfig, DoraViews, ViewParams

NO_COLOR = {"jitter_p": 0.0, "grayscale_p": 0.0, "global_blur_p": 0.0, "local_blur_p": 0.0}
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def random_frames(b: int, t: int, h: int = 54, w: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, h, w), generator=g, dtype=torch.uint8)


def repeated_frames(b: int, t: int, h: int = 54, w: int = 96) -> torch.Tensor:
    """``b`` clips whose ``t`` frames are all the same image."""
    return random_frames(1, 1, h, w).expand(b, t, 3, h, w).contiguous()


def without_color(params: ViewParams) -> ViewParams:
    """The same views with every photometric operation switched off."""

    def off(c: ColorParams) -> ColorParams:
        no = torch.zeros_like(c.jitter)
        return dataclasses.replace(c, jitter=no, grayscale=no, blur=no)

    return dataclasses.replace(params, global_color=off(params.global_color), local_color=off(params.local_color))


def views_for(config: ClipViewsConfig, frames: torch.Tensor, seed: int = 0) -> DoraViews:
    return ClipViews(config)(frames, torch.Generator().manual_seed(seed))


# --- output ------------------------------------------------------------------------------------


def test_shapes_dtypes_and_params() -> None:
    frames = random_frames(2, 3)
    views = views_for(ClipViewsConfig(), frames)
    assert views.global_views.shape == (2, 3, 3, 224, 224)
    assert views.local_views.shape == (2, 6, 3, 3, 112, 112)
    assert views.global_views.dtype == views.local_views.dtype == torch.float32
    assert views.global_views.is_contiguous() and views.local_views.is_contiguous()
    locals_ = views.locals_list()
    assert len(locals_) == 6 and all(v.shape == (2, 3, 3, 112, 112) for v in locals_)
    assert torch.equal(locals_[4], views.local_views[:, 4])
    p = views.params
    assert p.clip_boxes.shape == (2, 4) and p.global_boxes.shape == (2, 4)
    assert p.global_flips.shape == (2,) and p.local_boxes.shape == (2, 6, 3, 4)
    assert p.global_color.jitter.shape == (2, 3) and p.local_color.factors.shape == (2, 6, 3, 4)
    assert torch.isfinite(views.global_views).all() and torch.isfinite(views.local_views).all()


def test_uint8_and_float_frames_give_the_same_views() -> None:
    frames = random_frames(2, 2)
    cfg = ClipViewsConfig(num_local_views=2)
    a = views_for(cfg, frames, seed=3)
    b = views_for(cfg, frames.float() / 255.0, seed=3)
    torch.testing.assert_close(a.global_views, b.global_views, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.local_views, b.local_views, atol=1e-5, rtol=0)


def test_bad_inputs_are_refused() -> None:
    views = ClipViews()
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        views(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8 or float"):
        views(torch.zeros(1, 2, 3, 32, 32, dtype=torch.int32))
    params = views.sample_params(2, 2, 32, 32)
    with pytest.raises(ValueError, match="another batch shape"):
        views.render(torch.zeros(1, 2, 3, 32, 32), params)


def test_config_from_dict_coerces_lists_and_refuses_unknown_keys() -> None:
    cfg = ClipViewsConfig.from_dict({"clip_scale": [0.3, 1.0], "num_local_views": 2})
    assert cfg.clip_scale == (0.3, 1.0) and cfg.num_local_views == 2
    with pytest.raises(ValueError, match="unknown ClipViewsConfig keys: clip_szie"):
        ClipViewsConfig.from_dict({"clip_szie": 300})
    with pytest.raises(ValueError, match="probability"):
        ClipViewsConfig(jitter_p=1.5)


# --- what is shared by a clip, what is drawn per frame ---------------------------------------------


def test_global_views_share_box_and_flip_within_a_clip_but_not_across_clips() -> None:
    frames = repeated_frames(2, 4)  # every frame of both clips is the same image
    views = views_for(ClipViewsConfig(**NO_COLOR), frames, seed=1)
    g = views.global_views
    for b in range(2):
        for t in range(1, 4):
            torch.testing.assert_close(g[b, t], g[b, 0], atol=0, rtol=0)
    assert not torch.equal(views.params.clip_boxes[0], views.params.clip_boxes[1])
    assert (g[0, 0] - g[1, 0]).abs().max() > 0.1


def test_local_crops_are_drawn_per_frame() -> None:
    frames = repeated_frames(2, 4)
    views = views_for(ClipViewsConfig(**NO_COLOR), frames, seed=2)
    loc = views.local_views  # (B, L, T, 3, h, w)
    boxes = views.params.local_boxes  # (B, L, T, 4)
    for b in range(2):
        for v in range(6):
            assert len({tuple(box.tolist()) for box in boxes[b, v]}) == 4
            for t in range(1, 4):
                assert (loc[b, v, t] - loc[b, v, 0]).abs().max() > 0.1


def test_photometric_choices_are_drawn_per_frame() -> None:
    frames = repeated_frames(1, 6)
    cfg = ClipViewsConfig(jitter_p=1.0, grayscale_p=0.0, global_blur_p=0.0, local_blur_p=0.0, num_local_views=1)
    views = views_for(cfg, frames, seed=4)
    g = views.global_views[0]
    assert all((g[t] - g[0]).abs().max() > 1e-3 for t in range(1, 6))


# --- geometry against naive references ---------------------------------------------------------------


def naive_views(frames: torch.Tensor, params: ViewParams, cfg: ClipViewsConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference pipeline without colour, one image at a time with F.interpolate."""
    b_, t_ = frames.shape[:2]
    n_local = params.local_boxes.shape[1]

    def crop(img: torch.Tensor, box: torch.Tensor, size: int, mode: str, aa: bool) -> torch.Tensor:
        i, j, h, w = box.tolist()
        patch = img[None, :, i : i + h, j : j + w]
        return F.interpolate(patch, size=(size, size), mode=mode, align_corners=False, antialias=aa)[0]

    glob = torch.empty(b_, t_, 3, cfg.global_size, cfg.global_size)
    loc = torch.empty(b_, n_local, t_, 3, cfg.local_size, cfg.local_size)
    for b in range(b_):
        for t in range(t_):
            img = frames[b, t].float() / 255.0
            clip = crop(img, params.clip_boxes[b], cfg.clip_size, "bilinear", cfg.clip_antialias)
            g = crop(clip, params.global_boxes[b], cfg.global_size, "bilinear", cfg.global_antialias)
            if params.global_flips[b]:
                g = g.flip(-1)
            glob[b, t] = (g - MEAN) / STD
            for v in range(n_local):
                lv = crop(clip, params.local_boxes[b, v, t], cfg.local_size, "bicubic", cfg.local_antialias)
                loc[b, v, t] = (lv.clamp(0, 1) - MEAN) / STD
    return glob, loc


@pytest.mark.parametrize("antialias", [False, True])
def test_views_match_a_naive_per_frame_pipeline(antialias: bool) -> None:
    cfg = ClipViewsConfig(
        **NO_COLOR, num_local_views=2, clip_antialias=antialias, global_antialias=antialias, local_antialias=antialias
    )
    frames = random_frames(2, 2, h=360, w=640)  # the clip crop shrinks some boxes and enlarges others
    views = ClipViews(cfg)
    params = views.sample_params(2, 2, 360, 640, torch.Generator().manual_seed(5))
    params.global_flips = torch.tensor([True, False])
    out = views.render(frames, params)
    glob, loc = naive_views(frames, params, cfg)
    # F.interpolate computes source coordinates in float32, the taps in float64: up to 1e-4
    # apart after normalisation (2.5e-5 of the [0, 1] range, 1/150 of a uint8 level).
    torch.testing.assert_close(out.global_views, glob, atol=2e-4, rtol=0)
    torch.testing.assert_close(out.local_views, loc, atol=2e-4, rtol=0)


@pytest.mark.parametrize("antialias", [False, True])
def test_batched_route_matches_a_naive_per_frame_pipeline(antialias: bool) -> None:
    """The whole-batch route (the one used off the CPU), run on the CPU."""
    cfg = ClipViewsConfig(
        **NO_COLOR, num_local_views=2, clip_antialias=antialias, global_antialias=antialias, local_antialias=antialias
    )
    frames = random_frames(2, 2, h=360, w=640)
    views = ClipViews(cfg)
    params = views.sample_params(2, 2, 360, 640, torch.Generator().manual_seed(5))
    params.global_flips = torch.tensor([True, False])
    out = views._render_batched(frames, params)
    glob, loc = naive_views(frames, params, cfg)
    torch.testing.assert_close(out.global_views, glob, atol=2e-4, rtol=0)
    torch.testing.assert_close(out.local_views, loc, atol=2e-4, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(30, 40), (300, 300), (90, 700)])
def test_views_match_a_naive_pipeline_for_small_square_and_wide_frames(h: int, w: int) -> None:
    cfg = ClipViewsConfig(**NO_COLOR, num_local_views=3)
    frames = random_frames(2, 3, h=h, w=w, seed=h + w)
    views = ClipViews(cfg)
    params = views.sample_params(2, 3, h, w, torch.Generator().manual_seed(w))
    out = views.render(frames, params)
    glob, loc = naive_views(frames, params, cfg)
    torch.testing.assert_close(out.global_views, glob, atol=2e-4, rtol=0)
    torch.testing.assert_close(out.local_views, loc, atol=2e-4, rtol=0)


@pytest.mark.parametrize("frame_dtype", [torch.uint8, torch.float32])
def test_cpu_and_batched_routes_agree_with_every_operation(frame_dtype: torch.dtype) -> None:
    cfg = ClipViewsConfig(jitter_p=0.7, grayscale_p=0.4, global_blur_p=0.6, local_blur_p=0.6, num_local_views=4)
    frames = random_frames(3, 4, h=120, w=200)
    if frame_dtype == torch.float32:
        frames = frames.float() / 255.0
    views = ClipViews(cfg)
    params = views.sample_params(3, 4, 120, 200, torch.Generator().manual_seed(21))
    cpu = views.render(frames, params)
    batched = views._render_batched(frames, params)
    torch.testing.assert_close(cpu.global_views, batched.global_views, atol=2e-5, rtol=0)
    torch.testing.assert_close(cpu.local_views, batched.local_views, atol=2e-5, rtol=0)


def test_flip_mirrors_the_global_view() -> None:
    views = ClipViews(ClipViewsConfig(**NO_COLOR, num_local_views=1))
    frames = random_frames(2, 2)
    params = views.sample_params(2, 2, 54, 96, torch.Generator().manual_seed(6))
    params.global_flips = torch.tensor([True, True])
    flipped = views.render(frames, params).global_views
    params.global_flips = torch.tensor([False, False])
    upright = views.render(frames, params).global_views
    torch.testing.assert_close(flipped, upright.flip(-1), atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
def test_batched_crop_resize_matches_per_crop_interpolate(mode: str, antialias: bool) -> None:
    g = torch.Generator().manual_seed(7)
    images = torch.rand(3, 3, 40, 70, generator=g)
    # Crops from 1 pixel to the whole image: shrinking, enlarging, both.
    boxes = torch.tensor(
        [[0, 0, 40, 70], [5, 9, 1, 1], [3, 4, 13, 50], [20, 60, 20, 10], [1, 2, 38, 3], [0, 10, 40, 35]]
    )
    source = torch.tensor([0, 1, 2, 0, 1, 2])
    out_h, out_w = 17, 29
    rows = resize_taps(boxes[:, 0], boxes[:, 2], out_h, mode, antialias)  # type: ignore[arg-type]
    cols = resize_taps(boxes[:, 1], boxes[:, 3], out_w, mode, antialias)  # type: ignore[arg-type]
    batched = separable_resample(images, source, rows, cols)
    for n, (i, j, h, w) in enumerate(boxes.tolist()):
        patch = images[source[n], None, :, i : i + h, j : j + w]
        ref = F.interpolate(patch, size=(out_h, out_w), mode=mode, align_corners=False, antialias=antialias)[0]
        torch.testing.assert_close(batched[n], ref, atol=2e-5, rtol=0)


# --- colour ------------------------------------------------------------------------------------------


def test_constant_colour_maps_to_normalised_constant() -> None:
    colour = torch.tensor([200, 100, 50], dtype=torch.uint8)
    frames = colour.view(1, 1, 3, 1, 1).expand(2, 3, 3, 40, 70).contiguous()
    views = views_for(ClipViewsConfig(**NO_COLOR), frames)
    expected = ((colour.float() / 255.0).view(3, 1, 1) - MEAN) / STD
    torch.testing.assert_close(views.global_views, expected.expand_as(views.global_views), atol=1e-5, rtol=0)
    torch.testing.assert_close(views.local_views, expected.expand_as(views.local_views), atol=1e-5, rtol=0)


def test_grayscale_gives_equal_channels() -> None:
    cfg = ClipViewsConfig(**{**NO_COLOR, "grayscale_p": 1.0})
    views = views_for(cfg, random_frames(2, 2))
    for x in (unnormalise(views.global_views), unnormalise(views.local_views)):
        torch.testing.assert_close(x[..., 0, :, :], x[..., 1, :, :], atol=1e-5, rtol=0)
        torch.testing.assert_close(x[..., 0, :, :], x[..., 2, :, :], atol=1e-5, rtol=0)


def test_brightness_jitter_scales_and_clamps() -> None:
    cfg = ClipViewsConfig(**{**NO_COLOR, "jitter_p": 1.0}, contrast=0.0, saturation=0.0, hue=0.0)
    frames = random_frames(2, 3)
    views = ClipViews(cfg)
    params = views.sample_params(2, 3, 54, 96, torch.Generator().manual_seed(8))
    jittered = views.render(frames, params)
    plain = views.render(frames, without_color(params))
    f_global = params.global_color.factors[..., 0].view(2, 3, 1, 1, 1)
    assert not torch.allclose(f_global, torch.ones(())) and bool((params.global_color.jitter).all())
    expected = (f_global * unnormalise(plain.global_views)).clamp(0, 1)
    torch.testing.assert_close(unnormalise(jittered.global_views), expected, atol=1e-5, rtol=0)
    f_local = params.local_color.factors[..., 0].view(2, 6, 3, 1, 1, 1)
    expected = (f_local * unnormalise(plain.local_views)).clamp(0, 1)
    torch.testing.assert_close(unnormalise(jittered.local_views), expected, atol=1e-5, rtol=0)


def _naive_jitter(img: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    """torchvision's ColorJitter on one float image, ops in ``order``, hue through colorsys."""
    weights = torch.tensor([0.2989, 0.587, 0.114]).view(3, 1, 1)
    for op in order:
        f = factors[op]
        grey = (img * weights).sum(0, keepdim=True)
        if op == 0:
            img = (f * img).clamp(0, 1)
        elif op == 1:
            img = (f * img + (1 - f) * grey.mean()).clamp(0, 1)
        elif op == 2:
            img = (f * img + (1 - f) * grey).clamp(0, 1)
        else:
            out = torch.empty_like(img)
            for y in range(img.shape[1]):
                for x in range(img.shape[2]):
                    h, s, v = colorsys.rgb_to_hsv(*img[:, y, x].tolist())
                    out[:, y, x] = torch.tensor(colorsys.hsv_to_rgb((h + f) % 1.0, s, v))
            img = out
    return img


def test_color_jitter_in_random_order_matches_sequential_reference() -> None:
    g = torch.Generator().manual_seed(9)
    n = 30
    images = torch.rand(n, 3, 4, 5, generator=g)
    images[0] = 0.5  # grey: hue is undefined and must stay grey
    images[1, :, 0, 0] = torch.tensor([0.9, 0.9, 0.2])  # a tie between the largest channels
    factors = torch.stack(
        [
            0.6 + 0.8 * torch.rand(n, generator=g),
            0.6 + 0.8 * torch.rand(n, generator=g),
            0.8 + 0.4 * torch.rand(n, generator=g),
            -0.1 + 0.2 * torch.rand(n, generator=g),
        ],
        dim=1,
    )
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    batched = color_jitter(images.clone(), factors, order)
    for i in range(n):
        ref = _naive_jitter(images[i], factors[i].tolist(), order[i].tolist())
        torch.testing.assert_close(batched[i], ref, atol=1e-5, rtol=0)


def assert_hue_rotation_matches_colorsys(images: torch.Tensor, hue: torch.Tensor) -> None:
    """`adjust_hue` against Python's colorsys, pixel by pixel."""
    out = adjust_hue(images, hue)
    n, _, height, width = images.shape
    for i in range(n):
        for y in range(height):
            for x in range(width):
                h, s, v = colorsys.rgb_to_hsv(*images[i, :, y, x].tolist())
                ref = torch.tensor(colorsys.hsv_to_rgb((h + hue[i].item()) % 1.0, s, v))
                torch.testing.assert_close(out[i, :, y, x], ref, atol=1e-5, rtol=0)


def test_hue_rotation_matches_colorsys() -> None:
    g = torch.Generator().manual_seed(10)
    images = torch.rand(4, 3, 6, 6, generator=g)
    hue = torch.tensor([0.1, -0.1, 0.5, 0.0])
    assert_hue_rotation_matches_colorsys(images, hue)


def test_hue_rotation_matches_colorsys_over_the_whole_range() -> None:
    g = torch.Generator().manual_seed(22)
    images = torch.rand(64, 3, 3, 3, generator=g)
    images[:8, 1] = images[:8, 0]  # ties between the largest (or smallest) channels
    images[8:12] = images[8:12, :1]  # grey pixels
    hue = torch.rand(64, generator=g) - 0.5  # the whole allowed range, [-0.5, 0.5)
    hue[-2:] = torch.tensor([-0.5, 0.5])
    assert_hue_rotation_matches_colorsys(images, hue)


def test_gaussian_blur_matches_per_image_convolution() -> None:
    g = torch.Generator().manual_seed(11)
    images = torch.rand(3, 3, 20, 24, generator=g)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    radius = 6
    out = gaussian_blur(images, sigma, radius)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    for i in range(3):
        k = torch.exp(-0.5 * (x / sigma[i]) ** 2)
        k = k / k.sum()
        kernel = (k[:, None] * k[None, :]).expand(3, 1, -1, -1)
        padded = F.pad(images[i : i + 1], (radius,) * 4, mode="reflect")
        ref = F.conv2d(padded, kernel, groups=3)[0]
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(20, 24), (5, 9)])
def test_gathered_taps_blur_matches_the_convolution_blur(size: tuple[int, int]) -> None:
    """The blur used off the CPU (and for images no larger than the radius) against the CPU one."""
    g = torch.Generator().manual_seed(23)
    images = torch.rand(4, 3, *size, generator=g)
    sigma = torch.tensor([0.1, 0.7, 1.4, 2.0])
    taps = _gaussian_blur_taps(images, sigma, 6)
    if min(size) > 6:
        torch.testing.assert_close(taps, gaussian_blur(images, sigma, 6), atol=1e-6, rtol=0)
    x = torch.arange(-6, 7, dtype=torch.float64)
    for i in range(4):  # reflect padding by index, valid for any size
        k = torch.exp(-0.5 * (x / float(sigma[i])) ** 2)
        k = (k / k.sum()).float()
        rows = [min(abs(j), 2 * (size[0] - 1) - abs(j)) for j in range(-6, size[0] + 6)]
        cols = [min(abs(j), 2 * (size[1] - 1) - abs(j)) for j in range(-6, size[1] + 6)]
        rows = [min(max(j, 0), size[0] - 1) for j in rows]
        cols = [min(max(j, 0), size[1] - 1) for j in cols]
        padded = images[i][:, rows][:, :, cols]
        ref = F.conv2d(padded[:, None], (k[:, None] * k[None, :])[None, None])[:, 0]
        torch.testing.assert_close(taps[i], ref, atol=1e-5, rtol=0)


def test_working_order_makes_every_subset_contiguous() -> None:
    params = ClipViewsConfig().color_augment(local=True).sample((500,), torch.Generator().manual_seed(24))
    order = working_order(params)
    assert sorted(order.tolist()) == list(range(500))
    p = select_params(params, order)
    blur = p.blur.to(torch.int64)
    assert bool((blur.diff() >= 0).all())  # blurred images last
    rank = (p.order == 3).to(torch.int64).argmax(1)
    rank = torch.where(p.jitter, rank, torch.full_like(rank, 4))
    for part in (rank[blur == 0], rank[blur == 1]):
        assert bool((part.diff() >= 0).all())  # by where hue falls in the jitter order


@pytest.mark.parametrize("local", [False, True])
def test_normalized_photometric_ops_equal_apply_then_normalisation(local: bool) -> None:
    """Blur before grayscale, grayscale folded into normalisation, working order, scatter."""
    aug = ClipViewsConfig(grayscale_p=0.5, global_blur_p=0.5, local_blur_p=0.5).color_augment(local=local)
    g = torch.Generator().manual_seed(25)
    images = torch.rand(40, 3, 16, 20, generator=g)
    params = aug.sample((40,), g)
    scale, shift = 1.0 / STD.view(3), -(MEAN / STD).view(3)
    expected = (aug.apply(images.clone(), params) - MEAN) / STD
    torch.testing.assert_close(aug.apply_normalized(images.clone(), params, scale, shift), expected, atol=1e-5, rtol=0)


def test_blur_probability_selects_images() -> None:
    cfg = ClipViewsConfig(**{**NO_COLOR, "global_blur_p": 1.0})
    frames = random_frames(2, 2)
    views = ClipViews(cfg)
    params = views.sample_params(2, 2, 54, 96, torch.Generator().manual_seed(12))
    blurred = unnormalise(views.render(frames, params).global_views)
    sharp = unnormalise(views.render(frames, without_color(params)).global_views)
    expected = gaussian_blur(sharp.flatten(0, 1), params.global_color.sigma.flatten(), cfg.blur_radius)
    torch.testing.assert_close(blurred.flatten(0, 1), expected, atol=1e-5, rtol=0)


def test_color_params_probabilities() -> None:
    params: ColorParams = ClipViewsConfig().color_augment(local=True).sample((4000,), torch.Generator().manual_seed(13))
    assert abs(params.jitter.float().mean().item() - 0.8) < 0.03
    assert abs(params.grayscale.float().mean().item() - 0.2) < 0.03
    assert abs(params.blur.float().mean().item() - 0.5) < 0.03
    lo = torch.tensor([0.6, 0.6, 0.8, -0.1])
    hi = torch.tensor([1.4, 1.4, 1.2, 0.1])
    assert bool(((params.factors >= lo) & (params.factors <= hi)).all())
    assert bool(((params.sigma >= 0.1) & (params.sigma <= 2.0)).all())
    assert len({tuple(o) for o in params.order.tolist()}) == 24  # all orders occur


# --- crop boxes ----------------------------------------------------------------------------------------


def _torchvision_get_params(
    u: list[float], height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, with its random numbers taken from ``u``."""
    attempts = (len(u) - 2) // 2
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(attempts):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[k])
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[attempts + k])
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(math.floor(u[-2] * (height - h + 1)))
            j = int(math.floor(u[-1] * (width - w + 1)))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [
        (216, 384, (0.2, 1.0)),
        (300, 300, (0.05, 0.4)),
        (40, 400, (0.8, 1.0)),  # wide: attempts often fail, then the centred fallback
        (400, 30, (0.5, 1.0)),  # tall
        (50, 60, (0.9, 1.0)),
    ],
)
def test_boxes_follow_torchvision_get_params(height: int, width: int, scale: tuple[float, float]) -> None:
    ratio = (3 / 4, 4 / 3)
    u = draw_box_uniforms((500,), torch.Generator().manual_seed(14))
    boxes = boxes_from_uniforms(u, height, width, scale, ratio)
    for n in range(500):
        assert tuple(boxes[n].tolist()) == _torchvision_get_params(u[n].tolist(), height, width, scale, ratio)


def test_box_statistics() -> None:
    height, width, scale, ratio = 300, 300, (0.05, 0.4), (3 / 4, 4 / 3)
    boxes = sample_boxes((20000,), height, width, scale, ratio, torch.Generator().manual_seed(15)).double()
    top, left, h, w = boxes.unbind(-1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width) & (h >= 1) & (w >= 1)).all())
    # Rounding moves each side by at most half a pixel.
    area_hi = (w + 0.5) * (h + 0.5) / (height * width)
    area_lo = (w - 0.5) * (h - 0.5) / (height * width)
    assert bool(((area_hi >= scale[0]) & (area_lo <= scale[1])).all())
    assert bool((((w + 0.5) / (h - 0.5) >= ratio[0]) & ((w - 0.5) / (h + 0.5) <= ratio[1])).all())
    # Every first attempt fits here, so the area fraction is uniform on the scale range, the
    # log-aspect uniform around 0 and the position uniform over the free room.
    frac = w * h / (height * width)
    assert abs(frac.mean().item() - sum(scale) / 2) < 0.005
    assert abs(torch.log(w / h).mean().item()) < 0.01
    assert abs((top / (height - h + 1)).mean().item() - 0.5) < 0.01
    assert abs((left / (width - w + 1)).mean().item() - 0.5) < 0.01


def test_fallback_is_the_centred_crop() -> None:
    # A 10x1000 strip: no box with an allowed aspect and area >= 0.5 fits, ever.
    boxes = sample_boxes((50,), 10, 1000, (0.5, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(16))
    assert bool((boxes == torch.tensor([0, (1000 - 13) // 2, 10, 13])).all())


# --- determinism and devices ------------------------------------------------------------------------------


def test_same_seed_same_views_other_seed_other_views() -> None:
    frames = random_frames(2, 2)
    cfg = ClipViewsConfig(num_local_views=2)
    a = views_for(cfg, frames, seed=17)
    b = views_for(cfg, frames, seed=17)
    c = views_for(cfg, frames, seed=18)
    assert torch.equal(a.global_views, b.global_views) and torch.equal(a.local_views, b.local_views)
    for field in dataclasses.fields(ViewParams):
        x, y = getattr(a.params, field.name), getattr(b.params, field.name)
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
    assert not torch.equal(a.global_views, c.global_views)
    torch.manual_seed(0)
    d = ClipViews(cfg)(frames)
    torch.manual_seed(0)
    e = ClipViews(cfg)(frames)
    assert torch.equal(d.local_views, e.local_views)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    frames = random_frames(2, 3, h=216, w=384)
    cpu = views_for(ClipViewsConfig(), frames, seed=19)
    cuda = views_for(ClipViewsConfig(), frames.cuda(), seed=19)
    assert cuda.global_views.device.type == "cuda"
    torch.testing.assert_close(cuda.global_views.cpu(), cpu.global_views, atol=1e-4, rtol=0)
    torch.testing.assert_close(cuda.local_views.cpu(), cpu.local_views, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("jitter", "grey", "blur"), [(0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (0.5, 1.0, 0.5)])
def test_all_photometric_operations_together(jitter: float, grey: float, blur: float) -> None:
    cfg = ClipViewsConfig(jitter_p=jitter, grayscale_p=grey, global_blur_p=blur, local_blur_p=blur, num_local_views=2)
    views = views_for(cfg, random_frames(2, 3), seed=20)
    for x in (unnormalise(views.global_views), unnormalise(views.local_views)):
        assert torch.isfinite(x).all()
        assert x.min() >= -1e-5 and x.max() <= 1 + 1e-5


def test_no_local_views() -> None:
    views = views_for(ClipViewsConfig(num_local_views=0), random_frames(2, 2))
    assert views.local_views.shape == (2, 0, 2, 3, 112, 112) and views.locals_list() == []
    assert views.global_views.shape == (2, 2, 3, 224, 224)


def test_views_and_the_step_import_without_pyav_or_datasets() -> None:
    # The views are plain torch: a process without PyAV and `datasets` (a GPU image, say) can
    # import them and the training step; the video and shard tools load those on first use.
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("av", "datasets"):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, Block())
        import torch
        from dora_hf.views.dora_views import ClipViews
        from dora_hf.training.step import DoraTrainingStep  # noqa: F401
        views = ClipViews()(torch.zeros(1, 2, 3, 320, 400, dtype=torch.uint8), torch.Generator().manual_seed(0))
        assert views.global_views.shape == (1, 2, 3, 224, 224)
        assert "av" not in sys.modules and "datasets" not in sys.modules
        try:
            from dora_hf.prepare import prepare_dataset  # noqa: F401
        except ModuleNotFoundError as err:
            print("lazy:", err)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lazy: No module named 'av'" in done.stdout or "lazy: No module named 'datasets'" in done.stdout
