"""DoRA downstream: AutoBackbone feature maps, UperNet/DPT/Mask2Former on them, image classification,
Trainer, gradient checkpointing, attention kernels, loading without a custom-code prompt, README.

Expected values come from an independent DINO ViT forward over the same weights renamed to the
reference layout (`reference_vit.py`), from explicit loops, or from the same computation done
another way, never from the code under test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from blocked_import import BLOCK_DORA_HF
from dora_tiny import tiny_config
from PIL import Image
from reference_vit import dino_interpolate_pos_encoding, reference_vit_forward
from test_modeling import our_to_reference_layout
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModelForImageClassification,
    DPTConfig,
    DPTForDepthEstimation,
    Mask2FormerConfig,
    Trainer,
    TrainingArguments,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    pipeline,
)

from dora_hf import (
    DoraBackbone,
    DoraConfig,
    DoraForImageClassification,
    DoraForPreTraining,
    DoraImageProcessor,
    DoraModel,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
PROMPT = "Do you wish to run the custom code"


def tiny(**overrides) -> DoraConfig:
    """32 wide, 2 blocks of 4 heads, 32-px images in 8-px patches: a DoRA ViT that runs in milliseconds."""
    small = dict(
        hidden_size=32, num_hidden_layers=2, intermediate_size=64, head_out_dim=16, head_hidden_dim=16,
        head_bottleneck_dim=8, num_objects=2,
    )
    return tiny_config(**{**small, **overrides})


def images(n: int = 2, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def reference_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone weights of any DoRA class, renamed to the DINO layout (no code of the package)."""
    state = model.state_dict()
    if not any(key.startswith("dora.") for key in state):
        state = {f"dora.{key}": value for key, value in state.items()}
    backbone, _ = our_to_reference_layout(state)
    return backbone


