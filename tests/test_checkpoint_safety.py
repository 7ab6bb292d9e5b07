"""Checkpoints that survive what goes wrong: damaged files (verified against the manifest, the newest
skipped for the one before it), missing RNG states (refused unless `resume_inexact`), SIGTERM,
a full disk, and the last good checkpoint named after a resume."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from dora_hf.errors import DoraUserError
from dora_hf.training.checkpoints import MANIFEST_FILE, RUN_STATE_FILE, RunState, complete_checkpoints, resolve_checkpoint, save_checkpoint
from dora_hf.folders.checkpoint_layout import verify_checkpoint
from dora_hf.training.loop import TrainingDiverged
from test_pretrain import run_pretrain, tiny_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_LOG = "dora_hf.folders.checkpoint_layout"


def checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Student, teacher and loss centre of one checkpoint folder."""
    state = torch.load(checkpoint / RUN_STATE_FILE, weights_only=True)
    student = load_file(checkpoint / "model.safetensors")
    return {**{f"teacher.{k}": v for k, v in state["teacher"].items()}, **{f"student.{k}": v for k, v in student.items()},
            "center": state["loss"]["center"]}


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [key for key in a if not torch.equal(a[key], b[key])]


@pytest.fixture(scope="module")
def finished_run(tiny_frames_dataset, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run with checkpoints at steps 2 and 4; tests damage copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_pretrain(tiny_recipe(tiny_frames_dataset, out))
    assert [p.name for p in complete_checkpoints(out)] == ["step_0000002", "step_0000004"]
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_manifest_lists_every_file_with_its_size_and_sha256(finished_run):
    for checkpoint in complete_checkpoints(finished_run):
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
        on_disk = {p.name for p in checkpoint.iterdir()} - {MANIFEST_FILE}
        assert set(manifest["files"]) == on_disk
        assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "rank_0.pt", RUN_STATE_FILE} <= on_disk
        for name, entry in manifest["files"].items():
            data = (checkpoint / name).read_bytes()
            assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert manifest["processes"] == 1 and verify_checkpoint(checkpoint).refusal(exact=True) is None


def damage_file(path: Path, how: str) -> None:
    if how == "truncate":
        truncate(path)
    elif how == "delete":
        path.unlink()
    else:  # flip a bit inside the last tensor's data: the file still parses
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x40
        path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how, name",
    [("truncate", "model.safetensors"), ("flip", "model.safetensors"), ("truncate", "optimizer.bin"),
     ("truncate", "rank_0.pt"), ("delete", "random_states_0.pkl")],
)
def test_damaged_newest_checkpoint_falls_back_and_resumes_exactly(
    finished_run, tiny_frames_dataset, tmp_path, caplog, how, name
):
    uninterrupted = checkpoint_weights(finished_run / "checkpoints" / "step_0000004")
    run = copy_run(finished_run, tmp_path)
    damaged = run / "checkpoints" / "step_0000004" / name
    damage_file(damaged, how)
    if how == "flip":  # without the manifest this would be loaded: it reads, with other weights
        assert differing(load_file(damaged), load_file(finished_run / "checkpoints" / "step_0000004" / name))

    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOG):
        result = run_pretrain(tiny_recipe(tiny_frames_dataset, run, resume_from_checkpoint="latest"))
    warnings = [r.getMessage() for r in caplog.records if r.name == CHECKPOINT_LOG]
    assert len(warnings) == 1, warnings
    verdict = "cannot continue the run exactly" if name.startswith("random_states") else "is damaged"
    assert f"checkpoint {damaged.parent} {verdict}: {name}" in warnings[0] and "falling back to step_0000002" in warnings[0]
    assert result.steps == 4
    # Resumed from step 2, it retrained steps 3 and 4 to exactly what the uninterrupted run had.
    assert differing(checkpoint_weights(run / "checkpoints" / "step_0000004"), uninterrupted) == []
    assert verify_checkpoint(run / "checkpoints" / "step_0000004").refusal(exact=True) is None


def test_a_named_damaged_checkpoint_is_an_error_naming_the_file(finished_run, tiny_frames_dataset, tmp_path):
    run = copy_run(finished_run, tmp_path)
    named = run / "checkpoints" / "step_0000004"
    truncate(named / "optimizer.bin")
    before = {p.name: p.read_bytes() for p in named.iterdir()}
    recipe = tiny_recipe(tiny_frames_dataset, run, resume_from_checkpoint=str(named))
    with pytest.raises(DoraUserError, match=r"step_0000004 is damaged: .*optimizer\.bin holds \d+ bytes, its MANIFEST"):
        run_pretrain(recipe)
    assert {p.name: p.read_bytes() for p in named.iterdir()} == before  # nothing was changed or replaced


