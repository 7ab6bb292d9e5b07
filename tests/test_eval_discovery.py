"""Label-free object discovery: the moving foreground of a static-camera video, every score
against a plain loop, masks exactly on the moving squares (precision and IoU ~1) against random
masks (precision ~ the foreground share), and `dora-hf eval discovery` with a tiny DoRA."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora

from dora_hf.cli import main as cli_main
from dora_hf.evaluation.discovery.scoring import (
    best_region_iou,
    centre_square,
    clip_starts,
    connected_components,
    dilate,
    downscale,
    erode,
    evaluate_discovery,
    foreground_masks,
    mask_precision,
    mutual_iou,
    random_masks_like,
    temporal_iou,
)
from dora_hf.evaluation.protocols import DiscoverySettings

HEIGHT, WIDTH, SIDE = 64, 96, 14


def square_positions(t: int) -> list[tuple[int, int]]:
    """Top-left corners of the two squares in frame t: one moves right, one left, on their own rows."""
    return [(8, (4 + 3 * t) % (WIDTH - SIDE)), (40, (WIDTH - SIDE - 1) - (2 * t) % (WIDTH - SIDE))]


def synthetic_clip(num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `(T, 3, H, W)` frames (static textured background, two bright squares) and their true foreground."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([40 + rows, 50 + cols // 2, 60 + (rows + cols) // 4], axis=-1).astype(np.uint8)
    frames, truth = [], []
    for t in range(num_frames):
        image, mask = background.copy(), np.zeros((HEIGHT, WIDTH), dtype=bool)
        for (y, x), colour in zip(square_positions(t), [(250, 30, 30), (30, 250, 240)]):
            image[y : y + SIDE, x : x + SIDE] = colour
            mask[y : y + SIDE, x : x + SIDE] = True
        frames.append(image)
        truth.append(mask)
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack(truth))


def write_video(path: Path, frames: torch.Tensor) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv444p"
        stream.options = {"crf": "4", "preset": "ultrafast"}
        for frame in frames.permute(0, 2, 3, 1).numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def squares_video(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    frames, truth = synthetic_clip(48)
    return write_video(tmp_path_factory.mktemp("discovery") / "squares.mp4", frames), truth


def plain_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros_like(mask)
    height, width = mask.shape
    for y in range(height):
        for x in range(width):
            out[y, x] = mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].any()
    return out


def plain_erode(mask: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros_like(mask)
    height, width = mask.shape
    for y in range(height):
        for x in range(width):
            out[y, x] = mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].all()
    return out


def plain_components(mask: np.ndarray) -> list[set[tuple[int, int]]]:
    """8-connected regions by flood fill."""
    seen, regions = np.zeros_like(mask), []
    height, width = mask.shape
    for y0 in range(height):
        for x0 in range(width):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            stack, region = [(y0, x0)], set()
            seen[y0, x0] = True
            while stack:
                y, x = stack.pop()
                region.add((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            regions.append(region)
    return regions


def plain_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float("nan") if union == 0 else np.logical_and(a, b).sum() / union


def blobby_masks(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Random masks with regions of several pixels (dilated sparse seeds), some frames empty."""
    seeds = torch.rand(shape, generator=generator) > 0.97
    return dilate(seeds, 1)


def test_erosion_and_dilation_equal_a_plain_loop() -> None:
    mask = torch.rand(3, 20, 23, generator=torch.Generator().manual_seed(0)) > 0.6
    for radius in (1, 2):
        for t in range(3):
            np.testing.assert_array_equal(dilate(mask, radius)[t].numpy(), plain_dilate(mask[t].numpy(), radius))
            np.testing.assert_array_equal(erode(mask, radius)[t].numpy(), plain_erode(mask[t].numpy(), radius))


def test_the_foreground_of_a_static_camera_is_exactly_the_moving_squares() -> None:
    frames, truth = synthetic_clip(40)
    foreground = foreground_masks(frames, DiscoverySettings(window=21))
    assert torch.equal(foreground, truth)
    # A speck of noise smaller than the opening is not foreground; a bigger patch is.
    noisy = frames.clone()
    noisy[5, :, 30, 50] = 255
    noisy[5, :, 30:34, 60:64] = 255
    speckled = foreground_masks(noisy, DiscoverySettings(window=21))
    assert not speckled[5, 30, 50] and speckled[5, 30:34, 60:64].all()


