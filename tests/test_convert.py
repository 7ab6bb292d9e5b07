"""convert-reference: a checkpoint in the authors' layout becomes an AutoModel folder with equal outputs."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from reference_vit import reference_head_forward, reference_vit_forward
from transformers import AutoModel, AutoModelForPreTraining

from dora_hf.cli import main as cli_main
from dora_hf.publish.convert import convert_reference_checkpoint
from dora_hf.errors import DoraUserError

DIM, DEPTH, HEADS, PATCH, GRID, MLP, HIDDEN, BOTTLENECK, OUT = 64, 2, 2, 8, 4, 128, 32, 16, 40


def reference_backbone(seed: int, grid: int = GRID, patch: int = PATCH) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    state = {
        "cls_token": r(1, 1, DIM),
        "pos_embed": r(1, grid * grid + 1, DIM),
        "patch_embed.proj.weight": r(DIM, 3, patch, patch),
        "patch_embed.proj.bias": r(DIM),
        "norm.weight": 1 + r(DIM),
        "norm.bias": r(DIM),
    }
    for i in range(DEPTH):
        p = f"blocks.{i}."
        state |= {
            p + "norm1.weight": 1 + r(DIM), p + "norm1.bias": r(DIM),
            p + "attn.qkv.weight": r(3 * DIM, DIM), p + "attn.qkv.bias": r(3 * DIM),
            p + "attn.proj.weight": r(DIM, DIM), p + "attn.proj.bias": r(DIM),
            p + "norm2.weight": 1 + r(DIM), p + "norm2.bias": r(DIM),
            p + "mlp.fc1.weight": r(MLP, DIM), p + "mlp.fc1.bias": r(MLP),
            p + "mlp.fc2.weight": r(DIM, MLP), p + "mlp.fc2.bias": r(DIM),
        }
    return state


def reference_head(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    return {
        "mlp.0.weight": r(HIDDEN, DIM), "mlp.0.bias": r(HIDDEN),
        "mlp.2.weight": r(HIDDEN, HIDDEN), "mlp.2.bias": r(HIDDEN),
        "mlp.4.weight": r(BOTTLENECK, HIDDEN), "mlp.4.bias": r(BOTTLENECK),
        "last_layer.weight_g": 1 + r(OUT, 1).abs(), "last_layer.weight_v": r(OUT, BOTTLENECK),
    }


def write_reference_checkpoint(path, student_seed=0, teacher_seed=1) -> dict:
    """The layout of the authors' checkpoint.pth: DDP-wrapped student, plain teacher, extras."""
    student = {f"module.backbone.{k}": v for k, v in reference_backbone(student_seed).items()}
    student |= {f"module.head.{k}": v for k, v in reference_head(student_seed + 10).items()}
    teacher = {f"backbone.{k}": v for k, v in reference_backbone(teacher_seed).items()}
    teacher |= {f"head.{k}": v for k, v in reference_head(teacher_seed + 10).items()}
    checkpoint = {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", norm_last_layer=False),
        "dino_loss": {"center": torch.zeros(1, OUT)},
    }
    torch.save(checkpoint, path)
    return checkpoint


@pytest.fixture()
def checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pth"
    write_reference_checkpoint(path)
    return path


@pytest.mark.parametrize("which, seed", [("teacher", 1), ("student", 0)])
def test_converted_model_matches_reference_forward(checkpoint, tmp_path, which, seed):
    out = convert_reference_checkpoint(checkpoint, tmp_path / which, which=which, num_attention_heads=HEADS)
    pixels = torch.randn(3, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(7))
    expected = reference_vit_forward(reference_backbone(seed), pixels, num_heads=HEADS)
    backbone = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        got = backbone(pixels)
    torch.testing.assert_close(got.last_hidden_state, expected["tokens"], atol=1e-5, rtol=1e-5)
    full = AutoModelForPreTraining.from_pretrained(out).eval()
    with torch.no_grad():
        logits = full(pixels).logits
    head_expected = reference_head_forward(reference_head(seed + 10), expected["tokens"][:, 0])
    torch.testing.assert_close(logits, head_expected, atol=1e-5, rtol=1e-5)
    config = full.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (DIM, DEPTH, HEADS)
    assert (config.patch_size, config.image_size, config.intermediate_size) == (PATCH, GRID * PATCH, MLP)
    assert (config.head_out_dim, config.head_hidden_dim, config.head_bottleneck_dim) == (OUT, HIDDEN, BOTTLENECK)
    assert (out / "preprocessor_config.json").is_file()
    assert not list(tmp_path.glob(".*tmp-*")), "staging folder left behind"


