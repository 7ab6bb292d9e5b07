"""Linear evaluation.

`--protocol fast`: 100% on a linearly separable set, chance on shuffled labels, and the CLI end to
end on a transformers ViT with DINO's concatenated last-blocks features.

`--protocol dino` (facebookresearch/dino `eval_linear.py`): the transforms against plain
transcriptions of torchvision's code, the learning rate against `CosineAnnealingLR`, a training
epoch against a transcription of DINO's `train`, best-epoch reporting, and the CLI end to end on
a tiny DoRA model.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from dora_tiny import save_tiny_dora, save_tiny_vit
from PIL import Image
from torch import nn

from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.classification.dino_linear import (
    LinearClassifier,
    epoch_learning_rates,
    run_epochs,
    scaled_learning_rate,
    train_epoch,
    validated_epochs,
)
from dora_hf.evaluation.classification.dino_transforms import (
    DinoTrainTransform,
    DinoValTransform,
    random_resized_crop_params,
)
from dora_hf.evaluation.classification.features import image_features
from dora_hf.evaluation.classification.linear_probe import (
    LinearProbeSettings,
    train_linear_probe,
)
from dora_hf.evaluation.encoder import load_encoder


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
        "--protocol", "fast", "--n-last-blocks", "2", "--epochs", "50", "--train-batch-size", "4",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress",
    ]
    assert cli_main(argv) == 0
    results = json.loads(out.read_text())
    assert results["task"] == "linear" and results["dataset"]["split"] == "test"
    assert results["settings"]["n_last_blocks"] == 2 and results["settings"]["protocol"] == "fast"
    assert results["details"]["train_top1"] == 1.0
    assert results["details"]["test"]["top1"] == 1.0  # two classes a network cannot confuse
    assert [m["type"] for m in results["metrics"]] == ["accuracy", "top_5_accuracy"]
    assert cli_main(argv[:-5] + ["--n-last-blocks", "9", "--out", str(out), "--no-progress", "--no-cache"]) == 2


# --- --protocol dino ---------------------------------------------------------------------------

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def torchvision_get_params(width: int, height: int, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """torchvision/transforms/transforms.py `RandomResizedCrop.get_params`, as written there (global RNG)."""
    area = height * width
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        log_ratio = torch.log(torch.tensor(ratio))
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    i = (height - h) // 2
    j = (width - w) // 2
    return i, j, h, w


def to_tensor_normalize(image: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor then Normalize with DINO's ImageNet statistics."""
    pixels = torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


SIZES = [(500, 375), (64, 480), (33, 17), (224, 224), (2000, 10), (10, 2000), (3, 3), (1, 1)]