def reference_stage_tokens(
    state: dict[str, torch.Tensor], pixels: torch.Tensor, stage: int, heads: int
) -> torch.Tensor:
    """Final-LayerNorm tokens after `stage` blocks (0: the embeddings), by the reference forward.

    The reference runs every block it finds, so the blocks after `stage` are left out of its state.
    """
    if stage > 0:
        kept = {k: v for k, v in state.items() if not k.startswith("blocks.") or int(k.split(".")[1]) < stage}
        return reference_vit_forward(kept, pixels, num_heads=heads)["tokens"]
    weight = state["patch_embed.proj.weight"]
    patch = weight.shape[-1]
    tokens = F.conv2d(pixels, weight, state["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    height, width = pixels.shape[2:]
    position = dino_interpolate_pos_encoding(state["pos_embed"], tokens.shape[1], height, width, patch)
    tokens = torch.cat([state["cls_token"].expand(len(pixels), -1, -1), tokens], dim=1) + position
    return F.layer_norm(tokens, (tokens.shape[-1],), state["norm.weight"], state["norm.bias"], 1e-6)


def tokens_to_map(tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """`(N, 1 + P, C)` tokens to the `(N, C, gh, gw)` map of the patch tokens, one cell at a time."""
    batch, _, channels = tokens.shape
    out = torch.empty(batch, channels, grid_h, grid_w)
    for y in range(grid_h):
        for x in range(grid_w):
            out[:, :, y, x] = tokens[:, 1 + y * grid_w + x]
    return out


def save_folder(folder: Path, model: torch.nn.Module) -> Path:
    model.save_pretrained(folder)
    DoraImageProcessor.for_image_size(model.config.image_size).save_pretrained(folder)
    return folder


# --- AutoBackbone --------------------------------------------------------------------------------


def test_auto_backbone_from_config_gives_nchw_maps_of_the_chosen_stages():
    torch.manual_seed(0)
    config = tiny(out_indices=[0, 1, 2])
    backbone = AutoBackbone.from_config(config).eval()
    assert isinstance(backbone, DoraBackbone)
    assert backbone.stage_names == ["stem", "stage1", "stage2"]
    assert backbone.out_features == ["stem", "stage1", "stage2"] and backbone.channels == [32, 32, 32]
    pixels = images(height=32, width=48)  # not the learned 32x32 grid: positions are resampled
    with torch.no_grad():
        out = backbone(pixels)
    assert out.hidden_states is None and out.attentions is None  # only when asked for
    state = reference_state(backbone)
    for stage, feature_map in enumerate(out.feature_maps):
        assert feature_map.shape == (2, 32, 4, 6)
        expected = tokens_to_map(reference_stage_tokens(state, pixels, stage, heads=4), 4, 6)
        torch.testing.assert_close(feature_map, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("saved_class", [DoraForPreTraining, DoraModel, DoraForImageClassification])
def test_auto_backbone_from_pretrained_loads_the_weights_of_any_saved_dora_folder(tmp_path, saved_class):
    torch.manual_seed(0)
    saved = saved_class(tiny()).eval()
    folder = save_folder(tmp_path / "model", saved)
    backbone = AutoBackbone.from_pretrained(folder, out_indices=[1, 2]).eval()
    assert isinstance(backbone, DoraBackbone) and backbone.out_features == ["stage1", "stage2"]
    # every weight of the backbone is the saved one
    saved_state = {k.removeprefix("dora."): v for k, v in saved.state_dict().items()}
    assert backbone.state_dict().keys() <= saved_state.keys()
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, saved_state[name]), name
    pixels = images(n=3)
    with torch.no_grad():
        maps = backbone(pixels).feature_maps
    state = reference_state(saved)
    for feature_map, stage in zip(maps, (1, 2)):
        expected = tokens_to_map(reference_stage_tokens(state, pixels, stage, heads=4), 4, 4)
        torch.testing.assert_close(feature_map, expected, atol=1e-5, rtol=1e-5)


def test_backbone_options_tokens_without_layernorm_and_the_hidden_states(tmp_path):
    torch.manual_seed(0)
    folder = save_folder(tmp_path / "model", DoraForPreTraining(tiny()))
    tokens = AutoBackbone.from_pretrained(
        folder, out_features=["stage2"], reshape_hidden_states=False, apply_layernorm=False
    ).eval()
    pixels = images()
    with torch.no_grad():
        out = tokens(pixels, output_hidden_states=True, output_attentions=True)
    (last,) = out.feature_maps
    assert last.shape == (2, 17, 32)  # [CLS] + 16 patches, as DPT reads them
    # the last block's raw output: the final LayerNorm of it is the reference's tokens
    state = reference_state(tokens)
    expected = reference_vit_forward(state, pixels, num_heads=4)["tokens"]
    normalized = F.layer_norm(last, (32,), state["norm.weight"], state["norm.bias"], 1e-6)
    torch.testing.assert_close(normalized, expected, atol=1e-5, rtol=1e-5)
    assert (last - expected).abs().max() > 0.1
    torch.testing.assert_close(out.hidden_states[-1], last)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 17))


# --- dense-prediction models on the backbone -----------------------------------------------------


def upernet_config(**backbone_overrides) -> UperNetConfig:
    backbone = tiny(out_indices=[0, 1, 2], **backbone_overrides)
    return UperNetConfig(
        backbone_config=backbone, hidden_size=16, auxiliary_channels=8, num_labels=3, pool_scales=[1, 2]
    )


def test_upernet_forward_and_backward_with_labels_on_pretrained_dora_weights(tmp_path):
    torch.manual_seed(0)
    folder = save_folder(tmp_path / "model", DoraForPreTraining(tiny()))
    # no stochastic depth, so that every block gets a gradient from this one small batch
    backbone = AutoBackbone.from_pretrained(folder, out_indices=[0, 1, 2], drop_path_rate=0.0)
    model = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=backbone.config, hidden_size=16, auxiliary_channels=8, num_labels=3, pool_scales=[1, 2]
    ))
    assert isinstance(model.backbone, DoraBackbone)
    model.backbone.load_state_dict(backbone.state_dict())
    pixels = images(n=2, height=32, width=40)
    labels = torch.randint(0, 3, (2, 32, 40), generator=torch.Generator().manual_seed(1))
    labels[:, :4] = 255  # ignored
    out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (2, 3, 32, 40)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    no_grad = [n for n, p in model.backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    # the segmenter reads the saved DoRA weights: its backbone's maps are the reference's
    # (in eval mode: the training forward above drew stochastic depth)
    state = reference_state(backbone)
    with torch.no_grad():
        inner = model.backbone.eval()(pixels).feature_maps
    expected = tokens_to_map(reference_stage_tokens(state, pixels, 2, heads=4), 4, 5)
    torch.testing.assert_close(inner[2], expected, atol=1e-5, rtol=1e-5)


class SquareSegmentation(torch.utils.data.Dataset):
    """Noise images with one bright square; its pixels are class 1, the rest class 0."""

    def __init__(self, n: int, size: int = 32, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(n, 3, size, size, generator=generator) * 0.3
        self.labels = torch.zeros(n, size, size, dtype=torch.long)
        for i in range(n):
            y, x = torch.randint(0, size - 12, (2,), generator=generator).tolist()
            self.pixels[i, :, y : y + 12, x : x + 12] += 2.0
            self.labels[i, y : y + 12, x : x + 12] = 1

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def trainer_args(tmp_path: Path, steps: int, learning_rate: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=steps, per_device_train_batch_size=4,
        learning_rate=learning_rate, warmup_steps=0, lr_scheduler_type="constant", logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )


def test_trainer_steps_of_upernet_on_a_dora_backbone_learn_a_synthetic_segmentation(tmp_path):
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(upernet_config())
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    trainer = Trainer(model=model, args=trainer_args(tmp_path, steps=12, learning_rate=1e-2),
                      train_dataset=SquareSegmentation(16))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses
    assert all(not torch.equal(before[n], p) for n, p in model.backbone.named_parameters()), "backbone frozen?"


def test_dpt_depth_estimation_reads_dora_tokens(tmp_path):
    torch.manual_seed(0)
    backbone = tiny(num_hidden_layers=4, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    model = DPTForDepthEstimation(DPTConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_factors=[4, 2, 1, 0.5],
    ))
    assert isinstance(model.backbone, DoraBackbone)
    depth = model(pixel_values=images(n=2, height=32, width=48)).predicted_depth
    assert depth.shape == (2, 64, 96)  # patch 8: reassembled at 1/2, fused and upsampled twice
    depth.mean().backward()
    assert model.backbone.embeddings.cls_token.grad.abs().sum() > 0  # DPT's readout uses the [CLS] token
    model.eval().save_pretrained(tmp_path / "dpt")
    loaded = DPTForDepthEstimation.from_pretrained(tmp_path / "dpt").eval()
    assert isinstance(loaded.backbone, DoraBackbone) and loaded.config.backbone_config.reshape_hidden_states is False
    pixels = images(n=1)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=pixels).predicted_depth, model(pixel_values=pixels).predicted_depth)


