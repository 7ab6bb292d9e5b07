"""Does training learn? DoRA against DINO and the random initialisation, on held-out data.

Pretrains the main job's configuration (`training_scripts/configs/demo_cpu.yaml`) twice on the
first 60 s of ``vtest.avi`` (pedestrians crossing a square under a static camera, from Debian's
opencv-doc package): once with DoRA, once with ``method: dino`` (the same frames, schedules,
centring and EMA). Then, for DoRA, DINO and the same network at its random initialisation:

- object discovery without labels (`dora-hf eval discovery`) on clips of the last 20 s of the
  video, which neither run saw: foreground precision of the tracked masks against the chance
  level (the foreground's share of the frame), best-matching foreground IoU per object, mutual
  IoU of the k objects (lower: more distinct) and consecutive-frame IoU; DINO has no tracking
  head of its own, so its masks come from the same tracker run on its last block, as for any
  ViT in `eval discovery`;
- k-NN accuracy (DINO's protocol, k=20, temperature 0.07, [CLS] features) on Fashion-MNIST
  from Debian's ``dataset-fashion-mnist`` package (70,000 labelled 28x28 photographs of
  clothing in 10 classes): the first ``--knn-train`` training and ``--knn-test`` test images.

Writes ``benchmarks/results/bench_learning.json`` and a picture of DoRA's and DINO's tracks on
the same held-out clip side by side (``benchmarks/results/bench_learning_tracks.jpg``).

    .venv/bin/python benchmarks/bench_learning.py          # about 25 min on 2 idle cores
    .venv/bin/python benchmarks/bench_learning.py --quick  # a few minutes: 40 steps, small k-NN sets
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.demo.sample_video import debian_package_files, default_cache_dir, get_demo_video
from dora_hf.demo.main_job import (
    DEMO_DISCOVERY, DEMO_RECIPE, format_discovery_table, random_init_backbone, score_models, split_demo_video,
)
from dora_hf.evaluation.encoder import FrozenEncoder, load_encoder
from dora_hf.evaluation.discovery.scoring import METRIC_NAMES
from dora_hf.evaluation.discovery.video import DiscoveryRun
from dora_hf.evaluation.classification.features import image_features
from dora_hf.evaluation.frame_input import read_frames
from dora_hf.evaluation.classification.knn import DINO_TEMPERATURE, knn_votes
from dora_hf.evaluation.visualize.mask_figure import render_tracking_figure
from dora_hf.training.builders import make_accelerator
from dora_hf.pretrain import pretrain
from dora_hf.training.recipe import load_recipe

from common import run_header, write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
FASHION_MNIST = "dataset-fashion-mnist"
FASHION_DIR = "./usr/share/datasets/fashion-mnist/"
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
KNN_K = 20


def fashion_mnist(cache: Path) -> dict[str, np.ndarray]:
    """The four idx arrays of Fashion-MNIST, unpacked once from the Debian package into ``cache``."""
    folder = cache / "fashion-mnist"
    if not all((folder / name).is_file() for name in FASHION_FILES.values()):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as work:
            members = [FASHION_DIR + name for name in FASHION_FILES.values()]
            for member, path in debian_package_files(FASHION_MNIST, members, Path(work)).items():
                os.replace(path, folder / Path(member).name)
    return {key: read_idx(folder / name) for key, name in FASHION_FILES.items()}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: magic, dimension sizes, then unsigned bytes)."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def knn_accuracy(backbone: FrozenEncoder, data: dict[str, np.ndarray], num_train: int, num_test: int) -> float:
    """Top-1 k-NN accuracy (k=20, T=0.07) of the backbone's [CLS] features, images upscaled to its size."""
    def features(images: np.ndarray) -> torch.Tensor:
        mean, std = backbone.pixel_mean_std()
        out = []
        for start in range(0, len(images), 256):
            batch = torch.from_numpy(images[start : start + 256]).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
            batch = F.interpolate(batch, size=backbone.image_size, mode="bilinear", align_corners=False)
            with torch.inference_mode():
                out.append(image_features(backbone, (batch - mean) / std))
        return torch.cat(out)

    train = features(data["train_images"][:num_train])
    test = features(data["test_images"][:num_test])
    train_labels = torch.from_numpy(data["train_labels"][:num_train].astype(np.int64))
    test_labels = torch.from_numpy(data["test_labels"][:num_test].astype(np.int64))
    votes = knn_votes(train, train_labels, test, 10, (KNN_K,), DINO_TEMPERATURE)[KNN_K]
    return float((votes.argmax(1) == test_labels).double().mean())


def side_by_side(images: dict[str, Path], path: Path) -> Path:
    """The track pictures next to each other, each under its name."""
    loaded = {name: Image.open(p).convert("RGB") for name, p in images.items()}
    width = sum(im.width for im in loaded.values()) + 12 * (len(loaded) - 1)
    height = max(im.height for im in loaded.values()) + 22
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for name, image in loaded.items():
        draw.text((x + 4, 4), name, fill=(0, 0, 0))
        canvas.paste(image, (x, 22))
        x += image.width + 12
    canvas.save(path, quality=90)  # JPEG by the suffix: a tenth of the PNG's size
    return path