def test_random_resized_crop_params_match_torchvision():
    fallbacks = sampled = 0
    with torch.random.fork_rng():
        for width, height in SIZES:
            for seed in range(25):
                torch.manual_seed(seed)
                expected = torchvision_get_params(width, height)
                assert random_resized_crop_params(width, height, torch.Generator().manual_seed(seed)) == expected
                top, left, h, w = expected
                central = (top, left) == ((height - h) // 2, (width - w) // 2)
                fallbacks += central and (w == width or h == height)
                sampled += not central
    assert fallbacks >= 50 and sampled >= 100  # both branches exercised (2000x10 and 10x2000 always fall back)


def test_train_transform_matches_torchvision_order_of_draws():
    """RandomResizedCrop (bilinear) then RandomHorizontalFlip (`torch.rand(1) < 0.5`), then ToTensor, Normalize."""
    flips = 0
    with torch.random.fork_rng():
        for seed in range(12):
            image = noise_image(61, 47, seed)
            torch.manual_seed(seed)
            top, left, h, w = torchvision_get_params(61, 47)
            crop = image.crop((left, top, left + w, top + h)).resize((32, 32), Image.BILINEAR)
            if torch.rand(1) < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                flips += 1
            got = DinoTrainTransform(crop_size=32)(image, torch.Generator().manual_seed(seed))
            torch.testing.assert_close(got, to_tensor_normalize(crop), rtol=0, atol=1e-6)
    assert 0 < flips < 12


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (257, 999), (37, 41), (500, 500)])
def test_val_transform_is_bicubic_shorter_side_resize_then_centre_crop(size):
    width, height = size
    image = noise_image(width, height, seed=width * height)
    if width <= height:  # torchvision's resize of the shorter side to 256
        new_size = (256, int(256 * height / width))
    else:
        new_size = (int(256 * width / height), 256)
    resized = image if new_size == image.size else image.resize(new_size, Image.BICUBIC)
    top = int(round((resized.height - 224) / 2.0))
    left = int(round((resized.width - 224) / 2.0))
    expected = to_tensor_normalize(resized.crop((left, top, left + 224, top + 224)))
    got = DinoValTransform()(image)
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_learning_rate_is_scaled_by_batch_and_follows_cosine_annealing():
    assert scaled_learning_rate(0.001, 128) == pytest.approx(0.0005)  # DINO's defaults on one GPU
    assert scaled_learning_rate(0.001, 128, world_size=8) == pytest.approx(0.004)  # its 8-GPU README run
    for epochs in (1, 7, 100):
        peak = scaled_learning_rate(0.001, 96)
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
        expected = []
        for _ in range(epochs):  # DINO: train the epoch, then scheduler.step()
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert epoch_learning_rates(peak, epochs) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_validation_epochs_follow_dino():
    for epochs, val_freq in [(10, 3), (8, 3), (5, 1), (1, 4), (100, 10)]:
        dino = [epoch for epoch in range(epochs) if epoch % val_freq == 0 or epoch == epochs - 1]
        assert validated_epochs(epochs, val_freq) == [epoch + 1 for epoch in dino]


def test_the_best_validation_is_reported_not_the_last():
    scores = iter([{"top1": 0.2}, {"top1": 0.7, "top5": 0.9}, {"top1": 0.7, "top5": 1.0}, {"top1": 0.4}])
    trained = []
    outcome = run_epochs(
        epochs=7, val_freq=2, learning_rates=[0.1 * e for e in range(7)],
        train_epoch=lambda epoch, lr: trained.append((epoch, lr)) or 1.0 / (epoch + 1), validate=lambda: next(scores),
    )
    assert trained == [(e, 0.1 * e) for e in range(7)]
    assert [record.epoch for record in outcome.validated] == [1, 3, 5, 7]
    assert (outcome.best.epoch, outcome.best.top1, outcome.best.top5) == (3, 0.7, 0.9)  # the first of equal bests
    assert (outcome.last.epoch, outcome.last.top1) == (7, 0.4)
    assert [record.train_loss for record in outcome.history] == [1.0 / (e + 1) for e in range(7)]


def test_linear_classifier_is_dinos():
    classifier = LinearClassifier(512, 200, torch.Generator().manual_seed(0))
    assert classifier.linear.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert classifier.linear.weight.mean().abs().item() < 2e-4
    assert torch.count_nonzero(classifier.linear.bias) == 0
    x = torch.randn(3, 4, 128)  # flattened to (3, 512)
    expected = x.reshape(3, 512) @ classifier.linear.weight.T + classifier.linear.bias
    torch.testing.assert_close(classifier(x), expected)


@pytest.fixture(scope="module")
def tiny_dora(tmp_path_factory) -> Path:
    return save_tiny_dora(tmp_path_factory.mktemp("dora") / "tiny-dora")


