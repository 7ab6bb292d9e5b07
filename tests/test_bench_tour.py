"""The controlled-tour benchmark's own logic: where the tracker's square lies in a frame, the
[CLS]-attention box's mask, the table and the learning-curve picture."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_tour  # noqa: E402


def test_view_window_is_the_centre_square_at_frame_pixels() -> None:
    rows, cols, square_rows, square_cols = bench_tour.view_window(240, 320, 112)
    assert rows.tolist() == list(range(240))  # the short side is seen whole
    assert cols[0] > 0 and cols[-1] < 319 and np.all(np.diff(cols) == 1)  # a contiguous middle band
    assert abs((cols[0] + cols[-1]) / 2 - 159.5) <= 2  # centred
    assert 236 <= len(cols) <= 244  # about as wide as the short side
    for square in (square_rows, square_cols):
        assert square.min() == 0 and square.max() == 111 and np.all(np.diff(square) >= 0)


def test_view_window_maps_a_square_mask_onto_the_frame() -> None:
    rows, cols, square_rows, square_cols = bench_tour.view_window(240, 320, 112)
    square = np.zeros((112, 112), dtype=bool)
    square[:, :56] = True  # the left half of what the tracker sees
    frame = square[square_rows][:, square_cols]
    assert frame.shape == (len(rows), len(cols))
    assert abs(frame.mean() - 0.5) < 0.02


def test_attention_masks_keep_the_largest_group_of_the_strongest_patches() -> None:
    grid = 4
    attention = torch.full((1, 2, grid * grid), 0.001)
    attention[0, :, [0, 1, 4]] = 1.0  # a group of three in the top-left corner
    attention[0, :, 15] = 1.0  # a lone patch in the other corner
    mask = bench_tour.attention_masks(attention, grid, mass=0.9)[0]
    assert mask.sum() == 3 and mask[0, 0] and mask[0, 1] and mask[1, 0] and not mask[3, 3]


def test_markdown_table_marks_missing_scores() -> None:
    table = bench_tour.markdown_table(
        {"DoRA": {"matched_iou": 0.25, "found": 0.1, "identity": 0.9, "corloc": 0.3},
         "random masks": {"matched_iou": 0.05, "found": 0.0, "identity": 0.95, "corloc": None}}, 100)
    lines = table.splitlines()
    assert lines[0] == "| model (100 steps) | matched_iou | found | identity | corloc |"
    assert lines[2] == "| DoRA | 0.250 | 0.100 | 0.900 | 0.300 |"
    assert lines[3].endswith("| 0.950 | - |")


def test_draw_curves_writes_one_panel_per_score(tmp_path: Path) -> None:
    scores = {"matched_iou": 0.1, "found": 0.0, "identity": 0.8, "corloc": None}
    curves = {"DoRA seed 0": {5: scores, 10: {**scores, "matched_iou": 0.2}}, "DINO seed 0": {5: scores, 10: scores}}
    path = bench_tour.draw_curves(curves, {"random init": scores}, tmp_path / "curve.png", panel=(200, 150))
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (150 + 24, 200 * len(bench_tour.SCORES), 3)
    assert (np.abs(image.astype(int) - (200, 40, 40)).sum(-1) < 10).any()  # DoRA's colour is drawn
