"""Semantic segmentation by iBOT's recipes.

The BEiT/iBOT neck (`add_fpn`) against a plain functional transcription, its strides and UperNet
on it; the shipped `mean_iou` module and the scores against a plain per-class loop; the layer
decay and poly schedule against plain transcriptions of iBOT's constructor and mmcv's hook; the
sliding-window inference against mmseg's window grid; both recipes end to end through the CLI on
a synthetic two-class dataset made with `datasets` (the loss falls, the reported mIoU is the
plain-loop mIoU of the saved predictions); and the errors of bad inputs.
"""

from __future__ import annotations

import colorsys
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dora_tiny import tiny_config
from PIL import Image

from dora_hf import DoraBackbone, DoraForPreTraining, DoraImageProcessor
from dora_hf.cli import main as cli_main
from dora_hf.evaluation.metric_modules import MEAN_IOU, load_metric, metric_path
from dora_hf.evaluation.segmentation.augment import hsv_to_rgb, rgb_to_hsv
from dora_hf.evaluation.segmentation.dataset import reduce_labels
from dora_hf.evaluation.segmentation.inference import slide_logits, window_origins
from dora_hf.evaluation.segmentation.optimizer import (
    build_optimizer,
    poly_learning_rate,
)
from dora_hf.evaluation.segmentation.protocol import (
    IBOT_UPERNET,
    ibot_recipe,
    ibot_stages,
)
from dora_hf.evaluation.segmentation.scoring import score_predictions
from dora_hf.evaluation.segmentation.upernet import build_upernet


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


# --- the neck ------------------------------------------------------------------------------------


def neck_reference(state: dict, maps: tuple[torch.Tensor, ...], eps: float) -> list[torch.Tensor]:
    """iBOT's `fpn1..fpn4` (register_backbone.py, patch 16) written out with functional ops, BN in eval mode."""
    x = F.conv_transpose2d(maps[0], state["fpn1.0.weight"], state["fpn1.0.bias"], stride=2)
    x = F.batch_norm(
        x, state["fpn1.1.running_mean"], state["fpn1.1.running_var"], state["fpn1.1.weight"], state["fpn1.1.bias"],
        training=False, eps=eps,
    )
    x = F.conv_transpose2d(F.gelu(x), state["fpn1.3.weight"], state["fpn1.3.bias"], stride=2)
    y = F.conv_transpose2d(maps[1], state["fpn2.0.weight"], state["fpn2.0.bias"], stride=2)
    return [x, y, maps[2], F.max_pool2d(maps[3], kernel_size=2, stride=2)]