def test_connected_components_equal_a_flood_fill() -> None:
    mask = blobby_masks(torch.Generator().manual_seed(1), (2, 30, 40))
    labels = connected_components(mask)
    for t in range(2):
        regions = plain_components(mask[t].numpy())
        assert len(regions) > 3
        found = {}
        for y, x in zip(*np.nonzero(labels[t].numpy())):
            found.setdefault(int(labels[t, y, x]), set()).add((int(y), int(x)))
        assert sorted(map(sorted, found.values())) == sorted(map(sorted, regions))
        assert (labels[t] == 0).equal(~mask[t])


def test_scores_equal_plain_computations() -> None:
    generator = torch.Generator().manual_seed(2)
    k, frames, height, width = 3, 4, 24, 28
    masks = blobby_masks(generator, (k, frames, height, width))
    masks[2, 1] = False  # an empty frame for one object
    masks[1] = masks[0] | (torch.rand(frames, height, width, generator=generator) > 0.9)  # overlapping objects
    foreground = blobby_masks(generator, (frames, height, width))
    foreground[3] = False  # a frame with no foreground
    m, fg = masks.numpy(), foreground.numpy()

    precision = [np.logical_and(m[i], fg).sum() / m[i].sum() for i in range(k)]
    np.testing.assert_allclose(mask_precision(masks, foreground).numpy(), precision)

    best = np.zeros((k, frames))
    for i in range(k):
        for t in range(frames):
            regions = plain_components(fg[t])
            if not regions and not m[i, t].any():
                best[i, t] = np.nan
            for region in regions:
                region_mask = np.zeros((height, width), dtype=bool)
                region_mask[tuple(np.array(sorted(region)).T)] = True
                best[i, t] = max(best[i, t], plain_iou(m[i, t], region_mask))
    np.testing.assert_allclose(best_region_iou(masks, foreground).numpy(), best)
    assert 0 < np.nanmax(best) < 1

    pairs = [plain_iou(m[i], m[j]) for i in range(k) for j in range(i + 1, k)]
    np.testing.assert_allclose(mutual_iou(masks).numpy(), pairs)
    consecutive = [[plain_iou(m[i, t], m[i, t + 1]) for t in range(frames - 1)] for i in range(k)]
    np.testing.assert_allclose(temporal_iou(masks).numpy(), consecutive)


def test_hand_made_distinctness_and_consistency() -> None:
    masks = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    masks[0, :, :2, :2] = True  # still: consecutive IoU 1
    masks[1, 0, :2, :2] = True  # same as object 0 in frame 0, then moves away
    masks[1, 1:, 2:, 2:] = True
    np.testing.assert_allclose(mutual_iou(masks).numpy(), [4 / 20])
    np.testing.assert_allclose(temporal_iou(masks).numpy(), [[1, 1], [0, 1]])


def test_random_masks_keep_each_objects_area() -> None:
    masks = blobby_masks(torch.Generator().manual_seed(3), (3, 4, 16, 16))
    random = random_masks_like(masks, torch.Generator().manual_seed(0))
    assert torch.equal(random.flatten(2).sum(2), masks.flatten(2).sum(2))
    assert not torch.equal(random, masks)


def test_masks_on_the_squares_score_about_one_and_random_masks_the_chance_level(squares_video) -> None:
    from dora_hf.evaluation.frame_input import read_frames

    path, truth = squares_video
    frames = read_frames(path, 48)
    settings = DiscoverySettings(clip_frames=6, clip_step=6, window=21)

    def on_the_squares(clip: torch.Tensor) -> torch.Tensor:
        start = next(t for t in range(frames.shape[0]) if torch.equal(frames[t], clip[0]))
        squares = torch.zeros(2, clip.shape[0], HEIGHT, WIDTH, dtype=torch.bool)
        for t in range(clip.shape[0]):
            for i, (y, x) in enumerate(square_positions(start + t)):
                squares[i, t, y : y + SIDE, x : x + SIDE] = True
        return centre_square(squares)

    scores = evaluate_discovery(frames, on_the_squares, settings)
    assert [clip["start"] for clip in scores["clips"]] == clip_starts(48, settings) == list(range(0, 43, 6))
    chance = centre_square(truth).double().mean().item()
    model, random = scores["model"], scores["random"]
    assert model["precision"] > 0.97 and model["best_iou"] > 0.95
    assert model["chance"] == pytest.approx(chance, abs=0.01) and 0.05 < chance < 0.3
    assert random["precision"] == pytest.approx(chance, abs=0.04)
    assert random["best_iou"] < 0.3 and random["temporal_iou"] < 0.3 < model["temporal_iou"]
    assert model["mutual_iou"] == 0  # the two squares never overlap
    json.dumps(scores, allow_nan=False)


