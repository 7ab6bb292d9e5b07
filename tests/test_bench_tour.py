"""The controlled-tour benchmark's own logic: where the tracker's square lies in a frame, the
[CLS]-attention box's mask, the information in the teacher's targets, the table and the
learning-curve picture."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_tour  # noqa: E402
import tour_scoring  # noqa: E402


def test_view_window_is_the_centre_square_at_frame_pixels() -> None:
    rows, cols, square_rows, square_cols = tour_scoring.view_window(240, 320, 112)
    assert rows.tolist() == list(range(240))  # the short side is seen whole
    assert cols[0] > 0 and cols[-1] < 319 and np.all(np.diff(cols) == 1)  # a contiguous middle band
    assert abs((cols[0] + cols[-1]) / 2 - 159.5) <= 2  # centred
    assert 236 <= len(cols) <= 244  # about as wide as the short side
    for square in (square_rows, square_cols):
        assert square.min() == 0 and square.max() == 111 and np.all(np.diff(square) >= 0)


def test_view_window_maps_a_square_mask_onto_the_frame() -> None:
    rows, cols, square_rows, square_cols = tour_scoring.view_window(240, 320, 112)
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
    mask = tour_scoring.attention_masks(attention, grid, mass=0.9)[0]
    assert mask.sum() == 3 and mask[0, 0] and mask[0, 1] and mask[1, 0] and not mask[3, 3]


def test_markdown_table_marks_missing_scores() -> None:
    table = bench_tour.markdown_table(
        {"DoRA": {"matched_iou": 0.25, "found": 0.1, "identity": 0.9, "corloc": 0.3, "davis_jf": 0.41},
         "random masks": {"matched_iou": 0.05, "found": 0.0, "identity": 0.95, "corloc": None}}, 100)
    lines = table.splitlines()
    assert lines[0] == "| model (100 steps) | matched_iou | found | identity | corloc | davis_jf |"
    assert lines[2] == "| DoRA | 0.250 | 0.100 | 0.900 | 0.300 | 0.410 |"
    assert lines[3].endswith("| 0.950 | - | - |")


def test_draw_curves_writes_one_panel_per_score(tmp_path: Path) -> None:
    scores = {"matched_iou": 0.1, "found": 0.0, "identity": 0.8, "corloc": None}
    curves = {"DoRA seed 0": {5: scores, 10: {**scores, "matched_iou": 0.2}}, "DINO seed 0": {5: scores, 10: scores}}
    path = bench_tour.draw_curves(curves, {"random init": scores}, tmp_path / "curve.png", panel=(200, 150))
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (150 + 24, 200 * len(bench_tour.SCORES), 3)
    assert (np.abs(image.astype(int) - (200, 40, 40)).sum(-1) < 10).any()  # DoRA's colour is drawn


def test_target_information_matches_a_plain_loop() -> None:
    generator = torch.Generator().manual_seed(3)
    logits, center, temperature = torch.randn(5, 7, generator=generator), torch.randn(1, 7, generator=generator), 0.3
    targets = []
    for row in logits.tolist():
        scaled = [(value - c) / temperature for value, c in zip(row, center[0].tolist())]
        total = sum(math.exp(v) for v in scaled)
        targets.append([math.exp(v) / total for v in scaled])
    entropy = sum(-sum(p * math.log(p) for p in target) for target in targets) / len(targets)
    pooled = [sum(target[k] for target in targets) / len(targets) for k in range(7)]
    pooled_entropy = -sum(p * math.log(p) for p in pooled)
    scores = tour_scoring.target_information(logits, center, temperature)
    assert scores["teacher_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert scores["mean_output_entropy"] == pytest.approx(pooled_entropy, rel=1e-5)
    assert scores["target_information"] == pytest.approx(pooled_entropy - entropy, rel=1e-4)
    assert scores["uniform_entropy"] == pytest.approx(math.log(7))


def test_target_information_is_zero_when_every_frame_gets_one_target() -> None:
    logits = torch.randn(1, 11).repeat(6, 1)
    assert tour_scoring.target_information(logits, torch.zeros(1, 11), 0.04)["target_information"] == pytest.approx(0, abs=1e-5)


def test_patch_grid_masks_take_the_best_union_of_patches() -> None:
    # a 4x4 view in four 2x2 patches; object 1 fills one patch and half of the next
    cells = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    truth = np.zeros((1, 4, 4), dtype=np.int64)
    truth[0, :2, :3] = 1  # patch 0 whole, half of patch 1
    truth[0, 3, 3] = 2  # a quarter of patch 3
    masks = tour_scoring.patch_grid_masks(truth, cells, k=3)
    # plain search over every union of the four patches, per object
    best = {}
    for object_id in (1, 2):
        target = truth[0] == object_id
        scores = []
        for chosen in range(1, 16):
            union_of = np.isin(cells, [c for c in range(4) if chosen >> c & 1])
            scores.append(((union_of & target).sum() / (union_of | target).sum(), chosen))
        best[object_id] = max(scores)
    assert best[1][0] == pytest.approx(6 / 8)  # patches 0 and 1: 6 object pixels in 8
    assert masks.shape == (3, 1, 4, 4)
    for mask, object_id in zip(masks[:2], (1, 2)):  # kept in order of their clip IoU
        target = truth[0] == object_id
        assert (mask[0] & target).sum() / (mask[0] | target).sum() == pytest.approx(best[object_id][0])
    assert not masks[2].any()  # two objects, three masks: the third is empty