def test_neck_brings_four_blocks_to_strides_4_8_16_32_as_beit_and_ibot_do():
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=4, patch_size=16, image_size=32, out_indices=[1, 2, 3, 4], add_fpn=True)
    neck = DoraBackbone(config).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that the test sees them used
        neck.fpn1[1].running_mean.uniform_(-0.5, 0.5)
        neck.fpn1[1].running_var.uniform_(0.5, 2.0)
    assert [name for name in neck.state_dict() if name.startswith("fpn")] == [
        "fpn1.0.weight", "fpn1.0.bias", "fpn1.1.weight", "fpn1.1.bias", "fpn1.1.running_mean", "fpn1.1.running_var",
        "fpn1.1.num_batches_tracked", "fpn1.3.weight", "fpn1.3.bias", "fpn2.0.weight", "fpn2.0.bias",
    ]
    plain = DoraBackbone(tiny_config(num_hidden_layers=4, patch_size=16, image_size=32, out_indices=[1, 2, 3, 4])).eval()
    missing, unexpected = plain.load_state_dict(neck.state_dict(), strict=False)
    assert missing == [] and all(key.startswith("fpn") for key in unexpected)
    pixels = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        pyramid = neck(pixels).feature_maps
        expected = neck_reference(neck.state_dict(), plain(pixels).feature_maps, config.batch_norm_eps)
    assert [tuple(m.shape[-2:]) for m in pyramid] == [(64 // s, 96 // s) for s in (4, 8, 16, 32)]
    for got, want in zip(pyramid, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_neck_is_off_by_default_and_needs_four_maps():
    config = tiny_config(out_indices=[1, 2, 3])
    assert config.add_fpn is False and config.batch_norm_eps == 1e-5
    assert not any(name.startswith("fpn") for name in DoraBackbone(config).state_dict())
    with pytest.raises(ValueError, match="exactly 4 out_features"):
        tiny_config(out_indices=[1, 2, 3], add_fpn=True)
    with pytest.raises(ValueError, match="reshape_hidden_states"):
        tiny_config(num_hidden_layers=4, out_indices=[1, 2, 3, 4], add_fpn=True, reshape_hidden_states=False)


def test_upernet_on_the_neck_runs_forward_and_backward_and_gets_the_ibot_heads():
    torch.manual_seed(0)
    backbone = DoraBackbone(tiny_config(
        num_hidden_layers=4, patch_size=16, image_size=32, out_indices=[1, 2, 3, 4], add_fpn=True, drop_path_rate=0.0
    ))
    model = build_upernet(backbone, 5, IBOT_UPERNET.with_options(decoder_channels=16, auxiliary_channels=8))
    assert model.config.pool_scales == [1, 2, 3, 6] and model.config.auxiliary_loss_weight == 0.4
    assert model.auxiliary_head.in_index == 2
    for name, value in backbone.state_dict().items():  # the segmenter holds the backbone's weights
        assert torch.equal(model.backbone.state_dict()[name], value), name
    labels = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(1))
    labels[:, :8] = 255
    out = model(pixel_values=torch.randn(2, 3, 64, 64), labels=labels)
    assert out.logits.shape == (2, 5, 64, 64) and torch.isfinite(out.loss)
    out.loss.backward()
    no_grad = [n for n, p in model.backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []  # the neck and every block learn


# --- the metric ----------------------------------------------------------------------------------


def plain_loop_scores(predictions: list[np.ndarray], references: list[np.ndarray], num_labels: int) -> dict:
    """Per class, pixel counts over all images; IoU = |P and R| / |P or R| on scored pixels."""
    intersection = np.zeros(num_labels)
    union = np.zeros(num_labels)
    truth = np.zeros(num_labels)
    for prediction, reference in zip(predictions, references):
        scored = reference != 255
        for c in range(num_labels):
            intersection[c] += np.sum((prediction == c) & (reference == c) & scored)
            union[c] += np.sum(((prediction == c) | (reference == c)) & scored)
            truth[c] += np.sum(reference == c)
    ious = [intersection[c] / union[c] for c in range(num_labels) if union[c] > 0]
    accuracies = [intersection[c] / truth[c] for c in range(num_labels) if truth[c] > 0]
    return {
        "mean_iou": sum(ious) / len(ious),
        "mean_accuracy": sum(accuracies) / len(accuracies),
        "overall_accuracy": intersection.sum() / truth.sum(),
    }


def test_shipped_mean_iou_is_evaluates_and_equals_a_plain_loop():
    metric = load_metric(MEAN_IOU)
    # the example in evaluate's own metric card
    predicted = [np.array([[1, 2], [3, 4], [5, 255]]), np.array([[2, 7], [9, 2], [3, 6]]),
                 np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]])]
    actual = [np.array([[0, 3], [5, 4], [6, 255]]), np.array([[1, 7], [9, 2], [3, 6]]),
              np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]])]
    example = metric.compute(predictions=predicted, references=actual, num_labels=10, ignore_index=255)
    assert example["mean_iou"] == pytest.approx(0.4775) and example["overall_accuracy"] == pytest.approx(10 / 19)

    rng = np.random.default_rng(0)
    predictions, references = [], []
    for height, width in ((12, 17), (20, 9), (7, 7)):
        reference = rng.integers(0, 5, (height, width)).astype(np.uint8)  # class 5 is only predicted
        reference[rng.random((height, width)) < 0.2] = 255
        prediction = np.where(rng.random((height, width)) < 0.6, reference, rng.integers(0, 6, (height, width)))
        prediction[prediction == 255] = 0
        predictions.append(prediction.astype(np.uint8))
        references.append(reference)
    expected = plain_loop_scores(predictions, references, num_labels=6)
    module = metric.compute(predictions=predictions, references=references, num_labels=6, ignore_index=255)
    scored = score_predictions(zip(range(3), predictions, references), num_labels=6)
    for key, value in expected.items():
        assert module[key] == pytest.approx(value) and scored[key] == pytest.approx(value), key
    assert scored["per_category_accuracy"][5] is None and scored["num_images"] == 3  # never in a reference


def test_mean_iou_module_ships_as_package_data():
    patterns = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = patterns["tool"]["setuptools"]["package-data"]["dora_hf"]
    package = metric_path(MEAN_IOU).parents[2]
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    assert {metric_path(MEAN_IOU) / "mean_iou.py", metric_path(MEAN_IOU) / "README.md"} <= shipped


