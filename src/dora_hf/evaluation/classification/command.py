"""`dora-hf eval knn` and `dora-hf eval linear`: classification on frozen features (DINO's protocols).

`eval linear --protocol dino` (the default) is DINO's ``eval_linear.py`` (`dino_linear`): online
training on augmented crops, best validation epoch reported; ``--protocol fast`` is the
cached-feature probe (`linear_probe`), last epoch reported. Each protocol has its own defaults,
filled in by `linear_options`, so the command line shows both in ``--help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..._arguments import at_least, positive_float
from ...errors import DoraUserError
from ..model_arguments import add_model_arguments, encoder_from_args
from ..protocols import (
    DINO_K_VALUES,
    DINO_LINEAR_BATCH_SIZE,
    DINO_LINEAR_CROP_SIZE,
    DINO_LINEAR_EPOCHS,
    DINO_LINEAR_LR,
    DINO_LINEAR_LR_REFERENCE_BATCH,
    DINO_LINEAR_MEAN,
    DINO_LINEAR_N_LAST_BLOCKS,
    DINO_LINEAR_NUM_WORKERS,
    DINO_LINEAR_RESIZE_SIZE,
    DINO_LINEAR_STD,
    DINO_LINEAR_VAL_FREQ,
    DINO_TEMPERATURE,
    FAST_LINEAR_FEATURE_BATCH_SIZE,
    FAST_LINEAR_N_LAST_BLOCKS,
    LinearProbeSettings,
)
from ..results import EvalTask, add_output_arguments, metric, task_results

if TYPE_CHECKING:
    import torch

    from ..encoder import FrozenEncoder
    from .features import FeatureSet
    from .image_dataset import ImageSplit

KNN = EvalTask("knn", "image-classification", "k-NN classification (frozen features)")
LINEAR = EvalTask("linear", "image-classification", "Linear probing (frozen features)")
"""Both protocols; ``settings["protocol"]`` says which."""


def add_knn_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval knn` and its options."""
    knn = tasks.add_parser("knn", help="weighted k-NN classification of frozen [CLS] features (DINO protocol)")
    add_model_arguments(knn)
    _dataset_arguments(knn)
    knn.add_argument(
        "--k", type=at_least(1), nargs="+", default=list(DINO_K_VALUES), help="neighbour counts (default: 10 20 100 200)"
    )
    knn.add_argument("--temperature", type=positive_float, default=DINO_TEMPERATURE, help="vote weight exp(similarity / T) (default: 0.07)")
    add_output_arguments(knn, "eval-knn.json")
    knn.set_defaults(_eval=run_knn)


PROTOCOLS = ("dino", "fast")
ONLY_FOR = {
    "dino": {
        "val_freq": "--protocol fast trains on cached features and scores the last epoch",
        "crop_size": "--protocol fast uses the model's image processor",
        "resize_size": "--protocol fast uses the model's image processor",
        "num_workers": "--protocol fast extracts features in the main process",
    },
    "fast": {
        "train_batch_size": "--protocol dino trains on --batch-size images per step",
        "cache_dir": "--protocol dino trains online on new crops every epoch, so caches no features",
    },
}
"""The options of one protocol only, with why the other has no use for them."""


