"""Out of memory in a training step: one line with what to change, and no checkpoint of the
half-done step (the allocator cannot be exhausted in a test, so the step's forward raises its error)."""

from __future__ import annotations

import pytest
import torch

from dora_hf.modeling import DoraForPreTraining
from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.training.out_of_memory import OutOfMemory, is_out_of_memory
from dora_hf.training.step import DoraTrainingStep
from test_pretrain import run_pretrain, tiny_recipe

ERRORS = {
    "cuda": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)"),
    "cpu-allocator": RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate 1073741824 bytes."
    ),
    "python": MemoryError(),
}


@pytest.mark.parametrize("kind", list(ERRORS))
def test_out_of_memory_in_a_step_is_one_line_with_the_settings_to_change(tiny_frames_dataset, tmp_path, monkeypatch, kind):
    original_step, original_forward = DoraTrainingStep.__call__, DoraForPreTraining.forward
    armed = []

    def step(self, frames, index, return_tracks=False):
        if index == 2:
            armed.append(True)
        return original_step(self, frames, index, return_tracks)

    def forward(self, *args, **kwargs):
        if armed:
            raise ERRORS[kind]
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(DoraTrainingStep, "__call__", step)
    monkeypatch.setattr(DoraForPreTraining, "forward", forward)
    run = tmp_path / "run"
    with pytest.raises(OutOfMemory) as stopped:
        run_pretrain(tiny_recipe(tiny_frames_dataset, run, batch_size_per_device=4, checkpointing_steps=2))
    message = str(stopped.value)
    assert "\n" not in message
    assert message.startswith(f"out of memory in training step 3 on cpu ({type(ERRORS[kind]).__name__}")
    assert f"the last checkpoint is {run / 'checkpoints' / 'step_0000002'}" in message
    assert "--batch_size_per_device 2 --gradient_accumulation_steps 2" in message
    assert "--mixed_precision bf16" in message and "frames_per_clip 2" in message
    assert [p.name for p in complete_checkpoints(run)] == ["step_0000002"]  # nothing of the failed step
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_only_memory_errors_are_taken_for_out_of_memory():
    assert all(is_out_of_memory(err) for err in ERRORS.values())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert not is_out_of_memory(ValueError("out of memory"))