def test_training_epoch_matches_dinos_train_loop(tiny_dora):
    backbone = load_encoder(str(tiny_dora))
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=generator), torch.randint(0, 3, (4,), generator=generator)) for _ in range(3)]
    ours = LinearClassifier(2 * 48, 3, torch.Generator().manual_seed(1))
    theirs = copy.deepcopy(ours)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9, weight_decay=0)
    mean_loss = train_epoch(backbone, ours, optimizer, batches, n_last_blocks=2)

    # DINO's `train` with `get_intermediate_layers(inp, 2)`: the final norm of each of the last 2 blocks' outputs.
    model = backbone.model
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for block in model.encoder.layer[-2:]]
    reference = torch.optim.SGD(theirs.parameters(), 0.05, momentum=0.9, weight_decay=0)
    losses = []
    try:
        for inp, target in batches:
            outputs.clear()
            with torch.no_grad():
                model(pixel_values=inp)
                output = torch.cat([model.layernorm(x)[:, 0] for x in outputs], dim=-1)
            loss = nn.CrossEntropyLoss()(theirs(output), target)
            reference.zero_grad()
            loss.backward()
            reference.step()
            losses.append(loss.item())
    finally:
        for hook in hooks:
            hook.remove()
    assert mean_loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    torch.testing.assert_close(ours.linear.weight, theirs.linear.weight)
    torch.testing.assert_close(ours.linear.bias, theirs.linear.bias)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory) -> Path:
    """Two classes, images of assorted sizes: 6 training and 3 validation images per class."""
    root = tmp_path_factory.mktemp("data") / "shapes"
    for split, count in (("train", 6), ("validation", 3)):
        for name, colour in (("dark", 20), ("light", 230)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((40 + 3 * i, 52 - 2 * i, 3), colour + i, dtype=np.uint8)).save(
                    root / split / name / f"{i}.png"
                )
    return root


def dino_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval", "linear", "--model", str(model), "--dataset", "imagefolder", "--data-dir", str(data),
        "--n-last-blocks", "2", "--crop-size", "40", "--resize-size", "48", "--batch-size", "5",
        "--num-workers", "0", "--out", str(out), "--no-progress", *extra,
    ]


