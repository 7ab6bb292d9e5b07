"""`dora-hf eval segmentation`: semantic segmentation (ADE20K-style) by iBOT's linear or UperNet recipe, scored in mIoU."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..._arguments import at_least, non_negative_float, positive_float
from ...errors import DoraUserError
from ..model_arguments import add_model_arguments
from ..results import EvalTask, add_output_arguments, metric, task_results
from .protocol import (
    HEADS,
    IBOT_LINEAR,
    IBOT_UPERNET,
    IGNORE_INDEX,
    PROTOCOLS,
    SegmentationRecipe,
    ibot_recipe,
)

if TYPE_CHECKING:
    from .dataset import SegmentationSplit

TASKS = {
    "linear": EvalTask("segmentation", "image-segmentation", "Semantic segmentation (linear head, frozen backbone)"),
    "upernet": EvalTask("segmentation", "image-segmentation", "Semantic segmentation (UperNet fine-tuning)"),
}
REFERENCE_CONFIGS = {
    "linear": "bytedance/ibot evaluation/semantic_segmentation/configs/linear/vit_small_512_ade20k_160k.py",
    "upernet": "bytedance/ibot evaluation/semantic_segmentation/configs/upernet/vit_small_512_ade20k_160k.py",
}
LOSS_CURVE_POINTS = 100
"""The results keep the training loss as at most this many means over consecutive iterations."""


def add_segmentation_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval segmentation` and its options."""
    parser = tasks.add_parser(
        "segmentation",
        help="semantic segmentation (ADE20K-style): iBOT's linear head or UperNet fine-tuning, scored in mIoU",
        description=(
            "Train a segmentation head on a DoRA backbone by iBOT's ADE20K recipe (a linear head on frozen "
            "features, or UperNet on the fine-tuned ViT with a multi-scale neck), then score a held-out "
            "split in mIoU with sliding-window inference. Defaults are iBOT's ViT-S/16 values; the full "
            "recipe is 160k iterations of 16 crops of 512 px, GPU work: set --iterations and --crop-size "
            "for a short run."
        ),
    )
    add_model_arguments(parser)
    parser.add_argument("--head", choices=HEADS, required=True, help="linear: frozen backbone; upernet: fine-tuned")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="ibot", help="recipe the defaults come from (default: ibot)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="hub dataset id, local dataset folder, or 'imagefolder' with --data-dir")
    data.add_argument("--dataset-config", default=None, help="dataset configuration name")
    data.add_argument(
        "--data-dir", default=None,
        help="data folder (for 'imagefolder': one sub-folder per split with images and a metadata.jsonl "
        "naming each image's label map in a 'label_file_name' field)",
    )
    data.add_argument("--dataset-revision", default=None, help="hub branch, tag or commit of the dataset")
    data.add_argument("--train-split", default="train", help="split the head is trained on (default: train)")
    data.add_argument("--split", default=None, help="split scored (default: validation, else test)")
    data.add_argument("--image-column", default="image")
    data.add_argument("--label-column", default="label", help="label maps: one class id per pixel (default: label)")
    data.add_argument(
        "--reduce-labels", action="store_true",
        help="ADE20K's raw ids: 0 ('other') becomes the ignored 255, every other id minus 1",
    )
    data.add_argument(
        "--num-labels", type=at_least(2), default=None,
        help="classes of the head, ids 0..N-1 (default: the largest id found + 1; ADE20K: 150)",
    )
    data.add_argument("--max-train-samples", type=at_least(1), default=None, help="train on the first N rows only")
    data.add_argument("--max-eval-samples", type=at_least(1), default=None, help="score the first N rows only")
    recipe = parser.add_argument_group("recipe (defaults: iBOT's ViT-S/16 ADE20K values)")
    recipe.add_argument("--iterations", type=at_least(1), default=None, help=f"training iterations (default: {IBOT_LINEAR.iterations})")
    recipe.add_argument("--crop-size", type=at_least(1), default=None, help=f"training crop and test window (default: {IBOT_LINEAR.crop_size})")
    recipe.add_argument("--batch-size", type=at_least(1), default=None, help=f"crops per iteration (default: {IBOT_LINEAR.batch_size})")
    recipe.add_argument(
        "--lr", type=positive_float, default=None,
        help=f"AdamW learning rate (default: {IBOT_LINEAR.learning_rate:g} linear, {IBOT_UPERNET.learning_rate:g} upernet)",
    )
    recipe.add_argument("--weight-decay", type=non_negative_float, default=None, help=f"(default: {IBOT_LINEAR.weight_decay:g})")
    recipe.add_argument(
        "--layer-decay", type=positive_float, default=None,
        help=f"upernet: lr factor per block from the top (default: {IBOT_UPERNET.layer_decay:g})",
    )
    recipe.add_argument(
        "--warmup-iterations", type=at_least(0), default=None,
        help=f"linear warm-up of the poly schedule (default: {IBOT_LINEAR.warmup_iterations})",
    )
    recipe.add_argument("--test-stride", type=at_least(1), default=None, help="sliding-window stride (default: 2/3 of the crop, 341 for 512)")
    recipe.add_argument(
        "--out-indices", type=at_least(0), nargs=4, default=None, metavar="BLOCK",
        help="the 4 blocks (1-based) the head reads (default: iBOT's 4 6 8 12, scaled to the model's depth)",
    )
    recipe.add_argument(
        "--decoder-channels", type=at_least(1), default=None, help=f"upernet: decoder width (default: {IBOT_UPERNET.decoder_channels})"
    )
    recipe.add_argument(
        "--auxiliary-channels", type=at_least(1), default=None,
        help=f"upernet: auxiliary head width (default: {IBOT_UPERNET.auxiliary_channels})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=at_least(0), default=4, help="data-loading processes (default: 4)")
    parser.add_argument("--save-predictions", type=Path, default=None, help="also write each scored row's prediction here as a PNG")
    add_output_arguments(parser, "eval-segmentation.json")
    parser.set_defaults(_eval=run_segmentation)


def segmentation_recipe(args: argparse.Namespace) -> SegmentationRecipe:
    """The protocol's recipe for `--head`, with the options given (each already a possible number:
    argparse checks them); combinations that cannot work are user errors."""
    recipe = ibot_recipe(args.head).with_options(
        iterations=args.iterations, crop_size=args.crop_size, batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay, layer_decay=args.layer_decay,
        warmup_iterations=args.warmup_iterations, test_stride=args.test_stride,
        decoder_channels=args.decoder_channels, auxiliary_channels=args.auxiliary_channels,
    )
    if recipe.head == "upernet" and recipe.batch_size < 2:
        raise DoraUserError("--head upernet needs --batch-size >= 2: its BatchNorm layers normalise over the batch")
    if recipe.stride > recipe.crop_size:
        raise DoraUserError(f"--test-stride {recipe.stride} is larger than --crop-size {recipe.crop_size}: pixels would go unscored")
    if recipe.layer_decay > 1:
        raise DoraUserError(f"--layer-decay must be at most 1 (1: none), got {recipe.layer_decay}")
    if args.num_labels is not None and args.num_labels > IGNORE_INDEX:
        raise DoraUserError(f"--num-labels must be at most {IGNORE_INDEX} ({IGNORE_INDEX} is the ignored label)")
    return recipe


def run_segmentation(args: argparse.Namespace) -> dict:
    import torch

    from ..encoder import load_encoder
    from .backbone import backbone_stages, segmentation_backbone
    from .dataset import open_segmentation_split
    from .inference import predict_split
    from .linear import LinearSegmenter
    from .scoring import score_predictions
    from .train import train_segmenter
    from .upernet import build_upernet

    recipe = segmentation_recipe(args)
    progress = not args.no_progress
    common = dict(
        dataset=args.dataset, image_column=args.image_column, label_column=args.label_column,
        config=args.dataset_config, data_dir=args.data_dir, revision=args.dataset_revision,
        reduce_labels=args.reduce_labels,
    )
    train = open_segmentation_split(split=args.train_split, max_samples=args.max_train_samples, **common)
    scored = open_segmentation_split(split=args.split, max_samples=args.max_eval_samples, **common)
    if scored.split == train.split:
        raise DoraUserError(f"--split and --train-split are both {train.split!r}; score on held-out images")
    num_labels = _num_labels(args.num_labels, train, scored, progress)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = load_encoder(args.model, revision=args.model_revision, device="cpu")
    if recipe.crop_size % encoder.patch_size:
        raise DoraUserError(f"--crop-size {recipe.crop_size} is not a multiple of the model's patch size {encoder.patch_size}")
    stages = backbone_stages(encoder, args.out_indices)
    depth = int(encoder.model.config.num_hidden_layers)
    upernet = recipe.head == "upernet"
    backbone = segmentation_backbone(
        encoder, stages, add_fpn=upernet, drop_path_rate=recipe.drop_path_rate if upernet else 0.0
    )
    model = build_upernet(backbone, num_labels, recipe) if upernet else LinearSegmenter(backbone, num_labels)
    del backbone
    mean, std = (tuple(t.flatten().tolist()) for t in encoder.pixel_mean_std())

    log = train_segmenter(
        model, train, recipe, depth=depth, mean=mean, std=std, device=device, seed=args.seed,
        num_workers=args.num_workers, progress=progress,
    )
    pairs = predict_split(model, scored, recipe, num_labels, encoder.patch_size, mean, std, device, progress)
    if args.save_predictions is not None:
        pairs = _saving(pairs, args.save_predictions)
    scores = score_predictions(pairs, num_labels)

    recipe_args = {"head": recipe.head, "protocol": args.protocol, "iterations": recipe.iterations, "crop_size": recipe.crop_size}
    head_name = "linear" if recipe.head == "linear" else "UperNet"
    return task_results(
        TASKS[recipe.head],
        encoder,
        dataset={
            "name": train.dataset if train.dataset != "imagefolder" else str(args.data_dir),
            "config": train.config, "split": scored.split, "train_split": train.split,
            "revision": args.dataset_revision, "fingerprint": scored.fingerprint,
            "num_train": len(train), "num_eval": len(scored), "num_labels": num_labels,
            "reduce_labels": args.reduce_labels,
        },
        metrics=[
            metric("mean_iou", f"mIoU ({head_name})", scores["mean_iou"], recipe_args),
            metric("mean_accuracy", f"Mean accuracy ({head_name})", scores["mean_accuracy"], recipe_args),
            metric("overall_accuracy", f"Overall accuracy ({head_name})", scores["overall_accuracy"], recipe_args),
        ],
        settings=_settings(args, recipe, stages, num_labels, device),
        details={
            "per_category_iou": scores["per_category_iou"],
            "per_category_accuracy": scores["per_category_accuracy"],
            "num_images": scores["num_images"],
            "train_loss": _loss_curve(log.losses),
            "skipped_batches": log.skipped,
        },
    )


def _num_labels(requested: int | None, train: SegmentationSplit, scored: SegmentationSplit, progress: bool) -> int:
    """Check every label map of both splits; the head's classes: `requested`, else the ids found."""
    from .dataset import scan_label_maps

    found = max(scan_label_maps(train, requested, progress), scan_label_maps(scored, requested, progress))
    if requested is not None:
        return requested
    if found < 2:
        raise DoraUserError(
            f"{train.describe()} and {scored.describe()} hold {'one class' if found == 1 else 'no scored pixel'}: "
            "segmentation needs at least two classes (set --num-labels, or check --label-column and --reduce-labels)"
        )
    return found


def _saving(pairs, folder: Path):
    """Pass the pairs on, writing each prediction as `<row>.png` (complete files only)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, prediction, reference in pairs:
        path = folder / f"{index:06d}.png"
        partial = folder / f".{path.name}.partial"
        Image.fromarray(prediction).save(partial, format="PNG")
        os.replace(partial, path)
        yield index, prediction, reference


def _settings(
    args: argparse.Namespace, recipe: SegmentationRecipe, stages: list[int], num_labels: int, device
) -> dict:
    upernet = recipe.head == "upernet"
    settings = {
        "protocol": args.protocol,
        "reference_config": REFERENCE_CONFIGS[recipe.head],
        "head": recipe.head,
        "backbone": "fine-tuned" if upernet else "frozen",
        "out_indices": stages,
        "feature_norm": "final LayerNorm on every map (out_with_norm=true)",
        "neck": "BEiT/iBOT fpn1..fpn4 (strides 4, 8, 16, 32 for 16-px patches)" if upernet else None,
        "iterations": recipe.iterations,
        "batch_size": recipe.batch_size,
        "crop_size": recipe.crop_size,
        "image_scale": list(recipe.image_scale),
        "scale_ratio_range": list(recipe.scale_ratio_range),
        "cat_max_ratio": recipe.cat_max_ratio,
        "optimizer": "AdamW",
        "lr": recipe.learning_rate,
        "betas": list(recipe.betas),
        "weight_decay": recipe.weight_decay,
        "layer_decay": recipe.layer_decay if upernet else None,
        "schedule": "poly",
        "poly_power": recipe.poly_power,
        "min_lr": recipe.min_learning_rate,
        "warmup_iterations": recipe.warmup_iterations,
        "warmup_ratio": recipe.warmup_ratio,
        "drop_path_rate": recipe.drop_path_rate if upernet else 0.0,
        "test_mode": "slide",
        "test_stride": recipe.stride,
        "num_labels": num_labels,
        "ignore_index": IGNORE_INDEX,
        "reduce_labels": args.reduce_labels,
        "seed": args.seed,
        "precision": "bf16 autocast" if getattr(device, "type", "cpu") == "cuda" else "fp32",
    }
    if upernet:
        settings.update(
            decoder_channels=recipe.decoder_channels, auxiliary_channels=recipe.auxiliary_channels,
            auxiliary_loss_weight=recipe.auxiliary_loss_weight, pool_scales=list(recipe.pool_scales),
        )
    return settings


def _loss_curve(losses: list[float]) -> list[float]:
    """At most `LOSS_CURVE_POINTS` means over consecutive stretches of the per-iteration losses."""
    if not losses:
        return []
    import numpy as np

    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(LOSS_CURVE_POINTS, len(losses)))
    return [float(chunk.mean()) for chunk in chunks]
