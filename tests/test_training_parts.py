"""Schedules, EMA, gradient clipping and parameter groups against their closed forms and plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dora_hf.training.ema import ema_update_
from dora_hf.training.gradients import cancel_last_layer_gradients_, clip_gradients_per_parameter_
from dora_hf.training.optimizer import parameter_groups, set_optimizer_hyperparameters_
from dora_hf.training.schedules import CosineSchedule, DoraSchedules


def dino_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """DINO's array-based scheduler, as published."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup_schedule, schedule))


@pytest.mark.parametrize("epochs, per_epoch, warmup", [(10, 7, 2), (5, 3, 0), (3, 4, 1), (100, 2, 10)])
def test_cosine_schedule_equals_dino_arrays(epochs, per_epoch, warmup):
    expected = dino_cosine_scheduler(2e-3, 1e-5, epochs, per_epoch, warmup)
    schedule = CosineSchedule(2e-3, 1e-5, epochs * per_epoch, warmup * per_epoch)
    got = np.array([schedule(step) for step in range(epochs * per_epoch)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_recipe_schedules():
    schedules = DoraSchedules.from_recipe(
        base_learning_rate=5e-4,
        global_batch_size=128,
        min_learning_rate=1e-5,
        warmup_epochs=10,
        weight_decay=0.04,
        weight_decay_end=0.4,
        momentum_teacher=0.996,
        epochs=100,
        steps_per_epoch=50,
    )
    assert schedules.learning_rate(0) == 0.0
    assert schedules.learning_rate(499) == pytest.approx(5e-4 * 128 / 256)
    assert schedules.learning_rate(4999) == pytest.approx(1e-5, rel=1e-3)
    assert schedules.weight_decay(0) == pytest.approx(0.04)
    mid = 2500
    assert schedules.weight_decay(mid) == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 0.5)))
    assert schedules.teacher_momentum(0) == pytest.approx(0.996)
    assert 0.99999 < schedules.teacher_momentum(4999) <= 1.0


def test_ema_update_matches_rule_by_name():
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    ema_update_(teacher, student, 0.9)
    for name, param in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        torch.testing.assert_close(param, expected)
    with pytest.raises(ValueError, match="parameters"):
        ema_update_(teacher, nn.Linear(3, 4), 0.9)


def test_per_parameter_clipping_equals_dino_loop():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 3)) for _ in range(4)] + [nn.Parameter(torch.randn(7))]
    scales = [0.01, 1.0, 10.0, 3.0, 0.5]
    for param, scale in zip(params, scales):
        param.grad = torch.randn_like(param) * scale
    expected = []
    for param in params:  # DINO's utils.clip_gradients
        grad = param.grad.clone()
        norm = grad.norm(2)
        coef = 3.0 / (norm + 1e-6)
        expected.append(grad * coef if coef < 1 else grad)
    norms = clip_gradients_per_parameter_(params, 3.0)
    for param, want in zip(params, expected):
        torch.testing.assert_close(param.grad, want)
    assert norms.shape == (5,)
    assert clip_gradients_per_parameter_([nn.Parameter(torch.zeros(2))], 3.0) is None


def test_last_layer_gradients_cancelled_only_in_frozen_epochs():
    model = nn.ModuleDict({"last_layer": nn.Linear(2, 2), "mlp": nn.Linear(2, 2)})
    for epoch, frozen in ((0.5, True), (1.0, False)):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        cancel_last_layer_gradients_(model, epoch, 1)
        assert (model["last_layer"].weight.grad is None) == frozen
        assert model["mlp"].weight.grad is not None


def test_parameter_groups_exclude_biases_and_norms_from_weight_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    groups = parameter_groups(model)
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([4, 3]), torch.Size([2, 4])]
    assert len(groups[1]["params"]) == 3 and groups[1]["weight_decay"] == 0.0
    optimizer = torch.optim.AdamW(groups)
    set_optimizer_hyperparameters_(optimizer, 0.1, 0.3)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.3, 0.0]