def add_linear_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval linear` and its options; protocol-specific defaults are resolved by `linear_options`."""
    linear = tasks.add_parser(
        "linear", help="linear classifier on frozen features (DINO's online protocol, or a fast cached-feature probe)"
    )
    add_model_arguments(linear)
    _dataset_arguments(
        linear, batch_size_default=None,
        batch_size_help=(
            f"dino: images per training step and per validation pass (default: {DINO_LINEAR_BATCH_SIZE}; "
            f"the rate scales with it); fast: images per forward pass (default: {FAST_LINEAR_FEATURE_BATCH_SIZE})"
        ),
    )
    linear.add_argument(
        "--protocol", choices=PROTOCOLS, default="dino",
        help="dino (default): facebookresearch/dino eval_linear.py, trained online on augmented crops, best "
        "validation epoch reported; fast: cached un-augmented features, standardised, last epoch reported",
    )
    linear.add_argument(
        "--n-last-blocks", type=int, default=None,
        help=f"concatenate the final-norm [CLS] tokens of the last N blocks (default: dino {DINO_LINEAR_N_LAST_BLOCKS}, "
        f"DINO's value for ViT-S; fast {FAST_LINEAR_N_LAST_BLOCKS})",
    )
    linear.add_argument("--epochs", type=int, default=DINO_LINEAR_EPOCHS, help=f"(default: {DINO_LINEAR_EPOCHS})")
    linear.add_argument(
        "--lr", type=float, default=None,
        help=f"SGD learning rate, cosine schedule to 0 (default: dino {DINO_LINEAR_LR} for {DINO_LINEAR_LR_REFERENCE_BATCH} "
        f"images, used as lr * batch-size / {DINO_LINEAR_LR_REFERENCE_BATCH}; fast {LinearProbeSettings.learning_rate})",
    )
    linear.add_argument(
        "--weight-decay", type=float, default=LinearProbeSettings.weight_decay, help="(default: 0, DINO's)"
    )
    linear.add_argument("--seed", type=int, default=0, help="classifier initialisation, order and crops (default: 0)")
    linear.add_argument(
        "--val-freq", type=int, default=None,
        help=f"dino: validate every N epochs and after the last (default: {DINO_LINEAR_VAL_FREQ})",
    )
    linear.add_argument(
        "--crop-size", type=int, default=None, help=f"dino: training and validation crop side (default: {DINO_LINEAR_CROP_SIZE})"
    )
    linear.add_argument(
        "--resize-size", type=int, default=None,
        help=f"dino: validation images' shorter side before the centre crop (default: {DINO_LINEAR_RESIZE_SIZE})",
    )
    linear.add_argument(
        "--num-workers", type=int, default=None,
        help=f"dino: image-loading processes (default: {DINO_LINEAR_NUM_WORKERS}, DINO's, at most the CPU count; 0: none)",
    )
    linear.add_argument(
        "--train-batch-size", type=int, default=None,
        help=f"fast: examples per SGD step (default: {LinearProbeSettings.batch_size})",
    )
    add_output_arguments(linear, "eval-linear.json")
    linear.set_defaults(_eval=run_linear)


def linear_options(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with the chosen protocol's defaults filled in; an option of the other protocol is an error."""
    protocol = args.protocol
    for other, options in ONLY_FOR.items():
        for name, why in options.items():
            if other != protocol and getattr(args, name, None) is not None:
                raise DoraUserError(f"--{name.replace('_', '-')}: an option of --protocol {other} only ({why})")
    if protocol == "dino" and args.streaming:
        raise DoraUserError(
            "--streaming: --protocol dino reads the training images in a new random order every epoch, which a "
            "stream cannot give; drop --streaming or use --protocol fast"
        )
    defaults = {
        "dino": {
            "n_last_blocks": DINO_LINEAR_N_LAST_BLOCKS, "lr": DINO_LINEAR_LR, "batch_size": DINO_LINEAR_BATCH_SIZE,
            "val_freq": DINO_LINEAR_VAL_FREQ, "crop_size": DINO_LINEAR_CROP_SIZE,
            "resize_size": DINO_LINEAR_RESIZE_SIZE, "num_workers": min(DINO_LINEAR_NUM_WORKERS, os.cpu_count() or 1),
        },
        "fast": {
            "n_last_blocks": FAST_LINEAR_N_LAST_BLOCKS, "lr": LinearProbeSettings.learning_rate,
            "batch_size": FAST_LINEAR_FEATURE_BATCH_SIZE, "train_batch_size": LinearProbeSettings.batch_size,
        },
    }[protocol]
    resolved = argparse.Namespace(**vars(args))
    for name, value in defaults.items():
        if getattr(resolved, name, None) is None:
            setattr(resolved, name, value)
    positive = ["n_last_blocks", "epochs", "batch_size"] + (
        ["val_freq", "crop_size", "resize_size"] if protocol == "dino" else ["train_batch_size"]
    )
    for name in positive:
        if getattr(resolved, name) < 1:
            raise DoraUserError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(resolved, name)})")
    if not resolved.lr > 0 or resolved.weight_decay < 0:
        raise DoraUserError("--lr must be > 0 and --weight-decay >= 0")
    if protocol == "dino":
        if resolved.num_workers < 0:
            raise DoraUserError(f"--num-workers must be >= 0 (got {resolved.num_workers})")
        if resolved.resize_size < resolved.crop_size:
            raise DoraUserError(
                f"--resize-size {resolved.resize_size} is smaller than --crop-size {resolved.crop_size}: "
                "the validation crop must fit in the resized image"
            )
    return resolved


def run_knn(args: argparse.Namespace) -> dict:
    from ..metric_modules import TOPK_ACCURACY, load_metric
    from .knn import knn_votes, ranked_classes

    backbone = encoder_from_args(args)
    train, test, train_split, test_split = _train_test_features(backbone, args, n_last_blocks=1)
    _check_two_classes("k-NN", train.labels, train.class_names, train_split)
    num_classes = len(train.class_names)
    k_used = neighbour_counts(args.k, len(train))
    for k, requested in k_used.items():
        if requested != [k]:
            print(
                f"k-NN: the training split has {len(train)} images, so k={', '.join(map(str, requested))} "
                f"{'use' if len(requested) > 1 else 'uses'} k={k} neighbours; results are reported as k={k}",
                file=sys.stderr,
            )
    votes = knn_votes(train.features, train.labels, test.features, num_classes, tuple(k_used), args.temperature)
    accuracy = load_metric(TOPK_ACCURACY)
    per_k, metrics = {}, []
    for k, requested in k_used.items():
        scores = accuracy.compute(
            predictions=ranked_classes(votes[k]).tolist(), references=test.labels.tolist(), top_k=[1, 5]
        )
        per_k[str(k)] = {**scores, "neighbours": k, "requested_k": requested}
        args_k = {"k": k, "temperature": args.temperature}
        metrics.append(metric("accuracy", f"k-NN top-1 (k={k})", scores["top1"], args_k))
    return task_results(
        KNN,
        backbone,
        dataset=_dataset_record(args, train_split, test_split, len(train), len(test), num_classes),
        metrics=metrics,
        settings={
            "k": list(k_used), "requested_k": args.k, "temperature": args.temperature,
            "feature": "final-LayerNorm [CLS], L2-normalised",
        },
        details={"per_k": per_k},
    )


def neighbour_counts(requested: list[int], num_train: int) -> dict[int, list[int]]:
    """The k each requested k runs with (at most the training set's size), in order, with the
    requested values it stands for: `--k 20 200` on 12 images is one result, k=12."""
    used: dict[int, list[int]] = {}
    for k in requested:
        used.setdefault(min(k, num_train), []).append(k)
    return used


def _check_two_classes(task: str, labels: torch.Tensor, class_names: list[str], split: ImageSplit) -> None:
    """One class makes every prediction right: refuse rather than report 100%."""
    present = sorted({class_names[i] for i in labels.tolist()})
    if len(present) < 2:
        raise DoraUserError(
            f"{task} needs at least two classes, but the training split {split.describe()} has one: {present[0]!r}"
        )


def run_linear(args: argparse.Namespace) -> dict:
    args = linear_options(args)
    if args.protocol == "fast":
        return _run_fast_linear(args)
    return _run_dino_linear(args)


def _run_fast_linear(args: argparse.Namespace) -> dict:
    """`--protocol fast`: a probe on cached, un-augmented, standardised features (`linear_probe`)."""
    from ..metric_modules import TOPK_ACCURACY, load_metric
    from .knn import ranked_classes
    from .linear_probe import train_linear_probe

    backbone = encoder_from_args(args)
    train, test, train_split, test_split = _train_test_features(backbone, args, n_last_blocks=args.n_last_blocks)
    _check_two_classes("a linear probe", train.labels, train.class_names, train_split)
    num_classes = len(train.class_names)
    settings = LinearProbeSettings(
        epochs=args.epochs, batch_size=args.train_batch_size, learning_rate=args.lr,
        weight_decay=args.weight_decay, seed=args.seed,
    )
    probe = train_linear_probe(train.features, train.labels, num_classes, settings, device=backbone.device)
    accuracy = load_metric(TOPK_ACCURACY)
    scores = accuracy.compute(
        predictions=ranked_classes(probe.logits(test.features)).tolist(), references=test.labels.tolist(), top_k=[1, 5]
    )
    train_scores = accuracy.compute(
        predictions=ranked_classes(probe.logits(train.features)).tolist(), references=train.labels.tolist(), top_k=[1]
    )
    probe_args = {"n_last_blocks": args.n_last_blocks, "epochs": args.epochs, "lr": args.lr}
    return task_results(
        LINEAR,
        backbone,
        dataset=_dataset_record(args, train_split, test_split, len(train), len(test), num_classes),
        metrics=[
            metric("accuracy", "Linear probe top-1", scores["top1"], probe_args),
            metric("top_5_accuracy", "Linear probe top-5", scores["top5"], probe_args),
        ],
        settings={
            "protocol": "fast",
            "n_last_blocks": args.n_last_blocks, "epochs": args.epochs, "batch_size": args.train_batch_size,
            "lr": args.lr, "momentum": settings.momentum, "weight_decay": args.weight_decay, "seed": args.seed,
            "feature_standardisation": "training-set mean/std", "augmentation": "none (cached features)",
        },
        details={"test": scores, "train_top1": train_scores["top1"]},
    )


def _run_dino_linear(args: argparse.Namespace) -> dict:
    """`--protocol dino`: facebookresearch/dino `eval_linear.py`, trained online (`dino_linear`)."""
    from .dino_linear import DinoLinearSettings, fit_dino_linear
    from .dino_transforms import DinoTrainTransform, DinoValTransform
    from .features import encode_labels, relabel
    from .transformed_images import TransformedImages

    backbone = encoder_from_args(args)
    blocks = int(backbone.model.config.num_hidden_layers)
    if args.n_last_blocks > blocks:
        raise DoraUserError(f"--n-last-blocks {args.n_last_blocks}: the model has only {blocks} blocks")
    if args.crop_size % backbone.patch_size:
        raise DoraUserError(f"--crop-size {args.crop_size} is not a multiple of the model's patch size {backbone.patch_size}")
    _note_normalisation(backbone)
    train_split, val_split = _train_test_splits(args)
    train_labels, class_names = encode_labels(_label_values(train_split), train_split)
    _check_two_classes("a linear probe", train_labels, class_names, train_split)
    val_labels, val_names = encode_labels(_label_values(val_split), val_split)
    val_labels = relabel(val_labels, val_names, class_names)
    settings = DinoLinearSettings(
        epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size, n_last_blocks=args.n_last_blocks,
        val_freq=args.val_freq, weight_decay=args.weight_decay, crop_size=args.crop_size,
        resize_size=args.resize_size, seed=args.seed, num_workers=args.num_workers,
    )
    train_transform = DinoTrainTransform(crop_size=args.crop_size)
    val_transform = DinoValTransform(resize_size=args.resize_size, crop_size=args.crop_size)
    outcome = fit_dino_linear(
        backbone,
        TransformedImages(train_split, train_labels, train_transform, seed=args.seed),
        TransformedImages(val_split, val_labels, val_transform, seed=args.seed),
        len(class_names), settings, progress=not args.no_progress,
    )
    best, last = outcome.best, outcome.last
    probe_args = {"protocol": "dino", "n_last_blocks": args.n_last_blocks, "epochs": args.epochs, "lr": args.lr}
    metrics = [metric("accuracy", "Linear probe top-1 (DINO protocol, best epoch)", best.top1, probe_args)]
    if best.top5 is not None:
        metrics.append(metric("top_5_accuracy", "Linear probe top-5 (DINO protocol, best top-1 epoch)", best.top5, probe_args))
    return task_results(
        LINEAR,
        backbone,
        dataset=_dataset_record(args, train_split, val_split, len(train_labels), len(val_labels), len(class_names)),
        metrics=metrics,
        settings={
            "protocol": "dino", "reference": "facebookresearch/dino eval_linear.py",
            "n_last_blocks": args.n_last_blocks, "avgpool_patchtokens": False,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "lr_scaled": settings.scaled_learning_rate,
            "lr_schedule": "cosine to 0 over the epochs, stepped per epoch (CosineAnnealingLR)",
            "momentum": settings.momentum, "weight_decay": args.weight_decay, "val_freq": args.val_freq,
            "seed": args.seed, "train_transform": train_transform.describe(), "val_transform": val_transform.describe(),
            "normalize": {"mean": list(train_transform.mean), "std": list(train_transform.std)},
            "augmentation": "online (features recomputed every epoch)",
        },
        details={
            "best_top1": best.top1, "best_epoch": best.epoch, "last_top1": last.top1, "last_epoch": last.epoch,
            "test": {key: value for key, value in (("top1", best.top1), ("top5", best.top5)) if value is not None},
            "history": [record.as_dict() for record in outcome.history],
        },
    )


def _note_normalisation(backbone: FrozenEncoder) -> None:
    """DINO's protocol normalises with ImageNet's statistics; say so when the model's processor does not."""
    mean = tuple(getattr(backbone.processor, "image_mean", None) or DINO_LINEAR_MEAN)
    std = tuple(getattr(backbone.processor, "image_std", None) or DINO_LINEAR_STD)
    if any(abs(a - b) > 1e-6 for a, b in zip(mean + std, DINO_LINEAR_MEAN + DINO_LINEAR_STD)):
        print(
            f"note: {backbone.name}'s image processor normalises with mean {list(mean)}, std {list(std)}; "
            f"DINO's protocol uses ImageNet's, mean {list(DINO_LINEAR_MEAN)}, std {list(DINO_LINEAR_STD)}",
            file=sys.stderr,
        )


def _label_values(split: ImageSplit) -> list:
    """Every label of a (memory-mapped) split, read from its column alone."""
    return list(split.rows.select_columns([split.label_column])[split.label_column])


def _dataset_arguments(
    parser: argparse.ArgumentParser,
    batch_size_default: int | None = 64,
    batch_size_help: str = "images per forward pass (default: 64)",
) -> None:
    parser.add_argument(
        "--dataset", required=True, help="hub dataset id, a local dataset folder, or 'imagefolder' with --data-dir"
    )
    parser.add_argument("--dataset-config", default=None, help="dataset configuration name")
    parser.add_argument(
        "--data-dir", default=None, help="data folder (for 'imagefolder': one sub-folder per split, then per class)"
    )
    parser.add_argument("--dataset-revision", default=None, help="hub branch, tag or commit of the dataset")
    parser.add_argument("--train-split", default="train", help="split the features are fitted on (default: train)")
    parser.add_argument("--split", default=None, help="split scored (default: validation, else test)")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it whole")
    parser.add_argument("--max-train-samples", type=at_least(1), default=None, help="use only the first N training images")
    parser.add_argument("--max-eval-samples", type=at_least(1), default=None, help="score only the first N images")
    parser.add_argument("--batch-size", type=at_least(1), default=batch_size_default, help=batch_size_help)
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="feature cache (default: ~/.cache/dora-hf/features; not with `eval linear --protocol dino`)",
    )
    parser.add_argument("--no-cache", action="store_true", help="extract features again and do not store them")


def _train_test_features(
    backbone: FrozenEncoder, args: argparse.Namespace, n_last_blocks: int
) -> tuple[FeatureSet, FeatureSet, ImageSplit, ImageSplit]:
    """Features of the training and scored splits, with the scored labels mapped onto the training classes."""
    from .features import default_cache_dir, load_or_extract_features

    train_split, test_split = _train_test_splits(args)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    extract = dict(n_last_blocks=n_last_blocks, batch_size=args.batch_size, cache_dir=cache_dir, progress=not args.no_progress)
    train = load_or_extract_features(backbone, train_split, **extract)
    test = load_or_extract_features(backbone, test_split, **extract).relabelled(train.class_names)
    return train, test, train_split, test_split


def _train_test_splits(args: argparse.Namespace) -> tuple[ImageSplit, ImageSplit]:
    """The training split and the scored one (a different split), opened and checked."""
    from .image_dataset import open_image_split

    common = dict(
        dataset=args.dataset, image_column=args.image_column, label_column=args.label_column,
        config=args.dataset_config, data_dir=args.data_dir, revision=args.dataset_revision, streaming=args.streaming,
    )
    train_split = open_image_split(split=args.train_split, max_samples=args.max_train_samples, **common)
    test_split = open_image_split(split=args.split, max_samples=args.max_eval_samples, **common)
    if test_split.split == train_split.split:
        raise DoraUserError(f"--split and --train-split are both {train_split.split!r}; score on held-out images")
    return train_split, test_split


def _dataset_record(
    args: argparse.Namespace, train: ImageSplit, test: ImageSplit, num_train: int, num_test: int, num_classes: int
) -> dict:
    return {
        "name": train.dataset if train.dataset != "imagefolder" else str(args.data_dir),
        "config": train.config,
        "split": test.split,
        "train_split": train.split,
        "revision": args.dataset_revision,
        "fingerprint": test.fingerprint,
        "num_train": num_train,
        "num_eval": num_test,
        "num_classes": num_classes,
    }
