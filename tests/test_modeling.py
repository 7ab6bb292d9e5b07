"""DoraModel / DoraForPreTraining: outputs, attention paths, save/load, against a reference ViT."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from dora_tiny import tiny_config
from reference_vit import dino_interpolate_pos_encoding, reference_head_forward, reference_vit_forward
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


def images(n: int = 2, size: int | tuple[int, int] = 32, seed: int = 0) -> torch.Tensor:
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [32, 16, (16, 24)])  # 16 and 16x24: DINO-interpolated positions
def test_backbone_and_head_match_independent_reference_vit(model, size):
    backbone, head = our_to_reference_layout(model.state_dict())
    x = images(size=size)
    ref = reference_vit_forward(backbone, x, num_heads=model.config.num_attention_heads)
    out = model(x, interpolate_pos_encoding=size != 32)
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


def plain_tracker_recompute(state: dict, block_input: torch.Tensor, layer: int, heads: int, eps: float) -> tuple:
    """The tracker block's queries, keys and [CLS] attention row from its input, in plain maths."""
    prefix = f"dora.encoder.layer.{layer}."
    dim = block_input.shape[-1]
    normed = F.layer_norm(
        block_input, (dim,), state[prefix + "layernorm_before.weight"], state[prefix + "layernorm_before.bias"], eps
    )
    qkv = normed @ state[prefix + "attention.qkv.weight"].T + state[prefix + "attention.qkv.bias"]
    batch, length, _ = qkv.shape
    q, k, _ = qkv.reshape(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    attention = (q @ k.transpose(-2, -1) * (dim // heads) ** -0.5).softmax(dim=-1)
    return q[:, :, 1:], k[:, :, 1:], attention[:, :, 0, 1:]


@pytest.mark.parametrize("tracker_layer", ["last", "second_last"])
def test_tracker_recomputation_is_float32_under_bf16_autocast(model, tracker_layer):
    """Under autocast the backbone runs in bf16, but the tracker's recomputation of q, k and the
    [CLS] row from the block's (float32) input, and its patch features, stay float32."""
    config = tiny_config(tracker_layer=tracker_layer)
    other = DoraForPreTraining(config).eval()
    other.load_state_dict(model.state_dict())
    state = other.state_dict()
    x = images()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = other(x, output_tracker_features=True, output_hidden_states=True)
        feats = out.tracker_features
        block_input = out.hidden_states[config.tracker_layer_index]
        bf16 = plain_tracker_recompute(state, block_input, config.tracker_layer_index, 4, config.layer_norm_eps)
    assert out.logits.dtype == torch.bfloat16  # the backbone itself did run under autocast
    assert block_input.dtype == torch.float32
    for name in ("queries", "keys", "cls_attention", "patch_features"):
        assert getattr(feats, name).dtype == torch.float32, name
    with torch.no_grad():
        fp32 = plain_tracker_recompute(state, block_input, config.tracker_layer_index, 4, config.layer_norm_eps)
        tokens = F.layer_norm(
            out.hidden_states[config.tracker_layer_index + 1], (48,), state["dora.layernorm.weight"],
            state["dora.layernorm.bias"], config.layer_norm_eps,
        )
    for got, expected in zip((feats.queries, feats.keys, feats.cls_attention), fp32):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats.patch_features, tokens[:, 1:], atol=1e-6, rtol=1e-5)
    # not vacuous: the same products inside the autocast region are visibly off
    assert all((a.float() - b).abs().max() > 1e-4 for a, b in zip(bf16, fp32))


def test_tracker_features_of_a_bf16_model_are_float32(model):
    bf16 = DoraForPreTraining(tiny_config()).eval()
    bf16.load_state_dict(model.state_dict())
    bf16.to(torch.bfloat16)
    with torch.no_grad():
        out = bf16(images().to(torch.bfloat16), output_tracker_features=True, output_hidden_states=True)
    feats = out.tracker_features
    assert out.last_hidden_state.dtype == torch.bfloat16
    assert all(getattr(feats, n).dtype == torch.float32 for n in ("queries", "keys", "cls_attention", "patch_features"))
    state = {k: v.float() for k, v in bf16.state_dict().items()}
    layer = bf16.config.tracker_layer_index
    block_input = out.hidden_states[layer].float()
    expected = plain_tracker_recompute(state, block_input, layer, 4, bf16.config.layer_norm_eps)
    for got, want in zip((feats.queries, feats.keys, feats.cls_attention), expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    tokens = F.layer_norm(
        out.hidden_states[-1].float(), (48,), state["dora.layernorm.weight"], state["dora.layernorm.bias"], 1e-6
    )
    torch.testing.assert_close(feats.patch_features, tokens[:, 1:], atol=1e-6, rtol=1e-5)


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


def naive_bicubic(grid: torch.Tensor, out_h: int, out_w: int, pitch_h: float, pitch_w: float) -> torch.Tensor:
    """`(n, n, dim)` grid sampled at output cells `i` from source position `(i + 0.5) * pitch - 0.5`.

    Keys' cubic convolution with a = -0.75 over the 4 nearest source cells, indices clamped at
    the borders, one axis after the other, in float64 loops: PyTorch's bicubic resampling
    (`align_corners=False`) written out, so that the pitch each mode samples at is explicit.
    """

    def cubic(x: float, a: float = -0.75) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0

    def axis(n_in: int, n_out: int, pitch: float) -> torch.Tensor:
        taps = torch.zeros(n_out, n_in, dtype=torch.float64)
        for i in range(n_out):
            source = (i + 0.5) * pitch - 0.5
            left = math.floor(source)
            t = source - left
            for offset, w in zip(range(-1, 3), (cubic(t + 1), cubic(t), cubic(1 - t), cubic(2 - t))):
                taps[i, min(max(left + offset, 0), n_in - 1)] += w
        return taps

    n = grid.shape[0]
    return torch.einsum("ia,jb,abd->ijd", axis(n, out_h, pitch_h), axis(n, out_w, pitch_w), grid.double())


@pytest.fixture(scope="module")
def embeddings_224():
    """Embeddings of a ViT-S/16-like grid (14x14 learned positions), narrow so that it is quick."""
    torch.manual_seed(0)
    return DoraModel(tiny_config(image_size=224, patch_size=16, num_hidden_layers=1)).embeddings


@pytest.mark.parametrize("height, width", [(112, 112), (96, 96), (160, 160), (112, 160), (160, 96), (288, 288)])
def test_reference_position_interpolation_is_dinos(embeddings_224, height, width):
    emb = embeddings_224
    assert emb.interpolate_pos_encoding_mode == "reference"  # the default
    patches = (height // 16) * (width // 16)
    got = emb.interpolate_pos_encoding(height, width)
    expected = dino_interpolate_pos_encoding(emb.position_embeddings, patches, height, width, 16)
    assert got.shape == expected.shape == (1, 1 + patches, 48)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # DINO's offset samples the learned grid at a pitch of 14 / (g + 0.1) cells, not 14 / g ...
    grid_h, grid_w = height // 16, width // 16
    learned = emb.position_embeddings[0, 1:].reshape(14, 14, -1)
    naive = naive_bicubic(learned, grid_h, grid_w, 14 / (grid_h + 0.1), 14 / (grid_w + 0.1))
    torch.testing.assert_close(got[0, 1:].double(), naive.reshape(patches, -1), atol=1e-6, rtol=0)
    # ... which is why it differs from asking for the g-cell grid directly
    size_mode = F.interpolate(learned.permute(2, 0, 1)[None], size=(grid_h, grid_w), mode="bicubic")
    assert (got[0, 1:] - size_mode[0].permute(1, 2, 0).reshape(patches, -1)).abs().max() > 1e-3


def test_position_interpolation_is_the_identity_on_the_learned_grid(embeddings_224):
    assert embeddings_224.interpolate_pos_encoding(224, 224) is embeddings_224.position_embeddings
    # DINO, too, returns its learned embeddings unchanged there
    pos = embeddings_224.position_embeddings
    assert dino_interpolate_pos_encoding(pos, 196, 224, 224, 16) is pos


@pytest.mark.parametrize("height, width", [(112, 112), (112, 160)])
def test_size_position_interpolation_keeps_the_target_grid_resampling(embeddings_224, height, width):
    """`interpolate_pos_encoding_mode="size"`: bicubic `size=(gh, gw)`, a pitch of 14 / g cells."""
    emb = DoraModel(
        tiny_config(image_size=224, patch_size=16, num_hidden_layers=1, interpolate_pos_encoding_mode="size")
    ).embeddings
    emb.load_state_dict(embeddings_224.state_dict())
    got = emb.interpolate_pos_encoding(height, width)
    grid_h, grid_w = height // 16, width // 16
    learned = emb.position_embeddings[0, 1:].reshape(14, 14, -1)
    expected = F.interpolate(
        learned.permute(2, 0, 1)[None], size=(grid_h, grid_w), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(got[0, 1:], expected[0].permute(1, 2, 0).reshape(grid_h * grid_w, -1))
    naive = naive_bicubic(learned, grid_h, grid_w, 14 / grid_h, 14 / grid_w)
    torch.testing.assert_close(got[0, 1:].double(), naive.reshape(grid_h * grid_w, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[:, :1], emb.position_embeddings[:, :1])
    reference = embeddings_224.interpolate_pos_encoding(height, width)
    assert (got - reference).abs().max() > 1e-3


def test_size_interpolation_mode_round_trips_and_changes_the_features(model, tmp_path):
    """The mode is saved in config.json, restored on load, and drives the interpolated forward."""
    other = DoraForPreTraining(tiny_config(interpolate_pos_encoding_mode="size")).eval()
    other.load_state_dict(model.state_dict())
    other.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["interpolate_pos_encoding_mode"] == "size"
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert loaded.config.interpolate_pos_encoding_mode == "size"
    small = images(size=16)
    with torch.no_grad():
        size_features = loaded(small, interpolate_pos_encoding=True).pooler_output
        assert torch.equal(size_features, other(small, interpolate_pos_encoding=True).pooler_output)
        reference_features = model(small, interpolate_pos_encoding=True).pooler_output
        # at the learned size both modes are the same model
        assert torch.equal(loaded(images()).pooler_output, model(images()).pooler_output)
    assert (size_features - reference_features).abs().max() > 1e-3
    # a config saved before the option existed loads with the reference default
    config = json.loads((tmp_path / "config.json").read_text())
    del config["interpolate_pos_encoding_mode"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert AutoConfig.from_pretrained(tmp_path).interpolate_pos_encoding_mode == "reference"


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
    masked = torch.zeros(num_images * num_masks, *pixels.shape[1:], dtype=pixels.dtype)
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
    # float64: the two computations are equal in exact arithmetic, so round-off (whose size in
    # float32 depends on the CPU's kernels) must not decide the comparison.
    torch.manual_seed(0)
    config = tiny_config(attn_implementation=attention)
    model = DoraForPreTraining(config).eval().double()
    x = images(n=2, size=size).double()
    patches = (size // config.patch_size) ** 2
    gen = torch.Generator().manual_seed(1)
    values = torch.rand(2, masks_per_image or 1, patches, generator=gen, dtype=torch.float64)
    patch_mask = values > 0.5 if kind == "bool" else values
    interpolate = size != config.image_size

    model.zero_grad()
    given = patch_mask if masks_per_image else patch_mask[:, 0]  # (N, P) or (N, M, P)
    tokens = model(x, patch_mask=given, interpolate_pos_encoding=interpolate, output_attentions=attention == "eager")
    probe = torch.randn(tokens.logits.shape, generator=gen, dtype=torch.float64)
    (tokens.logits * probe).sum().backward()
    token_grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad()
    pixels = mask_pixels(x, patch_mask.double(), config.patch_size)
    expected = model(pixels, interpolate_pos_encoding=interpolate, output_attentions=attention == "eager")
    (expected.logits * probe).sum().backward()

    assert tokens.last_hidden_state.shape == (2 * (masks_per_image or 1), 1 + patches, config.hidden_size)
    torch.testing.assert_close(tokens.last_hidden_state, expected.last_hidden_state, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(tokens.logits, expected.logits, atol=1e-10, rtol=1e-10)
    if attention == "eager":
        torch.testing.assert_close(tokens.attentions[0], expected.attentions[0], atol=1e-10, rtol=1e-10)
    for name, param in model.named_parameters():
        torch.testing.assert_close(
            token_grads[name], param.grad, atol=1e-10, rtol=1e-9, msg=lambda m, name=name: f"{name}: {m}"
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
    assert config.interpolate_pos_encoding_mode == "reference"
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
        ("interpolate_pos_encoding_mode", "bilinear", "interpolate_pos_encoding_mode"),
        ("hidden_size", 100, "hidden_size"),
        ("sinkhorn_epsilon", 0.0, "sinkhorn_epsilon"),
        ("patch_size", 0, "patch_size"),
    ],
)
def test_config_rejects_invalid_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DoraConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [("layer_norm_eps", "abc"), ("hidden_size", "384"), ("num_hidden_layers", 2.0), ("qkv_bias", 1), ("mask_mode", 3)],
)
def test_config_types_are_checked_naming_the_field(field, value):
    """Typed fields, as transformers' configs (`@strict`): a wrong type fails at construction."""
    with pytest.raises(Exception, match=rf"(?s)field '{field}'.*expected") as caught:
        DoraConfig(**{field: value})
    assert type(caught.value).__name__ == "StrictDataclassFieldValidationError"


def test_config_checks_assignments_and_again_at_save(tmp_path):
    config = tiny_config()
    with pytest.raises(Exception, match="field 'layer_norm_eps'"):
        config.layer_norm_eps = "abc"
    assert config.layer_norm_eps == 1e-6  # the bad value was not stored
    # an int where a float is expected is fine (JSON files write 0 for 0.0), as in transformers
    assert DoraConfig(drop_path_rate=0, sinkhorn_epsilon=1).drop_path_rate == 0
    # a value that is well typed but impossible is caught when the config is saved
    config.num_objects = 9
    with pytest.raises(Exception, match="num_objects"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_backbone_stages_and_classifier_options_round_trip(tmp_path):
    config = tiny_config(out_indices=[1, 3], reshape_hidden_states=False, classifier_pooling="cls")
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3"] and config.out_features == ["stage1", "stage3"]
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert (loaded.out_features, loaded.out_indices) == (["stage1", "stage3"], [1, 3])
    assert (loaded.reshape_hidden_states, loaded.classifier_pooling) == (False, "cls")
    assert DoraConfig().out_features == ["stage12"]  # the last block by default, as DINOv2's
    for bad in (dict(out_indices=[5]), dict(out_features=["stage9"]), dict(classifier_pooling="mean")):
        with pytest.raises(ValueError):
            DoraConfig(num_hidden_layers=4, **bad)


@pytest.mark.parametrize(
    "model_class", ["DoraModel", "DoraForPreTraining", "DoraBackbone", "DoraForImageClassification"]
)
def test_unknown_forward_keyword_arguments_are_refused(model_class):
    import dora_hf

    model = getattr(dora_hf, model_class)(tiny_config()).eval()
    message = rf"{model_class}\.forward\(\) got unexpected keyword argument\(s\): interpolate_pos_encodings"
    with pytest.raises(TypeError, match=message):
        model(images(), interpolate_pos_encodings=True)
    # transformers' own keyword arguments pass (`num_items_in_batch` comes from Trainer)
    model(images(), output_hidden_states=False, num_items_in_batch=torch.tensor(2))


def test_hidden_states_and_attentions_are_recorded_and_selectable(model):
    x = images()
    out = model(x, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    # the last entry is the last block's output, before the final LayerNorm (as ViT's)
    torch.testing.assert_close(model.dora.layernorm(out.hidden_states[-1]), out.last_hidden_state)
    # output_hidden_states may select entries by index, as for transformers' models
    selected = model(x, output_hidden_states=[0, -1]).hidden_states
    assert selected[1] is None and selected[2] is None
    torch.testing.assert_close(selected[0], out.hidden_states[0])
    torch.testing.assert_close(selected[-1], out.hidden_states[-1])
    # tuples without a return_dict, as with any transformers model, whether asked or configured
    as_tuple = model(x, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits)
    import dora_hf

    for model_class in ("DoraForPreTraining", "DoraBackbone", "DoraForImageClassification"):
        other = getattr(dora_hf, model_class)(tiny_config(return_dict=False)).eval()
        assert isinstance(other(x), tuple), model_class
