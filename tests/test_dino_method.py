"""`method: dino`, the DINO baseline: its loss against main_dino.py's loop, its crops, its step, a run end to end."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from huggingface_hub import ModelCard
from transformers import AutoModel

from dora_hf.views.dino_views import DinoViews, DinoViewsConfig
from dora_hf.views.dora_views import IMAGENET_MEAN, IMAGENET_STD, ClipViewsConfig
from dora_hf.losses.dino_loss import DinoLoss
from dora_hf.errors import DoraUserError
from dora_hf.modeling import DoraConfig, DoraForPreTraining
from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.training.builders import TRAINING_STEPS, build_loss, build_schedules, build_student_and_teacher, build_views
from dora_hf.pretrain import pretrain
from dora_hf.training.trackers import tracker_config
from dora_hf.training.optimizer import build_optimizer
from dora_hf.training.recipe import load_recipe
from dora_hf.training.step import SelfDistillationStep
from test_pretrain import TINY_MODEL, final_weights, snapshot, tiny_recipe
from test_recipe_validation import pretrain_main, refused  # noqa: F401 - pretrain_main is a fixture

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


# --- the loss ---------------------------------------------------------------------------------


def main_dino_loss(teacher_output, student_output, center, temp, student_temp, ncrops):
    """`DINOLoss.forward` of facebookresearch/dino's main_dino.py: crops stacked crop-major."""
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / temp, dim=-1).detach().chunk(2)
    total_loss, n_loss_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue  # the same view
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


@pytest.mark.parametrize("images, num_local, dim", [(3, 0, 16), (4, 2, 32), (5, 6, 64)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_dino_loss_and_center_equal_the_reference_loop(images, num_local, dim, dtype, tol):
    gen = torch.Generator().manual_seed(images * 100 + num_local)
    teacher = torch.randn(images, 2, dim, generator=gen, dtype=dtype) * 3
    global_ = torch.randn(images, 2, dim, generator=gen, dtype=dtype, requires_grad=True)
    local = torch.randn(images, num_local, dim, generator=gen, dtype=dtype, requires_grad=True)
    center = torch.randn(1, dim, generator=gen).to(dtype)  # the buffer is float32
    loss_fn = DinoLoss(output_dim=dim, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4,
                       center_momentum=0.8)
    loss_fn.center.copy_(center)
    loss = loss_fn(teacher, global_, local, epoch=2)

    # main_dino.py's layout: every tensor crop-major, (crops * N, D); its warm-up schedule array.
    teacher_output = teacher.transpose(0, 1).reshape(-1, dim)
    student_output = torch.cat((global_.transpose(0, 1), local.transpose(0, 1))).reshape(-1, dim)
    temp = float(np.linspace(0.04, 0.07, 4)[2])
    expected = main_dino_loss(teacher_output, student_output, center, temp, 0.1, 2 + num_local)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, expected, atol=tol, rtol=tol)
    grads = torch.autograd.grad(loss, (global_, local), allow_unused=True)
    expected_grads = torch.autograd.grad(expected, (global_, local), allow_unused=True)
    for got, want in zip(grads, expected_grads):
        if want is not None and want.numel():
            torch.testing.assert_close(got, want, atol=tol, rtol=tol)

    # DINO's update_center: center * m + (sum of the teacher rows / their number) * (1 - m).
    batch_center = teacher_output.sum(dim=0, keepdim=True) / len(teacher_output)
    torch.testing.assert_close(loss_fn.center, (center * 0.8 + batch_center * 0.2).float(), atol=1e-6, rtol=1e-6)


def test_dino_loss_refuses_shapes_it_cannot_pair():
    loss_fn = DinoLoss(output_dim=8)
    with pytest.raises(ValueError, match=r"\(N, 2, D\)"):
        loss_fn(torch.zeros(4, 3, 8), torch.zeros(4, 3, 8), torch.zeros(4, 1, 8), 0)
    with pytest.raises(ValueError, match="student_local_logits"):
        loss_fn(torch.zeros(4, 2, 8), torch.zeros(4, 2, 8), torch.zeros(3, 1, 8), 0)


# --- the crops --------------------------------------------------------------------------------

TINY = ClipViewsConfig(clip_size=48, global_size=32, local_size=16, num_local_views=2)


def frames_of(batch: int = 2, frames: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, 3, 40, 56), dtype=torch.uint8, generator=generator)


