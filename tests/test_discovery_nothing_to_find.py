"""Discovery on a video with no foreground (all black, or a still picture) says so in one line
(docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora

from dora_hf.cli import main
from dora_hf.evaluation.discovery.video import nothing_to_find

ARGS = ["--clip-frames", "4", "--clip-step", "4", "--window", "5", "--no-progress"]


def write_video(path, frame_at):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(24):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame_at(i), format="rgb24")))
        container.mux(stream.encode(None))
    return path


TEXTURE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_an_all_black_video_warns_and_says_what_the_figures_mean(tmp_path, capsys):
    video = write_video(tmp_path / "black.mp4", lambda i: np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / "d.json"
    assert main(["eval", "discovery", "--model", str(save_tiny_dora(tmp_path / "m")), str(video), *ARGS, "--out", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {video}: every frame read is blank (its grey spread is under 4 levels: no structure anywhere), so it "
        "has no foreground to discover and the figures below measure nothing about the model (precision, chance and "
        "best IoU are against an empty foreground: 0); score a video with moving objects"
    ]
    assert "blank" in json.loads(out.read_text())["details"]["nothing_to_find"]


def moving_square(i: int) -> np.ndarray:
    frame = TEXTURE.copy()
    frame[10:26, 2 * i : 2 * i + 16] = (255, 0, 0)
    return frame


@pytest.mark.parametrize(
    ("frame_at", "expected"),
    [(lambda i: TEXTURE, "nothing moves"), (moving_square, None), (lambda i: np.full((48, 64, 3), 90, np.uint8), "blank")],
)
def test_the_rule_is_prepare_datas_blank_and_frozen_rule(tmp_path, frame_at, expected):
    from dora_hf.evaluation.frame_input import read_frames

    frames = read_frames(write_video(tmp_path / "v.mp4", frame_at), 24)
    assert frames.dtype == torch.uint8
    found = nothing_to_find(frames)
    assert (found is None) if expected is None else (expected in found), found