def mask2former_config() -> Mask2FormerConfig:
    return Mask2FormerConfig(
        backbone_config=tiny(num_hidden_layers=4, out_indices=[1, 2, 3, 4]), feature_size=32, mask_feature_size=32,
        hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32, decoder_layers=2, encoder_layers=1,
        num_queries=5, num_labels=3, num_attention_heads=2,
    )


def test_mask2former_pixel_level_module_runs_on_dora_maps():
    from transformers import Mask2FormerModel

    torch.manual_seed(0)
    # Taken from the full model, whose post_init initialises every weight (built alone, the pixel
    # decoder's level_embed would be uninitialised memory).
    module = Mask2FormerModel(mask2former_config()).pixel_level_module
    assert isinstance(module.encoder, DoraBackbone) and module.encoder.channels == [32] * 4
    out = module(images(n=2), output_hidden_states=True)
    assert [tuple(m.shape) for m in out.encoder_hidden_states] == [(2, 32, 4, 4)] * 4
    assert out.decoder_last_hidden_state.shape == (2, 32, 4, 4)
    out.decoder_last_hidden_state.mean().backward()
    assert module.encoder.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0


def test_mask2former_with_its_matching_loss_trains_on_dora_maps():
    pytest.importorskip("scipy", reason="Mask2Former's Hungarian matcher imports scipy, which is not installed")
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(mask2former_config())
    generator = torch.Generator().manual_seed(1)
    masks = [(torch.rand(count, 32, 32, generator=generator) > 0.5).float() for count in (2, 1)]
    out = model(pixel_values=images(n=2), mask_labels=masks, class_labels=[torch.tensor([0, 2]), torch.tensor([1])])
    assert out.class_queries_logits.shape == (2, 5, 4)
    out.loss.backward()
    assert model.model.pixel_level_module.encoder.embeddings.cls_token.grad is not None


