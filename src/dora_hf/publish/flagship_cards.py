"""The cards people read first: the flagship model's and the Walking Tours dataset's, in `model_cards/`.

`python -m dora_hf.publish.flagship_cards` writes them from the package's templates, so the files
at the top of the repository are what the templates render now (tests/test_model_cards.py checks
it). The model is `dora-wt-vits16`: ViT-S/16 trained with DoRA on WT-Venice, the authors'
checkpoint converted with `dora-hf convert-reference`, with the paper's recipe; the dataset is
Walking Tours as `prepare-data` makes it from the authors' list.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard

from ..hub_tags import FINDABLE_TAGS
from ..modeling import DoraConfig
from .cards import render_model_card
from .hub_names import AUTHORS_DATASET_ID, FLAGSHIP_MODEL_ID, SPACE_ID, WALKING_TOURS_DATASET_ID, hub_url

REPO_ROOT = Path(__file__).resolve().parents[3]
RECIPE = REPO_ROOT / "training_scripts" / "configs" / "vits16_wt_venice.yaml"
"""The paper's recipe (ViT-S/16, WT-Venice, 100 epochs) as this repository writes it."""
WALKING_TOURS_TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "walking_tours_card_template.md"
DEMO_IMAGE = f"{hub_url(SPACE_ID, 'space')}/resolve/main/tracks.jpg"
"""`spaces/dora-tracks/tracks.jpg`, as the pushed Space serves it."""

WALKING_TOURS_PLACES = (
    "Amsterdam", "Bangkok", "Chiang Mai", "Istanbul", "Kuala Lumpur", "Singapore", "Stockholm", "Venice", "Zurich",
    "a wildlife safari",
)
"""Where the ten videos of the authors' list were filmed (the paper's description)."""

ORIGIN = """**Origin.** The authors' released teacher of DoRA trained for 100 epochs on WT-Venice, the Venice
video of Walking Tours (`dora_venice_100ep.pth`), converted with `dora-hf convert-reference
dora_venice_100ep.pth --out dora-wt-vits16`: a renaming of the weights, nothing split, fused or
dropped. It was trained by the authors' code with the recipe below (the paper's: 8 GPUs x 16 clips of
8 frames, fp16); its step count is not recorded here. No evaluation of these weights has been run
with dora-hf yet, so this card has no results table: the paper reports its own numbers, and
`benchmarks/RESULTS.md` ("The paper's evaluations") has the same protocols run end to end on the
main job's small model. The picture below is the demo Space running that small model."""


def flagship_model_card(recipe_path: Path = RECIPE) -> ModelCard:
    """The card of `dora-wt-vits16`: the paper's recipe, the converted checkpoint's origin, the Space."""
    from ..training.recipe import load_recipe

    recipe = load_recipe(
        recipe_path,
        {"dataset": f"{WALKING_TOURS_DATASET_ID}", "mixed_precision": "fp16", "reference_compat_loss": True},
    )
    return render_model_card(
        DoraConfig(**recipe.model), dataclasses.asdict(recipe), None, repo_id=FLAGSHIP_MODEL_ID,
        model_name="dora-wt-vits16", demo_image=DEMO_IMAGE, origin=ORIGIN,
    )


def walking_tours_card() -> DatasetCard:
    """The card of Walking Tours as `prepare-data` makes it from the authors' list; it links the model."""
    from ..prepare.shard_writer import FRAME_FEATURES

    card_data = DatasetCardData(
        pretty_name="Walking Tours (frames)",
        license="cc-by-4.0",
        task_categories=["image-feature-extraction"],
        tags=["video", "video-frames", "self-supervised-learning", *FINDABLE_TAGS],
        source_datasets=[AUTHORS_DATASET_ID],
    )
    return DatasetCard.from_template(
        card_data, template_path=str(WALKING_TOURS_TEMPLATE), pretty_name=card_data.pretty_name,
        authors_id=AUTHORS_DATASET_ID, authors_url=hub_url(AUTHORS_DATASET_ID, "dataset"),
        model_id=FLAGSHIP_MODEL_ID, model_url=hub_url(FLAGSHIP_MODEL_ID), space_id=SPACE_ID, space_url=hub_url(SPACE_ID, "space"),
        dataset_id=WALKING_TOURS_DATASET_ID, num_videos=len(WALKING_TOURS_PLACES), frames_per_clip=8,
        places=", ".join(WALKING_TOURS_PLACES[:-1]) + " and " + WALKING_TOURS_PLACES[-1],
        columns=[{"name": name, "dtype": type(feature).__name__ if not hasattr(feature, "dtype") else feature.dtype}
                 for name, feature in FRAME_FEATURES.items()],
    )


def rendered_cards(recipe_path: Path = RECIPE) -> dict[str, str]:
    """``{path under model_cards/: text}`` of every card there."""
    return {
        "dora-wt-vits16/README.md": str(flagship_model_card(recipe_path)) + "\n",
        "walking-tours/README.md": str(walking_tours_card()) + "\n",
    }


def write_model_cards(out: Path, recipe_path: Path = RECIPE) -> list[Path]:
    """Write the cards under ``out``, each through a temporary name."""
    written = []
    for name, text in rendered_cards(recipe_path).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "model_cards", help="folder (default: the repository's model_cards/)")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the flagship's recipe YAML")
    args = parser.parse_args(argv)
    for path in write_model_cards(args.out, args.recipe):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