def test_missing_rng_state_is_refused_unless_resume_inexact(finished_run, tiny_frames_dataset, tmp_path, caplog):
    exact_run = copy_run(finished_run, tmp_path / "exact")
    run = copy_run(finished_run, tmp_path / "inexact")
    shutil.rmtree(run / "checkpoints" / "step_0000002")  # nothing to fall back to
    (run / "checkpoints" / "step_0000004" / "random_states_0.pkl").unlink()
    with pytest.raises(DoraUserError, match=r"cannot continue the run exactly: .*random_states_0\.pkl is missing.*resume_inexact"):
        run_pretrain(tiny_recipe(tiny_frames_dataset, run, max_steps=6, resume_from_checkpoint="latest"))

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=CHECKPOINT_LOG):
        inexact = run_pretrain(
            tiny_recipe(tiny_frames_dataset, run, max_steps=6, resume_from_checkpoint="latest", resume_inexact=True)
        )
    assert inexact.steps == 6
    (warning,) = [r.getMessage() for r in caplog.records if r.name == CHECKPOINT_LOG]
    assert "random_states_0.pkl is missing" in warning and "will not repeat an uninterrupted run exactly" in warning
    # The refusal is not caution for its own sake: without the RNG state (which accelerate skips
    # silently) stochastic depth draws differently and most tensors come out different.
    run_pretrain(tiny_recipe(tiny_frames_dataset, exact_run, max_steps=6, resume_from_checkpoint="latest"))
    changed = differing(checkpoint_weights(run / "checkpoints" / "step_0000006"),
                        checkpoint_weights(exact_run / "checkpoints" / "step_0000006"))
    assert len(changed) > 10, changed


