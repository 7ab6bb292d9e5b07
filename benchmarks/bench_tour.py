"""Does DoRA's tracking land on objects? DoRA against DINO on the controlled walking tour.

The controlled tour (`dora_hf.demo.controlled_tour`, its fixed `TourSettings`) is a synthetic
walking tour whose every object mask is known, so discovery is scored against the objects
themselves rather than against a moving foreground. This benchmark:

1. generates the tour of seed 0 (``--train-seconds`` of ``train.mp4``, ``--held-out-seconds`` of
   ``held_out.mp4``) into a cache folder, reused when present, and prepares ``train.mp4`` at the
   demo recipe's clip step (`training_scripts/configs/demo_cpu.yaml`: 4 frames 3 apart, 0.9 s at
   the tour's 10 fps);
2. pretrains the demo recipe with ``method: dora`` and ``method: dino`` for ``--steps`` steps each,
   for each of ``--seeds`` training seeds, keeping ``--points`` checkpoints per run;
3. runs each checkpoint's tracker (`backbone_tracker`: DoRA's tracking head on the last block;
   DINO has none of its own, so its masks come from the same tracker, as for any ViT), and that
   of the network at its random initialisation (seed 0), over clips of the held-out segment
   (`DEMO_DISCOVERY`: 8 frames taken 3 video frames apart, one clip every 4 of them) and scores
   the K tracked masks with `score_known_objects` against the ground-truth instance maps (read
   from ``held_out_davis/``, renumbered to the tour's object ids with ``truth.json``), next to
   random masks of the same area per object and frame (the chance level); CorLoc of the box
   around the [CLS] attention (heads averaged, the patches holding 60% of its mass, largest
   connected part) is scored too, and for the final models DAVIS J&F of label propagation from
   the ground-truth first masks of the held-out DAVIS folder (DINO's protocol, `eval davis`);
4. scores the best masks a tracker on the model's patch grid can give (`patch_grid_masks`): the
   ceiling the grid sets on the figures, whatever the features;
5. measures, per checkpoint, how much the teacher's targets say about the frame they came from
   (`target_information`, DINO's collapse diagnostics): the signal the loss can teach.

The tracker sees the centre square of each frame (`clip_to_pixel_values`: short side to the
model's size, centre crop); masks are mapped back to the frame's pixels inside that square, and
masks and ground truth are scored there, at the frame's resolution: objects wholly outside the
square are not counted.

Writes ``benchmarks/results/bench_tour.json`` (machine, load, seeds, settings, every figure), the
learning curve ``benchmarks/results/bench_tour_curve.png`` and DoRA's and DINO's tracks on one
held-out clip side by side, ground truth on top (``benchmarks/results/bench_tour_tracks.jpg``).

    .venv/bin/python benchmarks/bench_tour.py                   # 3 seeds x 2 methods, recipe's steps
    .venv/bin/python benchmarks/bench_tour.py --seeds 1 --steps 2000
    .venv/bin/python benchmarks/bench_tour.py --quick           # a few minutes: 20 steps, a 60 s tour
    .venv/bin/python benchmarks/bench_tour.py --reuse           # score again the runs --json records
    .venv/bin/python benchmarks/bench_tour.py --methods dora --set batch_size_per_device=16 ...  # a variant
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import dora_hf  # noqa: F401  (before torch: OpenMP reads its wait policy when torch loads it)
import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from dora_hf.demo.controlled_tour import TourSettings, write_tour
from dora_hf.demo.main_job import DEMO_DISCOVERY, DEMO_RECIPE, random_init_backbone
from dora_hf.evaluation.encoder import load_encoder
from dora_hf.evaluation.frame_input import read_frames
from dora_hf.evaluation.visualize.mask_figure import render_tracking_figure
from dora_hf.folders.checkpoint_layout import checkpoint_name, checkpoint_root, checkpoint_step, complete_checkpoints
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.pretrain import pretrain
from dora_hf.publish.export import export_checkpoint
from dora_hf.training.builders import make_accelerator
from dora_hf.training.recipe import load_recipe

from common import run_header, write_json
from tour_scoring import (
    SCORES,
    TABLE_SCORES,
    davis_scores,
    patch_grid_ceiling,
    score_backbone,
    teacher_information,
    view_window,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
TOUR_SEED = 0
METHODS = (("DoRA", "dora"), ("DINO", "dino"))
# ----------------------------------------------------------------------------- data


def tour_folder(cache: Path, train_seconds: float, held_out_seconds: float) -> Path:
    """The tour of seed 0 with these lengths, generated once into ``cache``."""
    folder = cache / f"tour-seed{TOUR_SEED}-train{train_seconds:g}s-heldout{held_out_seconds:g}s"
    if not (folder / "truth.json").is_file():
        write_tour(folder, train_seconds, TOUR_SEED, held_out_seconds, progress=True)
    return folder


def held_out_truth(folder: Path, frame_indices: np.ndarray) -> np.ndarray:
    """`(T, H, W)` int32 instance maps of held-out frames, with the tour's own object ids.

    ``truth.json`` keeps boxes and areas per frame; the masks themselves are the DAVIS
    annotations, whose per-sequence labels its ``labels`` map back to the tour's ids.
    """
    truth = json.loads((folder / "truth.json").read_text())
    segment = truth["segments"]["held_out"]
    davis = folder / segment["davis"]["folder"] / "Annotations" / "480p"
    sequences = segment["davis"]["sequences"]
    maps = []
    for frame in frame_indices.tolist():
        sequence = next((s for s in sequences if s["first_frame"] <= frame < s["first_frame"] + s["num_frames"]), None)
        if sequence is None:
            raise ValueError(f"held-out frame {frame} is in no DAVIS sequence: make the held-out segment longer")
        labels = np.asarray(Image.open(davis / sequence["name"] / f"{frame - sequence['first_frame']:05d}.png"))
        lut = np.zeros(256, dtype=np.int32)
        for label, object_id in sequence["labels"].items():
            lut[int(label)] = object_id
        maps.append(lut[labels])
    return np.stack(maps)


# ----------------------------------------------------------------------------- report


def markdown_table(rows: dict[str, dict[str, float | None]], steps: int) -> str:
    """One row per model, the scores as columns (``-`` where a score does not apply)."""
    lines = [f"| model ({steps} steps) | " + " | ".join(TABLE_SCORES) + " |",
             "|" + " --- |" * (len(TABLE_SCORES) + 1)]
    for name, scores in rows.items():
        cells = ["-" if scores.get(s) is None else f"{scores[s]:.3f}" for s in TABLE_SCORES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CURVE_COLOURS = {"DoRA": (200, 40, 40), "DINO": (40, 90, 200), "random init": (120, 120, 120),
                 "random masks": (30, 150, 60)}


def draw_curves(curves: dict[str, dict[int, dict[str, float | None]]], levels: dict[str, dict[str, float | None]],
                path: Path, panel: tuple[int, int] = (320, 220)) -> Path:
    """One panel per score: each curve (name -> step -> scores) as a polyline over the steps, each
    level (name -> scores, e.g. the random initialisation) as a flat line; PIL only."""
    width, height = panel
    margin = (44, 24, 12, 30)  # left, top, right, bottom
    canvas = Image.new("RGB", (width * len(SCORES), height + 24), "white")
    draw = ImageDraw.Draw(canvas)
    steps = sorted({s for points in curves.values() for s in points}) or [0, 1]
    x_max = max(steps[-1], 1)
    for p, score in enumerate(SCORES):
        x0, y0 = p * width + margin[0], margin[1]
        x1, y1 = (p + 1) * width - margin[2], height - margin[3]
        values = [v for pts in curves.values() for s in pts.values() for k, v in s.items() if k == score and v is not None]
        values += [lv[score] for lv in levels.values() if lv.get(score) is not None]
        top = max([1e-6, *values])
        top = min(1.0, np.ceil(top * 10) / 10) if top <= 1 else top

        def xy(step: float, value: float) -> tuple[float, float]:
            return x0 + (x1 - x0) * step / x_max, y1 - (y1 - y0) * value / top

        draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0))
        draw.text((x0, 4), score, fill=(0, 0, 0))
        for frac in (0.0, 0.5, 1.0):
            draw.text((p * width + 4, xy(0, top * frac)[1] - 6), f"{top * frac:.2f}", fill=(0, 0, 0))
        draw.text((x0, y1 + 4), "0", fill=(0, 0, 0))
        draw.text((x1 - 36, y1 + 4), f"{x_max} steps", fill=(0, 0, 0))
        for name, level in levels.items():
            if level.get(score) is not None:
                y = xy(0, level[score])[1]
                for xs in range(int(x0), int(x1), 8):  # dashed
                    draw.line((xs, y, min(xs + 4, x1), y), fill=CURVE_COLOURS.get(name, (0, 0, 0)), width=1)
        for name, points in curves.items():
            colour = CURVE_COLOURS.get(name.split()[0], (0, 0, 0))
            line = [xy(s, v[score]) for s, v in sorted(points.items()) if v.get(score) is not None]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    x = 4
    for name, colour in CURVE_COLOURS.items():
        style = "line" if name in {n.split()[0] for n in curves} else "dashed"
        draw.text((x, height + 6), f"{name} ({style})", fill=colour)
        x += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def truth_strip(frames: torch.Tensor, truth: np.ndarray, size: int) -> Image.Image:
    """The clip's frames in the tracker's square with the ground-truth objects tinted, in a row."""
    rows, cols, _, _ = view_window(frames.shape[-2], frames.shape[-1], size)
    palette = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                        (70, 240, 240), (240, 50, 230)], dtype=np.float32)
    tiles = []
    for frame, ids in zip(frames, truth):
        rgb = frame.permute(1, 2, 0).numpy()[rows][:, cols].astype(np.float32)
        ids = ids[rows][:, cols]
        colour = palette[1 + (ids - 1) % (len(palette) - 1)]
        rgb = np.where(ids[..., None] > 0, 0.5 * rgb + 0.5 * colour, rgb)
        tiles.append(Image.fromarray(rgb.astype(np.uint8)).resize((size, size)))  # the tracking grid's tile
    strip = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * tile.width, 0))
    return strip


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per method (default 3: 0, 1, 2)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: the recipe's)")
    parser.add_argument("--points", type=int, default=4, help="checkpoints per run for the learning curve (default 4)")
    parser.add_argument("--train-seconds", type=float, default=300.0, help="length of the training tour (default 300)")
    parser.add_argument("--held-out-seconds", type=float, default=60.0, help="length of the held-out tour (default 60)")
    parser.add_argument("--methods", nargs="+", choices=[method for _, method in METHODS],
                        default=[method for _, method in METHODS], help="the methods to train (default: dora dino)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe key for every run (YAML value), e.g. --set batch_size_per_device=16")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs that --json already records with these steps and whose final checkpoint is "
                             "in --work-dir (scored again; not trained again)")
    parser.add_argument("--quick", action="store_true", help="20 steps, 1 seed, a 60 s tour: checks the wiring")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".cache" / "bench_tour")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench_tour.json")
    parser.add_argument("--curve", type=Path, default=RESULTS / "bench_tour_curve.png")
    parser.add_argument("--figure", type=Path, default=RESULTS / "bench_tour_tracks.jpg")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.train_seconds = args.steps or 20, 1, 60.0
    methods = [(name, method) for name, method in METHODS if method in args.methods]
    if "dora" not in args.methods:
        parser.error("--methods must include dora: the random initialisation and chance level are DoRA's")
    header = run_header("bench_tour", torch.device("cpu"))
    started = time.time()

    work = args.work_dir
    tour = tour_folder(work, args.train_seconds, args.held_out_seconds)
    dataset = work / f"frames-train{args.train_seconds:g}s"
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    base = {"overwrite": True, "dataset": str(dataset), "checkpoints_total_limit": 0, **overrides}
    recipe = load_recipe(DEMO_RECIPE, {**base, **({"max_steps": args.steps} if args.steps else {})})
    steps = recipe.max_steps
    base |= {"max_steps": steps, "checkpointing_steps": max(1, steps // max(1, args.points))}
    t0 = time.time()
    prepare_dataset([tour / "train.mp4"], dataset,
                    PrepareOptions(clip_step=recipe.clip_step, frames_per_clip=recipe.frames_per_clip), overwrite=True)
    prepare_s = time.time() - t0

    # Held-out clips: DEMO_DISCOVERY's clips of frames taken the recipe's clip step apart.
    settings = DEMO_DISCOVERY
    held_out_frames = round(args.held_out_seconds * TourSettings().fps)
    frames = read_frames(tour / "held_out.mp4", held_out_frames // recipe.clip_step, recipe.clip_step, 0)
    frame_indices = np.arange(frames.shape[0]) * recipe.clip_step
    truth = held_out_truth(tour, frame_indices)
    clip_starts = list(range(0, frames.shape[0] - settings.clip_frames + 1, settings.clip_step))[: settings.max_clips]

    report = {**header, "tour": {"folder": shown(tour),
                                 "seed": TOUR_SEED, "train_seconds": args.train_seconds,
                                 "held_out_seconds": args.held_out_seconds, "settings": asdict(TourSettings())},
              "recipe": str(DEMO_RECIPE.relative_to(REPO_ROOT)), "recipe_overrides": overrides, "steps": steps, "seeds": list(range(args.seeds)),
              "checkpointing_steps": base["checkpointing_steps"], "prepare_seconds": prepare_s,
              "held_out_clips": {"count": len(clip_starts), "clip_frames": settings.clip_frames,
                                 "clip_step": settings.clip_step, "frame_step": recipe.clip_step},
              "runs": {}}

    previous = json.loads(args.json.read_text()) if args.reuse and args.json.is_file() else {}
    curves: dict[str, dict[int, dict]] = {}
    finals: dict[str, Path] = {}
    information_frames = frames[clip_starts]  # each held-out clip's first frame
    for seed in range(args.seeds):
        for name, method in methods:
            run = f"{name} seed {seed}"
            output = work / f"run-{method}-seed{seed}"
            export = work / f"export-{method}-seed{seed}"
            method_recipe = load_recipe(DEMO_RECIPE, {**base, "method": method, "seed": seed,
                                                      "output_dir": str(output), "export_dir": str(export)})
            done = previous.get("runs", {}).get(run)
            if done and previous.get("steps") == steps and (checkpoint_root(output) / checkpoint_name(steps)).is_dir():
                record = {key: done[key] for key in ("train_seconds", "steps_per_second", "loss_trend")}
                print(f"{run}: reusing the {steps}-step run in {output}")
            else:
                t0 = time.time()
                result = pretrain(method_recipe, make_accelerator(method_recipe, cpu=True))
                train_s = time.time() - t0
                record = {"train_seconds": train_s, "steps_per_second": result.steps / train_s,
                          "loss_trend": result.loss_trend()}
                print(f"{run}: {result.steps} steps in {train_s / 60:.1f} min ({result.steps / train_s:.2f} steps/s)")
            curves[run] = {}
            for checkpoint in complete_checkpoints(output):
                step = checkpoint_step(checkpoint)
                folder = export if step == steps and export.is_dir() else export_checkpoint(
                    checkpoint, work / f"export-{method}-seed{seed}-step{step}", overwrite=True)
                encoder = load_encoder(str(folder), progress=False)
                scores = score_backbone(encoder, frames, truth, clip_starts)
                if step == steps:
                    scores["davis"] = davis_scores(encoder, tour / "held_out_davis")
                    scores["model"]["davis_jf"] = scores["davis"]["jaccard_and_f"]
                scores["teacher"] = teacher_information(checkpoint, information_frames, scores["size"])
                curves[run][step] = scores["model"]
                report["runs"].setdefault(run, {**record, "checkpoints": {}})
                report["runs"][run]["checkpoints"][step] = scores
                print(f"  step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores["model"].items() if v is not None)
                      + ", information in the teacher's targets {:.3f} nats".format(scores["teacher"]["target_information"]))
            finals[run] = export
            write_json(args.json, report)  # keep what was measured should a later run fail

    initial = random_init_backbone(finals["DoRA seed 0"], seed=0)
    random_init = score_backbone(initial, frames, truth, clip_starts)
    random_init["davis"] = davis_scores(initial, tour / "held_out_davis")
    random_init["model"]["davis_jf"] = random_init["davis"]["jaccard_and_f"]
    report["random_init"] = random_init
    final_dora = report["runs"]["DoRA seed 0"]["checkpoints"][steps]
    levels = {"random init": random_init["model"], "random masks": final_dora["random"]}
    table_rows: dict[str, dict] = {}
    for name, _ in methods:
        per_seed = [report["runs"][f"{name} seed {s}"]["checkpoints"][steps]["model"] for s in range(args.seeds)]
        table_rows[name] = {k: float(np.mean([p[k] for p in per_seed])) if per_seed[0][k] is not None else None
                            for k in TABLE_SCORES}
        if args.seeds > 1:  # the spread: the seeds' standard deviation (numpy's, ddof 0)
            report.setdefault("seed_std", {})[name] = {k: float(np.std([p[k] for p in per_seed])) for k in TABLE_SCORES
                                                       if per_seed[0][k] is not None}
    table_rows["random init"] = random_init["model"]
    size, patch = recipe.model["image_size"], recipe.model["patch_size"]
    report["patch_grid_ceiling"] = patch_grid_ceiling(truth, tuple(frames.shape[-2:]), clip_starts, size, patch,
                                                      final_dora["num_objects"])
    table_rows["best patch-grid masks (ceiling)"] = report["patch_grid_ceiling"]
    table_rows["random masks (DoRA's areas)"] = final_dora["random"]
    report["table"] = table_rows
    table = markdown_table(table_rows, steps)
    report["markdown"] = table
    print(table)
    for run, data in report["runs"].items():
        last = data["checkpoints"][steps]
        print(f"{run}: masks {last['mask_on_objects']:.3f} on objects (objects are {last['object_share_of_view']:.3f} "
              f"of the view), each mask {last['mask_area_per_object']:.3f} of the view; teacher's targets: entropy "
              f"{last['teacher']['teacher_entropy']:.3f} of {last['teacher']['uniform_entropy']:.3f} (uniform), "
              f"{last['teacher']['target_information']:.3f} nats about the frame")

    draw_curves(curves, levels, args.curve)
    clip = frames[clip_starts[len(clip_starts) // 2] :][: settings.clip_frames]
    clip_truth = truth[clip_starts[len(clip_starts) // 2] :][: settings.clip_frames]
    from transformers import AutoModelForPreTraining

    with tempfile.TemporaryDirectory() as tmp:
        pictures = {"ground truth": Path(tmp) / "truth.png"}
        truth_strip(clip, clip_truth, size).save(pictures["ground truth"])
        for name, _ in methods:
            model = AutoModelForPreTraining.from_pretrained(finals[f"{name} seed 0"]).eval()
            pictures[name], _ = render_tracking_figure(model, clip, Path(tmp) / f"{name}.png")
        stacked = stack_vertically(pictures, args.figure)
    report["figures"] = {"curve": shown(args.curve), "tracks": shown(stacked)}
    report["load_average_end"] = os.getloadavg()
    report["total_seconds"] = time.time() - started
    write_json(args.json, report)
    print(f"{report['total_seconds'] / 60:.1f} min in all; curve {args.curve}, tracks {stacked}")
    return 0


def shown(path: Path) -> str:
    """``path`` relative to the checkout where it lies inside it, as the JSON records paths."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def stack_vertically(images: dict[str, Path], path: Path) -> Path:
    """The pictures one under another, each under its name."""
    loaded = {name: Image.open(p).convert("RGB") for name, p in images.items()}
    width = max(im.width for im in loaded.values())
    canvas = Image.new("RGB", (width, sum(im.height + 22 for im in loaded.values())), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for name, image in loaded.items():
        draw.text((4, y + 4), name, fill=(0, 0, 0))
        canvas.paste(image, (0, y + 22))
        y += image.height + 22
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
