"""`dora-hf export --format vit|timm|dora`: DoRA's backbone loaded by transformers' ViT and timm without DoRA code.

The ViT folder is loaded in a fresh process where `dora_hf` cannot be imported (blocked_import.py);
its features are compared with `DoraModel`'s computed here from the source folder. timm is not a
requirement of the project: its test runs where timm imports and is skipped otherwise, and the
layout is also checked against timm's parameter names (the DINO reference names) without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from blocked_import import BLOCK_DORA_HF
from dora_tiny import save_tiny_dora, save_tiny_vit
from PIL import Image
from safetensors.torch import load_file

from dora_hf import DoraConfig, DoraForPreTraining, DoraImageProcessor, DoraModel
from dora_hf.cli import main as cli_main
from dora_hf.publish.convert import split_reference_keys
from dora_hf.publish.export_formats import timm_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
README_VIT_FOLDER = "dora-wt-venice-vits16-vit"

# timm 1.0's VisionTransformer(num_classes=0) parameters for ViT-S/16 at 224 px (timm/models/vision_transformer.py:
# cls_token, pos_embed, patch_embed.proj, blocks[i].{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm).
TIMM_VITS16_GLOBALS = {
    "cls_token": (1, 1, 384),
    "pos_embed": (1, 197, 384),
    "patch_embed.proj.weight": (384, 3, 16, 16),
    "patch_embed.proj.bias": (384,),
    "norm.weight": (384,),
    "norm.bias": (384,),
}
TIMM_VITS16_BLOCK = {
    "norm1.weight": (384,), "norm1.bias": (384,),
    "attn.qkv.weight": (1152, 384), "attn.qkv.bias": (1152,),
    "attn.proj.weight": (384, 384), "attn.proj.bias": (384,),
    "norm2.weight": (384,), "norm2.bias": (384,),
    "mlp.fc1.weight": (1536, 384), "mlp.fc1.bias": (1536,),
    "mlp.fc2.weight": (384, 1536), "mlp.fc2.bias": (384,),
}


def run_without_dora_hf(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh Python where `import dora_hf` fails."""
    path = cwd / "client.py"
    path.write_text(BLOCK_DORA_HF + script)
    result = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def dora_features(folder: Path, pixels: torch.Tensor, **config_overrides) -> torch.Tensor:
    model = DoraModel.from_pretrained(folder, **config_overrides).eval()
    with torch.no_grad():
        return model(pixels, interpolate_pos_encoding=pixels.shape[-1] != model.config.image_size).last_hidden_state


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A tiny saved `DoraForPreTraining` folder with trained-looking (non-default) LayerNorms."""
    folder = save_tiny_dora(tmp_path / "source")
    model = DoraForPreTraining.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name or name.endswith(".bias"):
                param.add_(0.1 * torch.randn_like(param))  # 1 and 0 would hide a swapped weight and bias
    model.save_pretrained(folder)
    return folder


def export(source: Path, out: Path, fmt: str, *extra: str) -> Path:
    assert cli_main(["export", str(source), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


def test_vit_export_loads_in_plain_transformers_with_doras_features(source, tmp_path):
    vit = export(source, tmp_path / "vit", "vit")
    assert not list(vit.glob("*.py"))  # no custom code travels with it
    assert "auto_map" not in json.loads((vit / "config.json").read_text())
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 60, 3), dtype=np.uint8))
    image.save(tmp_path / "frame.png")
    torch.save(pixels, tmp_path / "pixels.pt")
    client = textwrap.dedent(
        """
        import json, sys, torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel, ViTModel
        folder, out = sys.argv[1], {}
        pixels = torch.load("pixels.pt")
        model, info = ViTModel.from_pretrained(folder, output_loading_info=True)
        out["info"] = {k: sorted(map(str, v)) for k, v in info.items()}
        no_pooler, info = ViTModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
        out["info_no_pooler"] = {k: sorted(map(str, v)) for k, v in info.items()}
        processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        out["processor"] = type(processor).__name__
        out["auto_model"] = type(AutoModel.from_pretrained(folder)).__name__
        with torch.no_grad():
            result = model.eval()(pixels)
            larger = model(torch.nn.functional.interpolate(pixels, size=48), interpolate_pos_encoding=True)
            torch.save({
                "tokens": result.last_hidden_state, "pooler": result.pooler_output,
                "no_pooler_cls": no_pooler.eval()(pixels).last_hidden_state[:, 0],
                "larger": larger.last_hidden_state,
                "image_pixels": processor(Image.open("frame.png"), return_tensors="pt")["pixel_values"],
            }, "vit_out.pt")
        print(json.dumps(out))
        """
    )
    report = json.loads(run_without_dora_hf(client, tmp_path, str(vit)).stdout.strip().splitlines()[-1])
    assert report["info"]["missing_keys"] == [] and report["info"]["unexpected_keys"] == []
    assert report["info"]["mismatched_keys"] == [] and report["info"]["error_msgs"] == []
    # without a pooling layer only the pooler's (identity) weights are left over, nothing is missing
    assert report["info_no_pooler"]["missing_keys"] == []
    assert report["info_no_pooler"]["unexpected_keys"] in ([], ["pooler.dense.bias", "pooler.dense.weight"])
    assert report["processor"].startswith("BitImageProcessor") and report["auto_model"] == "ViTModel"

    found = torch.load(tmp_path / "vit_out.pt")
    expected = dora_features(source, pixels)
    torch.testing.assert_close(found["tokens"], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(found["pooler"], expected[:, 0], rtol=0, atol=1e-5)  # DoRA's pooler_output
    torch.testing.assert_close(found["no_pooler_cls"], expected[:, 0], rtol=0, atol=1e-5)
    assert expected[:, 0].abs().max() > 0.5  # not a trivially zero feature
    # the processor is DoRA's transform, pixel for pixel
    dora_pixels = DoraImageProcessor.from_pretrained(source)(Image.open(tmp_path / "frame.png"), return_tensors="pt")
    torch.testing.assert_close(found["image_pixels"], dora_pixels["pixel_values"], rtol=0, atol=0)
    # at another size ViT resamples the grid as DoRA's "size" mode does, not as its default DINO mode
    larger = torch.nn.functional.interpolate(pixels, size=48)
    torch.testing.assert_close(
        found["larger"], dora_features(source, larger, interpolate_pos_encoding_mode="size"), rtol=0, atol=1e-5
    )
    assert (found["larger"] - dora_features(source, larger)).abs().max() > 1e-3


def test_readme_vit_snippet_runs_without_dora_hf(source, tmp_path):
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n### Export formats\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    (snippet,) = [code for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S) if lang == "python"]
    assert README_VIT_FOLDER in snippet and "dora_hf" not in snippet
    (command,) = re.findall(r"`--format vit --out ([\w.-]+)`", section)
    export(source, tmp_path / command, "vit")
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 52, 3), dtype=np.uint8))
    image.save(tmp_path / "frame.jpg")
    run_without_dora_hf(snippet + "\nimport torch\ntorch.save(features, 'features.pt')\n", tmp_path)
    pixels = DoraImageProcessor.from_pretrained(source)(Image.open(tmp_path / "frame.jpg"), return_tensors="pt")
    expected = dora_features(source, pixels["pixel_values"])[:, 0]
    torch.testing.assert_close(torch.load(tmp_path / "features.pt"), expected, rtol=0, atol=1e-5)


def test_timm_layout_is_timms_vit_small_patch16_224_and_dinos_names(tmp_path):
    backbone = DoraModel(DoraConfig(head_out_dim=16, head_hidden_dim=16, head_bottleneck_dim=8)).eval()
    state = timm_state_dict(backbone)
    expected = dict(TIMM_VITS16_GLOBALS)
    expected.update({f"blocks.{i}.{name}": shape for i in range(12) for name, shape in TIMM_VITS16_BLOCK.items()})
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # and they are DINO's reference names: convert-reference's table reads them back as the same backbone
    weights, head, unknown = split_reference_keys(state)
    assert unknown == [] and head == {}
    original = backbone.state_dict()
    assert weights.keys() == original.keys() and all(torch.equal(weights[k], original[k]) for k in original)
    # the fused qkv is kept whole: rows q, k, v as in timm's Attention
    assert torch.equal(state["blocks.3.attn.qkv.weight"], backbone.encoder.layer[3].attention.qkv.weight)

    folder = export(save_tiny_dora(tmp_path / "tiny"), tmp_path / "timm", "timm")
    saved = load_file(folder / "model.safetensors")
    tiny = DoraModel.from_pretrained(tmp_path / "tiny")
    assert saved.keys() == timm_state_dict(tiny).keys() and saved["pos_embed"].shape == (1, 17, 48)
    record = json.loads((folder / "config.json").read_text())
    assert record["architecture"] == "vit_small_patch16_224" and record["model_args"]["depth"] == 3


def test_timm_loads_the_export_with_doras_features(source, tmp_path):
    try:
        import timm
    except Exception as err:  # ImportError, or a torchvision built for another torch
        pytest.skip(f"timm is not importable here ({type(err).__name__}: {err}); it is not a dora-hf requirement")
    folder = export(source, tmp_path / "timm", "timm")
    model_args = json.loads((folder / "config.json").read_text())["model_args"]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = dora_features(source, pixels)
    # timm loads strictly: a missing or unexpected key raises here
    by_file = timm.create_model(
        "vit_small_patch16_224", pretrained=True, **model_args,
        pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")),
    ).eval()
    by_folder = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        for model in (by_file, by_folder):
            torch.testing.assert_close(model.forward_features(pixels), expected, rtol=0, atol=1e-5)
            torch.testing.assert_close(model(pixels), expected[:, 0], rtol=0, atol=1e-5)
    assert timm.data.resolve_data_config({}, model=by_folder)["crop_pct"] == pytest.approx(32 / 37)
    # at another size timm resamples the grid with antialiased bicubic: neither of DoRA's modes (README)
    dynamic = timm.create_model(f"local-dir:{folder}", pretrained=True, dynamic_img_size=True).eval()
    larger = torch.nn.functional.interpolate(pixels, size=48)
    with torch.no_grad():
        found = dynamic.forward_features(larger)
    for mode in ("size", "reference"):
        assert (found - dora_features(source, larger, interpolate_pos_encoding_mode=mode)).abs().max() > 1e-4


def test_dora_reexport_of_a_saved_folder_keeps_weights_processor_and_card(source, tmp_path):
    (source / "README.md").write_text("---\nlibrary_name: transformers\n---\n# the run's card\n")
    (source / "preprocessor_config.json").write_text(
        (source / "preprocessor_config.json").read_text().replace('"shortest_edge": 37', '"shortest_edge": 40')
    )
    out = export(source, tmp_path / "again", "dora")
    assert {"modeling_dora.py", "configuration_dora.py", "model.safetensors", ".dora-hf.json"} <= {p.name for p in out.iterdir()}
    assert (out / "README.md").read_text() == (source / "README.md").read_text()
    assert DoraImageProcessor.from_pretrained(out).size == {"shortest_edge": 40}
    before, after = DoraForPreTraining.from_pretrained(source).state_dict(), DoraForPreTraining.from_pretrained(out).state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # a backbone-only DoRA folder is a source too, and the re-export's processor carries into the ViT one
    DoraModel.from_pretrained(out).save_pretrained(tmp_path / "backbone")
    DoraImageProcessor.from_pretrained(out).save_pretrained(tmp_path / "backbone")
    vit = export(tmp_path / "backbone", tmp_path / "vit", "vit")
    assert json.loads((vit / "preprocessor_config.json").read_text())["size"] == {"shortest_edge": 40}


def test_hub_id_source_is_read_through_the_hub_cache(source, tmp_path, monkeypatch):
    from huggingface_hub import constants

    revision = "0" * 40
    repo = tmp_path / "cache" / "models--me--tiny-dora"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in source.iterdir():
        if path.suffix in {".json", ".safetensors"}:
            (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    vit = export("me/tiny-dora", tmp_path / "vit", "vit")
    assert (snapshot / "model.safetensors").is_file()  # the cache is read, never replaced
    pixels = torch.randn(2, 3, 32, 32)
    from transformers import ViTModel

    with torch.no_grad():
        found = ViTModel.from_pretrained(vit).eval()(pixels).pooler_output
    torch.testing.assert_close(found, dora_features(source, pixels)[:, 0], rtol=0, atol=1e-5)


def test_refusals(source, tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "missing"), "--format", "vit", "--out", str(tmp_path / "o")]) == 2
    assert "export source not found" in capsys.readouterr().err
    plain_vit = save_tiny_vit(tmp_path / "plain", num_hidden_layers=2)
    assert cli_main(["export", str(plain_vit), "--format", "vit", "--out", str(tmp_path / "o")]) == 2
    assert "'vit' model, not a DoRA one" in capsys.readouterr().err
    results = tmp_path / "knn.json"
    results.write_text("{}")
    assert cli_main(["export", str(source), "--format", "vit", "--out", str(tmp_path / "o"), "--eval-results", str(results)]) == 2
    assert "--eval-results" in capsys.readouterr().err
    assert cli_main(["export", str(source), "--format", "timm", "--out", str(source)]) == 2  # the source itself
    assert "which this command uses" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        cli_main(["export", str(source), "--format", "onnx", "--out", str(tmp_path / "o")])
