"""A timm export given as `--model` is one line saying what to give instead
(docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

import pytest
from dora_tiny import save_tiny_dora

from dora_hf.cli import main

EXPECTED = (
    "is a timm export (architecture 'vit_small_patch16_224', for timm.create_model), not a transformers model; "
    "give the model folder it was exported from, or export the same source with --format dora (the default) or "
    "--format vit"
)


@pytest.fixture(scope="module")
def timm_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("timm")
    out = root / "timm"
    assert main(["export", str(save_tiny_dora(root / "dora")), "--out", str(out), "--format", "timm"]) == 0
    return out


@pytest.mark.parametrize("command", ["eval knn", "eval discovery", "visualize"])
def test_a_timm_export_as_model_says_what_to_give(timm_export, synthetic_video, tmp_path, capsys, command):
    out = tmp_path / "out.png"
    argv = {
        "eval knn": ["eval", "knn", "--model", str(timm_export), "--dataset", "imagefolder", "--data-dir",
                     str(tmp_path / "images"), "--out", str(out), "--no-progress"],
        "eval discovery": ["eval", "discovery", "--model", str(timm_export), str(synthetic_video),
                           "--out", str(out), "--no-progress"],
        "visualize": ["visualize", "--model", str(timm_export), str(synthetic_video), "--out", str(out)],
    }[command]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"{timm_export}: {EXPECTED}"), err
    assert not out.exists()