def crops(config: DinoViewsConfig, frames: torch.Tensor, seed: int = 0):
    return DinoViews(config)(frames, torch.Generator().manual_seed(seed))


def unnormalised(views: torch.Tensor) -> torch.Tensor:
    return views * STD + MEAN


def test_crops_take_the_recipe_sizes_and_stay_images():
    config = DinoViewsConfig(TINY)
    assert (config.global_crops_blur_p, config.global_crops_solarize_p) == ((1.0, 0.1), (0.0, 0.2))
    assert config.views.local_blur_p == 0.5
    assert (DinoViewsConfig().views.num_local_views, DinoViewsConfig().views.local_size) == (8, 96)  # main_dino.py's
    out = crops(config, frames_of())
    assert out.global_views.shape == (6, 2, 3, 32, 32) and out.local_views.shape == (6, 2, 3, 16, 16)
    for views in (out.global_views, out.local_views):
        assert views.dtype == torch.float32
        pixels = unnormalised(views)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    no_locals = crops(DinoViewsConfig(dataclasses.replace(TINY, num_local_views=0)), frames_of())
    assert no_locals.local_views.shape == (6, 0, 3, 16, 16)
    with pytest.raises(ValueError, match="global_crops_solarize_p must be two probabilities"):
        DinoViewsConfig(global_crops_solarize_p=(0.0, 1.5))