def test_unreadable_rng_state_counts_as_missing(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    checkpoint = run / "checkpoints" / "step_0000004"
    torch.save({"random_state": None}, checkpoint / "random_states_0.pkl")  # readable, but not what accelerate needs
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    data = (checkpoint / "random_states_0.pkl").read_bytes()
    manifest["files"]["random_states_0.pkl"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(manifest))
    problems = verify_checkpoint(checkpoint)
    assert problems.damaged == [] and len(problems.inexact) == 1
    assert "random_states_0.pkl lacks numpy_random_seed, torch_manual_seed" in problems.inexact[0]
    with pytest.raises(DoraUserError, match="random_states_0.pkl lacks"):
        resolve_checkpoint(str(checkpoint), run, exact=True)
    assert resolve_checkpoint(str(checkpoint), run, exact=False) == checkpoint


def test_checkpoint_without_manifest_is_checked_by_its_structure(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    checkpoint = run / "checkpoints" / "step_0000004"
    (checkpoint / MANIFEST_FILE).unlink()
    assert verify_checkpoint(checkpoint).refusal(exact=True) is None
    data = bytearray((checkpoint / "optimizer.bin").read_bytes())
    data[len(data) // 3] ^= 0xFF  # a bit flip in a zip member fails its CRC
    (checkpoint / "optimizer.bin").write_bytes(bytes(data))
    truncate(checkpoint / "model.safetensors")
    (damage_model, damage_optimizer) = verify_checkpoint(checkpoint).damaged
    assert "model.safetensors cannot be read" in damage_model and "optimizer.bin is corrupt" in damage_optimizer
    assert resolve_checkpoint("latest", run, exact=True).name == "step_0000002"


def test_nan_after_a_resume_names_the_checkpoint_resumed_from(finished_run, tiny_frames_dataset, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path)
    recipe = tiny_recipe(tiny_frames_dataset, run, max_steps=8, checkpointing_steps=100, resume_from_checkpoint="latest")
    with pytest.raises(TrainingDiverged, match=f"Last good checkpoint: {run / 'checkpoints' / 'step_0000004'}\\."):
        run_pretrain(recipe, monkeypatch, nan_from=4)


class TinyRun:
    """Just enough for `save_checkpoint`: an accelerator with a prepared model and optimiser."""

    def __init__(self) -> None:
        self.accelerator = Accelerator(cpu=True)
        model = torch.nn.Linear(4, 4)
        model, optimizer = self.accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
        self.run_state = RunState(torch.nn.Linear(4, 4), torch.nn.Linear(1, 1))
        self.accelerator.register_for_checkpointing(self.run_state)

    def save(self, output_dir: Path, step: int, keep: int = 3) -> Path:
        return save_checkpoint(self.accelerator, output_dir, step, {"data": step}, {"c": 1}, {"r": 1}, keep)


def write_failure(kind: str):
    """A `torch.save` that fails as it does on a full or read-only disk."""

    def failing_save(obj, f, *args, **kwargs) -> None:
        if kind == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        if kind == "EROFS":
            raise OSError(errno.EROFS, "Read-only file system", str(f))
        # what torch.save raised on a full tmpfs: its zip writer's own check fails
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    return failing_save


@pytest.mark.parametrize("kind, message", [
    ("ENOSPC", r"optimizer\.bin: No space left on device \(\d+ MiB free there\)"),
    ("EROFS", r"optimizer\.bin: Read-only file system;"),
    ("torch", r"step_0000002\.tmp: torch\.save failed \(\[enforce fail at inline_container.*MiB free there\)"),
])
def test_a_failed_write_is_one_line_and_keeps_the_earlier_checkpoints(tmp_path, monkeypatch, kind, message):
    run = TinyRun()
    first = run.save(tmp_path, 1)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    monkeypatch.setattr(torch, "save", write_failure(kind))
    with pytest.raises(DoraUserError, match=f"cannot write checkpoint .*{message}.*earlier checkpoints are untouched") as caught:
        run.save(tmp_path, 2, keep=1)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000001"]  # no partial folder
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert verify_checkpoint(first).refusal(exact=True) is None


def test_a_bug_while_saving_is_not_disguised_as_a_disk_problem(tmp_path, monkeypatch):
    run = TinyRun()
    def buggy_save(*args, **kwargs) -> None:
        raise TypeError("cannot pickle 'generator' object")

    monkeypatch.setattr(torch, "save", buggy_save)
    with pytest.raises(TypeError, match="cannot pickle"):
        run.save(tmp_path, 1)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_saving_the_same_step_again_replaces_the_checkpoint_only_once_written(tmp_path, monkeypatch):
    run = TinyRun()
    first = run.save(tmp_path, 3)
    run.run_state.step = 3
    again = run.save(tmp_path, 3)
    assert again == first and verify_checkpoint(again).refusal(exact=True) is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000003"]
    monkeypatch.setattr(torch, "save", write_failure("ENOSPC"))
    with pytest.raises(DoraUserError):
        run.save(tmp_path, 3)
    assert verify_checkpoint(first).refusal(exact=True) is None  # the one already there is kept


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import pretrain as script
    from dora_hf.training.step import DoraTrainingStep

    ready, go = Path(sys.argv[2]), Path(sys.argv[3])
    original = DoraTrainingStep.__call__

    def wait_in_step_1(self, frames, step, return_tracks=False):
        if step == 1:  # a step in flight when the scheduler's SIGTERM arrives
            ready.touch()
            deadline = time.monotonic() + 120
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return original(self, frames, step, return_tracks)

    DoraTrainingStep.__call__ = wait_in_step_1
    sys.exit(script.main(sys.argv[4:]))
    """
)


@pytest.mark.parametrize("num_workers", [0, 2], ids=["in-process", "to-the-group-with-workers"])
def test_sigterm_finishes_the_step_and_saves_the_checkpoint(finished_run, tiny_frames_dataset, tmp_path, num_workers):
    import dataclasses

    out = tmp_path / "run"
    recipe = dataclasses.asdict(tiny_recipe(tiny_frames_dataset, out, checkpointing_steps=100, num_workers=num_workers))
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))  # JSON is YAML
    (tmp_path / "child.py").write_text(SIGTERM_SCRIPT)
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same arithmetic as this process
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), str(REPO_ROOT / "training_scripts"), str(ready), str(go),
         "--config", str(tmp_path / "recipe.json"), "--cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), child.communicate(timeout=60)
        if num_workers:  # as a scheduler does: to the whole process group, data-loader workers included
            os.killpg(child.pid, signal.SIGTERM)
        else:
            child.send_signal(signal.SIGTERM)
        go.touch()
        stdout, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "SIGTERM: finishing this step, then saving a checkpoint" in stderr
    assert "interrupted: saved" in stdout + stderr
    (saved,) = complete_checkpoints(out)
    assert saved.name == "step_0000002" and verify_checkpoint(saved).refusal(exact=True) is None
    # Saved after step 1 had finished: equal to the uninterrupted run's checkpoint at step 2.
    assert differing(checkpoint_weights(saved), checkpoint_weights(finished_run / "checkpoints" / "step_0000002")) == []
