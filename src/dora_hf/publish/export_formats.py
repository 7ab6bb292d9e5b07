"""DoRA's backbone in layouts that need no DoRA code: transformers' `ViTModel` and timm's ViT.

DoRA's ViT is the DINO ViT, which is also timm's `VisionTransformer` (pre-norm blocks, fused
`qkv`, learned position embeddings, [CLS] token, LayerNorm eps 1e-6, exact GELU), so both layouts
are weight renames, the ViT one splitting `qkv` into `query`/`key`/`value`. Both are built as the
library's own model and loaded strictly before anything is written, so a weight without a place,
or a place without a weight, is an error here rather than a warning for the user.

What the plain models compute, and what they do not:

- DoRA's image feature is the final-LayerNorm [CLS] token. transformers' ViT pooler is a dense
  layer and an activation on that token; the `vit` export sets it to the identity (weight `I`,
  bias 0, `pooler_act="linear"`), so `pooler_output` is DoRA's feature, as is
  `last_hidden_state[:, 0]` (the only one there when loaded with `add_pooling_layer=False`).
  timm's `VisionTransformer(num_classes=0)` returns the same token from `forward`.
- At the native input size the three models compute the same function. At other sizes ViT
  resamples the position grid to the new size (``size=g``), which is DoRA's
  `interpolate_pos_encoding_mode="size"`; DoRA's default `"reference"` mode (DINO's scale factor)
  gives features about 1e-2 away. timm (`dynamic_img_size=True`) resamples with antialiased
  bicubic (PIL's kernel), which matches neither mode.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from transformers import BitImageProcessorPil, ViTConfig, ViTModel

from ..errors import DoraUserError
from ..hub_tags import FINDABLE_TAGS
from ..modeling import DoraConfig, DoraImageProcessor, DoraModel
from .weight_names import TO_TIMM, rename

TIMM_ARCHITECTURE = "vit_small_patch16_224"
"""timm's name for DoRA's ViT-S/16; other sizes are the same class with other `model_args`."""

_TO_VIT: list[tuple[str, str]] = [
    (r"^embeddings\.", "embeddings."),
    (r"^encoder\.layer\.(\d+)\.(layernorm_before|layernorm_after)\.", r"encoder.layer.\1.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^encoder\.layer\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^encoder\.layer\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"^layernorm\.", "layernorm."),
]
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.qkv\.(weight|bias)$")


def _rename(key: str, table: list[tuple[str, str]]) -> str:
    name = rename(key, table)
    if name is None:
        raise ValueError(f"no place for DoRA weight {key!r} in this layout")
    return name


def vit_config(config: DoraConfig) -> ViTConfig:
    """The transformers `ViTConfig` of the same network, with an identity-ready pooler (see module doc)."""
    return ViTConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        qkv_bias=config.qkv_bias,
        encoder_stride=config.patch_size,
        pooler_output_size=config.hidden_size,
        pooler_act="linear",
        architectures=["ViTModel"],
    )


def vit_state_dict(backbone: DoraModel) -> dict[str, torch.Tensor]:
    """`backbone`'s weights in the Hub's `ViTModel` names: `qkv` split in three, the pooler the identity."""
    state: dict[str, torch.Tensor] = {}
    for key, value in backbone.state_dict().items():
        value = value.detach().float()
        fused = _QKV.match(key)
        if fused:
            layer, kind = fused.groups()
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                state[f"encoder.layer.{layer}.attention.attention.{name}.{kind}"] = part.clone()
        else:
            state[_rename(key, _TO_VIT)] = value.clone()
    width = backbone.config.hidden_size
    state["pooler.dense.weight"] = torch.eye(width)
    state["pooler.dense.bias"] = torch.zeros(width)
    return state


def load_vit(folder: Path) -> ViTModel:
    """The `ViTModel` saved in `folder`, refusing any missing, unexpected or mis-shaped weight."""
    model, info = ViTModel.from_pretrained(folder, output_loading_info=True)
    problems = {kind: keys for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if (keys := info.get(kind))}
    if problems:
        raise RuntimeError(f"the ViT export does not load cleanly: {problems}")
    return model.eval()


def check_same_features(backbone: DoraModel, vit: ViTModel) -> None:
    """Run both on one random batch at the native size; the exported folder must compute DoRA's tokens."""
    config = backbone.config
    pixels = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone(pixels.to(backbone.dtype)).last_hidden_state.float()
        found = vit(pixels).last_hidden_state
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5, msg="the ViT export computes other features")


def timm_state_dict(backbone: DoraModel) -> dict[str, torch.Tensor]:
    """`backbone`'s weights in timm `VisionTransformer` names (DINO's, the reference checkpoints')."""
    return {_rename(key, TO_TIMM): value.detach().float().contiguous() for key, value in backbone.state_dict().items()}


def check_reference_names(backbone: DoraModel, state: dict[str, torch.Tensor]) -> None:
    """timm's names are DINO's: reading `state` back with `convert-reference`'s table must give `backbone`."""
    from .convert import split_reference_keys

    weights, head, unknown = split_reference_keys(state)
    expected = backbone.state_dict()
    if unknown or head or weights.keys() != expected.keys() or any(not torch.equal(weights[k], expected[k].float()) for k in expected):
        raise RuntimeError(f"the timm layout does not read back as the DoRA backbone (unknown keys: {unknown})")


def timm_model_args(config: DoraConfig) -> dict:
    """`timm.create_model` keyword arguments that give `config`'s network with no classifier."""
    return {
        "img_size": config.image_size,
        "patch_size": config.patch_size,
        "in_chans": config.num_channels,
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        "qkv_bias": config.qkv_bias,
        "num_classes": 0,
    }


