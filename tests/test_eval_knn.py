"""k-NN evaluation: the vote against a plain loop, a known answer, the CLI end to end with its cache,
the model-index conversion, and the errors a user can make."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora
from huggingface_hub import ModelCardData
from PIL import Image

from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation import results_to_eval_results, results_to_model_index
from dora_hf.evaluation.classification.command import run_knn
from dora_hf.evaluation.classification.knn import knn_votes, ranked_classes

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def plain_knn(train: np.ndarray, labels: np.ndarray, test: np.ndarray, k: int, temperature: float, classes: int) -> list[int]:
    """DINO's weighted k-NN, one test image at a time with Python loops."""
    predictions = []
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    for x in test:
        x = x / np.linalg.norm(x)
        similarities = [(float(np.dot(x, t)), i) for i, t in enumerate(train)]
        similarities.sort(key=lambda s: -s[0])
        votes = [0.0] * classes
        for similarity, i in similarities[:k]:
            votes[labels[i]] += math.exp(similarity / temperature)
        predictions.append(int(np.argmax(votes)))
    return predictions


def test_knn_matches_a_plain_loop_on_random_features():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(60, 8)), rng.normal(size=(25, 8))
    labels = rng.integers(0, 4, size=60)
    votes = knn_votes(torch.tensor(train), torch.tensor(labels), torch.tensor(test), 4, k_values=(1, 5, 20, 200), temperature=0.07)
    for k in (1, 5, 20, 200):
        expected = plain_knn(train, labels, test, min(k, 60), 0.07, 4)
        assert ranked_classes(votes[k])[:, 0].tolist() == expected, k


def test_knn_gives_the_known_answer_on_separable_classes():
    # Three well separated clusters of 30 points; each test point is near its class centre.
    rng = np.random.default_rng(1)
    centres = np.eye(3, 16) * 10
    train_labels = np.repeat(np.arange(3), 30)
    train = centres[train_labels] + rng.normal(scale=0.5, size=(90, 16))
    test_labels = np.array([2, 0, 1, 1, 0, 2, 2])
    test = centres[test_labels] + rng.normal(scale=0.5, size=(7, 16))
    votes = knn_votes(torch.tensor(train), torch.tensor(train_labels), torch.tensor(test), 3, k_values=(10, 20, 100, 200))
    for k, scores in votes.items():
        assert ranked_classes(scores)[:, 0].tolist() == test_labels.tolist(), k
        assert plain_knn(train, train_labels, test, min(k, 90), 0.07, 3) == test_labels.tolist()