def markdown_table(runs: dict[str, DiscoveryRun], knn: dict[str, float], train_s: dict[str, float]) -> str:
    head = "| model | " + " | ".join(METRIC_NAMES) + " | k-NN top-1 | training |"
    rows = [head, "|" + " --- |" * (len(METRIC_NAMES) + 3)]
    for name, run in runs.items():
        cells = [f"{run.scores['model'][m]:.3f}" if run.scores["model"][m] is not None else "-" for m in METRIC_NAMES]
        seconds = f"{train_s[name] / 60:.1f} min" if name in train_s else "-"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {knn[name]:.3f} | {seconds} |")
    random = next(iter(runs.values())).scores["random"]
    cells = [f"{random[m]:.3f}" if random[m] is not None else "-" for m in METRIC_NAMES]
    rows.append("| random masks | " + " | ".join(cells) + " | - | - |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 steps and small k-NN sets: checks the wiring")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps per method (default: the recipe's)")
    parser.add_argument("--knn-train", type=int, default=5000, help="Fashion-MNIST training images (default: 5000)")
    parser.add_argument("--knn-test", type=int, default=2000, help="Fashion-MNIST test images (default: 2000)")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".cache" / "bench_learning")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_learning.json")
    parser.add_argument("--figure", type=Path, default=RESULTS / "bench_learning_tracks.jpg")
    args = parser.parse_args(argv)
    max_steps = args.max_steps or (40 if args.quick else None)
    knn_train, knn_test = (500, 200) if args.quick else (args.knn_train, args.knn_test)
    header = run_header("bench_learning", torch.device("cpu"))
    started = time.time()

    demo = get_demo_video()
    if not demo.static_camera:
        print(f"bench_learning needs vtest.avi: {demo.fallback_reason}", file=sys.stderr)
        return 2
    work = args.work_dir
    base = {"overwrite": True, **({"max_steps": max_steps} if max_steps else {})}
    recipe = load_recipe(DEMO_RECIPE, {**base, "dataset": str(work / "vtest-frames")})
    split = split_demo_video(demo, recipe, work)
    prepare_dataset(
        [split.train_video], Path(recipe.dataset),
        PrepareOptions(clip_step=recipe.clip_step, frames_per_clip=recipe.frames_per_clip), overwrite=True,
    )

    exports: dict[str, Path] = {}
    train_s: dict[str, float] = {}
    losses: dict[str, object] = {}
    for name, method in (("DoRA", "dora"), ("DINO", "dino")):
        export = work / f"export-{method}"
        method_recipe = load_recipe(DEMO_RECIPE, {
            **base, "dataset": str(work / "vtest-frames"), "method": method,
            "output_dir": str(work / f"run-{method}"), "export_dir": str(export),
        })
        t0 = time.time()
        result = pretrain(method_recipe, make_accelerator(method_recipe, cpu=True))
        train_s[name] = time.time() - t0
        losses[name] = result.loss_trend()
        exports[name] = export

    backbones = {name: load_encoder(str(path)) for name, path in exports.items()}
    backbones["random init"] = random_init_backbone(exports["DoRA"])
    settings = DEMO_DISCOVERY
    runs = score_models(backbones, split, settings, progress=True)
    data = fashion_mnist(default_cache_dir().parent / "datasets")
    knn = {name: knn_accuracy(b, data, knn_train, knn_test) for name, b in backbones.items()}

    clip = read_frames(split.video, settings.clip_frames, split.frame_step, split.held_out_start)
    pictures = {}
    from transformers import AutoModelForPreTraining

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("DoRA", "DINO"):
            model = AutoModelForPreTraining.from_pretrained(exports[name]).eval()
            pictures[name], _ = render_tracking_figure(model, clip, Path(tmp) / f"{name}.png")
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        side_by_side(pictures, args.figure)

    print(f"\nobject discovery on the held-out last 20 s of vtest.avi ({len(runs['DoRA'].scores['clips'])} clips), "
          f"k-NN on Fashion-MNIST ({knn_train} train / {knn_test} test images):")
    print(format_discovery_table(runs))
    print("k-NN top-1: " + ", ".join(f"{name} {value:.3f}" for name, value in knn.items()))
    print(markdown_table(runs, knn, train_s))
    print(f"picture: {args.figure}")
    report = {
        **header,
        "load_average_end": os.getloadavg(),
        "quick": args.quick, "steps": max_steps or recipe.max_steps, "train_seconds": train_s, "loss_trend": losses,
        "discovery_settings": asdict(settings), "frame_step": split.frame_step, "held_out_start": split.held_out_start,
        "discovery": {name: {"model": run.scores["model"], "random": run.scores["random"]} for name, run in runs.items()},
        "knn": {"dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)", "train": knn_train, "test": knn_test,
                "k": KNN_K, "temperature": DINO_TEMPERATURE, "top1": knn},
        "figure": str(args.figure.relative_to(REPO_ROOT) if args.figure.is_relative_to(REPO_ROOT) else args.figure),
        "total_seconds": time.time() - started,
    }
    write_json(args.json, report)
    print(f"{report['total_seconds'] / 60:.1f} min in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
