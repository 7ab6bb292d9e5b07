"""Evaluation loads a model through one strict path: missing or misshapen weights are refused.

transformers only warns about them and initialises them at random; `eval` then scored a network
with a random block and wrote results fit for a model card, where `export` refused the folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from dora_hf.cli import main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.encoder import load_encoder
from dora_tiny import save_tiny_dora, save_tiny_vit


def drop_weights(folder: Path, prefix: str) -> None:
    path = folder / "model.safetensors"
    weights = load_file(path)
    kept = {k: v for k, v in weights.items() if not k.startswith(prefix) and f".{prefix}" not in k}
    assert len(kept) < len(weights)
    save_file(kept, path, metadata={"format": "pt"})


def test_a_complete_pretraining_folder_and_a_vit_folder_load(tmp_path):
    assert load_encoder(str(save_tiny_dora(tmp_path / "dora"))).model.config.model_type == "dora"
    assert load_encoder(str(save_tiny_vit(tmp_path / "vit", num_hidden_layers=2))).model.config.model_type == "vit"


def test_a_vit_folder_without_its_pooler_loads(tmp_path):
    folder = save_tiny_vit(tmp_path / "vit", num_hidden_layers=2)
    drop_weights(folder, "pooler.")
    load_encoder(str(folder))


@pytest.mark.parametrize("prefix", ["encoder.layer.1.", "embeddings.patch_embeddings.", "layernorm."])
def test_missing_backbone_weights_are_refused(tmp_path, prefix):
    folder = save_tiny_dora(tmp_path / "dora")
    drop_weights(folder, prefix)
    with pytest.raises(DoraUserError, match=rf"does not load as DoraModel without changes \(\d+ weight\(s\) missing: .*{prefix}") as err:
        load_encoder(str(folder))
    assert "refusing to evaluate a network with randomly initialised weights" in str(err.value)


def test_eval_knn_with_a_damaged_model_exits_with_one_line_and_writes_nothing(tmp_path, capsys):
    folder = save_tiny_dora(tmp_path / "dora")
    drop_weights(folder, "encoder.layer.2.")
    out = tmp_path / "knn.json"
    data = tmp_path / "images"
    capsys.readouterr()
    code = main(["eval", "knn", "--model", str(folder), "--dataset", "imagefolder", "--data-dir", str(data),
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not load as DoraModel without changes" in err[0]
    assert "encoder.layer.2." in err[0] and not out.exists()
