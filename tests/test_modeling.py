"""DoraModel / DoraForPreTraining: outputs, attention paths, save/load, against a reference ViT."""

from __future__ import annotations

import json

import pytest
import torch
from dora_tiny import tiny_config
from reference_vit import reference_head_forward, reference_vit_forward
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForPreTraining

from dora_hf import DoraConfig, DoraForPreTraining, DoraImageProcessor, DoraModel


def our_to_reference_layout(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Rename the project's weights to DINO names with a table written here, not in the package."""
    backbone, head = {}, {}
    table = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
        "encoder.layer.": "blocks.",
        ".layernorm_before.": ".norm1.",
        ".layernorm_after.": ".norm2.",
        ".attention.qkv.": ".attn.qkv.",
        ".attention.o_proj.": ".attn.proj.",
        "layernorm.": "norm.",
    }
    for key, value in state.items():
        if key.startswith("dora."):
            name = key[len("dora.") :]
            for old, new in table.items():
                name = name.replace(old, new)
            backbone[name] = value
        elif key.startswith("projection_head."):
            name = key[len("projection_head.") :].replace("magnitude", "weight_g").replace("direction", "weight_v")
            head[name] = value
    return backbone, head


@pytest.fixture(scope="module")
def model() -> DoraForPreTraining:
    torch.manual_seed(0)
    return DoraForPreTraining(tiny_config()).eval()


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_backbone_and_head_match_independent_reference_vit(model):
    backbone, head = our_to_reference_layout(model.state_dict())
    x = images()
    ref = reference_vit_forward(backbone, x, num_heads=model.config.num_attention_heads)
    out = model(x)
    torch.testing.assert_close(out.last_hidden_state, ref["tokens"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref["tokens"][:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, reference_head_forward(head, ref["tokens"][:, 0]), atol=1e-5, rtol=1e-5)


def test_tracker_features_are_the_last_block_queries_keys_and_cls_attention(model):
    backbone, _ = our_to_reference_layout(model.state_dict())
    x = images()
    ref = reference_vit_forward(backbone, x, num_heads=model.config.num_attention_heads)
    feats = model(x, output_tracker_features=True).tracker_features
    torch.testing.assert_close(feats.queries, ref["q"][:, :, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.keys, ref["k"][:, :, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.cls_attention, ref["attn"][:, :, 0, 1:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats.patch_features, ref["tokens"][:, 1:], atol=1e-5, rtol=1e-5)


def test_second_last_tracker_layer_reads_that_block(model):
    config = tiny_config(tracker_layer="second_last")
    other = DoraForPreTraining(config).eval()
    other.load_state_dict(model.state_dict())
    x = images()
    out = other(x, output_attentions=True, output_hidden_states=True, output_tracker_features=True)
    feats = out.tracker_features
    # block L-2's probabilities (eager path) and its output normalised by the final LayerNorm
    torch.testing.assert_close(feats.cls_attention, out.attentions[-2][:, :, 0, 1:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats.patch_features, other.dora.layernorm(out.hidden_states[-2])[:, 1:])


def test_eager_and_sdpa_attention_agree_and_shapes(model):
    x = images()
    fused = model(x)
    eager = model(x, output_attentions=True, output_hidden_states=True)
    torch.testing.assert_close(fused.logits, eager.logits, atol=1e-5, rtol=1e-5)
    config = model.config
    assert len(eager.attentions) == config.num_hidden_layers
    assert eager.attentions[0].shape == (2, config.num_attention_heads, 17, 17)
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(2, 4, 17))
    assert len(eager.hidden_states) == config.num_hidden_layers + 1
    assert fused.attentions is None and fused.hidden_states is None
    assert fused.logits.shape == (2, config.head_out_dim)


def test_interpolate_pos_encoding_for_local_views(model):
    small = images(size=16)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(small)
    out = model(small, interpolate_pos_encoding=True)
    assert out.last_hidden_state.shape == (2, 1 + 4, 48)
    # same size: interpolation is the identity
    x = images()
    torch.testing.assert_close(model(x, interpolate_pos_encoding=True).logits, model(x).logits)
    # non-multiple of the patch size is refused with the sizes in the message
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(images(size=20), interpolate_pos_encoding=True)


def test_interpolated_position_embeddings_are_bicubic_resampling(model):
    emb = model.dora.embeddings
    got = emb.interpolate_pos_encoding(16, 16)
    grid = emb.position_embeddings[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False)
    torch.testing.assert_close(got[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 4, 48))
    torch.testing.assert_close(got[:, :1], emb.position_embeddings[:, :1])


def test_save_pretrained_round_trip_through_auto_classes(model, tmp_path):
    model.save_pretrained(tmp_path)
    DoraImageProcessor().save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= files
    assert {"modeling_dora.py", "configuration_dora.py", "tracking_dora.py", "image_processing_dora.py"} <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "dora"
    assert config["auto_map"]["AutoModel"] == "modeling_dora.DoraModel"

    x = images()
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(backbone, DoraModel)
    assert torch.equal(backbone(x).pooler_output, model(x).pooler_output)
    full = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert isinstance(full, DoraForPreTraining)
    assert torch.equal(full(x).logits, model(x).logits)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DoraConfig)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), DoraImageProcessor)


def test_image_processor_is_dino_eval_transform():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    out = DoraImageProcessor()(Image.fromarray(array), return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 3, 224, 224)
    # independent computation: short side 300 -> 256 (bicubic), centre crop 224, ImageNet normalisation
    resized = Image.fromarray(array).resize((341, 256), Image.BICUBIC)
    left, top = (341 - 224) // 2, (256 - 224) // 2
    crop = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = torch.from_numpy(((crop - mean) / std).transpose(2, 0, 1)).float()
    torch.testing.assert_close(out[0], expected, atol=2e-2, rtol=0)
    assert (out[0] - expected).abs().mean() < 2e-3


def test_drop_path_only_in_training_mode():
    torch.manual_seed(0)
    model = DoraForPreTraining(tiny_config(drop_path_rate=0.5))
    x = images(n=8)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    model.train()
    torch.manual_seed(1)
    a = model(x).logits
    torch.manual_seed(2)
    b = model(x).logits
    assert not torch.allclose(a, b)


def mask_pixels(pixels: torch.Tensor, patch_mask: torch.Tensor, patch: int) -> torch.Tensor:
    """`(N, C, H, W)` images and `(N, M, P)` per-patch factors to the `N*M` masked images, patch by patch."""
    num_images, num_masks, num_patches = patch_mask.shape
    grid_w = pixels.shape[-1] // patch
    masked = torch.zeros(num_images * num_masks, *pixels.shape[1:])
    for i in range(num_images):
        for j in range(num_masks):
            for cell in range(num_patches):
                gy, gx = divmod(cell, grid_w)
                ys, xs = slice(gy * patch, (gy + 1) * patch), slice(gx * patch, (gx + 1) * patch)
                masked[i * num_masks + j, :, ys, xs] = pixels[i, :, ys, xs] * patch_mask[i, j, cell]
    return masked


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "size, masks_per_image, kind",
    [(32, None, "bool"), (32, 3, "bool"), (32, 2, "float"), (16, 2, "bool")],  # 16: interpolated positions
)
def test_patch_mask_on_tokens_equals_masking_the_pixels(attention, size, masks_per_image, kind):
    torch.manual_seed(0)
    config = tiny_config(attn_implementation=attention)
    model = DoraForPreTraining(config).eval()
    x = images(n=2, size=size)
    patches = (size // config.patch_size) ** 2
    gen = torch.Generator().manual_seed(1)
    values = torch.rand(2, masks_per_image or 1, patches, generator=gen)
    patch_mask = values > 0.5 if kind == "bool" else values
    interpolate = size != config.image_size

    model.zero_grad()
    given = patch_mask if masks_per_image else patch_mask[:, 0]  # (N, P) or (N, M, P)
    tokens = model(x, patch_mask=given, interpolate_pos_encoding=interpolate, output_attentions=attention == "eager")
    probe = torch.randn(tokens.logits.shape, generator=gen)
    (tokens.logits * probe).sum().backward()
    token_grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad()
    pixels = mask_pixels(x, patch_mask.float(), config.patch_size)
    expected = model(pixels, interpolate_pos_encoding=interpolate, output_attentions=attention == "eager")
    (expected.logits * probe).sum().backward()

    assert tokens.last_hidden_state.shape == (2 * (masks_per_image or 1), 1 + patches, config.hidden_size)
    torch.testing.assert_close(tokens.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens.logits, expected.logits, atol=1e-5, rtol=1e-5)
    if attention == "eager":
        torch.testing.assert_close(tokens.attentions[0], expected.attentions[0], atol=1e-5, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(
            token_grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )
    assert token_grads["dora.embeddings.patch_embeddings.projection.weight"].abs().sum() > 0


def test_patch_mask_keeps_stochastic_depth_per_masked_sequence():
    """Each masked sequence draws its own drop-path decision, as each masked image did."""
    torch.manual_seed(0)
    model = DoraModel(tiny_config(drop_path_rate=0.5)).train()
    x = images(n=3)
    patch_mask = torch.rand(3, 4, 16, generator=torch.Generator().manual_seed(2)) > 0.5
    torch.manual_seed(5)
    tokens = model(x, patch_mask=patch_mask).pooler_output
    torch.manual_seed(5)
    pixels = model(mask_pixels(x, patch_mask.float(), 8)).pooler_output
    torch.testing.assert_close(tokens, pixels, atol=1e-5, rtol=1e-5)
    model.eval()
    assert not torch.allclose(tokens, model(x, patch_mask=patch_mask).pooler_output, atol=1e-3)


def test_patch_mask_shape_is_checked(model):
    x = images()
    for bad in (torch.ones(2, 15), torch.ones(3, 16), torch.ones(2, 2, 2, 16)):
        with pytest.raises(ValueError, match="patch_mask"):
            model(x, patch_mask=bad)


def test_norm_last_layer_freezes_the_gain():
    assert DoraForPreTraining(tiny_config(norm_last_layer=True)).projection_head.last_layer.magnitude.requires_grad is False
    assert DoraForPreTraining(tiny_config(norm_last_layer=False)).projection_head.last_layer.magnitude.requires_grad


def test_reference_vits16_defaults():
    config = DoraConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 6)
    assert (config.intermediate_size, config.patch_size, config.image_size) == (1536, 16, 224)
    assert (config.head_out_dim, config.head_hidden_dim, config.head_bottleneck_dim) == (65536, 2048, 256)
    assert config.layer_norm_eps == 1e-6 and config.qkv_bias and config.drop_path_rate == 0.1
    assert (config.num_objects, config.sinkhorn_iterations, config.sinkhorn_epsilon) == (3, 30, 0.05)
    assert (config.tracker_layer, config.mask_mode) == ("last", "keep")
    model = DoraForPreTraining(DoraConfig())
    backbone = sum(p.numel() for p in model.dora.parameters())
    assert 21_000_000 < backbone < 22_500_000  # ViT-S/16: about 21.7M


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_objects", 7, "num_objects"),
        ("image_size", 230, "image_size"),
        ("mask_mode", "invert", "mask_mode"),
        ("tracker_layer", "penultimate", "tracker_layer"),
        ("mask_threshold_scope", "global", "mask_threshold_scope"),
        ("hidden_size", 100, "hidden_size"),
        ("sinkhorn_epsilon", 0.0, "sinkhorn_epsilon"),
        ("patch_size", 0, "patch_size"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DoraConfig(**{field: value})