def test_reduce_labels_is_ade20ks():
    raw = np.array([[0, 1, 2], [150, 255, 7]])
    expected = raw.copy()
    expected[expected == 0] = 255  # transformers' `reduce_label` / mmseg's `reduce_zero_label`
    expected = expected - 1
    expected[expected == 254] = 255
    np.testing.assert_array_equal(reduce_labels(raw), expected)


# --- optimisation and inference ------------------------------------------------------------------


def ibot_layer_id(name: str, num_max_layer: int) -> int:
    """bytedance/ibot `mmcv_custom/layer_decay_optimizer_constructor.py` `get_num_layer_for_vit`, verbatim."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    elif name.startswith("backbone.patch_embed"):
        return 0
    elif name.startswith("backbone.blocks"):
        return int(name.split(".")[2]) + 1
    else:
        return num_max_layer - 1


def ibot_name(name: str) -> str:
    """A UperNet parameter under iBOT's (DINO's) backbone names."""
    return (name.replace("backbone.embeddings.cls_token", "backbone.cls_token")
            .replace("backbone.embeddings.position_embeddings", "backbone.pos_embed")
            .replace("backbone.embeddings.patch_embeddings.projection", "backbone.patch_embed.proj")
            .replace("backbone.encoder.layer.", "backbone.blocks."))


def test_layer_decay_groups_are_ibots_constructor():
    torch.manual_seed(0)
    backbone = DoraBackbone(tiny_config(num_hidden_layers=4, patch_size=16, out_indices=[1, 2, 3, 4], add_fpn=True))
    recipe = IBOT_UPERNET.with_options(decoder_channels=8, auxiliary_channels=8)
    model = build_upernet(backbone, 3, recipe)
    optimizer = build_optimizer(model, recipe, depth=4)
    got = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    num_layers = 4 + 2  # the constructor's `num_layers + 2`
    for name, parameter in model.named_parameters():
        no_decay = len(parameter.shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
        scale = 0.9 ** (num_layers - ibot_layer_id(ibot_name(name), num_layers) - 1)
        assert got[id(parameter)] == pytest.approx((scale * 3e-5, 0.0 if no_decay else 0.05)), name
    assert got[id(model.backbone.embeddings.position_embeddings)][0] == pytest.approx(0.9**5 * 3e-5)
    assert got[id(model.backbone.fpn1[0].weight)][0] == pytest.approx(3e-5)


def test_poly_schedule_with_linear_warmup_is_mmcvs():
    recipe = ibot_recipe("linear").with_options(iterations=100, warmup_iterations=10, learning_rate=1.0)
    for iteration in (0, 1, 5, 9, 10, 11, 50, 99):
        regular = (1.0 - 0.0) * (1 - iteration / 100) ** 1.0 + 0.0  # PolyLrUpdaterHook.get_lr
        if iteration < 10:  # LrUpdaterHook.get_warmup_lr, 'linear'
            regular *= 1 - (1 - iteration / 10) * (1 - 1e-6)
        assert poly_learning_rate(1.0, iteration, recipe) == pytest.approx(regular, rel=1e-12, abs=1e-15)


def mmseg_windows(h_img: int, w_img: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg 0.x `EncoderDecoder.slide_inference`'s window loop, verbatim."""
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