def test_crops_are_bicubic_resized_boxes_of_each_frame_flipped_per_crop():
    """Without photometric ops, each crop is torch's antialiased bicubic resize of its box (PIL's kernel)."""
    frames = frames_of()
    no_photometry = dataclasses.replace(TINY, jitter_p=0.0, grayscale_p=0.0, local_blur_p=0.0)
    out = crops(DinoViewsConfig(no_photometry, global_crops_blur_p=(0, 0), global_crops_solarize_p=(0, 0)), frames)
    images = frames.flatten(0, 1)
    kinds = ((out.global_views, out.params.global_boxes, out.params.global_flips, 32),
             (out.local_views, out.params.local_boxes, out.params.local_flips, 16))
    for views, boxes, flips, size in kinds:
        for n in range(images.shape[0]):
            for v in range(boxes.shape[1]):
                top, left, height, width = boxes[n, v].tolist()
                box = images[n, :, top : top + height, left : left + width].float()[None] / 255
                want = F.interpolate(box, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
                want = want[0].clamp(0, 1)
                want = want.flip(-1) if flips[n, v] else want
                torch.testing.assert_close(unnormalised(views[n, v]), want, atol=2e-5, rtol=0)


def test_every_choice_is_drawn_per_image_and_per_crop():
    views = DinoViews(DinoViewsConfig(TINY))
    params = views.sample_params(400, 40, 56, torch.Generator().manual_seed(0))
    boxes = params.global_boxes
    assert (boxes[:, 0] != boxes[:, 1]).any(-1).float().mean() > 0.9  # the two global crops differ
    assert (boxes[1:, 0] != boxes[:-1, 0]).any(-1).float().mean() > 0.9  # so do the frames of a clip
    for flips in (params.global_flips, params.local_flips):  # locals are flipped too, as in DINO
        assert 0.4 < flips.float().mean() < 0.6
    assert (params.global_flips[:, 0] != params.global_flips[:, 1]).any()
    blur, solarize = params.global_color.blur, params.solarize
    assert blur[:, 0].all() and 0.05 < blur[:, 1].float().mean() < 0.15
    assert 0.4 < params.local_color.blur.float().mean() < 0.6
    assert not solarize[:, 0].any() and 0.15 < solarize[:, 1].float().mean() < 0.25
    assert 0.75 < params.global_color.jitter.float().mean() < 0.85
    assert 0.15 < params.local_color.grayscale.float().mean() < 0.25


def test_solarisation_inverts_the_bright_levels_of_the_second_global_crop_only():
    frames = frames_of()
    plain = crops(DinoViewsConfig(TINY, global_crops_solarize_p=(0.0, 0.0)), frames)
    second = crops(DinoViewsConfig(TINY, global_crops_solarize_p=(0.0, 1.0)), frames)  # the same draws, forced
    assert second.params.solarize[:, 1].all() and not second.params.solarize[:, 0].any()
    assert torch.equal(plain.global_views[:, 0], second.global_views[:, 0])
    assert torch.equal(plain.local_views, second.local_views)
    before = unnormalised(plain.global_views[:, 1])
    torch.testing.assert_close(unnormalised(second.global_views[:, 1]), torch.where(before >= 0.5, 1 - before, before),
                               atol=1e-5, rtol=0)


def test_the_same_seed_gives_the_same_crops():
    config, frames = DinoViewsConfig(TINY), frames_of()
    a, b, c = crops(config, frames, seed=3), crops(config, frames, seed=3), crops(config, frames, seed=4)
    assert torch.equal(a.global_views, b.global_views) and torch.equal(a.local_views, b.local_views)
    assert not torch.equal(a.global_views, c.global_views)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crops_on_cuda_match_the_cpu():
    config, frames = DinoViewsConfig(TINY), frames_of()
    cpu, cuda = crops(config, frames), crops(config, frames.cuda())
    assert cuda.global_views.is_cuda
    torch.testing.assert_close(cuda.global_views.cpu(), cpu.global_views, atol=1e-4, rtol=0)
    torch.testing.assert_close(cuda.local_views.cpu(), cpu.local_views, atol=1e-4, rtol=0)


# --- one step ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dora", "dino"])
def test_one_step_moves_student_teacher_and_center(method, tmp_path):
    recipe = tiny_recipe(tmp_path / "unused", tmp_path / "run", method=method, warmup_epochs=0)  # a non-zero first rate
    torch.manual_seed(0)
    config = DoraConfig(**TINY_MODEL)
    student_model, teacher = build_student_and_teacher(config)
    accelerator = Accelerator(cpu=True)
    step_class = TRAINING_STEPS[method]
    step = step_class(
        accelerator=accelerator, student=step_class.student_class(student_model), student_model=student_model,
        teacher=teacher, loss_fn=build_loss(recipe, config),
        optimizer=build_optimizer(student_model, accelerator.device),
        schedules=build_schedules(recipe, 2, 10, 3), views=build_views(recipe), steps_per_epoch=3,
    )
    logged = tracker_config(recipe, config, step.views)  # what experiment trackers get
    assert logged["method"] == method and logged["views.global_size"] == 32
    assert ("views.global_crops_solarize_p" in logged) == (method == "dino")
    seen = {}
    make_views, update_center = step.make_views, step.loss_fn.update_center
    step.make_views = lambda frames: seen.setdefault("views", make_views(frames))
    step.loss_fn.update_center = lambda logits: (seen.setdefault("teacher_logits", logits), update_center(logits))[1]
    student_before, teacher_before = snapshot(student_model), snapshot(teacher)

    out = step(frames_of(2, 2), 0)

    assert torch.isfinite(out.loss) and out.loss.requires_grad is False
    student_after = snapshot(student_model)
    changed = {k for k in student_before if not torch.equal(student_before[k], student_after[k])}
    assert any(k.startswith("dora.encoder") for k in changed)
    assert any(k.startswith("projection_head.mlp") for k in changed)
    assert "projection_head.last_layer.direction" not in changed  # frozen in epoch 0
    momentum = step.schedules.teacher_momentum(0)
    for key, value in snapshot(teacher).items():
        torch.testing.assert_close(value, momentum * teacher_before[key] + (1 - momentum) * student_after[key])
    assert all(p.grad is None for p in teacher.parameters())
    logits = seen["teacher_logits"]
    assert not logits.requires_grad
    rows = 2 * 2 * (2 if method == "dino" else 1)  # DINO: both global crops of all B*T frames
    assert logits.shape[:-1].numel() == rows
    torch.testing.assert_close(step.loss_fn.center, 0.1 * logits.reshape(rows, -1).mean(dim=0, keepdim=True))
    if method == "dino":  # the teacher (before the EMA) saw the two global crops of every frame, nothing else
        frozen = DoraForPreTraining(config).eval()
        frozen.load_state_dict(teacher_before)
        global_views = seen["views"].global_views
        assert global_views.shape[:2] == (4, 2)
        with torch.no_grad():
            torch.testing.assert_close(logits, frozen(global_views.flatten(0, 1)).logits.unflatten(0, (4, 2)))


# --- a run ------------------------------------------------------------------------------------


def run(recipe, monkeypatch=None, interrupt_at: int | None = None):
    if interrupt_at is not None:
        original = SelfDistillationStep.__call__

        def patched(self, frames, step, return_tracks=False):
            if step == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of a step
            return original(self, frames, step, return_tracks)

        monkeypatch.setattr(SelfDistillationStep, "__call__", patched)
    return pretrain(recipe, Accelerator(cpu=True))


def test_dino_run_exports_reloads_and_resumes_exactly(tiny_frames_dataset, tmp_path, monkeypatch):
    straight = run(tiny_recipe(tiny_frames_dataset, tmp_path / "straight", method="dino"))
    assert straight.steps == 4 and isinstance(straight.loss_fn, DinoLoss)
    weights = final_weights(tmp_path / "straight")
    teacher = DoraForPreTraining(DoraConfig(**TINY_MODEL)).eval()
    teacher.load_state_dict({k[len("teacher."):]: v for k, v in weights.items() if k.startswith("teacher.")})
    model = AutoModel.from_pretrained(straight.export_dir).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixels).pooler_output, teacher.dora(pixels).pooler_output)
    card = ModelCard.load(straight.export_dir / "README.md")
    assert card.data.base_recipe["method"] == "dino" and card.data.base_recipe["loss"] == "dino"
    assert "trained with [DINO]" in card.text and "| loss | DINO |" in card.text

    interrupted = run(tiny_recipe(tiny_frames_dataset, tmp_path / "resumed", method="dino", checkpointing_steps=100),
                      monkeypatch, interrupt_at=1)
    assert interrupted.interrupted and interrupted.steps == 2
    monkeypatch.undo()
    wrong_method = r"recipe key 'method' is 'dora' but checkpoint .*step_0000002 was trained with 'dino'"
    with pytest.raises(DoraUserError, match=wrong_method):
        run(tiny_recipe(tiny_frames_dataset, tmp_path / "resumed", resume_from_checkpoint="latest"))
    resumed = run(tiny_recipe(tiny_frames_dataset, tmp_path / "resumed", method="dino", checkpointing_steps=100,
                              resume_from_checkpoint="latest"))
    assert resumed.steps == 4
    assert [p.name for p in complete_checkpoints(tmp_path / "resumed")] == ["step_0000002", "step_0000004"]
    resumed_weights = final_weights(tmp_path / "resumed")
    assert weights.keys() == resumed_weights.keys()
    for key in weights:
        assert torch.equal(weights[key], resumed_weights[key]), key
    assert not torch.equal(weights["center"], torch.zeros_like(weights["center"]))


# --- the recipe key ---------------------------------------------------------------------------


def test_a_bad_method_is_one_line_naming_the_key(pretrain_main, capsys, tmp_path):  # noqa: F811
    line = refused(pretrain_main, capsys, tmp_path, "--method", "byol")
    assert line == "pretrain: error: recipe key 'method' must be dora or dino, got 'byol'"
    assert load_recipe(None, {"dataset": "d"}).method == "dora"
    with pytest.raises(DoraUserError, match="recipe key 'method' must be a string"):
        load_recipe(None, {"dataset": "d", "method": 1})
    with pytest.raises(DoraUserError, match="recipe key 'reference_compat_loss' applies to method dora only"):
        load_recipe(None, {"dataset": "d", "method": "dino", "reference_compat_loss": True}).validate()