def test_large_frames_are_scored_at_the_settings_side_with_the_same_result() -> None:
    """4x-upscaled frames brought back to the short side of the originals score exactly as the originals."""
    frames, _ = synthetic_clip(30)
    large = frames.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(downscale(large, HEIGHT), frames)  # block averages of nearest-upscaled pixels
    assert downscale(frames, HEIGHT) is frames and downscale(large, 0) is large

    def tracker_at(scale: int):
        def squares(clip: torch.Tensor) -> torch.Tensor:
            small = clip if scale == 1 else downscale(clip, HEIGHT)
            start = next(t for t in range(frames.shape[0]) if torch.equal(frames[t], small[0]))
            masks = torch.zeros(2, clip.shape[0], HEIGHT, WIDTH, dtype=torch.bool)
            for t in range(clip.shape[0]):
                for i, (y, x) in enumerate(square_positions(start + t)):
                    masks[i, t, y : y + SIDE, x : x + SIDE] = True
            return centre_square(masks.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3))
        return squares

    settings = DiscoverySettings(clip_frames=6, clip_step=6, window=21)
    small = evaluate_discovery(frames, tracker_at(1), settings)
    scaled = evaluate_discovery(large, tracker_at(4), dataclasses.replace(settings, side=HEIGHT))
    assert scaled["foreground_side"] == small["foreground_side"] == HEIGHT
    assert scaled["model"] == small["model"] and scaled["random"] == small["random"]


def test_eval_discovery_runs_a_tiny_dora_end_to_end(squares_video, tmp_path, capsys) -> None:
    model = save_tiny_dora(tmp_path / "tiny-dora")
    out = tmp_path / "discovery.json"
    argv = ["eval", "discovery", str(squares_video[0]), "--model", str(model), "--out", str(out),
            "--clip-frames", "4", "--clip-step", "10", "--max-clips", "3", "--window", "15", "--no-progress"]
    assert cli_main(argv) == 0
    assert "Foreground precision of tracked masks" in capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["task"] == "discovery" and results["dataset"]["num_clips"] == 3
    assert results["settings"]["num_objects"] == 3 and results["settings"]["clip_frames"] == 4
    types = {metric["type"] for metric in results["metrics"]}
    assert {"precision", "foreground_share", "temporal_iou"} <= types
    for which in ("model", "random"):
        assert 0 < results["details"][which]["chance"] < 1
        assert 0 <= results["details"][which]["precision"] <= 1
    assert [clip["start"] for clip in results["details"]["clips"]] == [0, 10, 20]


def test_invalid_settings_are_user_errors(squares_video, tmp_path, capsys) -> None:
    """Each impossible value is named by its flag, while the arguments are parsed (before loading)."""
    for bad, message in (
        (["--clip-frames", "1"], "argument --clip-frames: must be at least 2, got 1"),
        (["--side", "-1"], "argument --side: must be at least 0, got -1"),
        (["--start", "-3"], "argument --start: must be at least 0, got -3"),
    ):
        with pytest.raises(SystemExit) as stop:
            cli_main(["eval", "discovery", str(squares_video[0]), "--model", "unused", *bad])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_start_scores_only_the_frames_from_there_on(squares_video, tmp_path) -> None:
    """`--start` skips to held-out frames: the clips are those of the video read from that frame."""
    model_dir = save_tiny_dora(tmp_path / "tiny")
    out = tmp_path / "late.json"
    argv = ["eval", "discovery", str(squares_video[0]), "--model", str(model_dir), "--clip-frames", "4",
            "--clip-step", "4", "--window", "9", "--start", "36", "--no-progress", "--out", str(out)]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())
    assert results["dataset"]["start_frame"] == 36 and results["dataset"]["num_frames"] == 12  # frames 36..47
    assert [clip["start"] for clip in results["details"]["clips"]] == [0, 4, 8]
