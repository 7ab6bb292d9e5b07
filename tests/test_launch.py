"""The README's launch commands, run as written: 2 CPU processes on one-shard data like the main job's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_shard_dataset(synthetic_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared as the main job prepares its sample: the whole video in a single shard."""
    from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset

    out = tmp_path_factory.mktemp("launch") / "frames"
    options = PrepareOptions(clip_step=3, frames_per_clip=4, short_side=96)  # the demo recipe's spacing
    prepare_dataset([synthetic_video], out, options, progress=False, log=None)
    assert len(list((out / "data").glob("*.parquet"))) == 1
    return out


@pytest.mark.slow
def test_readme_two_cpu_process_launch_trains_on_one_shard(one_shard_dataset: Path, tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    launch = "accelerate launch --config_file training_scripts/accelerate_configs/2cpu.yaml"
    assert launch in readme and "training_scripts/configs/demo_cpu.yaml --cpu" in readme
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO_ROOT / "training_scripts/accelerate_configs/2cpu.yaml"), "--main_process_port", "0",
        str(REPO_ROOT / "training_scripts/pretrain.py"), "--config", str(REPO_ROOT / "training_scripts/configs/demo_cpu.yaml"),
        "--cpu", "--dataset", str(one_shard_dataset), "--output_dir", str(tmp_path / "run"),
        "--export_dir", str(tmp_path / "export"), "--max_steps", "3", "--checkpointing_steps", "100",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # 200 source frames, clips of 4 frames 3 apart: 200 - 3 * 3 = 191 clips per epoch, split over
    # 2 processes of 4 clips per step: 191 // 8 = 23 steps.
    assert re.search(r"DoRA pretraining: 2 process\(es\).*191 clips/epoch .* -> 23 steps/epoch", output), output[-4000:]
    assert "data: random access" in output
    assert (tmp_path / "export" / "model.safetensors").is_file()
