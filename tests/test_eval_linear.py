"""Linear probing: 100% on a linearly separable set, chance on shuffled labels, and the CLI end to
end on a transformers ViT with DINO's concatenated last-blocks features."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_vit
from PIL import Image

from dora_hf.cli import main as cli_main
from dora_hf.evaluation.encoder import load_encoder
from dora_hf.evaluation.classification.features import image_features
from dora_hf.evaluation.classification.linear_probe import LinearProbeSettings, train_linear_probe


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Hundreds of tiny SGD steps: on a busy shared CPU, thread hand-offs cost more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def separable(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes in 10-D, separated along one direction each by a margin, with large off-axis noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(n_per_class)
    features = torch.randn(4 * n_per_class, 10, generator=generator) * 3.0
    features[:, 0] = labels.float() * 4.0 + torch.rand(4 * n_per_class, generator=generator)  # classes are intervals
    return features * 7.0 + 100.0, labels  # an arbitrary scale and offset, as raw features have


def accuracy(probe, features: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probe.logits(features).argmax(dim=1) == labels).float().mean())


def test_linear_probe_separates_a_linearly_separable_set():
    train_x, train_y = separable(50, seed=0)
    test_x, test_y = separable(25, seed=1)
    probe = train_linear_probe(train_x, train_y, 4, LinearProbeSettings(epochs=60, batch_size=32))
    assert accuracy(probe, train_x, train_y) == 1.0
    assert accuracy(probe, test_x, test_y) == 1.0


def test_linear_probe_is_at_chance_on_shuffled_labels():
    train_x, train_y = separable(100, seed=0)
    test_x, test_y = separable(250, seed=1)
    shuffled_train = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(2))]
    shuffled_test = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(3))]
    probe = train_linear_probe(train_x, shuffled_train, 4, LinearProbeSettings(epochs=30, batch_size=64))
    # 1000 test points, 4 classes: chance is 0.25 with a standard deviation of about 0.014.
    assert abs(accuracy(probe, test_x, shuffled_test) - 0.25) < 0.06


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("vit") / "tiny-vit", num_hidden_layers=3)


def test_last_blocks_feature_is_the_normalised_cls_of_each_block(tiny_vit):
    backbone = load_encoder(str(tiny_vit))
    pixels = torch.randn(2, 3, 32, 32)
    features = image_features(backbone, pixels, n_last_blocks=2)
    output = backbone.model(pixel_values=pixels, output_hidden_states=True)
    assert features.shape == (2, 64)
    torch.testing.assert_close(features[:, 32:], output.last_hidden_state[:, 0])  # last block, final LayerNorm
    torch.testing.assert_close(features[:, :32], backbone.model.layernorm(output.hidden_states[-2][:, 0]))
    torch.testing.assert_close(image_features(backbone, pixels), output.last_hidden_state[:, 0])


def test_eval_linear_cli_on_a_vit(tiny_vit, tmp_path):
    root = tmp_path / "shapes"
    for split, count in (("train", 6), ("test", 3)):
        for name, colour in (("dark", 20), ("light", 230)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((16, 16, 3), colour + i, dtype=np.uint8)).save(root / split / name / f"{i}.png")
    out = tmp_path / "linear.json"
    argv = [
        "eval", "linear", "--model", str(tiny_vit), "--dataset", "imagefolder", "--data-dir", str(root),
        "--n-last-blocks", "2", "--epochs", "50", "--train-batch-size", "4",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress",
    ]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())
    assert results["task"] == "linear" and results["dataset"]["split"] == "test"
    assert results["settings"]["n_last_blocks"] == 2
    assert results["details"]["train_top1"] == 1.0
    assert results["details"]["test"]["top1"] == 1.0  # two classes a network cannot confuse
    assert [m["type"] for m in results["metrics"]] == ["accuracy", "top_5_accuracy"]
    assert cli_main(argv[:-5] + ["--n-last-blocks", "9", "--out", str(out), "--no-progress", "--no-cache"]) == 2