def test_converted_vits16_grid_matches_reference_forward_on_local_views(tmp_path):
    """A 14x14-grid, patch-16 checkpoint on 112-px local views (7x7 patches) and a non-square
    input: DINO's position interpolation, as the reference ViT forward does it."""
    path = tmp_path / "vits16.pth"
    state = reference_backbone(4, grid=14, patch=16)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, path)
    out = convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS, backbone_only=True)
    model = AutoModel.from_pretrained(out).eval()
    size_mode = AutoModel.from_pretrained(out, interpolate_pos_encoding_mode="size").eval()
    assert model.config.image_size == 224 and model.config.interpolate_pos_encoding_mode == "reference"
    for height, width in ((112, 112), (96, 160)):
        pixels = torch.randn(4, 3, height, width, generator=torch.Generator().manual_seed(height + width))
        expected = reference_vit_forward(state, pixels, num_heads=HEADS)["tokens"]
        with torch.no_grad():
            got = model(pixels, interpolate_pos_encoding=True).last_hidden_state
            other = size_mode(pixels, interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # the test tells the modes apart: resampling to size=g is further off than the tolerance
        assert (other - expected).abs().max() > 1e-3


def test_backbone_only_checkpoint(tmp_path):
    path = tmp_path / "dino_backbone.pth"
    torch.save(reference_backbone(3), path)
    with pytest.raises(DoraUserError, match="--backbone-only"):
        convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS)
    out = convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS, backbone_only=True)
    pixels = torch.randn(1, 3, 32, 32)
    expected = reference_vit_forward(reference_backbone(3), pixels, num_heads=HEADS)["tokens"][:, 0]
    with torch.no_grad():
        torch.testing.assert_close(AutoModel.from_pretrained(out)(pixels).pooler_output, expected, atol=1e-5, rtol=1e-5)


def test_unknown_keys_are_listed(tmp_path):
    path = tmp_path / "ckpt.pth"
    checkpoint = write_reference_checkpoint(path)
    checkpoint["teacher"]["backbone.blocks.0.attn.relative_bias"] = torch.zeros(3)
    checkpoint["teacher"]["head.extra.weight"] = torch.zeros(3)
    torch.save(checkpoint, path)
    with pytest.raises(DoraUserError, match=r"2 key\(s\).*blocks\.0\.attn\.relative_bias.*head\.extra\.weight"):
        convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS)
    assert not (tmp_path / "out").exists()


def test_missing_keys_are_listed(tmp_path):
    path = tmp_path / "ckpt.pth"
    checkpoint = write_reference_checkpoint(path)
    del checkpoint["teacher"]["backbone.blocks.1.mlp.fc2.bias"]
    del checkpoint["teacher"]["head.last_layer.weight_g"]
    torch.save(checkpoint, path)
    with pytest.raises(DoraUserError, match="missing.*encoder.layer.1.mlp.fc2.bias.*last_layer.magnitude"):
        convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS)
    assert not (tmp_path / "out").exists()


def test_bad_files_and_existing_output(tmp_path, checkpoint):
    with pytest.raises(DoraUserError, match="not found"):
        convert_reference_checkpoint(tmp_path / "nope.pth", tmp_path / "out")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(DoraUserError, match="empty"):
        convert_reference_checkpoint(empty, tmp_path / "out")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(DoraUserError, match="notes.pth"):
        convert_reference_checkpoint(text, tmp_path / "out")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(DoraUserError, match="truncated.pth"):
        convert_reference_checkpoint(truncated, tmp_path / "out")
    only_student = tmp_path / "student_only.pth"
    torch.save({"student": {"backbone.cls_token": torch.zeros(1, 1, 8)}}, only_student)
    with pytest.raises(DoraUserError, match="no 'teacher' weights"):
        convert_reference_checkpoint(only_student, tmp_path / "out")
    (tmp_path / "exists").mkdir()
    with pytest.raises(DoraUserError, match="already exists"):
        convert_reference_checkpoint(checkpoint, tmp_path / "exists", num_attention_heads=HEADS)


