"""Model cards for exported DoRA models, rendered with `huggingface_hub.ModelCard` from `model_cards/`.

The card's YAML metadata is built as `ModelCardData` (so the Hub indexes the license, library,
pipeline, tags, datasets, the run's base recipe and, when evaluation results are given, a
`model-index`), and the body comes from the Jinja template. The templates live inside the package
(`dora_hf/model_cards/`) so that an installed wheel has them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..hub_tags import FINDABLE_TAGS
from ..modeling import DoraConfig
from .hub_names import SPACE_ID, hub_url

MODEL_CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "model_card_template.md"

TAGS = [*FINDABLE_TAGS, "vision", "image-feature-extraction", "vit", "dino"]

_VIT_SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}


def architecture_name(config: DoraConfig) -> str:
    """`vit-small-patch16` for the standard sizes, else `vit-w{width}-d{depth}-h{heads}-patch{p}`."""
    key = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads)
    size = _VIT_SIZES.get(key) or f"w{key[0]}-d{key[1]}-h{key[2]}"
    return f"vit-{size}-patch{config.patch_size}"


def hub_dataset_id(dataset: str | None) -> str | None:
    """The dataset as a Hub id for the `datasets` metadata, or None for a local folder."""
    if not dataset or dataset.startswith((".", "/", "~")) or "\\" in dataset or dataset.count("/") != 1:
        return None
    return None if Path(dataset).expanduser().exists() else dataset


def hub_dataset_ids(dataset: str | list[str] | None) -> list[str]:
    """The run's datasets (one, or several read as one) as Hub ids for the card's `datasets`; local folders left out."""
    sources = dataset if isinstance(dataset, list) else [dataset]
    return [found for found in map(hub_dataset_id, sources) if found]


def method_of(recipe: Mapping[str, Any]) -> str:
    """`dora` or `dino`: how the run trained (recipes from before the `method` key are DoRA's)."""
    return str(recipe.get("method") or "dora")


LOSS_ROWS = {"dino": "DINO", "reference-compatible": "reference-compatible", "intended": "intended (paper)"}
"""The training table's words for each `loss_name`."""


def loss_name(recipe: Mapping[str, Any]) -> str:
    """`dino`, `reference-compatible` (DoRA's released code) or `intended` (DoRA's paper)."""
    if method_of(recipe) == "dino":
        return "dino"
    return "reference-compatible" if recipe.get("reference_compat_loss") else "intended"


def base_recipe(config: DoraConfig, recipe: Mapping[str, Any], step: int | None) -> dict[str, Any]:
    """The `base_recipe` metadata: what defines the run, machine-readable (architecture, clips, batch, steps, loss)."""
    return {
        "method": method_of(recipe),
        "architecture": architecture_name(config),
        "image_size": config.image_size,
        "frames_per_clip": recipe.get("frames_per_clip"),
        "clip_step": recipe.get("clip_step"),
        "batch_size_per_device": recipe.get("batch_size_per_device"),
        "epochs": recipe.get("epochs"),
        "steps": step,
        "loss": loss_name(recipe),
        "mixed_precision": recipe.get("mixed_precision"),
    }


def training_rows(recipe: Mapping[str, Any], step: int | None) -> list[tuple[str, str]]:
    """The recipe as (item, value) rows of the card's training table (``step`` None: not recorded)."""
    dataset = recipe.get("dataset") or ""
    data = ", ".join(f"`{d}`" for d in dataset) if isinstance(dataset, list) else f"`{dataset}`"
    return [
        ("data", data),
        ("steps", str(step) if step is not None else f"not recorded ({recipe.get('epochs')} epochs)"),
        ("clips", f"{recipe.get('frames_per_clip')} frames, {recipe.get('clip_step')} source frames apart"),
        ("batch per device", str(recipe.get("batch_size_per_device"))),
        ("learning rate", f"{recipe.get('base_learning_rate')} x batch / 256, warm-up {recipe.get('warmup_epochs')} epochs, cosine to {recipe.get('min_learning_rate')}"),
        ("weight decay", f"cosine {recipe.get('weight_decay')} -> {recipe.get('weight_decay_end')}"),
        ("teacher momentum", f"cosine {recipe.get('momentum_teacher')} -> 1.0"),
        ("teacher temperature", str(recipe.get("teacher_temp"))),
        ("loss", LOSS_ROWS[loss_name(recipe)]),
        ("precision", str(recipe.get("mixed_precision"))),
    ]


def result_rows(eval_results: Sequence[EvalResult]) -> list[dict[str, str]]:
    """One row per result for the card's evaluation table (the same numbers as `model-index`)."""
    rows = []
    for result in eval_results:
        dataset = result.dataset_name + (f" ({result.dataset_split})" if result.dataset_split else "")
        rows.append({
            "task": result.task_name or result.task_type,
            "dataset": dataset,
            "metric": result.metric_name or result.metric_type,
            "value": f"{result.metric_value:.4g}" if isinstance(result.metric_value, float) else str(result.metric_value),
        })
    return rows


def render_model_card(
    config: DoraConfig,
    recipe: Mapping[str, Any],
    step: int | None,
    repo_id: str = "path/to/this/folder",
    model_name: str = "DoRA ViT",
    eval_results: Sequence[EvalResult] | None = None,
    demo_image: str | None = None,
    origin: str | None = None,
) -> ModelCard:
    """The card of an exported teacher: Hub metadata, how to load it, the run's recipe and any results.

    `eval_results` (k-NN, linear probe, ...) go both into the `model-index` metadata the Hub shows
    and into a results table in the body. The card links the demo Space (which takes any model id);
    `demo_image`, a picture's URL, is shown beside the link. `origin` (Markdown) says where the weights
    come from when they are not this package's export of a run, e.g. a converted checkpoint.
    """
    datasets = hub_dataset_ids(recipe.get("dataset"))
    card_data = ModelCardData(
        model_name=model_name,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        tags=list(TAGS),
        datasets=datasets or None,
        eval_results=list(eval_results) if eval_results else None,
        base_recipe=base_recipe(config, recipe, step),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        training=training_rows(recipe, step),
        results=result_rows(eval_results or []),
        architecture=architecture_name(config),
        method=method_of(recipe),
        space_id=SPACE_ID,
        space_url=hub_url(SPACE_ID, "space"),
        demo_image=demo_image,
        origin=origin,
        **{key: getattr(config, key) for key in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size",
            "head_out_dim", "head_bottleneck_dim", "num_objects", "sinkhorn_iterations", "mask_mode",
        )},
    )