def write_colour_folder(root: Path, per_class: dict[str, int]) -> Path:
    """imagefolder layout: root/<split>/<class>/<i>.png, every image of a class the same colour."""
    for split, count in per_class.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(np.full((20 + i, 24, 3), colour, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_dora(tmp_path_factory.mktemp("model") / "tiny-dora")


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("data") / "colours", {"train": 4, "validation": 2})


def knn_args(model: Path, data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval", "knn", "--model", str(model), "--dataset", "imagefolder", "--data-dir", str(data),
        "--k", "1", "3", "20", "--cache-dir", str(cache), "--out", str(out), "--no-progress", "--batch-size", "5", *extra,
    ]


def test_eval_knn_cli_end_to_end_with_feature_cache(tiny_model, colour_folder, tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "knn.json"
    assert cli_main(knn_args(tiny_model, colour_folder, cache, out)) == 0
    results = json.loads(out.read_text())
    # Every class is one colour: each validation image has identical training images, so
    # k-NN finds them whatever the (random) network.
    assert results["details"]["per_k"]["1"]["top1"] == 1.0
    assert results["details"]["per_k"]["3"]["top1"] == 1.0
    # k=20 on 12 training images runs with 12 neighbours, and is reported as what it is
    assert results["details"]["per_k"]["12"] == {**results["details"]["per_k"]["12"], "neighbours": 12, "requested_k": [20]}
    assert "20" not in results["details"]["per_k"]
    assert "k=20 uses k=12 neighbours; results are reported as k=12" in capsys.readouterr().err
    assert results["settings"]["k"] == [1, 3, 12] and results["settings"]["requested_k"] == [1, 3, 20]
    assert results["dataset"]["num_train"] == 12 and results["dataset"]["num_eval"] == 6
    assert results["dataset"]["split"] == "validation"  # chosen when --split is not given
    assert [m["name"] for m in results["metrics"]] == ["k-NN top-1 (k=1)", "k-NN top-1 (k=3)", "k-NN top-1 (k=12)"]
    assert results["metrics"][2]["args"] == {"k": 12, "temperature": 0.07}
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 2  # train and validation

    # A second run reads the cache instead of running the model.
    capsys.readouterr()
    assert cli_main(knn_args(tiny_model, colour_folder, cache, out, "--streaming")) == 0
    again = json.loads(out.read_text())
    assert "cached in" in capsys.readouterr().out
    assert again["details"] == results["details"]
    assert sorted(cache.glob("*.safetensors")) == files  # same data and model: same keys, streamed or not

    # The results become model-index metadata that huggingface_hub accepts.
    index = results_to_model_index(results, "tiny-dora", "Colours")
    assert index[0]["name"] == "tiny-dora"
    entry = index[0]["results"][0]
    assert entry["task"]["type"] == "image-classification"
    assert entry["dataset"]["name"] == "Colours" and entry["dataset"]["split"] == "validation"
    assert entry["metrics"][0] == {"type": "accuracy", "value": 1.0, "name": "k-NN top-1 (k=1)", "args": {"k": 1, "temperature": 0.07}}
    card = ModelCardData(model_name="tiny-dora", eval_results=results_to_eval_results(results, "Colours"))
    assert card.to_dict()["model-index"] == index


def test_streaming_features_equal_memory_mapped_ones(tiny_model, colour_folder, tmp_path):
    import argparse

    base = dict(
        model=str(tiny_model), model_revision=None, device="cpu", no_progress=True, dataset="imagefolder",
        dataset_config=None, data_dir=str(colour_folder), dataset_revision=None, train_split="train", split="validation",
        image_column="image", label_column="label", max_train_samples=None, max_eval_samples=4, batch_size=4,
        cache_dir=None, no_cache=True, k=[3], temperature=0.07,
    )
    plain = run_knn(argparse.Namespace(**base, streaming=False))
    streamed = run_knn(argparse.Namespace(**base, streaming=True))
    assert plain["details"] == streamed["details"]
    assert plain["dataset"]["num_eval"] == 4


def test_clear_errors(tiny_model, colour_folder, tmp_path, capsys):
    out = tmp_path / "x.json"
    cache = tmp_path / "cache"

    def error(*argv: str) -> str:
        capsys.readouterr()
        assert cli_main(list(argv)) == 2
        return capsys.readouterr().err

    message = error(*knn_args(tiny_model, colour_folder, cache, out, "--label-column", "category"))
    assert "no column 'category'" in message and "columns: image, label" in message

    message = error(*knn_args(tiny_model, colour_folder, cache, out, "--split", "test"))
    assert "no split 'test'" in message and "train, validation" in message

    # An empty split (parquet files, the test one with no rows).
    parquet = tmp_path / "parquet" / "data"
    parquet.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    datasets.Dataset.from_dict({"image": [image, image], "label": [0, 1]}, features=features).to_parquet(parquet / "train.parquet")
    datasets.Dataset.from_dict({"image": [], "label": []}, features=features).to_parquet(parquet / "test.parquet")
    args = ["eval", "knn", "--model", str(tiny_model), "--dataset", str(parquet.parent), "--split", "test",
            "--cache-dir", str(cache), "--out", str(out), "--no-progress"]
    assert "split 'test' is empty" in error(*args)
    assert "the split is empty" in error(*args, "--streaming")

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    message = error(*knn_args(not_a_model, colour_folder, cache, out))
    assert "not a model folder (no config.json)" in message

    from transformers import ResNetConfig

    resnet = tmp_path / "resnet"
    ResNetConfig().save_pretrained(resnet)
    message = error(*knn_args(resnet, colour_folder, cache, out))
    assert "model_type 'resnet' is not DoRA or ViT-compatible" in message

    message = error(*knn_args(tiny_model, tmp_path / "missing-data", cache, out))
    assert "dataset imagefolder" in message
    assert not out.exists()


def test_unlabelled_split_is_refused(tiny_model, tmp_path):
    from dora_hf.evaluation.encoder import load_encoder
    from dora_hf.evaluation.classification.features import extract_features
    from dora_hf.evaluation.classification.image_dataset import open_image_split

    folder = tmp_path / "unlabelled" / "data"
    folder.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    datasets.Dataset.from_dict({"image": [image], "label": [-1]}, features=features).to_parquet(folder / "test.parquet")
    split = open_image_split(str(folder.parent), "test")
    with pytest.raises(DoraUserError, match="unlabelled examples"):
        extract_features(load_encoder(str(tiny_model)), split, progress=False)


def test_knn_values_above_the_training_set_are_merged_into_the_k_used():
    from dora_hf.evaluation.classification.command import neighbour_counts

    assert neighbour_counts([10, 20, 100, 200], 12) == {10: [10], 12: [20, 100, 200]}
    assert neighbour_counts([200, 5], 300) == {200: [200], 5: [5]}


def test_one_class_is_refused_as_one_class(tiny_model, tmp_path, capsys):
    # imagefolder drops the label column when it finds a single class folder
    root = tmp_path / "one-class"
    for split, count in {"train": 3, "validation": 2}.items():
        (root / split / "red").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((16, 16, 3), COLOURS["red"], dtype=np.uint8)).save(root / split / "red" / f"{i}.png")
    assert cli_main(knn_args(tiny_model, root, tmp_path / "cache", tmp_path / "x.json")) == 2
    err = capsys.readouterr().err
    assert "k-NN and linear evaluation need at least two classes" in err and "one class folder (red)" in err

    # a labelled split whose training part holds one class
    data = tmp_path / "parquet" / "data"
    data.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    datasets.Dataset.from_dict({"image": [image] * 3, "label": [0] * 3}, features=features).to_parquet(data / "train.parquet")
    datasets.Dataset.from_dict({"image": [image] * 2, "label": [0, 1]}, features=features).to_parquet(data / "test.parquet")
    argv = ["eval", "knn", "--model", str(tiny_model), "--dataset", str(data.parent), "--split", "test",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "x.json"), "--no-progress"]
    assert cli_main(argv) == 2
    assert "k-NN needs at least two classes, but the training split" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("streaming", [False, True])
def test_a_corrupt_image_is_named(tiny_model, tmp_path, capsys, streaming):
    root = write_colour_folder(tmp_path / "colours", {"train": 3, "validation": 1})
    broken = root / "train" / "green" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated file: the header reads, the pixels do not
    extra = ["--streaming"] if streaming else []
    assert cli_main(knn_args(tiny_model, root, tmp_path / "cache", tmp_path / "x.json", *extra)) == 2
    err = capsys.readouterr().err
    assert f"({broken}) is not a readable image" in err and "row " in err, err
