"""Pretraining on CPU with a tiny model: the step, exact resume, Ctrl-C, NaN, output folder, export, 2 ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from huggingface_hub import ModelCard
from transformers import AutoModel

from dora_hf.cli import main as cli_main
from dora_hf.errors import DoraUserError
from dora_hf.evaluation.results import make_results, write_results
from dora_hf.losses.dora_loss import DoraLoss
from dora_hf.modeling import DoraConfig, DoraForPreTraining
from dora_hf.training import builders
from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.training.loop import TrainingDiverged
from dora_hf.training.builders import build_views
from dora_hf.pretrain import pretrain
from dora_hf.training.optimizer import build_optimizer
from dora_hf.training.recipe import load_recipe
from dora_hf.training.schedules import DoraSchedules
from dora_hf.training.step import DoraTrainingStep, MultiViewStudent

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8,
    image_size=32, head_out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16, num_objects=3,
)
TINY_VIEWS = dict(clip_size=48, global_size=32, local_size=16, num_local_views=2)


def tiny_recipe(dataset: Path, output_dir: Path, **overrides):
    values = {
        "dataset": str(dataset), "output_dir": str(output_dir), "frames_per_clip": 2, "clip_step": 6,
        "batch_size_per_device": 2, "num_workers": 0, "shuffle_buffer": 8, "mixed_precision": "no",
        "max_steps": 4, "steps_per_epoch": 3, "warmup_epochs": 1, "base_learning_rate": 0.05,
        "logging_steps": 1, "checkpointing_steps": 2, "checkpoints_total_limit": 5, "freeze_last_layer": 1,
        "model": TINY_MODEL, "views": TINY_VIEWS,
    }
    values.update(overrides)
    return load_recipe(None, values)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def tiny_training_step(recipe, freeze_last_layer: float = 1, **model_overrides):
    """A DoraTrainingStep on the tiny model with the same start as the student (seed 0)."""
    torch.manual_seed(0)
    config = DoraConfig(**{**TINY_MODEL, **model_overrides})
    student_model, teacher = DoraForPreTraining(config).train(), DoraForPreTraining(config).eval()
    teacher.load_state_dict(student_model.state_dict())
    teacher.requires_grad_(False)
    accelerator = Accelerator(cpu=True)
    schedules = DoraSchedules.from_recipe(
        base_learning_rate=0.05, global_batch_size=2, min_learning_rate=1e-5, warmup_epochs=0, weight_decay=0.04,
        weight_decay_end=0.4, momentum_teacher=0.9, epochs=10, steps_per_epoch=3,
    )
    step = DoraTrainingStep(
        accelerator=accelerator, student=MultiViewStudent(student_model), student_model=student_model,
        teacher=teacher, loss_fn=DoraLoss(output_dim=TINY_MODEL["head_out_dim"]),
        optimizer=build_optimizer(student_model, accelerator.device), schedules=schedules, views=build_views(recipe),
        steps_per_epoch=3, freeze_last_layer=freeze_last_layer,
    )
    return step, student_model, teacher, schedules


def test_one_step_updates_student_and_moves_teacher_by_ema(tiny_frames_dataset, tmp_path):
    step, student_model, teacher, schedules = tiny_training_step(tiny_recipe(tiny_frames_dataset, tmp_path / "run"))
    frames = torch.randint(0, 256, (2, 2, 3, 40, 56), dtype=torch.uint8)
    student_before, teacher_before = snapshot(student_model), snapshot(teacher)
    out = step(frames, 0)
    assert torch.isfinite(out.loss) and out.learning_rate == pytest.approx(schedules.learning_rate(0))
    student_after = snapshot(student_model)
    changed = [k for k in student_before if not torch.equal(student_before[k], student_after[k])]
    assert any(k.startswith("dora.encoder") for k in changed) and any(k.startswith("projection_head.mlp") for k in changed)
    # epoch 0: the last layer is frozen
    assert torch.equal(student_before["projection_head.last_layer.direction"], student_after["projection_head.last_layer.direction"])
    momentum = schedules.teacher_momentum(0)
    for key, value in snapshot(teacher).items():
        expected = momentum * teacher_before[key] + (1 - momentum) * student_after[key]
        torch.testing.assert_close(value, expected)
    assert not any(p.grad is not None for p in teacher.parameters())



class PixelMaskedStudent(torch.nn.Module):
    """The student as the step ran it before masking tokens: the `k*B*T` masked images in pixels.

    It reads the tracking head's own `masked_views` (captured by a hook), not the patch masks the
    step passes, so the comparison covers the whole path from the tracks to the logits.
    """

    def __init__(self, model: DoraForPreTraining, teacher: DoraForPreTraining):
        super().__init__()
        self.model = model
        self.tracks = None
        teacher.tracking_head.register_forward_hook(lambda _module, _args, out: setattr(self, "tracks", out))

    def forward(self, global_views, view_patch_masks, local_views):
        masked_views = self.tracks.masked_views
        features = torch.cat(
            (
                self.model.dora(pixel_values=masked_views.flatten(0, 2)).pooler_output,
                self.model.dora(pixel_values=local_views.flatten(0, 2), interpolate_pos_encoding=True).pooler_output,
            )
        )
        logits = self.model.projection_head(features)
        masked, local = logits[: masked_views.shape[:3].numel()], logits[masked_views.shape[:3].numel() :]
        return masked.unflatten(0, masked_views.shape[:3]), local.unflatten(0, local_views.shape[:3])


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], hidden_size: int) -> None:
    """Equal to float rounding, except the attention's key bias, which is only close.

    Softmax ignores a shift shared by all keys, so the key bias has a zero gradient up to
    rounding, and AdamW, which divides each gradient by its own size, turns that rounding into
    updates of up to the learning rate (4e-4 here; about 1e-5 seen). Tolerate a quarter of it.
    """
    assert ours.keys() == theirs.keys()
    for name in ours:
        a, b = ours[name], theirs[name]
        if name.endswith("attention.qkv.bias"):
            keys = slice(hidden_size, 2 * hidden_size)
            torch.testing.assert_close(a[keys], b[keys], atol=1e-4, rtol=0, msg=lambda m, n=name: f"{n} (k): {m}")
            a, b = (torch.cat((x[:hidden_size], x[2 * hidden_size :])) for x in (a, b))
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("mask_mode", ["keep", "remove"])
def test_step_on_masked_patch_tokens_equals_step_on_masked_pixels(tiny_frames_dataset, tmp_path, mask_mode):
    recipe = tiny_recipe(tiny_frames_dataset, tmp_path / "run")
    overrides = dict(drop_path_rate=0.0, mask_mode=mask_mode)  # no random drops, to compare exactly
    tokens, tokens_student, tokens_teacher, _ = tiny_training_step(recipe, **overrides)
    pixels, pixels_student, pixels_teacher, _ = tiny_training_step(recipe, **overrides)
    pixels.student = PixelMaskedStudent(pixels_student, pixels_teacher)
    start = snapshot(tokens_student)
    frames = torch.randint(0, 256, (2, 2, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    for step in range(2):
        token_out = tokens(frames, step)
        pixel_out = pixels(frames, step, return_tracks=True)  # the teacher's pixel masks, for the student
        assert token_out.tracks is None and 0 < pixel_out.tracks.view_patch_masks.float().mean() < 1
        torch.testing.assert_close(token_out.loss, pixel_out.loss, atol=1e-6, rtol=1e-5)
        for ours, theirs in ((tokens_student, pixels_student), (tokens_teacher, pixels_teacher)):
            assert_same_weights(snapshot(ours), snapshot(theirs), hidden_size=TINY_MODEL["hidden_size"])
    patch_weight = "dora.embeddings.patch_embeddings.projection.weight"
    assert not torch.equal(start[patch_weight], snapshot(tokens_student)[patch_weight])


def run_pretrain(recipe, monkeypatch=None, interrupt_at: int | None = None, nan_from: int | None = None):
    if interrupt_at is not None or nan_from is not None:
        original = DoraTrainingStep.__call__

        def patched(self, frames, step, return_tracks=False):
            if interrupt_at is not None and step == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of a step
            out = original(self, frames, step, return_tracks)
            if nan_from is not None and step >= nan_from:
                out.loss = out.loss * float("nan")
            return out

        monkeypatch.setattr(DoraTrainingStep, "__call__", patched)
    return pretrain(recipe, Accelerator(cpu=True))


def final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = complete_checkpoints(output_dir)[-1]
    state = torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=True)
    from safetensors.torch import load_file

    student = load_file(checkpoint / "model.safetensors")
    return {**{f"teacher.{k}": v for k, v in state["teacher"].items()}, **{f"student.{k}": v for k, v in student.items()},
            "center": state["loss"]["center"]}


@pytest.mark.parametrize("streaming", [False, True], ids=["random-access", "streaming"])
def test_interrupt_and_resume_equals_uninterrupted_run(tiny_frames_dataset, tmp_path, monkeypatch, streaming):
    straight = run_pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "straight", streaming=streaming))
    assert straight.steps == 4 and not straight.interrupted

    interrupted = run_pretrain(
        tiny_recipe(tiny_frames_dataset, tmp_path / "resumed", checkpointing_steps=100, streaming=streaming),
        monkeypatch, interrupt_at=1,
    )
    assert interrupted.interrupted and interrupted.steps == 2
    assert [p.name for p in complete_checkpoints(tmp_path / "resumed")] == ["step_0000002"]
    monkeypatch.undo()
    resumed = run_pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "resumed", checkpointing_steps=100,
                                       resume_from_checkpoint="latest", streaming=streaming))
    assert resumed.steps == 4

    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and training did something: the teacher moved away from its initialisation
    assert not torch.equal(a["center"], torch.zeros_like(a["center"]))


def test_export_reloads_with_automodel_and_matches_the_trained_teacher(tiny_frames_dataset, tmp_path):
    result = run_pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "run", export_dir=str(tmp_path / "export")))
    assert result.export_dir == tmp_path / "export"
    files = {p.name for p in result.export_dir.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "modeling_dora.py"} <= files
    teacher_state = final_weights(tmp_path / "run")
    teacher = DoraForPreTraining(DoraConfig(**TINY_MODEL)).eval()
    teacher.load_state_dict({k[len("teacher."):]: v for k, v in teacher_state.items() if k.startswith("teacher.")})
    model = AutoModel.from_pretrained(result.export_dir).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixels).pooler_output, teacher.dora(pixels).pooler_output)
    card = (result.export_dir / "README.md").read_text()
    assert "library_name: transformers" in card and "| steps | 4 |" in card

    # on demand, with evaluation results in the card's model-index
    results = make_results(
        task="knn", task_type="image-classification", task_name="k-NN", model=str(result.export_dir),
        model_revision="local", dataset={"name": "toy-colours", "split": "validation"},
        metrics=[{"type": "accuracy", "name": "k-NN top-1 (k=20)", "value": 0.8125}], settings={}, details={},
    )
    results_file = write_results(results, tmp_path / "knn.json")
    assert cli_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export"),
                     "--eval-results", str(results_file)]) == 2  # exists: refused without --overwrite
    assert cli_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--overwrite",
                     "--eval-results", str(results_file)]) == 0
    card = ModelCard.load(result.export_dir / "README.md")
    (entry,) = card.data.eval_results
    assert (entry.metric_value, entry.dataset_name, entry.task_type) == (0.8125, "toy-colours", "image-classification")
    assert cli_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--eval-results",
                     str(tmp_path / "missing.json")]) == 2
    assert not (tmp_path / "x").exists()


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_frames_dataset, tmp_path, monkeypatch):
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite.*step_0000002"):
        run_pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "run", max_steps=6), monkeypatch, nan_from=2)
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step_0000002"]
    assert not (tmp_path / "run" / "export").exists()


def test_existing_output_folder_is_refused_unless_overwrite_or_resume(tiny_frames_dataset, tmp_path):
    out = tmp_path / "used"
    first = pretrain(tiny_recipe(tiny_frames_dataset, out, max_steps=2), Accelerator(cpu=True))
    assert [p.name for p in complete_checkpoints(out)] == ["step_0000002"] and first.steps == 2
    with pytest.raises(DoraUserError, match="already exists: .*holds a training run.*--resume_from_checkpoint latest"):
        pretrain(tiny_recipe(tiny_frames_dataset, out), Accelerator(cpu=True))
    assert [p.name for p in complete_checkpoints(out)] == ["step_0000002"]
    result = pretrain(tiny_recipe(tiny_frames_dataset, out, overwrite=True, max_steps=1), Accelerator(cpu=True))
    assert result.steps == 1 and [p.name for p in complete_checkpoints(out)] == ["step_0000001"]
    with pytest.raises(DoraUserError, match="no complete checkpoint"):
        pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "empty", resume_from_checkpoint="latest"), Accelerator(cpu=True))


def test_a_folder_not_written_by_a_run_is_never_deleted(tiny_frames_dataset, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    for overwrite in (False, True):
        with pytest.raises(DoraUserError, match=r"has no \.dora-hf\.json.*even with --overwrite"):
            pretrain(tiny_recipe(tiny_frames_dataset, out, overwrite=overwrite), Accelerator(cpu=True))
    pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "other", max_steps=2), Accelerator(cpu=True))
    (checkpoint,) = complete_checkpoints(tmp_path / "other")
    with pytest.raises(DoraUserError, match="holds files but no run"):  # resuming a run elsewhere into it
        pretrain(tiny_recipe(tiny_frames_dataset, out, resume_from_checkpoint=str(checkpoint)), Accelerator(cpu=True))
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(DoraUserError, match=r"unknown recipe key 'batch_size'.*did you mean 'batch_size_per_device'"):
        load_recipe(None, {"batch_size": 3})
    path = tmp_path / "r.yaml"
    path.write_text("dataset: x\nlerning_rate: 0.1\n")
    with pytest.raises(DoraUserError, match=r"lerning_rate.*r.yaml.*valid keys"):
        load_recipe(path)
    with pytest.raises(DoraUserError, match="recipe key 'model'.*num_objects"):
        builders.build_model_config(load_recipe(None, {"model": {"num_objects": 9}}))
    with pytest.raises(DoraUserError, match="views"):
        build_views(load_recipe(None, {"views": {"global_sise": 3}}))


def test_missing_tracker_package_is_a_clear_error(tiny_frames_dataset, tmp_path, monkeypatch):
    # accelerate lists the trackers whose packages are installed; wandb is not among them here.
    monkeypatch.setattr(builders, "get_available_trackers", lambda: ["tensorboard"])
    with pytest.raises(DoraUserError, match="report_to wandb needs the wandb package: pip install wandb"):
        builders.make_accelerator(tiny_recipe(tiny_frames_dataset, tmp_path / "run", report_to="wandb"), cpu=True)
    with pytest.raises(DoraUserError, match="report_to comet_ml needs the comet_ml package"):
        builders.make_accelerator(tiny_recipe(tiny_frames_dataset, tmp_path / "run", report_to="comet_ml"), cpu=True)


def test_shipped_recipes_load():
    for name in ("vits16_wt_venice", "vits16_wt_all", "demo_cpu"):
        recipe = load_recipe(REPO_ROOT / "training_scripts" / "configs" / f"{name}.yaml")
        recipe.validate()
        builders.build_model_config(recipe)
        build_views(recipe)
    venice = load_recipe(REPO_ROOT / "training_scripts" / "configs" / "vits16_wt_venice.yaml")
    assert (venice.batch_size_per_device, venice.epochs, venice.frames_per_clip, venice.clip_step) == (16, 100, 8, 60)


TWO_RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from accelerate import Accelerator
    from dora_hf.pretrain import pretrain
    from dora_hf.training import data_loading
    from dora_hf.training.recipe import load_recipe

    recipe = load_recipe(None, json.loads(sys.argv[1]))
    seen = []
    collate = data_loading.collate_clips
    def recording_collate(samples):
        seen.extend(int(s["clip"]) for s in samples)  # clip numbers: several share a kept start
        return collate(samples)
    data_loading.collate_clips = recording_collate
    accelerator = Accelerator(cpu=True)
    result = pretrain(recipe, accelerator)
    torch.save(
        {"rank": accelerator.process_index, "world": accelerator.num_processes, "seen": seen,
         "center": result.loss_fn.center, "teacher": result.teacher.state_dict()},
        sys.argv[2] + f"/rank_{accelerator.process_index}.pt",
    )
    """
)


@pytest.mark.slow
def test_two_cpu_processes_share_centre_and_teacher_and_split_the_data(tiny_frames_dataset, tmp_path):
    recipe = {
        "dataset": str(tiny_frames_dataset), "output_dir": str(tmp_path / "run"), "frames_per_clip": 2,
        "clip_step": 6, "batch_size_per_device": 2, "num_workers": 0, "shuffle_buffer": 8,
        "mixed_precision": "no", "max_steps": 3, "steps_per_epoch": 3, "logging_steps": 1,
        "checkpointing_steps": 100, "model": TINY_MODEL, "views": TINY_VIEWS,
    }
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANK_SCRIPT)
    (tmp_path / "out").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
         str(script), json.dumps(recipe), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(tmp_path / "out" / f"rank_{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 6
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"]), "ranks saw the same clips"
    assert torch.equal(ranks[0]["center"], ranks[1]["center"])
    assert not torch.equal(ranks[0]["center"], torch.zeros_like(ranks[0]["center"]))
    for key, value in ranks[0]["teacher"].items():
        assert torch.equal(value, ranks[1]["teacher"][key]), key
