"""`dora-hf visualize`: GIF and PNG of tracked objects from a video or a frames folder, for DoRA
and for a transformers ViT, per-head attention maps, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora, save_tiny_vit
from PIL import Image
from transformers import ResNetConfig

from dora_hf import DoraForPreTraining, DoraModel
from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.frame_input import read_frames
from dora_hf.evaluation.visualize.mask_figure import render_tracking_figure
from dora_hf.evaluation.visualize.overlays import OBJECT_COLOURS
from dora_hf.evaluation.tracker_features import last_block_features
from dora_hf.evaluation.visualize.command import visualize


@pytest.fixture(scope="module")
def tiny_dora(tmp_path_factory) -> Path:
    return save_tiny_dora(tmp_path_factory.mktemp("dora") / "tiny-dora")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("vit") / "tiny-vit", num_hidden_layers=2)


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def test_gif_has_one_picture_per_frame_and_shows_the_frames_and_masks(tiny_dora, synthetic_video, tmp_path):
    result = visualize(synthetic_video, str(tiny_dora), tmp_path / "tracks.gif", num_frames=5, step=3, display=96)
    frames = gif_frames(result.path)
    assert len(frames) == 5 == result.num_frames
    assert result.tracks.masks.shape == (1, 3, 5, 32, 32)
    first = frames[0]
    # Left panel: the centre-cropped source frame (96x96 at y=18, x=4), not a blank.
    source = read_frames(synthetic_video, 1)[0].permute(1, 2, 0).numpy()
    crop = source[:, (160 - 96) // 2 : (160 - 96) // 2 + 96]
    left = first[18 : 18 + 96, 4 : 4 + 96].astype(float)
    assert np.abs(left - crop).mean() < 20
    # Right panel: masks tinted in the objects' colours where the tracks are.
    right = first[18 : 18 + 96, 8 + 96 : 8 + 192].astype(float)
    combined = result.tracks.masks[0, :, 0].any(dim=0).numpy()
    assert combined.any()
    outlined = [np.isclose(right, colour, atol=25).all(axis=-1).sum() for colour in OBJECT_COLOURS[:3]]
    assert sum(outlined) > 0
    # Frames differ: the clip moves, and each picture names its frame.
    assert not np.array_equal(frames[0], frames[-1])


def test_png_grid_from_a_frames_folder_with_attention_maps(tiny_dora, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(6):
        image = np.full((40, 56, 3), 30, dtype=np.uint8)
        image[10:26, 4 + 6 * t : 20 + 6 * t] = (230, 40, 40)
        Image.fromarray(image).save(folder / f"{t:03d}.png")
    out = tmp_path / "grid.png"
    argv = ["visualize", str(folder), "--model", str(tiny_dora), "--out", str(out), "--num-frames", "4",
            "--step", "1", "--heads", "3", "1", "0", "--attention", "--display-size", "64"]
    assert cli_main(argv) == 0
    assert "tracked 3 objects (heads [3, 1, 0]) through 4 frames" in capsys.readouterr().out
    grid = Image.open(out)
    rows = 1 + 3 + 1 + 4  # frames, 3 objects, all objects, 4 attention heads
    assert grid.size == (84 + 4 * (64 + 3), 16 + rows * (64 + 3))


def test_any_vit_can_be_visualised(tiny_vit, synthetic_video, tmp_path):
    result = visualize(synthetic_video, str(tiny_vit), tmp_path / "vit.gif", num_frames=3, attention=True, display=64)
    assert len(gif_frames(result.path)) == 3
    assert result.tracks.masks.shape == (1, 3, 3, 32, 32)  # 3 objects by default


def test_generic_last_block_features_equal_doras_own(tiny_dora):
    model = DoraModel.from_pretrained(tiny_dora).eval()
    pixels = torch.randn(2, 3, 32, 32)
    generic = last_block_features(model, pixels)
    with torch.no_grad():
        own = model(pixels, output_tracker_features=True, return_dict=True).tracker_features
        attentions = model(pixels, output_attentions=True).attentions[-1]
    for name in ("queries", "keys", "cls_attention", "patch_features"):
        torch.testing.assert_close(getattr(generic, name), getattr(own, name))
    torch.testing.assert_close(generic.cls_attention, attentions[:, :, 0, 1:])


def test_the_demo_figure_still_works(tiny_dora, tmp_path):
    model = DoraForPreTraining.from_pretrained(tiny_dora).eval()
    frames = torch.randint(0, 255, (3, 3, 40, 48), dtype=torch.uint8)
    path, tracks = render_tracking_figure(model, frames, tmp_path / "demo.png", head_indices=[0, 1, 2])
    assert Image.open(path).size == (84 + 3 * (32 + 3), 16 + 5 * (32 + 3))
    assert tracks.head_indices.tolist() == [0, 1, 2]


def test_clear_errors(tiny_dora, synthetic_video, tmp_path, capsys):
    def error(*argv: str) -> str:
        capsys.readouterr()
        assert cli_main(["visualize", *argv]) == 2
        return capsys.readouterr().err

    assert "must end in .gif" in error(str(synthetic_video), "--model", str(tiny_dora), "--out", str(tmp_path / "x.mp4"))
    assert "head_indices must hold 3 distinct heads" in error(
        str(synthetic_video), "--model", str(tiny_dora), "--out", str(tmp_path / "x.gif"), "--heads", "0", "0", "1"
    )
    assert "between 1 and the model's 4 attention heads" in error(
        str(synthetic_video), "--model", str(tiny_dora), "--out", str(tmp_path / "x.gif"), "--objects", "5"
    )
    resnet = tmp_path / "resnet"
    ResNetConfig().save_pretrained(resnet)
    assert "not DoRA or ViT-compatible" in error(str(synthetic_video), "--model", str(resnet), "--out", str(tmp_path / "x.gif"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "a folder with no images" in error(str(empty), "--model", str(tiny_dora), "--out", str(tmp_path / "x.gif"))
    assert "no such file" in error(str(tmp_path / "nope.mp4"), "--model", str(tiny_dora), "--out", str(tmp_path / "x.gif"))
    with pytest.raises(DoraUserError, match="fewer frames"):
        read_frames(synthetic_video, 2, start=500)
    assert not (tmp_path / "x.gif").exists()
