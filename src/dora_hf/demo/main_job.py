"""The main job: a short real DoRA pretraining on a real video, exported, reloaded and scored.

Gets ``vtest.avi`` (pedestrians crossing a square under a static camera, from Debian's
opencv-doc; ``bikes.mp4`` from PyPI where apt is not there, saying so), holds its last 20 s out
of training, decodes the rest into frame shards with `prepare-data`, pretrains the recipe
`training_scripts/configs/demo_cpu.yaml` for a few minutes on the CPU, exports the teacher to
``./dora-wt-vits16-demo``, reloads it with `AutoModel`, scores the objects it discovers on the
held-out clips against the moving foreground (`eval discovery`), next to the same network at
its random initialisation, and draws the objects it tracks through a held-out clip.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForPreTraining

from ..errors import DoraUserError
from ..evaluation.discovery.scoring import METRIC_NAMES
from ..evaluation.discovery.video import DiscoveryRun, discover_in_video
from ..evaluation.encoder import FrozenEncoder, load_encoder
from ..evaluation.frame_input import read_frames
from ..evaluation.protocols import DiscoverySettings
from ..evaluation.visualize.mask_figure import render_tracking_figure
from ..modeling import DoraImageProcessor, DoraModel
from ..prepare.pipeline import PrepareOptions, prepare_dataset
from ..prepare.video_decode import probe_video
from ..pretrain import pretrain
from ..training.builders import make_accelerator
from ..training.recipe import PretrainRecipe, load_recipe
from .sample_video import DemoVideo, get_demo_video
from .tour_result import controlled_tour_line
from .video_cut import cut_video

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_RECIPE = REPO_ROOT / "training_scripts" / "configs" / "demo_cpu.yaml"
HELD_OUT_SECONDS = 20.0
"""The end of the video that training never sees; discovery is scored and drawn on it."""


@dataclass(frozen=True)
class DemoSplit:
    """Which frames of the demo video are trained on and which are held out."""

    video: Path
    train_video: Path
    held_out_start: int
    """First held-out frame (0 when nothing is held out: the fallback video is too short)."""
    frame_step: int
    """Video frames between a scored clip's frames: the recipe's clip step."""


def split_demo_video(demo: DemoVideo, recipe: PretrainRecipe, data_dir: Path) -> DemoSplit:
    """Cut the last `HELD_OUT_SECONDS` off for evaluation; the fallback video is used whole."""
    info = probe_video(demo.path)
    held_out = round(HELD_OUT_SECONDS * info.fps)
    if not demo.static_camera or not info.num_frames or info.num_frames < 2 * held_out:
        return DemoSplit(demo.path, demo.path, 0, recipe.clip_step)
    start = info.num_frames - held_out
    train_video = cut_video(demo.path, data_dir / f"{demo.path.stem}-train{demo.path.suffix}", start)
    return DemoSplit(demo.path, train_video, start, recipe.clip_step)


DEMO_DISCOVERY = DiscoverySettings(clip_frames=8, clip_step=4, max_clips=32)
"""Held-out clips of 8 frames (taken at the training clip step), one starting every 4 of them."""


def random_init_backbone(export_dir: Path, seed: int = 0) -> FrozenEncoder:
    """The exported architecture at a seeded random initialisation: what training started from."""
    config = AutoConfig.from_pretrained(export_dir)
    torch.manual_seed(seed)
    model = DoraModel(config).eval().requires_grad_(False)
    return FrozenEncoder(model=model, processor=DoraImageProcessor.from_pretrained(export_dir), name="random init", revision="-")


def score_models(
    backbones: dict[str, FrozenEncoder], split: DemoSplit, settings: DiscoverySettings, progress: bool = False
) -> dict[str, DiscoveryRun]:
    """Discovery on the held-out clips (the whole video for the fallback), every model on the same frames."""
    return discover_in_video(
        backbones, split.video, settings, frame_step=split.frame_step, start=split.held_out_start, progress=progress
    )


def format_discovery_table(runs: dict[str, DiscoveryRun]) -> str:
    """The figures as a fixed-width table: one row per model, then the random-mask baseline."""
    header = f"{'':<22}" + "".join(f"{name:>14}" for name in METRIC_NAMES)
    rows = [header]
    first = next(iter(runs.values()))
    for name, run in [*runs.items(), ("random masks", first)]:
        scores = run.scores["random" if name == "random masks" else "model"]
        rows.append(f"{name:<22}" + "".join(_cell(scores[metric]) for metric in METRIC_NAMES))
    return "\n".join(rows)


def _cell(value: float | None) -> str:
    return f"{'-':>14}" if value is None else f"{value:>14.3f}"


def run_demo(export_dir: Path, max_steps: int | None, figure: Path, recipe_path: Path = DEMO_RECIPE) -> dict:
    overrides = {"export_dir": str(export_dir), **({"max_steps": max_steps} if max_steps else {})}
    recipe = load_recipe(recipe_path, overrides)
    demo = get_demo_video()
    print(f"demo video: {demo.path}" + (f" (fallback: {demo.fallback_reason})" if demo.fallback_reason else ""))
    data_dir = Path(recipe.dataset).parent
    split = split_demo_video(demo, recipe, data_dir)
    if split.held_out_start:
        print(f"training on its first {split.held_out_start} frames; the last {HELD_OUT_SECONDS:g} s are held out")
    prepare_dataset(
        [split.train_video],
        Path(recipe.dataset),
        PrepareOptions(clip_step=recipe.clip_step, frames_per_clip=recipe.frames_per_clip),
        overwrite=True,
    )
    result = pretrain(recipe, make_accelerator(recipe, cpu=True))

    trained = load_encoder(str(export_dir))  # AutoModel and AutoImageProcessor, as eval loads any model
    model = trained.model
    print(f"reloaded {export_dir} with AutoModel ({type(model).__name__}): hidden size {model.config.hidden_size}")

    settings = DEMO_DISCOVERY
    runs = score_models({f"trained ({result.steps} steps)": trained, "random init": random_init_backbone(export_dir)},
                        split, settings)
    where = f"held-out last {HELD_OUT_SECONDS:g} s" if split.held_out_start else "whole video (nothing held out)"
    first = next(iter(runs.values()))
    print(f"object discovery on the {where} of {split.video.name}: {len(first.scores['clips'])} clips of "
          f"{settings.clip_frames} frames, {split.frame_step} video frames apart; precision vs chance = the "
          "foreground share of the frame (higher is better), mutual_iou lower is better")
    print(format_discovery_table(runs))
    print(controlled_tour_line())

    full = AutoModelForPreTraining.from_pretrained(export_dir).eval()
    clip = read_frames(split.video, settings.clip_frames, split.frame_step, split.held_out_start)
    path, tracks = render_tracking_figure(full, clip, figure)
    print(f"tracked {tracks.masks.shape[1]} objects through {tracks.masks.shape[2]} held-out frames: {path}")
    summary = {
        "video": str(split.video), "fallback_reason": demo.fallback_reason, "held_out_start": split.held_out_start,
        "frame_step": split.frame_step, "steps": result.steps, "loss_trend": result.loss_trend(),
        "settings": asdict(settings),
        "discovery": {name: {"model": run.scores["model"], "random": run.scores["random"]} for name, run in runs.items()},
        "figure": str(path),
    }
    partial = figure.with_name(f".{figure.stem}.json.partial")
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, figure.with_suffix(".json"))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dora-wt-vits16-demo"), help="export folder")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's step count")
    parser.add_argument("--figure", type=Path, default=Path("dora-demo-tracks.png"), help="picture of the tracks")
    parser.add_argument("--recipe", type=Path, default=DEMO_RECIPE, help="the recipe to pretrain (default: the demo's)")
    args = parser.parse_args(argv)
    try:
        run_demo(args.out, args.max_steps, args.figure, args.recipe)
    except DoraUserError as err:
        print(f"main job: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
