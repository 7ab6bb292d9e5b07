"""`dora-hf eval knn` and `dora-hf eval linear`: classification on frozen features (DINO's protocols)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import DoraUserError
from ..model_arguments import add_model_arguments, encoder_from_args
from ..protocols import (
    DINO_K_VALUES,
    DINO_TEMPERATURE,
    LinearProbeSettings,
)
from ..results import EvalTask, add_output_arguments, metric, task_results

if TYPE_CHECKING:
    from ..encoder import FrozenEncoder
    from .features import FeatureSet
    from .image_dataset import ImageSplit

KNN = EvalTask("knn", "image-classification", "k-NN classification (frozen features)")
LINEAR = EvalTask("linear", "image-classification", "Linear probing (frozen features)")


def add_knn_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval knn` and its options."""
    knn = tasks.add_parser("knn", help="weighted k-NN classification of frozen [CLS] features (DINO protocol)")
    add_model_arguments(knn)
    _dataset_arguments(knn)
    knn.add_argument(
        "--k", type=int, nargs="+", default=list(DINO_K_VALUES), help="neighbour counts (default: 10 20 100 200)"
    )
    knn.add_argument("--temperature", type=float, default=DINO_TEMPERATURE, help="vote weight exp(similarity / T) (default: 0.07)")
    add_output_arguments(knn, "eval-knn.json")
    knn.set_defaults(_eval=run_knn)


def add_linear_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval linear` and its options."""
    linear = tasks.add_parser("linear", help="linear classifier trained on frozen features")
    add_model_arguments(linear)
    _dataset_arguments(linear)
    linear.add_argument(
        "--n-last-blocks", type=int, default=1,
        help="concatenate the normalised [CLS] tokens of the last N blocks (DINO uses 4 for ViT-S/16)",
    )
    linear.add_argument("--epochs", type=int, default=LinearProbeSettings.epochs)
    linear.add_argument(
        "--lr", type=float, default=LinearProbeSettings.learning_rate, help="SGD learning rate (cosine schedule)"
    )
    linear.add_argument("--train-batch-size", type=int, default=LinearProbeSettings.batch_size)
    linear.add_argument("--weight-decay", type=float, default=LinearProbeSettings.weight_decay)
    linear.add_argument("--seed", type=int, default=0)
    add_output_arguments(linear, "eval-linear.json")
    linear.set_defaults(_eval=run_linear)


def run_knn(args: argparse.Namespace) -> dict:
    from ..metric_modules import TOPK_ACCURACY, load_metric
    from .knn import knn_votes, ranked_classes

    if any(k < 1 for k in args.k) or not args.temperature > 0:
        raise DoraUserError("--k values must be >= 1 and --temperature > 0")
    backbone = encoder_from_args(args)
    train, test, train_split, test_split = _train_test_features(backbone, args, n_last_blocks=1)
    _check_two_classes("k-NN", train, train_split)
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


def _check_two_classes(task: str, train: FeatureSet, split: ImageSplit) -> None:
    """One class makes every prediction right: refuse rather than report 100%."""
    present = sorted({train.class_names[i] for i in train.labels.tolist()})
    if len(present) < 2:
        raise DoraUserError(
            f"{task} needs at least two classes, but the training split {split.describe()} has one: {present[0]!r}"
        )


def run_linear(args: argparse.Namespace) -> dict:
    from ..metric_modules import TOPK_ACCURACY, load_metric
    from .knn import ranked_classes
    from .linear_probe import train_linear_probe

    if args.n_last_blocks < 1 or args.epochs < 1:
        raise DoraUserError("--n-last-blocks and --epochs must be >= 1")
    backbone = encoder_from_args(args)
    train, test, train_split, test_split = _train_test_features(backbone, args, n_last_blocks=args.n_last_blocks)
    _check_two_classes("a linear probe", train, train_split)
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
            "n_last_blocks": args.n_last_blocks, "epochs": args.epochs, "batch_size": args.train_batch_size,
            "lr": args.lr, "momentum": settings.momentum, "weight_decay": args.weight_decay, "seed": args.seed,
            "feature_standardisation": "training-set mean/std", "augmentation": "none (cached features)",
        },
        details={"test": scores, "train_top1": train_scores["top1"]},
    )


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--max-train-samples", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="score only the first N images")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: ~/.cache/dora-hf/features)")
    parser.add_argument("--no-cache", action="store_true", help="extract features again and do not store them")


def _train_test_features(
    backbone: FrozenEncoder, args: argparse.Namespace, n_last_blocks: int
) -> tuple[FeatureSet, FeatureSet, ImageSplit, ImageSplit]:
    """Features of the training and scored splits, with the scored labels mapped onto the training classes."""
    from .features import default_cache_dir, load_or_extract_features
    from .image_dataset import open_image_split

    common = dict(
        dataset=args.dataset, image_column=args.image_column, label_column=args.label_column,
        config=args.dataset_config, data_dir=args.data_dir, revision=args.dataset_revision, streaming=args.streaming,
    )
    train_split = open_image_split(split=args.train_split, max_samples=args.max_train_samples, **common)
    test_split = open_image_split(split=args.split, max_samples=args.max_eval_samples, **common)
    if test_split.split == train_split.split:
        raise DoraUserError(f"--split and --train-split are both {train_split.split!r}; score on held-out images")
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    extract = dict(n_last_blocks=n_last_blocks, batch_size=args.batch_size, cache_dir=cache_dir, progress=not args.no_progress)
    train = load_or_extract_features(backbone, train_split, **extract)
    test = load_or_extract_features(backbone, test_split, **extract).relabelled(train.class_names)
    return train, test, train_split, test_split


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
