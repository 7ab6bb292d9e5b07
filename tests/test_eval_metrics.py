"""J, F and top-k accuracy: hand-computed values, and the shipped `evaluate` modules loaded by path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from dora_hf.evaluation.metric_modules import JACCARD_F, MEAN_IOU, METRICS_DIR, TOPK_ACCURACY, load_metric, metric_path
from dora_hf.evaluation.davis.region_boundary import (
    boundary_f,
    boundary_map,
    boundary_tolerance_pixels,
    dilate_disc,
    jaccard,
    object_scores,
)

REPO = Path(__file__).resolve().parents[1]


def square(shape=(10, 10), top=2, left=2, size=4) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def pixel(row: int, col: int, shape=(10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[row, col] = True
    return mask


def test_small_images_match_pixels_within_one_pixel():
    # ceil(0.008 * diagonal): 1 pixel for anything up to 125 pixels of diagonal, 8 for DAVIS 480p.
    assert boundary_tolerance_pixels((10, 10)) == 1
    assert boundary_tolerance_pixels((480, 854)) == 8


def test_jaccard_hand_computed():
    empty = np.zeros((10, 10), dtype=bool)
    assert jaccard(empty, empty) == 1.0  # nothing to find, nothing found
    assert jaccard(square(), empty) == 0.0
    assert jaccard(empty, square()) == 0.0
    assert jaccard(square(), square()) == 1.0
    # 4x4 squares two columns apart: 4x2 = 8 shared pixels, 16 + 16 - 8 = 24 in the union.
    assert jaccard(square(left=4), square()) == pytest.approx(8 / 24)
    assert jaccard(pixel(4, 4), pixel(4, 4)) == 1.0
    assert jaccard(pixel(4, 5), pixel(4, 4)) == 0.0


def test_jaccard_ignores_void_pixels():
    void = np.zeros((10, 10), dtype=bool)
    void[:, 2:] = True  # both squares lie in the void: nothing left to compare
    assert jaccard(square(left=4), square(), void) == 1.0
    void = np.zeros((10, 10), dtype=bool)
    void[:, 6:] = True  # prediction's extra columns are void: 8 shared of 16 ground-truth pixels
    assert jaccard(square(left=4), square(), void) == pytest.approx(8 / 16)


def test_boundary_of_one_pixel_is_the_four_pixels_of_its_crack():
    # DAVIS's seg2bmap marks a pixel when it differs from its right, lower or lower-right neighbour.
    expected = {(4, 4), (4, 3), (3, 4), (3, 3)}
    assert set(zip(*np.nonzero(boundary_map(pixel(4, 4))))) == expected


def test_boundary_f_hand_computed():
    empty = np.zeros((10, 10), dtype=bool)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(square(), empty) == 0.0  # precision 0
    assert boundary_f(empty, square()) == 0.0  # recall 0
    assert boundary_f(square(), square()) == 1.0
    assert boundary_f(pixel(4, 4), pixel(4, 4)) == 1.0
    # One pixel to the right: every boundary pixel of either is within 1 pixel of the other.
    assert boundary_f(pixel(4, 5), pixel(4, 4)) == 1.0
    # Two pixels to the right: boundaries {(4,6),(4,5),(3,6),(3,5)} vs {(4,4),(4,3),(3,4),(3,3)};
    # only (4,5),(3,5) and (4,4),(3,4) have a partner within 1 pixel: P = R = 1/2, F = 1/2.
    assert boundary_f(pixel(4, 6), pixel(4, 4)) == pytest.approx(0.5)
    assert boundary_f(pixel(8, 8), pixel(1, 1)) == 0.0


def test_dilation_by_a_disc_matches_the_definition():
    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) > 0.95
    for radius in (1, 2, 5):
        expected = np.zeros_like(mask)
        for y, x in zip(*np.nonzero(mask)):
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    if dy * dy + dx * dx <= radius * radius and 0 <= y + dy < 17 and 0 <= x + dx < 23:
                        expected[y + dy, x + dx] = True
        np.testing.assert_array_equal(dilate_disc(mask, radius), expected)


def test_object_scores_of_label_maps():
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[square()] = 1
    truth[pixel(8, 8)] = 2
    predicted = np.zeros_like(truth)
    predicted[square(left=4)] = 1  # object 1 shifted, object 2 missed
    j, f = object_scores([predicted, truth], [truth, truth], num_objects=2)
    assert j[:, 1].tolist() == [1.0, 1.0]
    assert j[0, 0] == pytest.approx(8 / 24) and j[1, 0] == 0.0 and f[1, 0] == 0.0


def test_jaccard_f_evaluate_module_follows_the_davis_protocol(tmp_path):
    metric = load_metric(JACCARD_F)
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[square()] = 1
    truth[pixel(8, 8)] = 2
    shifted = np.zeros_like(truth)
    shifted[square(left=4)] = 1
    shifted[pixel(8, 8)] = 2
    wrong = np.zeros_like(truth)
    # Sequence a: first frame (given) and last frame are not scored; the middle frames are
    # one exact frame and one with object 1 shifted.
    predictions = [wrong, truth, shifted, wrong] + [truth, truth, truth]
    references = [truth] * 7
    sequences = ["a"] * 4 + ["b"] * 3
    from PIL import Image

    # A reference given as a palette PNG path, as DAVIS stores them.
    palette_png = tmp_path / "00000.png"
    image = Image.fromarray(truth)
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    image.save(palette_png)
    references[0] = str(palette_png)

    result = metric.compute(predictions=predictions, references=references, sequences=sequences)
    j_a1 = (1.0 + 8 / 24) / 2
    assert result["per_sequence"]["a"]["J"] == pytest.approx((j_a1 + 1.0) / 2)
    assert result["per_sequence"]["a"]["num_frames"] == 2
    assert result["per_sequence"]["b"] == {"J": 1.0, "F": 1.0, "J&F": 1.0, "num_objects": 2, "num_frames": 1}
    assert result["per_object"]["a/1"]["J"] == pytest.approx(j_a1)
    # Overall means are over the 4 objects of both sequences.
    assert result["J"] == pytest.approx((j_a1 + 1.0 + 1.0 + 1.0) / 4)
    assert result["J&F"] == pytest.approx((result["J"] + result["F"]) / 2)


def test_topk_accuracy_evaluate_module():
    metric = load_metric(TOPK_ACCURACY)
    result = metric.compute(predictions=[[2, 0, 1], [1, 2, 0], [0, 1, 2]], references=[2, 0, 1], top_k=[1, 2, 5])
    assert result == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top5": 1.0}


def test_metric_modules_ship_as_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dora_hf"]
    package = METRICS_DIR.parents[1]
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    for name in (JACCARD_F, MEAN_IOU, TOPK_ACCURACY):
        assert metric_path(name) / f"{name}.py" in shipped
        assert metric_path(name) / "README.md" in shipped
    with pytest.raises(ValueError, match="shipped: jaccard_f, mean_iou, topk_accuracy"):
        metric_path("accuracy")