def test_upernet_with_a_dora_backbone_saves_and_loads_again(tmp_path):
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(upernet_config()).eval()
    model.save_pretrained(tmp_path / "upernet")
    assert json.loads((tmp_path / "upernet" / "config.json").read_text())["backbone_config"]["model_type"] == "dora"
    loaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path / "upernet").eval()
    pixels = images()
    with torch.no_grad():
        assert torch.equal(loaded(pixels).logits, model(pixels).logits)


# --- image classification ------------------------------------------------------------------------


def reference_logits(model: DoraForImageClassification, pixels: torch.Tensor) -> torch.Tensor:
    """The classifier's logits from the reference forward's tokens and its weights, by hand."""
    tokens = reference_vit_forward(reference_state(model), pixels, num_heads=model.config.num_attention_heads)["tokens"]
    features = tokens[:, 0]
    if model.config.classifier_pooling == "cls_mean":
        features = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
    return features @ model.classifier.weight.T + model.classifier.bias


@pytest.mark.parametrize("pooling, width", [("cls_mean", 64), ("cls", 32)])
def test_classifier_reads_cls_and_mean_patch_or_cls_alone_and_its_loss_is_cross_entropy(tmp_path, pooling, width):
    torch.manual_seed(0)
    folder = save_folder(tmp_path / "model", DoraForPreTraining(tiny()))
    model = AutoModelForImageClassification.from_pretrained(folder, num_labels=3, classifier_pooling=pooling).eval()
    assert isinstance(model, DoraForImageClassification)
    assert model.classifier.weight.shape == (3, width)
    pixels, labels = images(n=4), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        out = model(pixel_values=pixels, labels=labels)
        expected = reference_logits(model, pixels)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels), atol=1e-5, rtol=1e-5)
    assert model(pixel_values=pixels, return_dict=False)[0].shape == (4, 3)


