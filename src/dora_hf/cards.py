"""Model cards for exported DoRA models, rendered with `huggingface_hub.ModelCard` from `model_cards/`.

The templates live inside the package (`dora_hf/model_cards/`) so that an installed wheel has them.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .modeling import DoraConfig

MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_cards" / "model_card_template.md"


def render_model_card(
    config: DoraConfig,
    recipe: dict,
    step: int,
    repo_id: str = "path/to/this/folder",
    model_name: str = "DoRA ViT",
) -> ModelCard:
    """The card of an exported teacher: hub metadata plus the run's recipe, data and step count."""
    dataset = recipe.get("dataset") or ""
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        tags=["dora", "self-supervised", "vision", "image-feature-extraction", "vit", "dino"],
        datasets=[dataset] if dataset and not Path(dataset).exists() else None,
    )
    training = [
        ("data", f"`{dataset}`"),
        ("steps", str(step)),
        ("clips", f"{recipe.get('frames_per_clip')} frames, {recipe.get('clip_step')} source frames apart"),
        ("batch per device", str(recipe.get("batch_size_per_device"))),
        ("learning rate", f"{recipe.get('base_learning_rate')} x batch / 256, warm-up {recipe.get('warmup_epochs')} epochs, cosine to {recipe.get('min_learning_rate')}"),
        ("weight decay", f"cosine {recipe.get('weight_decay')} -> {recipe.get('weight_decay_end')}"),
        ("teacher momentum", f"cosine {recipe.get('momentum_teacher')} -> 1.0"),
        ("teacher temperature", str(recipe.get("teacher_temp"))),
        ("loss", "reference-compatible" if recipe.get("reference_compat_loss") else "intended (paper)"),
        ("precision", str(recipe.get("mixed_precision"))),
    ]
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        training=training,
        **{key: getattr(config, key) for key in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size",
            "head_out_dim", "head_bottleneck_dim", "num_objects", "sinkhorn_iterations", "mask_mode",
        )},
    )
