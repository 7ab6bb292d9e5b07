"""The controlled tour's recorded result, in one line for the main job's printout.

The main job's video has no ground truth; the controlled tour (`dora_hf.demo.controlled_tour`)
does, and ``benchmarks/bench_tour.py`` records how close DoRA's tracked masks come to its known
objects in ``benchmarks/results/bench_tour.json``. The main job cites that record rather than
a figure written into the code, so the line always says what the benchmark last measured.
"""

from __future__ import annotations

import json
from pathlib import Path

TOUR_RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "bench_tour.json"
WHERE = "benchmarks/RESULTS.md, 'Controlled tour'"


def controlled_tour_line(path: Path = TOUR_RESULTS) -> str:
    """DoRA's matched IoU and found share on the controlled tour beside DINO's, the random
    initialisation's, chance and the patch grid's ceiling; a pointer where no record is found."""
    try:
        report = json.loads(path.read_text())
        table = report["table"]
        dora = table["DoRA"]
    except (OSError, ValueError, KeyError):
        return f"controlled tour with known objects: no recorded result here ({WHERE}, in the repository)"
    spread = report.get("seed_std", {}).get("DoRA", {})

    def figure(name: str, metric: str) -> str:
        value = table.get(name, {}).get(metric)
        return "-" if value is None else f"{value:.2f}"

    iou = f"{dora['matched_iou']:.2f}" + (f" ± {spread['matched_iou']:.2f}" if "matched_iou" in spread else "")
    chance = next((name for name in table if name.startswith("random masks")), "")
    ceiling = report.get("patch_grid_ceiling", {})
    bound = (f" (masks on this patch grid could reach IoU {ceiling['matched_iou']:.2f} and find "
             f"{ceiling['found']:.2f})" if ceiling else "")
    return (
        f"controlled tour with known objects ({len(report.get('seeds', [0]))} seeds, {report.get('steps')} steps; "
        f"{WHERE}): DoRA's masks match objects at IoU {iou} (DINO {figure('DINO', 'matched_iou')}, random init "
        f"{figure('random init', 'matched_iou')}, chance {figure(chance, 'matched_iou')}); share of objects found "
        f"(IoU >= 0.5): {dora['found']:.2f}{bound}"
    )