class ColourClasses(torch.utils.data.Dataset):
    """Images tinted red, green or blue: class = the tinted channel."""

    def __init__(self, n: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.pixels = torch.randn(n, 3, 32, 32, generator=generator) * 0.5
        self.pixels[torch.arange(n), self.labels] += 1.5

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


LABELS = {0: "red", 1: "green", 2: "blue"}


def test_fine_tuning_with_trainer_then_the_image_classification_pipeline(tmp_path):
    torch.manual_seed(0)
    pretrained = save_folder(tmp_path / "pretrained", DoraForPreTraining(tiny()))
    model = AutoModelForImageClassification.from_pretrained(pretrained, id2label=LABELS)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = trainer_args(tmp_path, steps=10, learning_rate=2e-3)
    trainer = Trainer(model=model, args=args, train_dataset=ColourClasses(24))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # every weight trains

    finetuned = tmp_path / "finetuned"
    model.save_pretrained(finetuned)
    DoraImageProcessor.for_image_size(32).save_pretrained(finetuned)
    assert json.loads((finetuned / "config.json").read_text())["id2label"] == {"0": "red", "1": "green", "2": "blue"}
    classifier = pipeline("image-classification", model=str(finetuned))
    assert isinstance(classifier.model, DoraForImageClassification)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)) for _ in range(2)]
    predictions = classifier(pictures, top_k=3)
    model.eval()
    for picture, prediction in zip(pictures, predictions):
        pixels = DoraImageProcessor.for_image_size(32)(picture, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            probabilities = reference_logits(model, pixels)[0].softmax(-1)
        order = probabilities.argsort(descending=True).tolist()
        assert [p["label"] for p in prediction] == [LABELS[i] for i in order]
        np.testing.assert_allclose([p["score"] for p in prediction], probabilities[order].numpy(), atol=1e-5)


def test_linear_probe_with_trainer_trains_the_classifier_alone(tmp_path):
    torch.manual_seed(0)
    pretrained = save_folder(tmp_path / "pretrained", DoraForPreTraining(tiny()))
    probe = AutoModelForImageClassification.from_pretrained(
        pretrained, id2label=LABELS, classifier_pooling="cls", drop_path_rate=0.0
    )
    probe.dora.requires_grad_(False)
    backbone_before = {n: p.detach().clone() for n, p in probe.dora.named_parameters()}
    classifier_before = probe.classifier.weight.detach().clone()
    dataset = ColourClasses(24)
    trainer = Trainer(model=probe, args=trainer_args(tmp_path, steps=8, learning_rate=5e-2), train_dataset=dataset)
    trainer.train()
    assert all(torch.equal(backbone_before[n], p) for n, p in probe.dora.named_parameters())
    assert not torch.equal(classifier_before, probe.classifier.weight)
    # with stochastic depth off, the frozen features are the same in train and eval mode
    pixels = dataset.pixels[:4]
    with torch.no_grad():
        train_features = probe.train().dora(pixels).pooler_output
        eval_features = probe.eval().dora(pixels).pooler_output
    assert torch.equal(train_features, eval_features)


# --- gradient checkpointing and attention kernels ------------------------------------------------


@pytest.mark.parametrize("checkpointing_kwargs", [None, {"use_reentrant": True}])
def test_activation_checkpointing_recomputes_the_blocks_and_gives_the_same_gradients(monkeypatch, checkpointing_kwargs):
    from dora_hf.modeling import modeling_dora

    torch.manual_seed(0)
    # stochastic depth and dropout on: the recomputation must draw the same random numbers
    model = DoraForPreTraining(tiny(drop_path_rate=0.5, hidden_dropout_prob=0.1)).train()
    assert model.supports_gradient_checkpointing
    pixels = images(n=4)
    calls = []
    forward = modeling_dora.DoraMLP.forward
    monkeypatch.setattr(modeling_dora.DoraMLP, "forward", lambda self, h: calls.append(1) or forward(self, h))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)
        out = model(pixels, output_tracker_features=True)
        (out.logits.square().sum() + out.tracker_features.cls_attention.square().sum()).backward()
        return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}

    plain = gradients()
    plain_calls = len(calls)
    model.activation_checkpointing_enable(checkpointing_kwargs)
    assert model.is_activation_checkpointing and all(layer.gradient_checkpointing for layer in model.dora.encoder.layer)
    calls.clear()
    checkpointed = gradients()
    assert plain_calls == 2 and len(calls) == 4  # each block's MLP ran again in the backward pass
    assert plain.keys() == checkpointed.keys() and len(plain) > 20
    # equal up to float summation order (the last block's qkv weights also get the tracker's gradient)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-5, msg=name)
    # the dropped samples were the same: without the restored RNG state the gradients would differ
    model.activation_checkpointing_disable()
    model.zero_grad()
    torch.manual_seed(2)
    model(pixels).logits.square().sum().backward()
    assert any(not torch.allclose(plain[n], p.grad) for n, p in model.named_parameters() if p.grad is not None)