def test_eval_linear_dino_protocol_end_to_end(tiny_dora, shapes_folder, tmp_path):
    out = tmp_path / "linear.json"
    assert cli_main(dino_args(tiny_dora, shapes_folder, out, "--epochs", "3", "--val-freq", "2", "--lr", "0.5")) == 0
    results = json.loads(out.read_text())
    settings, details = results["settings"], results["details"]
    assert settings["protocol"] == "dino"  # the default
    assert settings["n_last_blocks"] == 2 and settings["batch_size"] == 5 and settings["val_freq"] == 2
    assert settings["lr_scaled"] == pytest.approx(0.5 * 5 / 256)
    assert results["dataset"]["num_train"] == 12 and results["dataset"]["num_eval"] == 6

    history = details["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert [("top1" in record) for record in history] == [True, False, True]  # epochs 0 and 2 (the last) in DINO's count
    assert all(math.isfinite(record["train_loss"]) and record["train_loss"] > 0 for record in history)
    assert [record["lr"] for record in history] == pytest.approx(epoch_learning_rates(0.5 * 5 / 256, 3))
    validated = [record for record in history if "top1" in record]
    best = max(validated, key=lambda record: record["top1"])
    assert details["best_top1"] == best["top1"] and details["best_epoch"] == best["epoch"]
    assert details["last_top1"] == history[-1]["top1"] and details["last_epoch"] == 3
    assert all(0.0 <= record["top1"] <= 1.0 for record in validated)
    assert [m["type"] for m in results["metrics"]] == ["accuracy"]  # top-5 only with 5 classes or more
    assert results["metrics"][0]["value"] == details["best_top1"]


def test_eval_linear_dino_one_epoch_with_defaults_of_a_vit_s_run(tiny_dora, shapes_folder, tmp_path):
    out = tmp_path / "linear.json"
    assert cli_main(dino_args(tiny_dora, shapes_folder, out, "--protocol", "dino", "--epochs", "1")) == 0
    results = json.loads(out.read_text())
    (record,) = results["details"]["history"]
    assert record["epoch"] == 1 and math.isfinite(record["train_loss"]) and math.isfinite(record["top1"])
    assert record["lr"] == pytest.approx(0.001 * 5 / 256)  # DINO's --lr 0.001, scaled; cosine starts at the peak
    assert results["details"]["best_epoch"] == results["details"]["last_epoch"] == 1
    assert results["settings"]["momentum"] == 0.9 and results["settings"]["weight_decay"] == 0.0
    assert results["settings"]["normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_loader_batches_do_not_depend_on_worker_count(shapes_folder, tmp_path, monkeypatch):
    from dora_hf.evaluation.classification.image_dataset import open_image_split
    from dora_hf.evaluation.classification.transformed_images import (
        EpochOrder,
        TransformedImages,
        checked_batches,
        image_loader,
    )

    split = open_image_split("imagefolder", "train", data_dir=str(shapes_folder))
    images = TransformedImages(split, torch.arange(12) % 2, DinoTrainTransform(crop_size=16), seed=3)
    order = EpochOrder(len(images), seed=3)
    for epoch in (0, 1):
        order.set_epoch(epoch)
        expected = torch.randperm(12, generator=torch.Generator().manual_seed(3 + epoch))  # DistributedSampler's order
        single = list(checked_batches(image_loader(images, order, 5, num_workers=0)))
        workers = list(checked_batches(image_loader(images, order, 5, num_workers=2)))
        assert [len(labels) for _, labels in single] == [5, 5, 2]
        assert torch.equal(torch.cat([labels for _, labels in single]), expected % 2)
        for (a, la), (b, lb) in zip(single, workers):
            assert torch.equal(a, b) and torch.equal(la, lb)
    order.set_epoch(0)
    first = torch.cat([pixels for pixels, _ in checked_batches(image_loader(images, order, 5, 0))])
    order.set_epoch(1)
    second = torch.cat([pixels for pixels, _ in checked_batches(image_loader(images, order, 5, 0))])
    assert not torch.equal(first, second)  # new order, new crops every epoch

    broken = tmp_path / "broken"
    for name in ("a", "b"):
        (broken / "train" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(broken / "train" / name / "0.png")
    (broken / "train" / "b" / "1.png").write_bytes(b"not a png")
    split = open_image_split("imagefolder", "train", data_dir=str(broken))
    images = TransformedImages(split, torch.zeros(3, dtype=torch.long), DinoTrainTransform(crop_size=16))
    with pytest.raises(DoraUserError, match="is not a readable image") as raised:
        list(checked_batches(image_loader(images, EpochOrder(3), 3, num_workers=1)))
    assert "Traceback" not in str(raised.value)


def test_dino_protocol_errors(tiny_dora, shapes_folder, tmp_path, capsys):
    out = tmp_path / "x.json"

    def error(*extra: str) -> str:
        capsys.readouterr()
        assert cli_main(dino_args(tiny_dora, shapes_folder, out, *extra)) == 2
        return capsys.readouterr().err

    assert "--cache-dir: an option of --protocol fast only" in error("--cache-dir", str(tmp_path / "cache"))
    assert "--train-batch-size: an option of --protocol fast only" in error("--train-batch-size", "8")
    # dino_args passes --crop-size, --resize-size and --num-workers: the first is named
    assert "--crop-size: an option of --protocol dino only" in error("--protocol", "fast")
    assert "--streaming: --protocol dino" in error("--streaming")
    assert "--resize-size 32 is smaller than --crop-size 40" in error("--resize-size", "32")
    assert "--val-freq must be >= 1" in error("--val-freq", "0")
    assert "--n-last-blocks 4: the model has only 3 blocks" in error("--n-last-blocks", "4")
    assert "--crop-size 36 is not a multiple of the model's patch size 8" in error("--crop-size", "36")
    assert not out.exists()
