"""A cut `model.safetensors` is one line naming the file, in `export` and in every command that
loads a model for evaluation (docs/RELIABILITY.md, "Under load and under fire", 9)."""

from __future__ import annotations

import pytest
from dora_tiny import save_tiny_dora

from dora_hf.cli import main
from dora_hf.folders.weight_files import damaged_weight_file


@pytest.fixture
def cut_model(tmp_path):
    folder = save_tiny_dora(tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


@pytest.mark.parametrize("command", ["export", "eval knn", "visualize"])
def test_a_cut_weight_file_is_named_in_one_line(cut_model, synthetic_video, tmp_path, capsys, command):
    out = tmp_path / "out"
    argv = {
        "export": ["export", str(cut_model), "--out", str(out)],
        "eval knn": ["eval", "knn", "--model", str(cut_model), "--dataset", "imagefolder", "--data-dir",
                     str(tmp_path / "images"), "--out", str(out), "--no-progress"],
        "visualize": ["visualize", "--model", str(cut_model), str(synthetic_video), "--out", str(out) + ".png"],
    }[command]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{cut_model / 'model.safetensors'} is truncated or corrupt (" in err[0]
    assert "export the model again from its checkpoint" in err[0]
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_whole_files_are_not_called_damaged(tmp_path, cut_model):
    assert damaged_weight_file(save_tiny_dora(tmp_path / "whole")) is None
    assert damaged_weight_file(cut_model) == cut_model / "model.safetensors"