def flex_attention_on_cpu_unavailable() -> str | None:
    """Why transformers' flex attention cannot run on this CPU, or None when it can."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError as err:
        return f"torch {torch.__version__} has no flex attention ({err})"
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "flex attention compiles a CPU kernel with inductor, which needs a C++ compiler"
    return None


@pytest.mark.skipif(flex_attention_on_cpu_unavailable() is not None, reason=str(flex_attention_on_cpu_unavailable()))
def test_flex_attention_equals_sdpa_and_eager():
    torch.manual_seed(0)
    models = {name: DoraModel(tiny(attn_implementation=name)).eval() for name in ("sdpa", "flex_attention", "eager")}
    for model in models.values():
        model.load_state_dict(models["sdpa"].state_dict())
    assert models["flex_attention"].config._attn_implementation == "flex_attention"
    pixels = images(n=3, height=32, width=40)  # 21 tokens: not a multiple of flex attention's blocks
    with torch.no_grad():
        outputs = {name: m(pixels, interpolate_pos_encoding=True).last_hidden_state for name, m in models.items()}
    torch.testing.assert_close(outputs["flex_attention"], outputs["sdpa"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs["eager"], outputs["sdpa"], atol=1e-5, rtol=1e-5)
    expected = reference_vit_forward(reference_state(models["sdpa"]), pixels, num_heads=4)["tokens"]
    torch.testing.assert_close(outputs["flex_attention"], expected, atol=1e-5, rtol=1e-5)


# --- loading without a prompt, and the remote-code path --------------------------------------------


def run_fresh(script: str, tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`script` in a new Python process with stdin closed, offline, with an empty HF_HOME."""
    path = tmp_path / f"script_{len(list(tmp_path.glob('script_*.py')))}.py"
    path.write_text(script)
    return subprocess.run(
        [sys.executable, str(path), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                           "PYTHONPATH": str(TESTS_DIR)},
    )


LOAD_EVERYTHING = textwrap.dedent(
    """
    import sys
    import dora_hf
    from transformers import (AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                              AutoModelForPreTraining, AutoProcessor, pipeline)
    if "--without-the-video-entry" in sys.argv:  # the state before DoRA declared it has no video processor
        from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING
        del VIDEO_PROCESSOR_MAPPING._extra_content[dora_hf.DoraConfig]
    folder = sys.argv[1]
    loaded = [type(auto.from_pretrained(folder)).__name__ for auto in (
        AutoConfig, AutoModel, AutoModelForPreTraining, AutoBackbone, AutoModelForImageClassification,
        AutoImageProcessor, AutoProcessor)]
    extractor = pipeline("image-feature-extraction", model=folder)
    classifier = pipeline("image-classification", model=folder)
    print("LOADED", *loaded, type(extractor.model).__name__, type(classifier.model).__name__)
    """
)


