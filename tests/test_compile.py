"""`torch.compile`: the backbones trace as whole graphs, and the `compile` recipe key compiles in place.

Dynamo's `eager` backend traces exactly as inductor would (graph breaks included) without
generating kernels, so these checks take seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from dora_hf.errors import DoraUserError
from dora_hf.modeling import DoraForPreTraining
from dora_hf.pretrain import pretrain
from dora_tiny import tiny_config
from test_pretrain import tiny_recipe


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_backbone_traces_as_one_graph_at_both_resolutions_with_patch_masks_and_tracker_features() -> None:
    torch.manual_seed(0)
    model = DoraForPreTraining(tiny_config(drop_path_rate=0.0)).eval()
    size = model.config.image_size
    global_views, local_views = torch.randn(3, 3, size, size), torch.randn(5, 3, size // 2, size // 2)
    # fullgraph=True raises on any graph break instead of silently splitting the graph.
    backbone = torch.compile(model.dora, fullgraph=True, backend="eager")
    full = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        got_global = backbone(pixel_values=global_views).pooler_output
        got_local = backbone(pixel_values=local_views, interpolate_pos_encoding=True).pooler_output
        got_teacher = full(global_views, output_tracker_features=True)
        patches = (size // model.config.patch_size) ** 2
        patch_mask = torch.rand(3, model.config.num_objects, patches) > 0.5  # the student's masked views
        got_masked = backbone(pixel_values=global_views, patch_mask=patch_mask).pooler_output
        want_masked = model.dora(pixel_values=global_views, patch_mask=patch_mask).pooler_output
        want_global = model.dora(pixel_values=global_views).pooler_output
        want_local = model.dora(pixel_values=local_views, interpolate_pos_encoding=True).pooler_output
        want_teacher = model(global_views, output_tracker_features=True)
    torch.testing.assert_close(got_global, want_global)
    torch.testing.assert_close(got_local, want_local)
    torch.testing.assert_close(got_teacher.logits, want_teacher.logits)
    torch.testing.assert_close(got_masked, want_masked)
    for name in ("queries", "keys", "cls_attention", "patch_features"):
        torch.testing.assert_close(
            getattr(got_teacher.tracker_features, name), getattr(want_teacher.tracker_features, name)
        )


def test_stochastic_depth_traces_as_one_graph_in_training() -> None:
    torch.manual_seed(0)
    model = DoraForPreTraining(tiny_config(drop_path_rate=0.2)).train()
    size = model.config.image_size
    images = torch.randn(4, 3, size, size)
    backbone = torch.compile(model.dora, fullgraph=True, backend="eager")
    torch.manual_seed(1)
    got = backbone(pixel_values=images).pooler_output
    torch.manual_seed(1)
    want = model.dora(pixel_values=images).pooler_output
    torch.testing.assert_close(got, want)
    got.sum().backward()  # the backward of the traced graph runs
    assert model.dora.embeddings.patch_embeddings.projection.weight.grad is not None


def test_compile_key_compiles_both_backbones_in_place_and_trains_the_same(
    tiny_frames_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[torch.nn.Module] = []
    original = torch.nn.Module.compile

    def compile_eagerly(self, *args, **kwargs):
        compiled.append(self)
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    plain = pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "plain", freeze_last_layer=0), Accelerator(cpu=True))
    assert compiled == []
    with_compile = pretrain(
        tiny_recipe(tiny_frames_dataset, tmp_path / "compiled", freeze_last_layer=0, compile=True), Accelerator(cpu=True)
    )

    assert len(compiled) == 2 and all(type(m).__name__ == "DoraModel" for m in compiled)
    assert compiled[1] is with_compile.teacher.dora
    # In place: the parameter names (EMA pairing, checkpoints, export) are unchanged.
    assert list(with_compile.teacher.state_dict()) == list(plain.teacher.state_dict())
    for name, value in plain.teacher.state_dict().items():
        torch.testing.assert_close(with_compile.teacher.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(with_compile.loss_fn.center, plain.loss_fn.center, rtol=1e-5, atol=1e-6)


def test_compile_key_must_be_a_boolean(tiny_frames_dataset: Path, tmp_path: Path) -> None:
    # YAML's yes/no spellings are booleans; anything else is refused before any work.
    assert tiny_recipe(tiny_frames_dataset, tmp_path / "run", compile="yes").compile is True
    with pytest.raises(DoraUserError, match="recipe key 'compile' must be true or false, got 'maybe'"):
        pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "run", compile="maybe"), Accelerator(cpu=True))
    assert not (tmp_path / "run").exists()