def test_cli_exit_codes(tmp_path, checkpoint, capsys):
    assert cli_main(["convert-reference", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    code = cli_main(["convert-reference", str(checkpoint), "--out", str(tmp_path / "o"), "--num-heads", str(HEADS)])
    assert code == 0 and (tmp_path / "o" / "model.safetensors").is_file()


def test_a_missing_last_block_is_an_error_not_a_shallower_model(tmp_path):
    path = tmp_path / "ckpt.pth"
    checkpoint = write_reference_checkpoint(path)
    last = DEPTH - 1
    checkpoint["teacher"] = {k: v for k, v in checkpoint["teacher"].items() if not k.startswith(f"backbone.blocks.{last}.")}
    torch.save(checkpoint, path)
    # The keys alone look like a complete (DEPTH - 1)-block model; the student beside it has DEPTH.
    with pytest.raises(DoraUserError, match=rf"weights missing: encoder\.layer\.{last}\.\* \(block {last}: all 12 tensors\)"
                       rf" \(the 'teacher' weights hold {last} block\(s\) but the 'student' weights hold {DEPTH}; pass --num-layers {last}"):
        convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS)
    assert not (tmp_path / "out").exists()
    # Asked for explicitly, with the depth the keys hold, it is converted as the shallower model.
    out = convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS, num_hidden_layers=last)
    assert AutoModel.from_pretrained(out).config.num_hidden_layers == last
    with pytest.raises(DoraUserError, match=rf"hold {last} blocks, more than --num-layers {last - 1}"):
        convert_reference_checkpoint(path, tmp_path / "o2", num_attention_heads=HEADS, num_hidden_layers=last - 1)


def test_depth_stated_by_args_is_checked_on_a_lone_network(tmp_path):
    """DINO's args.arch names the architecture: a vit_small (width 384) has 12 blocks, whatever
    the keys show. (The other tests' checkpoints say vit_small at width 64: not evidence.)"""
    backbone = reference_backbone(0) | {"cls_token": torch.zeros(1, 1, 384)}
    path = tmp_path / "ckpt.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in backbone.items()}, "args": argparse.Namespace(arch="vit_small")}, path)
    with pytest.raises(DoraUserError, match=rf"encoder\.layer\.11\.\* .*hold {DEPTH} block\(s\) but its args\.arch vit_small has 12"):
        convert_reference_checkpoint(path, tmp_path / "out", backbone_only=True)


@pytest.mark.parametrize("removed, listed", [
    ("backbone.pos_embed", "embeddings.position_embeddings"),
    ("backbone.blocks.0.mlp.fc1.weight", "encoder.layer.0.mlp.fc1.weight"),
    ("backbone.patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
    ("head.last_layer.weight_v", "projection_head.last_layer.direction"),
    ("head.mlp.2.weight", "projection_head.mlp.2.weight"),
])
def test_missing_tensors_read_for_the_architecture_are_listed_not_a_key_error(tmp_path, removed, listed):
    path = tmp_path / "ckpt.pth"
    checkpoint = write_reference_checkpoint(path)
    del checkpoint["teacher"][removed]
    torch.save(checkpoint, path)
    with pytest.raises(DoraUserError, match=rf"weights missing: {re.escape(listed)}$"):
        convert_reference_checkpoint(path, tmp_path / "out", num_attention_heads=HEADS)


@pytest.mark.parametrize("content", [b"not a checkpoint", b"# notes\nthe teacher is in the other file\n", b"\x00\x01binary"])
def test_a_file_that_is_not_a_checkpoint_says_so_without_weights_only_advice(tmp_path, capsys, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    assert cli_main(["convert-reference", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a PyTorch checkpoint" in err and "weights_only" not in err


def test_a_checkpoint_holding_code_is_refused_without_weights_only_advice(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"teacher": reference_backbone(0), "hook": print}, path)
    with pytest.raises(DoraUserError, match=r"pickled\.pth holds Python objects other than weights \(print\)") as caught:
        convert_reference_checkpoint(path, tmp_path / "out")
    assert "weights_only" not in str(caught.value)
