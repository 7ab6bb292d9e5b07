"""The paper's evaluation table, on the small real data this machine has, through `dora-hf eval`.

Rows: models (by default the main job's export and the same architecture at its random
initialisation, seed 0). Columns: the paper's tasks, each run by its `dora-hf eval` command with
the paper's protocol wherever the data allows:

- k-NN (DINO's protocol) and linear probing (DINO's protocol, shortened to ``--linear-epochs`` at
  the model's image size; and the fast cached-feature probe) on Fashion-MNIST (Debian's
  ``dataset-fashion-mnist``), written as an imagefolder: ``--train`` / ``--test`` images;
- CorLoc (LOST's protocol) on seven scikit-image photographs with hand-drawn boxes
  (``benchmarks/data/skimage_boxes.json``), written in the VOC layout;
- object discovery without labels on the held-out last 20 s of vtest.avi (the main job's split);
- DAVIS-2017 J&F and ADE20K mIoU need datasets this machine cannot download: shown as "-".

    .venv/bin/python benchmarks/bench_evaluations.py                 # after scripts/main_job.sh
    .venv/bin/python benchmarks/bench_evaluations.py --model A --model B --train 2000 --test 1000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from common import run_header, write_json
from dora_hf.cli import main as dora_hf
from dora_hf.demo.main_job import DEMO_DISCOVERY, DEMO_RECIPE, split_demo_video
from dora_hf.demo.sample_video import get_demo_video
from dora_hf.modeling import DoraConfig, DoraForPreTraining, DoraImageProcessor
from dora_hf.training.recipe import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
BOXES = REPO_ROOT / "benchmarks" / "data" / "skimage_boxes.json"
DEFAULT_MODEL = REPO_ROOT / "dora-wt-vits16-demo"
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
COLUMNS = ("k-NN", "linear (DINO)", "linear (fast)", "CorLoc", "discovery precision", "discovery mutual IoU", "DAVIS J&F", "ADE20K mIoU")


def random_init_folder(export: Path, folder: Path) -> Path:
    """The export's architecture at its random initialisation (seed 0), saved as a model folder."""
    torch.manual_seed(0)
    DoraForPreTraining(DoraConfig.from_pretrained(export)).save_pretrained(folder)
    DoraImageProcessor.from_pretrained(export).save_pretrained(folder)
    return folder


