"""iBOT's optimisation of the segmentation heads: AdamW, layer-wise lr decay, poly schedule with warm-up.

- Layer decay: bytedance/ibot, `evaluation/semantic_segmentation/mmcv_custom/
  layer_decay_optimizer_constructor.py` (from BEiT), with `num_layers=12, layer_decay_rate=0.9`
  in the UperNet config. `get_num_layer_for_vit` gives the [CLS] token, the position embeddings
  and the patch embedding layer 0, block `i` (0-based) layer `i + 1`, and everything else (the
  final LayerNorm, the neck, the heads) layer `depth + 1`; a parameter's lr is the base lr times
  `rate ** (depth + 1 - layer)`. No weight decay for 1-D parameters and biases. (The constructor
  also exempts parameters named exactly `pos_embed` or `cls_token`, but it sees them as
  `backbone.pos_embed` and `backbone.cls_token`, so they are decayed; so they are here.)
- Without layer decay (the linear head), mmcv's `DefaultOptimizerConstructor` puts every
  parameter in one group with the weight decay.
- Schedule: mmcv's `PolyLrUpdaterHook` with linear warm-up (`lr_config` of both configs):
  before iteration `t` of `T`, each group's lr is `(base - min_lr) * (1 - t / T) ** power + min_lr`,
  times `1 - (1 - t / W) * (1 - warmup_ratio)` while `t < W`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .protocol import SegmentationRecipe

_BLOCK = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.")


def vit_layer_id(name: str, depth: int) -> int:
    """iBOT's `get_num_layer_for_vit` for this package's parameter names (a UperNet's `backbone.*`)."""
    if name.startswith("backbone.embeddings."):
        return 0
    block = _BLOCK.match(name)
    if block:
        return int(block.group(1)) + 1
    return depth + 1


def layer_decay_groups(model: nn.Module, recipe: SegmentationRecipe, depth: int) -> list[dict]:
    """Parameter groups of `LayerDecayOptimizerConstructor`: one per (layer, decay or not)."""
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = not (parameter.ndim == 1 or name.endswith(".bias"))
        layer = vit_layer_id(name, depth)
        key = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            scale = recipe.layer_decay ** (depth + 1 - layer)
            groups[key] = {
                "params": [], "param_names": [], "group_name": key, "lr_scale": scale,
                "lr": scale * recipe.learning_rate, "weight_decay": recipe.weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(parameter)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def default_groups(model: nn.Module, recipe: SegmentationRecipe) -> list[dict]:
    """`DefaultOptimizerConstructor`: every trainable parameter in one group, all decayed."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return [{"params": parameters, "lr": recipe.learning_rate, "weight_decay": recipe.weight_decay}]


def build_optimizer(model: nn.Module, recipe: SegmentationRecipe, depth: int) -> torch.optim.AdamW:
    """AdamW over the recipe's groups; each group remembers its base lr as `initial_lr`."""
    groups = default_groups(model, recipe) if recipe.head == "linear" else layer_decay_groups(model, recipe, depth)
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate, betas=recipe.betas, weight_decay=recipe.weight_decay)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def poly_learning_rate(base: float, iteration: int, recipe: SegmentationRecipe) -> float:
    """The lr of a group whose base lr is `base`, before iteration `iteration` (0-based)."""
    progress = min(iteration / recipe.iterations, 1.0)
    regular = (base - recipe.min_learning_rate) * (1.0 - progress) ** recipe.poly_power + recipe.min_learning_rate
    if iteration < recipe.warmup_iterations:
        k = (1.0 - iteration / recipe.warmup_iterations) * (1.0 - recipe.warmup_ratio)
        return regular * (1.0 - k)
    return regular


def set_learning_rates(optimizer: torch.optim.Optimizer, iteration: int, recipe: SegmentationRecipe) -> None:
    for group in optimizer.param_groups:
        group["lr"] = poly_learning_rate(group["initial_lr"], iteration, recipe)
