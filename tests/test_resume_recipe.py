"""A resume compares the recipe with the checkpoint's: what changes the schedules, the data read or
the model is refused on one line (or, with `resume_inexact`, warned about on one); the run's length
and the keys that change neither may change freely."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from dora_hf.errors import DoraUserError
from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.training.recipe import FIELDS
from dora_hf.training.resume_recipe import COMPARED, FREE, LENGTH, SECTIONS, check_resume_recipe
from test_checkpoint_safety import checkpoint_weights, differing
from test_pretrain import run_pretrain, tiny_recipe

RESUME_LOG = "dora_hf.training.resume_recipe"


@pytest.fixture(scope="module")
def finished_run(tiny_frames_dataset, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run with checkpoints at steps 2 and 4; tests resume copies of it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run_pretrain(tiny_recipe(tiny_frames_dataset, out))
    return out


def copy_run(run: Path, tmp_path: Path, keep_last: bool = True) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    if not keep_last:
        shutil.rmtree(target / "checkpoints" / "step_0000004")
    return target


def test_every_recipe_key_is_compared_or_free_by_decision():
    groups = [set(COMPARED), set(LENGTH), set(FREE), set(SECTIONS), {"method"}]
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "a key is in two groups"
    assert set().union(*groups) == set(FIELDS)


def test_another_batch_is_refused_on_one_line_unless_resume_inexact(finished_run, tiny_frames_dataset, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path)
    before = sorted(p.name for p in complete_checkpoints(run))
    changed = dict(batch_size_per_device=4, base_learning_rate=0.1, max_steps=6, resume_from_checkpoint="latest")
    with pytest.raises(DoraUserError) as refused:
        run_pretrain(tiny_recipe(tiny_frames_dataset, run, **changed))
    message = str(refused.value)
    assert "\n" not in message
    assert "batch_size_per_device 2 in the checkpoint, 4 now" in message
    assert "base_learning_rate 0.05 in the checkpoint, 0.1 now" in message and "--resume_inexact true" in message
    assert "max_steps" not in message  # the length may change
    assert sorted(p.name for p in complete_checkpoints(run)) == before

    with caplog.at_level(logging.WARNING, logger=RESUME_LOG):
        result = run_pretrain(tiny_recipe(tiny_frames_dataset, run, resume_inexact=True, **changed))
    assert result.steps == 6
    (warning,) = [r.getMessage() for r in caplog.records if r.name == RESUME_LOG]
    assert "batch_size_per_device 2 in the checkpoint, 4 now" in warning and "will not repeat" in warning


def test_another_model_size_is_one_line_even_with_resume_inexact(finished_run, tiny_frames_dataset, tmp_path):
    run = copy_run(finished_run, tmp_path)
    model = {**tiny_recipe(tiny_frames_dataset, run).model, "hidden_size": 64}
    for inexact in (False, True):
        with pytest.raises(DoraUserError) as refused:
            run_pretrain(tiny_recipe(tiny_frames_dataset, run, model=model, max_steps=6,
                                     resume_from_checkpoint="latest", resume_inexact=inexact))
        message = str(refused.value)
        assert "\n" not in message and "size mismatch" not in message
        assert "model.hidden_size 32 in the checkpoint, 64 now" in message and "other sizes" in message


def test_a_changed_model_key_of_the_same_shapes_is_refused_unless_resume_inexact(finished_run, tiny_frames_dataset, tmp_path):
    run = copy_run(finished_run, tmp_path)
    model = {**tiny_recipe(tiny_frames_dataset, run).model, "drop_path_rate": 0.3}
    with pytest.raises(DoraUserError, match=r"exactly: the recipe changed \(model\.drop_path_rate 0\.1 in the checkpoint, 0\.3 now\)"):
        run_pretrain(tiny_recipe(tiny_frames_dataset, run, model=model, max_steps=6, resume_from_checkpoint="latest"))
    result = run_pretrain(tiny_recipe(tiny_frames_dataset, run, model=model, max_steps=6,
                                      resume_from_checkpoint="latest", resume_inexact=True))
    assert result.steps == 6


def test_free_keys_change_and_the_resume_stays_exact(finished_run, tiny_frames_dataset, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path, keep_last=False)
    result = run_pretrain(tiny_recipe(
        tiny_frames_dataset, run, resume_from_checkpoint="latest", logging_steps=3, checkpointing_steps=5,
        checkpoints_total_limit=4, export_dir=str(tmp_path / "elsewhere"), compile=False,
    ))
    assert result.steps == 4 and result.export_dir == tmp_path / "elsewhere"
    assert differing(checkpoint_weights(run / "checkpoints" / "step_0000004"),
                     checkpoint_weights(finished_run / "checkpoints" / "step_0000004")) == []
    assert "run length changed" not in capsys.readouterr().out


def test_a_longer_run_is_said_in_one_line(finished_run, tiny_frames_dataset, tmp_path, capsys, caplog):
    run = copy_run(finished_run, tmp_path)
    with caplog.at_level(logging.WARNING, logger=RESUME_LOG):
        result = run_pretrain(tiny_recipe(tiny_frames_dataset, run, max_steps=6, resume_from_checkpoint="latest"))
    assert result.steps == 6 and not [r for r in caplog.records if r.name == RESUME_LOG]
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "run length changed" in line]
    assert "max_steps 4 in the checkpoint, 6 now" in line and "schedules follow the new length" in line


def test_other_data_order_with_resume_inexact_reads_the_epoch_afresh(finished_run, tiny_frames_dataset, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path)
    with pytest.raises(DoraUserError, match=r"seed 0 in the checkpoint, 1 now"):
        run_pretrain(tiny_recipe(tiny_frames_dataset, run, seed=1, max_steps=6, resume_from_checkpoint="latest"))
    with caplog.at_level(logging.WARNING):
        result = run_pretrain(tiny_recipe(tiny_frames_dataset, run, seed=1, max_steps=6,
                                          resume_from_checkpoint="latest", resume_inexact=True))
    assert result.steps == 6
    messages = [r.getMessage() for r in caplog.records]
    assert any("seed 0 in the checkpoint, 1 now" in m for m in messages)
    assert any("its setup changed: seed: saved 0, now 1" in m and "from its start instead" in m for m in messages)


def test_processes_are_compared_from_the_manifest(finished_run, tiny_frames_dataset, tmp_path):
    checkpoint = complete_checkpoints(finished_run)[-1]
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "any")
    with pytest.raises(DoraUserError, match=r"number of processes 1 in the checkpoint, 2 now"):
        check_resume_recipe(recipe, checkpoint, mixed_precision="no", processes=2, announce=True)
    with pytest.raises(DoraUserError, match=r"mixed_precision \"no\" in the checkpoint, \"bf16\" now"):
        check_resume_recipe(recipe, checkpoint, mixed_precision="bf16", processes=1, announce=True)


def test_an_older_recipe_is_compared_with_the_defaults_and_none_is_said(finished_run, tiny_frames_dataset, tmp_path, caplog):
    checkpoint = copy_run(finished_run, tmp_path) / "checkpoints" / "step_0000004"
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "any")
    saved = json.loads((checkpoint / "recipe.json").read_text())
    for added_later in ("method", "gradient_accumulation_steps", "reference_compat_loss"):
        del saved[added_later]
    (checkpoint / "recipe.json").write_text(json.dumps(saved))
    assert check_resume_recipe(recipe, checkpoint, mixed_precision="no", processes=1, announce=True) == []

    (checkpoint / "recipe.json").unlink()
    with caplog.at_level(logging.WARNING, logger=RESUME_LOG):
        assert check_resume_recipe(recipe, checkpoint, mixed_precision="no", processes=1, announce=True) == []
    (warning,) = [r.getMessage() for r in caplog.records if r.name == RESUME_LOG]
    assert "cannot read the recipe it was trained with (recipe.json: FileNotFoundError" in warning
    assert "cannot be compared" in warning and "\n" not in warning