class PointwiseModel(torch.nn.Module):
    """Logits of each pixel from its own value only: windows must not change them."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=1)

    def forward(self, pixel_values):
        from transformers.modeling_outputs import SemanticSegmenterOutput

        return SemanticSegmenterOutput(logits=self.conv(pixel_values))


@pytest.mark.parametrize("height, width", [(512, 683), (40, 56), (20, 70)])
def test_sliding_windows_are_mmsegs_and_average_back_to_the_whole_image(height, width):
    crop, stride = 32, 21
    boxes = [(top, min(top + crop, height), left, min(left + crop, width))
             for top in window_origins(height, crop, stride) for left in window_origins(width, crop, stride)]
    assert boxes == mmseg_windows(height, width, crop, stride)
    if height > 100:
        assert window_origins(683, 512, 341) == [0, 171]  # iBOT's 512/341 on a 512 x 683 ADE20K image
        return
    torch.manual_seed(0)
    model = PointwiseModel().eval()
    pixels = torch.randn(1, 3, height, width)
    with torch.no_grad():
        whole = model(pixels).logits
    torch.testing.assert_close(slide_logits(model, pixels, 4, crop, stride, patch_size=8), whole)


def test_hsv_conversion_is_opencvs_ranges():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    hsv = rgb_to_hsv(image)
    for (r, g, b), (h, s, v) in zip(image.reshape(-1, 3), hsv.reshape(-1, 3)):
        ref_h, ref_s, ref_v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert abs((int(h) - round(ref_h * 180) + 90) % 180 - 90) <= 1
        assert abs(int(s) - ref_s * 255) <= 1 and int(v) == round(ref_v * 255)
    assert np.abs(hsv_to_rgb(hsv).astype(int) - image).max() <= 4  # 8-bit hue steps of 2 degrees


# --- the command ---------------------------------------------------------------------------------

RED, BLUE, GREY = (200, 40, 40), (40, 60, 210), (128, 128, 128)


def scene(seed: int, height: int = 40, width: int = 48) -> tuple[Image.Image, Image.Image]:
    """Red left of a random column (raw id 1), blue right of it (2), a grey top band of 'other' (0)."""
    rng = np.random.default_rng(seed)
    split = int(rng.integers(12, width - 12))
    label = np.full((height, width), 2, dtype=np.uint8)
    label[:, :split] = 1
    label[:5] = 0
    image = np.empty((height, width, 3), dtype=np.float32)
    for raw, colour in ((0, GREY), (1, RED), (2, BLUE)):
        image[label == raw] = colour
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(image), Image.fromarray(label, mode="L")


def save_scenes(folder: Path, counts: dict[str, int], label_column: str = "label") -> Path:
    features = datasets.Features({"image": datasets.Image(), label_column: datasets.Image()})
    splits = {}
    for offset, (split, count) in enumerate(counts.items()):
        pairs = [scene(1000 * offset + i) for i in range(count)]
        splits[split] = datasets.Dataset.from_dict(
            {"image": [p[0] for p in pairs], label_column: [p[1] for p in pairs]}, features=features
        )
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_dora(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dora") / "tiny-dora"
    torch.manual_seed(0)
    DoraForPreTraining(tiny_config(num_hidden_layers=6)).save_pretrained(folder)  # patch 8
    DoraImageProcessor.for_image_size(32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return save_scenes(tmp_path_factory.mktemp("scenes") / "scenes", {"train": 8, "validation": 3})


def run_recipe(tiny_dora: Path, scenes: Path, tmp_path: Path, head: str, *extra: str) -> dict:
    out = tmp_path / f"{head}.json"
    argv = [
        "eval", "segmentation", "--model", str(tiny_dora), "--dataset", str(scenes), "--head", head,
        "--reduce-labels", "--batch-size", "4", "--warmup-iterations", "0", "--num-workers", "0",
        "--save-predictions", str(tmp_path / "predictions"), "--out", str(out), "--no-progress", *extra,
    ]
    assert cli_main(argv) == 0
    return json.loads(out.read_text())


def check_reported_scores_are_the_plain_loop_scores(results: dict, scenes: Path, predictions: Path) -> None:
    validation = datasets.load_from_disk(str(scenes))["validation"]
    references = [reduce_labels(np.asarray(row["label"]).astype(np.int64)) for row in validation]
    predicted = [np.asarray(Image.open(predictions / f"{i:06d}.png")) for i in range(len(validation))]
    assert [p.shape for p in predicted] == [r.shape for r in references]  # at the images' own size
    expected = plain_loop_scores(predicted, references, num_labels=2)
    reported = {row["type"]: row["value"] for row in results["metrics"]}
    assert reported == pytest.approx(expected)


def test_linear_recipe_trains_its_head_and_reports_the_miou_of_its_predictions(tiny_dora, scenes, tmp_path):
    results = run_recipe(tiny_dora, scenes, tmp_path, "linear", "--iterations", "24", "--crop-size", "32", "--lr", "2e-2")
    assert results["task"] == "segmentation" and results["dataset"]["num_labels"] == 2
    settings = results["settings"]
    assert settings["protocol"] == "ibot" and settings["backbone"] == "frozen"
    assert settings["out_indices"] == list(ibot_stages(6)) == [2, 3, 4, 6]  # iBOT's 4 6 8 12 of 12, scaled
    assert settings["test_stride"] == 21 and settings["weight_decay"] == 0.05 and settings["layer_decay"] is None
    losses = results["details"]["train_loss"]
    assert len(losses) == 24 and np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses
    check_reported_scores_are_the_plain_loop_scores(results, scenes, tmp_path / "predictions")
    assert results["metrics"][0]["value"] > 0.5  # red against blue, after 24 steps


def test_upernet_recipe_fine_tunes_and_reports_the_miou_of_its_predictions(tiny_dora, scenes, tmp_path):
    results = run_recipe(
        tiny_dora, scenes, tmp_path, "upernet", "--iterations", "16", "--crop-size", "32", "--lr", "1e-2",
        "--decoder-channels", "16", "--auxiliary-channels", "8", "--out-indices", "1", "3", "5", "6",
    )
    settings = results["settings"]
    assert settings["backbone"] == "fine-tuned" and settings["layer_decay"] == 0.9 and settings["pool_scales"] == [1, 2, 3, 6]
    assert settings["out_indices"] == [1, 3, 5, 6] and settings["drop_path_rate"] == 0.1
    losses = results["details"]["train_loss"]
    assert len(losses) == 16 and np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    check_reported_scores_are_the_plain_loop_scores(results, scenes, tmp_path / "predictions")


# --- errors --------------------------------------------------------------------------------------


def write_imagefolder(root: Path, bad_row: bool) -> Path:
    """`imagefolder` layout: images and label PNGs per split, paired by metadata.jsonl's `label_file_name`."""
    for offset, split in enumerate(("train", "validation")):
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(3):
            image, label = scene(100 * offset + i)
            if bad_row and split == "validation" and i == 1:
                label = label.resize((label.width - 8, label.height), Image.Resampling.NEAREST)
            image.save(root / split / f"{i}.png")
            label.save(root / split / f"{i}_seg.png")
            rows.append({"file_name": f"{i}.png", "label_file_name": f"{i}_seg.png"})
        (root / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def cli_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]  # (progress bars of `datasets` aside)
    assert len(errors) == 1 and errors[0].startswith("dora-hf eval: error: ") and "Traceback" not in err, err
    return errors[0]


