"""`dora-hf eval corloc`: unsupervised single-object discovery with LOST, scored with CorLoc.

The protocol of DoRA's paper, after LOST (valeoai/LOST ``main_lost.py``): each image at its own
resolution, the last block's keys, LOST's box (``lost``), correct when its IoU with some
ground-truth box is at least 0.5; CorLoc on VOC07 and VOC12 ``trainval`` and COCO20k.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ...errors import DoraUserError
from ..model_arguments import add_model_arguments, encoder_from_args
from ..results import EvalTask, add_output_arguments, metric, task_results
from .protocol import (
    COCO20K_LIST_NAME,
    DATASETS,
    DEFAULT_SPLITS,
    IMAGE_MEAN,
    IMAGE_STD,
    IOU_THRESHOLD,
    K_PATCHES,
    PROTOCOL,
)

CORLOC = EvalTask("corloc", "object-detection", "Unsupervised object discovery (LOST, CorLoc)")


def add_corloc_parser(tasks: argparse._SubParsersAction) -> None:
    """`dora-hf eval corloc` and its options."""
    corloc = tasks.add_parser(
        "corloc", help="unsupervised object discovery with LOST on VOC07/VOC12/COCO20k, scored with CorLoc"
    )
    add_model_arguments(corloc)
    corloc.add_argument("--dataset", required=True, choices=DATASETS, help="which dataset (LOST's three)")
    corloc.add_argument(
        "--data-root", required=True, type=Path,
        help="VOC: folder with JPEGImages/, Annotations/, ImageSets/Main/ (or VOCdevkit/VOC20XX/ in it); "
        "COCO20k: folder with annotations/instances_train2014.json and images/train2014/",
    )
    corloc.add_argument(
        "--split", default=None, help="VOC: ImageSets/Main/<split>.txt (default: trainval); COCO20k: train"
    )
    corloc.add_argument(
        "--coco20k-list", type=Path, default=None,
        help=f"LOST's COCO20k image list (default: DATA_ROOT/{COCO20K_LIST_NAME})",
    )
    corloc.add_argument(
        "--k-patches", type=int, default=K_PATCHES,
        help=f"lowest-degree patches the seed is expanded among (default: {K_PATCHES})",
    )
    corloc.add_argument("--max-images", type=int, default=None, help="only the first N images of the split")
    corloc.add_argument(
        "--save-boxes", type=Path, default=None, help="also write every image's predicted box to this JSON file"
    )
    add_output_arguments(corloc, "eval-corloc.json")
    corloc.set_defaults(_eval=run_corloc)


def run_corloc(args: argparse.Namespace) -> dict:
    from .datasets import read_dataset
    from .evaluate import evaluate_corloc
    from .features import LastBlockKeys

    if args.k_patches < 1:
        raise DoraUserError(f"--k-patches {args.k_patches}: must be at least 1")
    if args.max_images is not None and args.max_images < 1:
        raise DoraUserError(f"--max-images {args.max_images}: must be at least 1")
    if args.save_boxes is not None and args.save_boxes.is_dir():
        raise DoraUserError(f"--save-boxes {args.save_boxes}: is a folder; name a JSON file")
    split = args.split or DEFAULT_SPLITS[args.dataset]
    dataset = read_dataset(
        args.dataset, args.data_root, split, coco20k_list=args.coco20k_list, max_images=args.max_images
    )
    backbone = encoder_from_args(args)
    run = evaluate_corloc(
        dataset, LastBlockKeys(backbone), backbone.patch_size, k_patches=args.k_patches, progress=not args.no_progress
    )
    protocol = {"protocol": PROTOCOL, "k_patches": args.k_patches, "iou_threshold": IOU_THRESHOLD}
    settings = {
        **protocol,
        "features": "keys of the last block, heads concatenated, patch tokens only",
        "image_size": "own resolution, zero-padded bottom and right to a multiple of the patch size after normalisation",
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "patch_size": backbone.patch_size,
        "ground_truth": "non-crowd annotations" if args.dataset == "coco20k" else "all objects (difficult and truncated included)",
        "max_images": args.max_images,
    }
    if args.save_boxes is not None:
        write_boxes(args.save_boxes, {
            "protocol": PROTOCOL, "model": backbone.name, "model_revision": backbone.revision,
            "dataset": dataset.name, "split": dataset.split, "k_patches": args.k_patches,
            "box_format": "[x1, y1, x2, y2] in pixels of the image, max excluded",
            "images": run.predictions,
        })
    return task_results(
        CORLOC,
        backbone,
        dataset={
            "name": dataset.name, "root": str(dataset.root), "config": None, "split": dataset.split,
            "revision": None, "num_images": run.num_images, **dataset.details,
        },
        metrics=[metric("corloc", f"CorLoc ({dataset.name} {dataset.split})", run.corloc, protocol)],
        settings=settings,
        details={
            "num_images": run.num_images, "num_correct": run.num_correct,
            "boxes": str(args.save_boxes) if args.save_boxes is not None else None,
        },
    )


def write_boxes(path: Path, boxes: dict) -> None:
    """The per-image predictions as JSON, under a temporary name then renamed: whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(boxes) + "\n")
    os.replace(partial, path)
