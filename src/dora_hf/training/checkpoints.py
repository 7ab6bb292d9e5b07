"""Training checkpoints: written through `accelerator.save_state`, complete or absent, last K kept.

Layout of `OUTPUT_DIR/checkpoints/step_000500/`: accelerate's files (student weights, optimiser,
grad scaler, every process's RNG states, and the run state: teacher, loss centre, step), one
`rank_R.pt` per process (its view and head generators and its clip reader position), the model
configuration and the recipe. A checkpoint is written under a temporary name and renamed once
every process has finished; only renamed folders holding the `COMPLETE` marker are ever resumed
or exported.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DoraUserError

COMPLETE_MARKER = "COMPLETE"
CONFIG_FILE = "dora_config.json"
RECIPE_FILE = "recipe.json"
RUN_STATE_FILE = "custom_checkpoint_0.pkl"
_NAME = re.compile(r"^step_(\d+)$")


class RunState:
    """The state shared by all processes, saved once by accelerate: teacher, loss centre, step."""

    def __init__(self, teacher: nn.Module, loss_fn: nn.Module):
        self.teacher = teacher
        self.loss_fn = loss_fn
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "loss": self.loss_fn.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.loss_fn.load_state_dict(state["loss"])
        self.step = int(state["step"])


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve_checkpoint(spec: str, output_dir: str | Path) -> Path:
    """`latest` or a path to a checkpoint folder; an incomplete or missing one is an error."""
    if spec == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            raise DoraUserError(f"--resume_from_checkpoint latest: no complete checkpoint under {checkpoint_root(output_dir)}")
        return found[-1]
    path = Path(spec)
    if not path.is_dir():
        raise DoraUserError(f"checkpoint folder not found: {path}")
    if not (path / COMPLETE_MARKER).is_file():
        raise DoraUserError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} marker): it was interrupted")
    return path


def save_checkpoint(accelerator, output_dir: str | Path, step: int, rank_state: dict, config: dict, recipe: dict, keep: int) -> Path:
    """Save on every process, publish on the main one, then drop all but the newest `keep`."""
    root = checkpoint_root(output_dir)
    final = root / checkpoint_name(step)
    staging = root / f"{final.name}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    torch.save(rank_state, staging / f"rank_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (staging / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True))
        (staging / COMPLETE_MARKER).write_text(f"step {step}\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_rank_state(checkpoint: Path, rank: int) -> dict:
    path = checkpoint / f"rank_{rank}.pt"
    if not path.is_file():
        raise DoraUserError(
            f"{checkpoint} has no state for process {rank}: it was saved by fewer processes than this run uses"
        )
    return torch.load(path, map_location="cpu", weights_only=True)
