"""A shard that turns unreadable in the middle of a run: the last completed step is saved, exactly
resumable, and the run stops with one line naming the shard (also when a DataLoader worker read it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.training.data_errors import DataErrorStop, data_error_line
from dora_hf.errors import DoraUserError
from test_checkpoint_safety import checkpoint_weights, differing
from test_pretrain import REPO_ROOT, run_pretrain, tiny_recipe

STEPS = 12
BATCH = 8
"""The stream reads the second shard's row group first at step 7 (of 12) with 8 clips a step."""


def damage(shard: Path) -> None:
    """Overwrite the middle half of a shard in place (same size, footer intact): a corrupt row group."""
    size = shard.stat().st_size
    with shard.open("r+b") as handle:
        handle.seek(size // 4)
        handle.write(b"\0" * (size // 2))


@pytest.fixture()
def own_dataset(tiny_frames_dataset, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_frames_dataset, copy)
    return copy


def test_a_shard_damaged_mid_run_saves_the_last_step_and_resumes_exactly(own_dataset, tiny_frames_dataset, tmp_path):
    recipe = dict(streaming=True, max_steps=STEPS, checkpointing_steps=100, batch_size_per_device=BATCH)
    straight = run_pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "straight", **recipe))
    assert straight.steps == STEPS

    shard = sorted((own_dataset / "data").glob("*.parquet"))[-1]
    intact = shard.read_bytes()
    run = tmp_path / "run"
    damage(shard)  # found only when the stream reaches it, mid-run
    with pytest.raises(DataErrorStop) as stopped:
        run_pretrain(tiny_recipe(own_dataset, run, **recipe))
    (saved,) = complete_checkpoints(run)
    step = int(saved.name.removeprefix("step_"))
    assert 2 <= step < STEPS
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read the data for step {step + 1}: shard {shard}")
    assert f"saved {saved} (step {step}, the last completed one)" in message and "--resume_from_checkpoint latest" in message

    # Still damaged: the resume stops at the same clip, with nothing new to save.
    with pytest.raises(DataErrorStop, match=rf"step {step + 1}: shard .*; no step was trained since {saved}, so nothing was saved"):
        run_pretrain(tiny_recipe(own_dataset, run, resume_from_checkpoint="latest", **recipe))
    assert complete_checkpoints(run) == [saved]

    shard.write_bytes(intact)  # the data fixed
    resumed = run_pretrain(tiny_recipe(own_dataset, run, resume_from_checkpoint="latest", **recipe))
    assert resumed.steps == STEPS
    final = f"step_{STEPS:07d}"
    assert differing(checkpoint_weights(run / "checkpoints" / final),
                     checkpoint_weights(tmp_path / "straight" / "checkpoints" / final)) == []


def pretrain_command(dataset: Path, run: Path, **changes) -> list[str]:
    """training_scripts/pretrain.py with the tiny recipe as flags, streaming `STEPS` steps of `BATCH` clips."""
    recipe = tiny_recipe(dataset, run)
    values = {
        "dataset": dataset, "output_dir": run, "streaming": "true", "max_steps": STEPS, "checkpointing_steps": 100,
        "num_workers": 0, "frames_per_clip": 2, "clip_step": 6, "batch_size_per_device": BATCH, "shuffle_buffer": 8,
        "mixed_precision": "no", "steps_per_epoch": 3, "warmup_epochs": 1, "base_learning_rate": 0.05,
        "logging_steps": 1, "freeze_last_layer": 1, **changes}
    flags = [f"--{key}={value}" for key, value in values.items()]
    flags += [f"--set=model.{k}={v}" for k, v in recipe.model.items()] + [f"--set=views.{k}={v}" for k, v in recipe.views.items()]
    return [str(REPO_ROOT / "training_scripts" / "pretrain.py"), *flags, "--cpu"]


def error_lines(stderr: str) -> list[str]:
    lines = [line for line in re.split(r"[\r\n]", stderr) if "pretrain: error:" in line]
    return [line[line.index("pretrain: error:"):] for line in lines]


ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}


def test_a_shard_damaged_under_a_worker_is_one_line_and_the_process_exits(own_dataset, tmp_path):
    shard = sorted((own_dataset / "data").glob("*.parquet"))[-1]
    damage(shard)
    run = tmp_path / "run"
    # A timeout, not a timing assert: the run used to hang at exit, joining a worker that ignores SIGTERM.
    done = subprocess.run([sys.executable, *pretrain_command(own_dataset, run, num_workers=1)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = error_lines(done.stderr)
    assert "Traceback" not in done.stderr and "DataLoader worker" not in line
    (saved,) = complete_checkpoints(run)
    assert f"shard {shard}: video " in line and f"saved {saved}" in line


def test_two_processes_agree_to_save_when_one_cannot_read(own_dataset, tmp_path):
    shard = sorted((own_dataset / "data").glob("*.parquet"))[-1]
    damage(shard)
    run = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    done = subprocess.run([*launch, *pretrain_command(own_dataset, run, batch_size_per_device=4)],
                          capture_output=True, text=True, env=ENV, timeout=600, cwd=tmp_path)
    assert done.returncode != 0
    lines = error_lines(done.stderr)
    assert len(lines) == 2 and lines[0] == lines[1], done.stderr[-3000:]  # both processes stop with the same line
    (saved,) = complete_checkpoints(run)
    assert f": shard {shard}: video " in lines[0] and f"saved {saved}" in lines[0] and "process " in lines[0]
    assert {p.name for p in saved.glob("rank_*.pt")} == {"rank_0.pt", "rank_1.pt"}


def test_a_worker_error_is_reduced_to_its_own_last_line():
    wrapped = DoraUserError(
        "Caught DoraUserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DoraUserError(...)\n'
        "dora_hf.errors.DoraUserError: shard a.parquet: video 'v' frame_index 4: cannot decode the frame image\n"
    )
    assert data_error_line(wrapped) == "shard a.parquet: video 'v' frame_index 4: cannot decode the frame image"
    raw = OSError("Caught OSError in DataLoader worker process 1.\nOriginal Traceback ...\nOSError: [Errno 5] Input/output error")
    assert data_error_line(raw) == "OSError: [Errno 5] Input/output error"
    assert data_error_line(FileNotFoundError(2, "No such file or directory")) == "FileNotFoundError: [Errno 2] No such file or directory"
