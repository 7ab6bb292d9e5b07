"""The main job's line citing the controlled tour's recorded result."""

from __future__ import annotations

import json
from pathlib import Path

from dora_hf.demo.tour_result import TOUR_RESULTS, controlled_tour_line


def _record(path: Path) -> Path:
    path.write_text(json.dumps({
        "steps": 800, "seeds": [0, 1, 2],
        "table": {"DoRA": {"matched_iou": 0.1234, "found": 0.0}, "DINO": {"matched_iou": 0.0967, "found": 0.0},
                  "random init": {"matched_iou": 0.0581, "found": 0.0},
                  "random masks (DoRA's areas)": {"matched_iou": 0.0544, "found": 0.0}},
        "seed_std": {"DoRA": {"matched_iou": 0.0111}},
        "patch_grid_ceiling": {"matched_iou": 0.536, "found": 0.6875},
    }))
    return path


def test_the_line_gives_the_recorded_figures(tmp_path: Path) -> None:
    line = controlled_tour_line(_record(tmp_path / "bench_tour.json"))
    assert "3 seeds, 800 steps" in line
    assert "IoU 0.12 ± 0.01" in line
    assert "DINO 0.10" in line and "random init 0.06" in line and "chance 0.05" in line
    assert "found (IoU >= 0.5): 0.00" in line and "reach IoU 0.54 and find 0.69" in line


def test_without_a_record_the_line_points_to_the_results(tmp_path: Path) -> None:
    line = controlled_tour_line(tmp_path / "missing.json")
    assert "no recorded result" in line and "RESULTS.md" in line


def test_the_repository_record_gives_a_line() -> None:
    report = json.loads(TOUR_RESULTS.read_text())
    line = controlled_tour_line()
    assert f"IoU {report['table']['DoRA']['matched_iou']:.2f}" in line