def fashion_imagefolder(root: Path, cache: Path, num_train: int, num_test: int) -> Path:
    """The first `num_train` / `num_test` Fashion-MNIST images as ``train/CLASS/*.png`` and ``test/...``."""
    from bench_learning import fashion_mnist

    data = fashion_mnist(cache)
    for split, images, labels, count in (
        ("train", data["train_images"], data["train_labels"], num_train),
        ("test", data["test_images"], data["test_labels"], num_test),
    ):
        for i in range(count):
            folder = root / split / FASHION_CLASSES[int(labels[i])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").save(folder / f"{i:05d}.png")
    return root


def skimage_voc(root: Path) -> Path:
    """The hand-boxed scikit-image photographs in the VOC layout (JPEGImages, Annotations, ImageSets)."""
    from skimage import data

    record = json.loads(BOXES.read_text())["images"]
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for name, entry in record.items():
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image
        image = np.asarray(image)
        image = (image * 255).astype(np.uint8) if image.dtype == bool else image
        picture = Image.fromarray(image).convert("RGB")
        picture.save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        objects = "".join(
            f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for label, (x0, y0, x1, y1) in zip(entry["objects"], entry["boxes"])
        )
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{picture.width}</width>"
            f"<height>{picture.height}</height><depth>3</depth></size>{objects}</annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(record) + "\n")
    return root


def headline(path: Path, index: int = 0) -> float:
    return float(json.loads(path.read_text())["metrics"][index]["value"])


def evaluate(model: Path, name: str, work: Path, fashion: Path, voc: Path, held_out: dict, args: argparse.Namespace) -> dict:
    """Every column for one model; each figure is what its `dora-hf eval` command wrote."""
    out = work / "scores" / name.replace(" ", "-")
    out.mkdir(parents=True)
    row: dict[str, Any] = {"model": str(model)}
    common = ["--model", str(model), "--no-progress"]
    fashion_args = ["--dataset", "imagefolder", "--data-dir", str(fashion), "--train-split", "train", "--split", "test"]
    timings = {}

    def run(column: str, argv: list[str], json_name: str) -> Path:
        started = time.perf_counter()
        path = out / json_name
        code = dora_hf([*argv, *common, "--out", str(path)])
        if code != 0:
            raise SystemExit(f"{column} failed for {model} (exit {code})")
        timings[column] = round(time.perf_counter() - started, 1)
        return path

    row["k-NN"] = headline(run("k-NN", ["eval", "knn", *fashion_args, "--k", "20", "--no-cache"], "knn.json"))
    size = DoraConfig.from_pretrained(model).image_size
    row["linear (DINO)"] = headline(run("linear (DINO)", [
        "eval", "linear", *fashion_args, "--protocol", "dino", "--epochs", str(args.linear_epochs),
        "--crop-size", str(size), "--resize-size", str(round(size * 256 / 224)), "--batch-size", "128",
    ], "linear-dino.json"))
    row["linear (fast)"] = headline(run("linear (fast)", ["eval", "linear", *fashion_args, "--protocol", "fast", "--no-cache"], "linear-fast.json"))
    row["CorLoc"] = headline(run("CorLoc", ["eval", "corloc", "--dataset", "voc07", "--data-root", str(voc)], "corloc.json"))
    discovery = run("discovery", [
        "eval", "discovery", str(held_out["video"]), "--start", str(held_out["start"]), "--frame-step",
        str(held_out["frame_step"]), "--clip-frames", str(DEMO_DISCOVERY.clip_frames), "--clip-step",
        str(DEMO_DISCOVERY.clip_step), "--max-clips", str(DEMO_DISCOVERY.max_clips),
    ], "discovery.json")
    scores = json.loads(discovery.read_text())["details"]["model"]
    row["discovery precision"], row["discovery mutual IoU"] = scores["precision"], scores["mutual_iou"]
    row["discovery chance"] = scores["chance"]
    row["DAVIS J&F"] = row["ADE20K mIoU"] = None
    row["seconds"] = timings
    return row


def table(rows: dict[str, dict]) -> str:
    """The paper's layout: one row per model, one column per task (percentages; '-' not measured)."""
    head = f"| model | {' | '.join(COLUMNS)} |\n|---|{'---|' * len(COLUMNS)}"
    lines = [head]
    for name, row in rows.items():
        cells = []
        for column in COLUMNS:
            value = row.get(column)
            cells.append("-" if value is None else (f"{value:.3f}" if "IoU" in column or "precision" in column else f"{100 * value:.1f}"))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, default=None, help="model folder (repeatable; default: the main job's export)")
    parser.add_argument("--train", type=int, default=2000, help="Fashion-MNIST training images (default 2000)")
    parser.add_argument("--test", type=int, default=1000, help="Fashion-MNIST test images (default 1000)")
    parser.add_argument("--linear-epochs", type=int, default=2, help="epochs of DINO's linear protocol (its own: 100)")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "bench_evaluations.json")
    args = parser.parse_args(argv)
    models = args.model or [DEFAULT_MODEL]
    if not all(m.is_dir() for m in models):
        raise SystemExit(f"no model folder at {', '.join(str(m) for m in models if not m.is_dir())}: run scripts/main_job.sh first")
    report = run_header("bench_evaluations", torch.device("cpu"))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-evaluations-") as tmp:
        work = Path(tmp)
        fashion = fashion_imagefolder(work / "fashion", REPO_ROOT / ".cache", args.train, args.test)
        voc = skimage_voc(work / "voc")
        (work / "held-out").mkdir()
        split = split_demo_video(get_demo_video(), load_recipe(DEMO_RECIPE), work / "held-out")
        held_out = {"video": split.video, "start": split.held_out_start, "frame_step": split.frame_step}
        named = {m.name: m for m in models}
        named["random init"] = random_init_folder(models[0], work / "random-init")
        rows = {name: evaluate(model, name, work, fashion, voc, held_out, args) for name, model in named.items()}
    text = table(rows)
    print(text)
    report.update({
        "fashion_mnist": {"train": args.train, "test": args.test}, "linear_epochs": args.linear_epochs,
        "corloc_images": len(json.loads(BOXES.read_text())["images"]), "rows": rows, "table": text,
        "total_seconds": time.time() - started, "load_average_end": os.getloadavg(),
    })
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
