"""Training-loop conventions that runs at scale need: gradient accumulation, precision from the
accelerate config, trackers with the whole configuration, a push at the end, and a clear refusal
of sharded set-ups the loop cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, LoggerType

from dora_hf.views.dora_views import DoraViews
from dora_hf.errors import DoraUserError
from dora_hf.losses.dora_loss import DoraLoss
from dora_hf.modeling import DoraConfig, DoraForPreTraining
from dora_hf.training.builders import build_views, check_supported
from dora_hf.pretrain import pretrain
from dora_hf.training.trackers import tracker_config
from dora_hf.training.optimizer import build_optimizer
from dora_hf.training.schedules import DoraSchedules
from dora_hf.training.step import DoraTrainingStep, MultiViewStudent
from test_hub import RecordingHub
from test_pretrain import TINY_MODEL, tiny_recipe


def _step(accumulation: int, recipe) -> tuple[DoraTrainingStep, DoraForPreTraining, DoraForPreTraining, DoraLoss]:
    torch.manual_seed(0)
    config = DoraConfig(**{**TINY_MODEL, "drop_path_rate": 0.0})  # stochastic depth draws per sample
    student_model, teacher = DoraForPreTraining(config).train(), DoraForPreTraining(config).eval()
    teacher.load_state_dict(student_model.state_dict())
    teacher.requires_grad_(False)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    loss_fn = DoraLoss(output_dim=TINY_MODEL["head_out_dim"])
    schedules = DoraSchedules.from_recipe(
        base_learning_rate=0.05, global_batch_size=4, min_learning_rate=1e-5, warmup_epochs=0, weight_decay=0.04,
        weight_decay_end=0.4, momentum_teacher=0.9, epochs=10, steps_per_epoch=3,
    )
    step = DoraTrainingStep(
        accelerator=accelerator, student=MultiViewStudent(student_model), student_model=student_model,
        teacher=teacher, loss_fn=loss_fn, optimizer=build_optimizer(student_model, accelerator.device),
        schedules=schedules, views=build_views(recipe), steps_per_epoch=3, clip_grad=0.5, freeze_last_layer=0,
    )
    return step, student_model, teacher, loss_fn


def _views_from(queue: list[DoraViews]):
    return lambda frames: queue.pop(0)


def _slice(views: DoraViews, rows: slice) -> DoraViews:
    return DoraViews(global_views=views.global_views[rows], local_views=views.local_views[rows], params=views.params)


def test_two_micro_batches_of_two_equal_one_batch_of_four(tiny_frames_dataset, tmp_path) -> None:
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "unused")
    frames = torch.randint(0, 256, (4, 2, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    # The same views for both runs (views are drawn per batch, so 4 clips at once and 2 + 2 would
    # otherwise get different crops).
    steps = 2
    views = [build_views(recipe)(frames, torch.Generator().manual_seed(10 + i)) for i in range(steps)]

    # One run after the other: accelerate keeps one gradient-accumulation state per process.
    whole, whole_student, whole_teacher, whole_loss = _step(1, recipe)
    whole.make_views = _views_from(list(views))
    whole_out, whole_grads = [], []
    for s in range(steps):
        whole_out.append(whole(frames, s).loss)
        whole_grads.append([p.grad.clone() for p in whole_student.parameters()])
    split, split_student, split_teacher, split_loss = _step(2, recipe)
    split.make_views = _views_from([part for v in views for part in (_slice(v, slice(0, 2)), _slice(v, slice(2, 4)))])
    split_out = []
    for s in range(steps):
        split_out.append(split([frames[:2], frames[2:]], s).loss)
        # The accumulated gradient (after clipping) is the batch-of-four gradient.
        for (name, a), b in zip(split_student.named_parameters(), whole_grads[s]):
            torch.testing.assert_close(a.grad, b, rtol=1e-5, atol=1e-7, msg=name)

    torch.testing.assert_close(torch.stack(split_out), torch.stack(whole_out), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(split_loss.center, whole_loss.center, rtol=1e-6, atol=1e-7)
    # Parameters to 1e-5: Adam divides by the gradient's own size, so the key biases, whose true
    # gradient is zero (softmax ignores them) and whose computed one is round-off, move by round-off
    # ratios of the learning rate.
    for (name, a), b in zip(split_student.state_dict().items(), whole_student.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    for (name, a), b in zip(split_teacher.state_dict().items(), whole_teacher.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)

    with pytest.raises(ValueError, match="got 1 micro-batch"):
        split(frames, steps)

    # Not vacuous: a step on the first micro-batch alone moves the student elsewhere.
    alone, alone_student, _, _ = _step(1, recipe)
    alone.make_views = _views_from([_slice(views[0], slice(0, 2))])
    alone(frames[:2], 0)
    moved = [(a - b).abs().max() for a, b in zip(alone_student.parameters(), split_student.parameters())]
    assert max(moved) > 1e-4

    Accelerator(cpu=True, gradient_accumulation_steps=1)  # leave the shared gradient state as the other tests expect


def test_pretrain_with_gradient_accumulation(tiny_frames_dataset, tmp_path, capsys) -> None:
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "run", gradient_accumulation_steps=2, max_steps=2,
                         steps_per_epoch=None, checkpointing_steps=100)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    try:
        result = pretrain(recipe, accelerator)
    finally:
        Accelerator(cpu=True, gradient_accumulation_steps=1)
    out = capsys.readouterr().out
    # 200 source frames of the tiny dataset, clips of 2 frames 6 apart: 194 clips; global batch 2 x 2.
    assert "global batch 4 clips (2 per process x 2 accumulated micro-batches)" in out
    assert "194 clips/epoch" in out and "-> 48 steps/epoch" in out
    assert result.steps == 2
    reader_state = torch.load(result.last_checkpoint / "rank_0.pt", weights_only=False)["data"]
    assert reader_state["position"] == 2 * 2 * 2  # 2 optimiser steps of 2 micro-batches of 2 clips


def test_accelerator_and_recipe_must_agree_on_accumulation(tiny_frames_dataset, tmp_path) -> None:
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "run", gradient_accumulation_steps=2)
    with pytest.raises(DoraUserError, match="accumulates 1 micro-batches but the recipe's gradient_accumulation_steps is 2"):
        check_supported(SimpleNamespace(distributed_type=DistributedType.NO, gradient_accumulation_steps=1), recipe)


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_sharded_setups_are_refused_at_start(tiny_frames_dataset, tmp_path, kind) -> None:
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "run")
    with pytest.raises(DoraUserError, match=f"distributed type {kind.value} is not supported.*use DDP"):
        check_supported(SimpleNamespace(distributed_type=kind, gradient_accumulation_steps=1), recipe)


PRECISION_SCRIPT = """
import sys
from dora_hf.training.builders import make_accelerator
from dora_hf.training.recipe import load_recipe
recipe = load_recipe(None, {"dataset": "x", **({"mixed_precision": sys.argv[1]} if sys.argv[1] != "unset" else {})})
print(make_accelerator(recipe, cpu=True).mixed_precision)
"""


@pytest.mark.parametrize(("from_config", "in_recipe", "expected"), [("bf16", "unset", "bf16"), ("bf16", "no", "no"), (None, "unset", "no")])
def test_precision_comes_from_the_accelerate_config_unless_the_recipe_sets_it(from_config, in_recipe, expected) -> None:
    # `accelerate launch` hands its config's mixed_precision to the script in this variable.
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_MIXED_PRECISION"}
    if from_config:
        env["ACCELERATE_MIXED_PRECISION"] = from_config
    result = subprocess.run([sys.executable, "-c", PRECISION_SCRIPT, in_recipe], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == expected


def test_tracker_config_holds_the_whole_run_as_scalars(tiny_frames_dataset, tmp_path) -> None:
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "run")
    values = tracker_config(recipe, recipe.model_config(), build_views(recipe))
    assert values["base_learning_rate"] == recipe.base_learning_rate and values["dataset"] == recipe.dataset
    assert values["model.hidden_size"] == TINY_MODEL["hidden_size"] and values["model.num_objects"] == 3
    assert values["views.global_size"] == 32 and values["views.num_local_views"] == 2
    assert isinstance(values["views.clip_scale"], str)  # a tuple, as text
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in values.values())


def test_every_accelerate_tracker_is_a_valid_report_to(tiny_frames_dataset, tmp_path) -> None:
    for tracker in LoggerType:
        tiny_recipe(tiny_frames_dataset, tmp_path / "run", report_to=tracker.value).validate()
    with pytest.raises(DoraUserError, match="recipe key 'report_to' must be"):
        tiny_recipe(tiny_frames_dataset, tmp_path / "run", report_to="tensorbord").validate()


def test_push_to_hub_is_checked_before_training_and_pushes_the_export(tiny_frames_dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("dora_hf.publish.push.get_token", lambda: None)
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "run", push_to_hub=True, hub_model_id="me/dora-tiny", max_steps=1)
    with pytest.raises(DoraUserError, match="--push_to_hub needs a Hugging Face token"):
        pretrain(recipe, Accelerator(cpu=True))
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(DoraUserError, match="--push_to_hub needs --hub_model_id"):
        pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "run", push_to_hub=True), Accelerator(cpu=True))
    with pytest.raises(DoraUserError, match="--hub_model_id must be ORG/NAME"):
        pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "run", push_to_hub=True, hub_model_id="nope"), Accelerator(cpu=True))

    monkeypatch.setattr("dora_hf.publish.push.get_token", lambda: "hf_test_token")
    hub = RecordingHub(monkeypatch)
    result = pretrain(recipe, Accelerator(cpu=True))
    (_, repo), (_, upload) = hub.calls
    assert repo["repo_id"] == upload["repo_id"] == "me/dora-tiny"
    assert "model.safetensors" in upload["files"] and "config.json" in upload["files"]
    assert result.export_dir is not None and (result.export_dir / "model.safetensors").is_file()
