"""The demo recipe's training speed on an idle machine and beside other busy processes.

A shared machine (a login node, a laptop, CI) is where the main job and `eval` run. OpenMP
threads that spin at barriers while the core they wait for runs someone else's process make a
loaded machine 10-25x slower instead of 2-3x. This runs the demo recipe's real training step
(`demo_cpu.yaml`: the step `pretrain` builds, on frames of the prepared vtest.avi's size) in
fresh processes, each with one OpenMP wait setting, idle and then beside a torch job doing 2
threads of matrix products plus one plain busy process (5 busy threads on 2 cores: the step's
fair share is 2 of 5, 0.4x its idle speed), and prints steps/s and the ratios.

    .venv/bin/python benchmarks/bench_load.py                # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "training_scripts" / "configs" / "demo_cpu.yaml"

SETTINGS = {
    "dora-hf default": {},
    "libgomp default (GOMP_SPINCOUNT=300000)": {"GOMP_SPINCOUNT": "300000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
}
"""Environment of each measured process; dora-hf leaves a setting the user made alone."""

LOAD = [
    "import torch\ntorch.set_num_threads(2)\na = torch.randn(768, 768)\nwhile True:\n    a @ a",
    "while True:\n    pass",
]
"""The other busy processes: a torch job with 2 threads of matrix products, and a plain loop."""


def worker(steps: int, warmup: int) -> None:
    """In a fresh process: build the demo recipe's step as `pretrain` does, time `steps` steps."""
    started = time.perf_counter()
    from dora_hf._threads import others_running

    others = others_running()
    import dora_hf  # noqa: F401  (first, as every dora-hf entry point: it chooses the wait policy)
    import torch

    from step_pieces import Pieces  # a sibling module: this script's folder is on sys.path

    from dora_hf.training.builders import make_accelerator
    from dora_hf.training.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    pieces = Pieces(recipe, make_accelerator(recipe, cpu=True), seed=0)
    step = pieces.batched_step(compile_backbone=False)
    frames = torch.randint(0, 256, (recipe.batch_size_per_device, recipe.frames_per_clip, 3, 384, 512), dtype=torch.uint8)
    for i in range(warmup):
        step([frames], i)
    ready = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step([frames], i)
    done = time.perf_counter()
    print(json.dumps({
        "steps_per_s": steps / (done - ready), "start_s": ready - started, "threads": torch.get_num_threads(),
        "others_running_at_start": others,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }))


def measure(env: dict[str, str], steps: int, warmup: int) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup)],
        env={**clean, **env}, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="idle/loaded measurements of each setting (medians)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "bench_load.json")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.steps, args.warmup)
        return 0
    from common import run_header, write_json

    report = run_header("bench_load")
    runs: dict[str, dict[str, list[dict]]] = {name: {"idle": [], "loaded": []} for name in SETTINGS}
    for _ in range(args.rounds):  # interleaved, so a change in the machine's state hits every setting
        for name, env in SETTINGS.items():
            runs[name]["idle"].append(measure(env, args.steps, args.warmup))
        load = [subprocess.Popen([sys.executable, "-c", code]) for code in LOAD]
        try:
            time.sleep(2)
            for name, env in SETTINGS.items():
                run = measure(env, args.steps, args.warmup)
                run["load_average"] = os.getloadavg()
                runs[name]["loaded"].append(run)
        finally:
            for process in load:
                process.kill()
                process.wait()
    rows = {}
    for name, measured in runs.items():
        idle = statistics.median(r["steps_per_s"] for r in measured["idle"])
        loaded = statistics.median(r["steps_per_s"] for r in measured["loaded"])
        rows[name] = {"idle_steps_per_s": idle, "loaded_steps_per_s": loaded, "ratio": loaded / idle, "runs": measured}
        print(f"{name:<42} idle {idle:.2f} steps/s, loaded {loaded:.2f} ({loaded / idle:.2f}x)", flush=True)
    report["rows"] = rows
    report["load_average_end"] = os.getloadavg()
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
