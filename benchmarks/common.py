"""What every benchmark shares: the machine it ran on, timers that wait for the device, memory
figures, and one JSON writer that keeps what was measured when a run fails part-way.

The scripts import it as a sibling module (``python benchmarks/bench_x.py`` puts this folder on
``sys.path``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]



def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, steps: int, fn) -> float:
    """Seconds for ``steps`` calls of ``fn(i)``, synchronised only before and after."""
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        fn(i)
    synchronize(device)
    return time.perf_counter() - start


def rss_peak_mib() -> float:
    """High-water mark of the process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_snapshot(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"allocated_mib": torch.cuda.memory_allocated(device) / 2**20}
    return {"rss_peak_mib": rss_peak_mib()}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device, before: dict[str, float], batch: int) -> dict[str, Any]:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {
            "peak_allocated_mib": peak,
            "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
            "allocated_before_mib": before["allocated_mib"],
            "peak_above_resident_per_clip_mib": (peak - before["allocated_mib"]) / batch,
        }
    after = rss_peak_mib()
    return {
        "rss_peak_mib": after,
        "rss_peak_increase_mib": after - before["rss_peak_mib"],
        "note": "CPU: growth of the process's RSS high-water mark during the phase "
        "(0 when an earlier phase peaked higher)",
    }


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def git_state() -> dict[str, Any]:
    """Commit of the checkout and the source files that differ from it (the code measured)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "changed_under_src": [line[3:] for line in status if line[:2] != "??"]}


def run_and_record(run_fn, args: argparse.Namespace, json_path: Path) -> int:
    """``run_fn(args, result)``, then ``result`` written to ``json_path`` whatever happened.

    ``run_fn`` fills ``result`` as figures come in, so a failure part-way (CUDA out of memory:
    exit code 3; anything else: 1) still records what was measured, with the error.
    """
    result: dict[str, Any] = {}
    try:
        run_fn(args, result)
        code = 0
    except torch.cuda.OutOfMemoryError as err:
        result["error"] = f"CUDA out of memory: {str(err).splitlines()[0]}"
        result["memory_total_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(result["error"], flush=True)
        code = 3
    except Exception as err:  # keep what was measured before the failure
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"
        code = 1
    write_json(json_path, result)
    return code


def machine_info(
    device: torch.device | None = None,
    packages: tuple[str, ...] = ("torch", "transformers", "accelerate", "datasets", "av", "pyarrow", "pillow", "numpy", "dora-hf"),
) -> dict[str, Any]:
    """CPU model, cores, library versions, the commit and, for a device, torch's threads and the GPU:
    what puts a benchmark's figures in context."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git": git_state(),
    }
    if device is not None:
        info["device"] = str(device)
        info["torch_threads"] = torch.get_num_threads()
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
            info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
            info["cuda"] = torch.version.cuda
    return info


def run_header(benchmark: str, device: torch.device | None = None, **machine: Any) -> dict[str, Any]:
    """The first fields of every benchmark's JSON: which, when, the command line, the load, the machine."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_start": os.getloadavg(),
        "machine": machine_info(device, **machine),
    }


def write_json(path: Path, report: dict[str, Any]) -> Path:
    """Write a benchmark's figures under a temporary name, then rename: the file is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(partial, path)
    print(f"wrote {path}")
    return path