def test_bad_inputs_stop_with_one_clear_line_and_no_results(tiny_dora, scenes, tmp_path, capsys):
    out = tmp_path / "never.json"
    base = ["eval", "segmentation", "--model", str(tiny_dora), "--head", "linear", "--iterations", "1",
            "--crop-size", "32", "--num-workers", "0", "--no-progress", "--out", str(out)]
    folder = write_imagefolder(tmp_path / "uneven", bad_row=True)
    err = cli_error(base + ["--dataset", "imagefolder", "--data-dir", str(folder), "--reduce-labels"], capsys)
    assert "[validation] row 1: the label map is 40x40 but its image is 48x40" in err
    err = cli_error(base + ["--dataset", str(scenes), "--num-labels", "2"], capsys)
    assert "[train] row 0: class id 2 is beyond the head's 2 classes" in err and "--reduce-labels" in err
    err = cli_error(base + ["--dataset", str(scenes), "--label-column", "annotation"], capsys)
    assert "no column 'annotation'" in err and "columns: image, label" in err
    err = cli_error(base + ["--dataset", str(scenes), "--reduce-labels", "--crop-size", "36"], capsys)
    assert "--crop-size 36 is not a multiple of the model's patch size 8" in err
    err = cli_error([*base, "--dataset", str(scenes), "--batch-size", "1", "--head", "upernet"], capsys)
    assert "--head upernet needs --batch-size >= 2" in err
    with pytest.raises(SystemExit) as stop:  # an impossible number: refused while parsing, nothing loaded
        cli_main([*base[:3], "/nonexistent/model", *base[4:], "--dataset", str(scenes), "--iterations", "0"])
    assert stop.value.code == 2 and "argument --iterations: must be at least 1, got 0" in capsys.readouterr().err
    assert not out.exists()


HELP_IMPORTS = textwrap.dedent(
    """
    import json, sys
    from dora_hf.cli import main
    try:
        main(["eval", "segmentation", "--help"])
    except SystemExit:
        pass
    print("HEAVY " + json.dumps(sorted(m for m in ("torch", "transformers", "evaluate", "datasets") if m in sys.modules)))
    """
)


def test_help_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", HELP_IMPORTS], check=False, capture_output=True, text=True, timeout=120)
    assert "--reduce-labels" in result.stdout and "--head {linear,upernet}" in result.stdout, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"