def processor_settings(processor: DoraImageProcessor) -> dict:
    """`processor`'s transform as keyword arguments of another PIL-backend processor."""
    return {key: value for key, value in processor.to_dict().items() if key not in {"image_processor_type", "auto_map"}}


def check_timm_compatible(config: DoraConfig) -> None:
    """Refuse networks timm's `VisionTransformer` arguments cannot express, before anything is written.

    timm takes the MLP width as `int(embed_dim * mlp_ratio)` and its activation as a layer
    (exact GELU by default), not by name.
    """
    if config.hidden_act != "gelu":
        raise DoraUserError(f"--format timm: hidden_act {config.hidden_act!r} has no timm argument; only 'gelu' exports")
    if int(config.hidden_size * (config.intermediate_size / config.hidden_size)) != config.intermediate_size:
        raise DoraUserError(
            f"--format timm: intermediate_size {config.intermediate_size} is not expressible as timm's "
            f"int(embed_dim * mlp_ratio) for embed_dim {config.hidden_size}"
        )


def write_vit(backbone: DoraModel, processor: DoraImageProcessor, folder: Path, name: str) -> None:
    """Save a plain `ViTModel` folder: weights, config, a `BitImageProcessor` (DoRA's transform) and a card.

    The weights carry the names of ViT checkpoints on the Hub (`encoder.layer.N.attention.attention.query`),
    which every transformers release loads; the folder is loaded back and run once before it is kept.

    `BitImageProcessor` is transformers' processor with DoRA's steps (short-side resize, centre
    crop, rescale, normalise), as DINOv2 uses it; `ViTImageProcessor` only resizes to a square.
    """
    save_file(vit_state_dict(backbone), str(folder / "model.safetensors"), metadata={"format": "pt"})
    vit_config(backbone.config).save_pretrained(folder)
    check_same_features(backbone, load_vit(folder))
    BitImageProcessorPil(**processor_settings(processor)).save_pretrained(folder)
    _card(
        {"library_name": "transformers", "pipeline_tag": "image-feature-extraction", "tags": [*FINDABLE_TAGS, "vit", "dino"]},
        "transformers ViTModel",
        "```python\nfrom transformers import AutoImageProcessor, ViTModel\n\n"
        f'model = ViTModel.from_pretrained("{name}")\nprocessor = AutoImageProcessor.from_pretrained("{name}", backend="pil")\n'
        'features = model(**processor(images, return_tensors="pt")).pooler_output   # DoRA\'s [CLS] feature\n```\n\n'
        "The pooler is the identity, so `pooler_output` equals `last_hidden_state[:, 0]`, the final-LayerNorm "
        "[CLS] token. At input sizes other than the native one (`interpolate_pos_encoding=True`) the position "
        "embeddings are resampled to the new grid (DoRA's `interpolate_pos_encoding_mode=\"size\"`).\n",
    ).save(folder / "README.md")


def write_timm(backbone: DoraModel, processor: DoraImageProcessor, folder: Path, name: str) -> None:
    """Save timm's layout: `model.safetensors` and timm's hub `config.json` (architecture, args, transform)."""
    check_timm_compatible(backbone.config)
    config = backbone.config
    state = timm_state_dict(backbone)
    check_reference_names(backbone, state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    settings = processor_settings(processor)
    crop = settings["crop_size"]["height"]
    pretrained_cfg = {
        "architecture": TIMM_ARCHITECTURE,
        "num_classes": 0,
        "input_size": [config.num_channels, crop, crop],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": crop / settings["size"]["shortest_edge"],
        "crop_mode": "center",
        "mean": list(settings["image_mean"]),
        "std": list(settings["image_std"]),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    record = {
        "architecture": TIMM_ARCHITECTURE,
        "num_classes": 0,
        "num_features": config.hidden_size,
        "model_args": timm_model_args(config),
        "pretrained_cfg": pretrained_cfg,
    }
    (folder / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    args = ", ".join(f"{key}={value!r}" for key, value in timm_model_args(config).items())
    _card(
        {"library_name": "timm", "pipeline_tag": "image-feature-extraction", "tags": [*FINDABLE_TAGS, "timm", "dino"]},
        f"timm `{TIMM_ARCHITECTURE}` layout",
        "```python\nimport timm\n\n"
        f'model = timm.create_model("{TIMM_ARCHITECTURE}", pretrained=True, {args},\n'
        f'                          pretrained_cfg_overlay=dict(file="{name}/model.safetensors"))\n'
        f'model = timm.create_model("local-dir:{name}", pretrained=True)   # the same, from this folder\'s config.json\n'
        "features = model(pixel_values)   # DoRA's final-LayerNorm [CLS] feature\n```\n",
    ).save(folder / "README.md")


def _card(metadata: dict, layout: str, usage: str) -> ModelCard:
    """A short card: what the folder holds and how to load it without DoRA's code."""
    body = (
        f"# DoRA ViT backbone ({layout})\n\n"
        "A DoRA-pretrained Vision Transformer (arXiv:2310.08584) in a layout that needs no DoRA code. "
        "Images go through DINO's evaluation transform (short side resized bicubic, centre crop, ImageNet "
        "mean and std).\n\n" + usage
    )
    lines = ["---"] + [f"{key}: {json.dumps(value)}" for key, value in metadata.items()] + ["---", "", body]
    return ModelCard("\n".join(lines))
