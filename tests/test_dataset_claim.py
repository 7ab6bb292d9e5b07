"""A dataset a training run reads is claimed for reading: `prepare-data --overwrite` into it refuses at
once naming the run, several runs may read it together, and a run does not start on a dataset that
is being replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dora_hf.cli import main as cli_main
from dora_hf.folders.output_folder import FolderInUse
from dora_hf.folders.read_claim import claim_for_reading, hold_against_readers
from dora_hf.training.step import DoraTrainingStep
from test_pretrain import REPO_ROOT, run_pretrain, tiny_recipe


def prepare_over(video: Path, dataset: Path) -> list[str]:
    return ["prepare-data", str(video), "--out", str(dataset), "--clip-step", "6", "--keep-every", "2",
            "--frames-per-clip", "2", "--frames-per-shard", "50", "--overwrite", "--no-progress"]


def fingerprint(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def own_dataset(tiny_frames_dataset, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(tiny_frames_dataset, copy)
    return copy


def test_overwriting_a_dataset_a_run_reads_is_refused_naming_the_run(own_dataset, synthetic_video, tmp_path, monkeypatch, capsys):
    before = fingerprint(own_dataset)
    seen = {}
    original = DoraTrainingStep.__call__

    def step(self, frames, index, return_tracks=False):
        if index == 1:  # mid-run: another prepare-data into the dataset, and another reader of it
            seen["prepare"] = cli_main(prepare_over(synthetic_video, own_dataset))
            seen["stderr"] = capsys.readouterr().err
            second_reader = claim_for_reading(own_dataset)
            seen["second reader"] = second_reader is not None
            second_reader.release()
        return original(self, frames, index, return_tracks)

    monkeypatch.setattr(DoraTrainingStep, "__call__", step)
    result = run_pretrain(tiny_recipe(own_dataset, tmp_path / "run"))
    assert result.steps == 4 and seen["prepare"] == 2 and seen["second reader"]
    (line,) = [line for line in seen["stderr"].splitlines() if "error:" in line]
    assert f"folder {own_dataset} is being read by pid {os.getpid()}" in line and "refusing to replace it" in line
    assert fingerprint(own_dataset) == before

    monkeypatch.undo()
    assert cli_main(prepare_over(synthetic_video, own_dataset)) == 0  # the run is over: the claim went with it


def test_another_process_reading_the_dataset_blocks_the_overwrite(own_dataset, synthetic_video):
    # A real second process holds the claim as a training run does, until told to stop.
    holder = textwrap.dedent(f"""
        import sys
        from dora_hf.training.data_loading import reading_datasets
        from dora_hf.training.recipe import load_recipe
        with reading_datasets(load_recipe(None, {{"dataset": {str(own_dataset)!r}}})):
            print("reading", flush=True)
            sys.stdin.read()
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    with subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) as reader:
        assert reader.stdout.readline().strip() == "reading"
        done = subprocess.run([sys.executable, "-m", "dora_hf.cli", *prepare_over(synthetic_video, own_dataset)],
                              capture_output=True, text=True, env=env, timeout=300)
        reader.stdin.close()
        reader.wait(timeout=60)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert f"is being read by pid {reader.pid}: " in line and "reading_datasets" in line


def test_a_run_does_not_start_on_a_dataset_being_replaced(own_dataset, tmp_path):
    writer = hold_against_readers(own_dataset, "folder")  # what prepare-data --overwrite holds while it writes
    try:
        with pytest.raises(FolderInUse, match=rf"dataset {own_dataset} is being replaced by another process \(pid {os.getpid()}"):
            run_pretrain(tiny_recipe(own_dataset, tmp_path / "run"))
    finally:
        os.close(writer)
    assert not (tmp_path / "run").exists()