@pytest.fixture(scope="module")
def saved_dora(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_folder(tmp_path_factory.mktemp("saved") / "dora", DoraForPreTraining(tiny()))


def test_with_the_package_no_auto_class_or_pipeline_asks_about_custom_code(saved_dora, tmp_path):
    result = run_fresh(LOAD_EVERYTHING, tmp_path, str(saved_dora))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert PROMPT not in output and "trust_remote_code" not in output
    assert re.search(
        r"LOADED DoraConfig DoraModel DoraForPreTraining DoraBackbone DoraForImageClassification "
        r"DoraImageProcessor DoraImageProcessor DoraModel DoraForImageClassification", result.stdout
    ), result.stdout
    # not vacuous: without DoRA's video-processor entry the same pipeline prompts (and, stdin
    # being closed, gives up at once instead of waiting)
    control = run_fresh(LOAD_EVERYTHING, tmp_path, str(saved_dora), "--without-the-video-entry")
    assert control.returncode == 0, control.stdout + control.stderr
    assert PROMPT in control.stdout + control.stderr


REMOTE_CODE = BLOCK_DORA_HF + textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoConfig, AutoModelForImageClassification, pipeline
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder, reference = sys.argv[1], sys.argv[2]
    expected = torch.load(reference)
    # The class AutoBackbone takes from the auto_map of a hub repository. (transformers'
    # AutoBackbone.from_pretrained itself does not open local folders; with dora_hf imported it
    # does for DoRA's.)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, out_indices=[1, 2])
    backbone_class = get_class_from_dynamic_module(config.auto_map["AutoBackbone"], folder)
    backbone = backbone_class.from_pretrained(folder, config=config).eval()
    assert type(backbone).__module__.startswith("transformers_modules."), type(backbone).__module__
    classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(classifier).__name__ == "DoraForImageClassification", type(classifier)
    with torch.no_grad():
        maps = backbone(expected["pixels"]).feature_maps
        assert all(torch.equal(a, b) for a, b in zip(maps, expected["maps"]))
        assert classifier(expected["pixels"]).logits.shape == (2, 2)
    extractor = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
    assert type(extractor.model).__module__.startswith("transformers_modules.")
    print("REMOTE-CODE-OK")
    """
)


def test_without_the_package_backbone_and_classifier_load_with_trust_remote_code(tmp_path):
    torch.manual_seed(0)
    model = DoraForPreTraining(tiny()).eval()
    folder = save_folder(tmp_path / "model", model)
    pixels = images()
    backbone = DoraBackbone(tiny(out_indices=[1, 2])).eval()
    backbone.load_state_dict(model.dora.state_dict())
    with torch.no_grad():
        torch.save({"pixels": pixels, "maps": backbone(pixels).feature_maps}, tmp_path / "ref.pt")
    result = run_fresh(REMOTE_CODE, tmp_path, str(folder), str(tmp_path / "ref.pt"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REMOTE-CODE-OK" in result.stdout


def test_with_the_package_trust_remote_code_still_gives_the_local_classes(saved_dora):
    backbone = AutoBackbone.from_pretrained(saved_dora, trust_remote_code=True)
    classifier = AutoModelForImageClassification.from_pretrained(saved_dora, trust_remote_code=True)
    config = AutoConfig.from_pretrained(saved_dora, trust_remote_code=True)
    assert type(backbone) is DoraBackbone and type(classifier) is DoraForImageClassification
    assert type(config) is DoraConfig


# --- the README section ----------------------------------------------------------------------------


def readme_section_snippets() -> list[str]:
    """The Python code blocks of the README's "Dense tasks and classification" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Dense tasks and classification\n", 1)[1].split("\n## ", 1)[0]
    return [code for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S) if lang == "python"]


README_INPUTS = textwrap.dedent(
    """
    # What the README's snippets take as given, for a tiny 12-block model saved as "dora-wt-vits16-demo".
    import numpy as np
    import torch
    from PIL import Image

    pixel_values = torch.randn(2, 3, 32, 48)
    segmentation_maps = torch.randint(0, 150, (2, 32, 48))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(2)]
    train_dataset = [{"pixel_values": torch.randn(3, 32, 32), "labels": i % 3} for i in range(8)]
    """
)

README_CHECKS = textwrap.dedent(
    """
    assert len(maps) == 4 and maps[0].shape == (2, 32, 4, 6), [m.shape for m in maps]
    assert torch.isfinite(loss) and segmenter.backbone.embeddings.cls_token.grad is not None
    assert depth.shape == (2, 64, 96)  # patch 8: twice the input size (patch 16: the input size)
    assert all(p.grad is None for p in probe.dora.parameters())
    assert [len(p) for p in predictions] == [3, 3] and {p["label"] for p in predictions[0]} == set(labels.values())
    print("README-SNIPPETS-OK")
    """
)


def test_readme_dense_and_classification_snippets_run_as_written(tmp_path):
    snippets = readme_section_snippets()
    assert len(snippets) == 2 and all("dora-wt-vits16-demo" in code for code in snippets)
    torch.manual_seed(0)
    save_folder(tmp_path / "dora-wt-vits16-demo", DoraForPreTraining(tiny(num_hidden_layers=12)))
    script = README_INPUTS + "\n".join(snippets) + README_CHECKS
    result = run_fresh(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "README-SNIPPETS-OK" in result.stdout and PROMPT not in result.stdout + result.stderr
