"""`dora-hf eval knn|linear|davis|discovery`: downstream evaluation of a frozen encoder.

k-NN and linear probing on any Hugging Face image-classification dataset (hub id or local
folder, optionally streamed), DAVIS-2017 video object segmentation by label propagation, and
label-free object discovery on a static-camera video (tracked masks against the moving
foreground, `discovery.py`). Each writes a results JSON (`results.py`) that can be added to a model card's results table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DoraUserError
from .protocols import (
    DAVIS_SHORT_SIDE,
    DINO_K_VALUES,
    DINO_TEMPERATURE,
    DiscoverySettings,
    LinearProbeSettings,
    PropagationSettings,
)
from .results import make_results, write_results

# The evaluation itself (torch, transformers, datasets, evaluate) is imported by the functions
# that run it, so that `dora-hf eval ... --help` and argument errors need none of them.
if TYPE_CHECKING:
    from .backbone import Backbone
    from .features import FeatureSet
    from .image_dataset import ImageSplit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tasks = parser.add_subparsers(dest="eval_task", metavar="TASK")
    tasks.required = True

    knn = tasks.add_parser("knn", help="weighted k-NN classification of frozen [CLS] features (DINO protocol)")
    _model_arguments(knn)
    _dataset_arguments(knn)
    knn.add_argument(
        "--k", type=int, nargs="+", default=list(DINO_K_VALUES), help="neighbour counts (default: 10 20 100 200)"
    )
    knn.add_argument("--temperature", type=float, default=DINO_TEMPERATURE, help="vote weight exp(similarity / T) (default: 0.07)")
    _output_arguments(knn, "eval-knn.json")
    knn.set_defaults(_eval=run_knn)

    linear = tasks.add_parser("linear", help="linear classifier trained on frozen features")
    _model_arguments(linear)
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
    _output_arguments(linear, "eval-linear.json")
    linear.set_defaults(_eval=run_linear)

    davis = tasks.add_parser("davis", help="DAVIS-2017 video object segmentation by label propagation (J&F)")
    _model_arguments(davis)
    davis.add_argument("--davis-root", required=True, type=Path, help="folder with JPEGImages/, Annotations/, ImageSets/")
    davis.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default: val)")
    davis.add_argument("--resolution", default="480p")
    davis.add_argument("--sequences", nargs="+", default=None, help="evaluate only these sequences")
    davis.add_argument(
        "--short-side", type=int, default=DAVIS_SHORT_SIDE, help="frames are resized to this short side (default: 480)"
    )
    davis.add_argument(
        "--context-frames", type=int, default=PropagationSettings.context_frames,
        help="previous frames in the queue, besides the first (default: 20)",
    )
    davis.add_argument(
        "--top-k", type=int, default=PropagationSettings.top_k, help="source patches per target patch (default: 7)"
    )
    davis.add_argument(
        "--radius", type=int, default=PropagationSettings.radius,
        help="spatial neighbourhood in patches, 0 = none (default: 12)",
    )
    davis.add_argument("--temperature", type=float, default=PropagationSettings.temperature, help="(default: 0.7)")
    davis.add_argument("--save-masks", type=Path, default=None, help="also write the predicted masks as DAVIS PNGs here")
    _output_arguments(davis, "eval-davis.json")
    davis.set_defaults(_eval=run_davis)

    discovery = tasks.add_parser(
        "discovery", help="label-free object discovery: tracked masks against a static-camera video's moving foreground"
    )
    discovery.add_argument("video", metavar="VIDEO", help="a static-camera video file")
    _model_arguments(discovery)
    defaults = DiscoverySettings()
    discovery.add_argument("--clip-frames", type=int, default=defaults.clip_frames, help="frames per clip (default: 8)")
    discovery.add_argument(
        "--clip-step", type=int, default=defaults.clip_step, help="a clip starts every N sampled frames (default: 8)"
    )
    discovery.add_argument("--frame-step", type=int, default=1, help="take every N-th frame of the video (default: 1)")
    discovery.add_argument(
        "--start", type=int, default=0, help="first video frame read, e.g. to score only frames held out of training"
    )
    discovery.add_argument("--max-clips", type=int, default=defaults.max_clips, help="at most N clips, 0 = all (default: 32)")
    discovery.add_argument(
        "--window", type=int, default=defaults.window,
        help="sampled frames whose per-pixel median is the background (default: 31)",
    )
    discovery.add_argument(
        "--threshold", type=float, default=defaults.threshold,
        help="channel difference (0-255) from the median above which a pixel moves (default: 25)",
    )
    discovery.add_argument("--opening", type=int, default=defaults.opening, help="opening radius in pixels (default: 1)")
    discovery.add_argument("--closing", type=int, default=defaults.closing, help="closing radius in pixels (default: 2)")
    discovery.add_argument(
        "--side", type=int, default=defaults.side,
        help="short side the frames are downscaled to for the foreground and scores, 0 = as decoded (default: 224)",
    )
    discovery.add_argument(
        "--size", type=int, default=None, help="side of the centre crop the model sees (default: its image size)"
    )
    discovery.add_argument(
        "--objects", type=int, default=None, help="objects to discover (default: the model's num_objects, else 3)"
    )
    discovery.add_argument("--seed", type=int, default=0, help="heads drawn per clip and the random baseline")
    _output_arguments(discovery, "eval-discovery.json")
    discovery.set_defaults(_eval=run_discovery)


def run(args: argparse.Namespace) -> int:
    results = args._eval(args)
    path = write_results(results, args.out)
    for metric in results["metrics"]:
        print(f"{metric['name']}: {100 * metric['value']:.2f}")
    print(f"results: {path}")
    return 0


def run_knn(args: argparse.Namespace) -> dict:
    from .knn import knn_votes, ranked_classes
    from .metric_modules import TOPK_ACCURACY, load_metric

    if any(k < 1 for k in args.k) or not args.temperature > 0:
        raise DoraUserError("--k values must be >= 1 and --temperature > 0")
    backbone = _backbone(args)
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
        metrics.append({"type": "accuracy", "name": f"k-NN top-1 (k={k})", "value": scores["top1"], "args": args_k})
    return make_results(
        task="knn",
        task_type="image-classification",
        task_name="k-NN classification (frozen features)",
        model=backbone.name,
        model_revision=backbone.revision,
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
    from .knn import ranked_classes
    from .linear_probe import train_linear_probe
    from .metric_modules import TOPK_ACCURACY, load_metric

    if args.n_last_blocks < 1 or args.epochs < 1:
        raise DoraUserError("--n-last-blocks and --epochs must be >= 1")
    backbone = _backbone(args)
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
    return make_results(
        task="linear",
        task_type="image-classification",
        task_name="Linear probing (frozen features)",
        model=backbone.name,
        model_revision=backbone.revision,
        dataset=_dataset_record(args, train_split, test_split, len(train), len(test), num_classes),
        metrics=[
            {"type": "accuracy", "name": "Linear probe top-1", "value": scores["top1"], "args": probe_args},
            {"type": "top_5_accuracy", "name": "Linear probe top-5", "value": scores["top5"], "args": probe_args},
        ],
        settings={
            "n_last_blocks": args.n_last_blocks, "epochs": args.epochs, "batch_size": args.train_batch_size,
            "lr": args.lr, "momentum": settings.momentum, "weight_decay": args.weight_decay, "seed": args.seed,
            "feature_standardisation": "training-set mean/std", "augmentation": "none (cached features)",
        },
        details={"test": scores, "train_top1": train_scores["top1"]},
    )


def run_davis(args: argparse.Namespace) -> dict:
    from .davis import BackbonePatchFeatures, evaluate_davis
    from .davis_folder import read_davis

    try:
        settings = PropagationSettings(
            context_frames=args.context_frames, top_k=args.top_k, radius=args.radius, temperature=args.temperature
        )
    except ValueError as err:
        raise DoraUserError(str(err)) from err
    sequences = read_davis(args.davis_root, args.split, args.resolution, args.sequences)
    backbone = _backbone(args)
    if args.short_side < backbone.patch_size:
        raise DoraUserError(f"--short-side {args.short_side} is smaller than the patch size {backbone.patch_size}")
    scores = evaluate_davis(
        sequences, BackbonePatchFeatures(backbone, args.short_side), settings, save_dir=args.save_masks,
        progress=not args.no_progress,
    )
    propagation = {
        "context_frames": settings.context_frames, "top_k": settings.top_k,
        "radius": settings.radius, "temperature": settings.temperature,
    }
    return make_results(
        task="davis",
        task_type="image-segmentation",
        task_name="Video object segmentation (DAVIS-2017, label propagation)",
        model=backbone.name,
        model_revision=backbone.revision,
        dataset={
            "name": "davis-2017", "root": str(args.davis_root), "config": args.resolution,
            "split": args.split, "revision": None, "num_sequences": len(sequences),
        },
        metrics=[
            {"type": "jaccard_and_f", "name": "J&F mean", "value": scores["J&F"], "args": propagation},
            {"type": "jaccard", "name": "J mean", "value": scores["J"], "args": propagation},
            {"type": "f1", "name": "F mean", "value": scores["F"], "args": propagation},
        ],
        settings={**propagation, "short_side": args.short_side, "features": "last-layer patch tokens"},
        details=scores,
    )


def run_discovery(args: argparse.Namespace) -> dict:
    from .discovery import METRIC_NAMES
    from .discovery_model import discover_in_video

    try:
        settings = DiscoverySettings(
            clip_frames=args.clip_frames, clip_step=args.clip_step, max_clips=args.max_clips,
            window=args.window, threshold=args.threshold, opening=args.opening, closing=args.closing,
            side=args.side,
        )
    except ValueError as err:
        raise DoraUserError(str(err)) from err
    if args.start < 0:
        raise DoraUserError(f"--start {args.start}: must be 0 or more")
    backbone = _backbone(args)
    run = discover_in_video(
        {backbone.name: backbone}, args.video, settings, size=args.size, num_objects=args.objects,
        frame_step=args.frame_step, start=args.start, seed=args.seed, progress=not args.no_progress,
    )[backbone.name]
    scores, size = run.scores, run.size
    names = {
        "precision": ("precision", "Foreground precision of tracked masks"),
        "chance": ("foreground_share", "Foreground share of the frame (chance precision)"),
        "best_iou": ("iou", "Best-matching foreground IoU per object"),
        "mutual_iou": ("mutual_iou", "Mean pairwise IoU of the objects (lower: more distinct)"),
        "temporal_iou": ("temporal_iou", "Mean IoU of masks in consecutive frames"),
    }
    metric_args = {"clip_frames": settings.clip_frames, "threshold": settings.threshold, "window": settings.window}
    metrics = [
        {"type": names[key][0], "name": names[key][1], "value": scores["model"][key], "args": metric_args}
        for key in METRIC_NAMES if scores["model"][key] is not None
    ]
    return make_results(
        task="discovery",
        task_type="image-segmentation",
        task_name="Object discovery against moving foreground (no labels)",
        model=backbone.name,
        model_revision=backbone.revision,
        dataset={
            "name": str(args.video), "config": None, "split": None, "revision": None,
            "num_frames": run.num_frames, "num_clips": len(scores["clips"]), "start_frame": args.start,
        },
        metrics=metrics,
        settings={
            **scores["settings"], "frame_step": args.frame_step, "size": size, "seed": args.seed,
            "num_objects": run.num_objects,
            "baseline": "random pixels with each object's area per frame",
        },
        details={"model": scores["model"], "random": scores["random"], "clips": scores["clips"]},
    )


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder or hub id (DoRA or a ViT-compatible encoder)")
    parser.add_argument("--model-revision", default=None, help="hub branch, tag or commit of the model")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


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


def _output_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", type=Path, default=Path(default), help=f"results JSON (default: {default})")


def _backbone(args: argparse.Namespace) -> Backbone:
    import torch

    from .backbone import load_backbone

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_backbone(args.model, revision=args.model_revision, device=device)


def _train_test_features(
    backbone: Backbone, args: argparse.Namespace, n_last_blocks: int
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
