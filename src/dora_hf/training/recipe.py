"""The pretraining recipe: one dataclass, read from YAML and overridden from the command line.

Unknown keys are an error that lists the valid ones, so a typo in a recipe never silently falls
back to a default. Defaults are the reference ViT-S/16 recipe (DORA_SPEC section 6).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import DoraUserError


@dataclass
class PretrainRecipe:
    # data
    dataset: str = ""
    dataset_revision: str | None = None
    frames_per_clip: int = 8
    clip_step: int = 60
    shuffle_buffer: int = 2000
    num_workers: int = 4
    # model: DoraConfig fields (architecture, head, tracking), views: ClipViewsConfig fields
    model: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)
    # optimisation
    batch_size_per_device: int = 16
    epochs: float = 100
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    base_learning_rate: float = 5e-4
    min_learning_rate: float = 1e-5
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0
    freeze_last_layer: float = 1
    # loss
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    reference_compat_loss: bool = False
    # run
    mixed_precision: str = "bf16"
    compile: bool = False
    """`torch.compile` the student's and the teacher's backbones in place (parameter names, and so
    the EMA pairing and checkpoints, stay as they are). Pays off on GPUs; the first steps compile."""
    seed: int = 0
    output_dir: str = "outputs/dora"
    overwrite: bool = False
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 3
    resume_from_checkpoint: str | None = None
    report_to: str = "none"
    logging_steps: int = 10
    export_dir: str | None = None

    def validate(self) -> None:
        if not self.dataset:
            raise DoraUserError("recipe key 'dataset' is required: a prepared folder or a hub dataset id")
        if self.mixed_precision not in ("bf16", "fp16", "no"):
            raise DoraUserError(f"recipe key 'mixed_precision' must be bf16, fp16 or no, got {self.mixed_precision!r}")
        if not isinstance(self.compile, bool):
            raise DoraUserError(f"recipe key 'compile' must be true or false, got {self.compile!r}")
        if self.report_to not in ("none", "tensorboard", "trackio", "wandb", "all"):
            raise DoraUserError(
                f"recipe key 'report_to' must be none, tensorboard, trackio, wandb or all, got {self.report_to!r}"
            )
        for name in ("frames_per_clip", "clip_step", "batch_size_per_device", "checkpointing_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise DoraUserError(f"recipe key {name!r} must be >= 1, got {getattr(self, name)!r}")
        if self.epochs <= 0:
            raise DoraUserError(f"recipe key 'epochs' must be > 0, got {self.epochs!r}")


FIELDS = {f.name: f for f in dataclasses.fields(PretrainRecipe)}


def _unknown_key_error(key: str, where: str, valid: list[str]) -> DoraUserError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DoraUserError(f"unknown recipe key {key!r} in {where}{hint}; valid keys: {', '.join(valid)}")


def _coerce(name: str, raw: str) -> Any:
    """A command-line string to the field's type (YAML syntax, so `null`, `true`, `1e-4` work)."""
    value = yaml.safe_load(raw)
    kind = FIELDS[name].type
    if kind in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in ("str", "str | None") and value is not None and not isinstance(value, str):
        return raw
    return value


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> PretrainRecipe:
    """Read a YAML recipe, apply overrides (`model.hidden_size` style keys reach nested dicts)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DoraUserError(f"recipe file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise DoraUserError(f"recipe {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise DoraUserError(f"recipe {path} must be a mapping of keys to values")
        for key in loaded:
            if key not in FIELDS:
                raise _unknown_key_error(key, str(path), sorted(FIELDS))
        values.update(loaded)
    for key, value in (overrides or {}).items():
        top, _, sub = key.partition(".")
        if top not in FIELDS:
            raise _unknown_key_error(top, "the command line", sorted(FIELDS))
        if sub:
            if top not in ("model", "views"):
                raise DoraUserError(f"recipe key {top!r} has no sub-keys (got {key!r})")
            values[top] = {**values.get(top, {}), sub: value}
        else:
            values[key] = value
    recipe = PretrainRecipe(**values)
    for name in ("model", "views"):
        if not isinstance(getattr(recipe, name), dict):
            raise DoraUserError(f"recipe key {name!r} must be a mapping, got {getattr(recipe, name)!r}")
    return recipe


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, one `--KEY VALUE` flag per scalar recipe key, and `--set a.b=v` for the rest."""
    parser.add_argument("--config", help="YAML recipe (see training_scripts/configs/)")
    for name, spec in FIELDS.items():
        if name in ("model", "views"):
            continue
        parser.add_argument(f"--{name}", dest=f"recipe__{name}", default=None, metavar=spec.type.split(" ")[0].upper())
    parser.add_argument(
        "--set",
        dest="recipe_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key, including model.* and views.* (YAML values)",
    )


def recipe_from_args(args: argparse.Namespace) -> PretrainRecipe:
    overrides: dict[str, Any] = {}
    for name in FIELDS:
        raw = getattr(args, f"recipe__{name}", None)
        if raw is not None:
            overrides[name] = _coerce(name, raw)
    for item in args.recipe_set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise DoraUserError(f"--set expects KEY=VALUE, got {item!r}")
        top = key.partition(".")[0]
        overrides[key] = _coerce(top, raw) if "." not in key and top in FIELDS else yaml.safe_load(raw)
    recipe = load_recipe(args.config, overrides)
    recipe.validate()
    return recipe


def recipe_summary(recipe: PretrainRecipe) -> str:
    return json.dumps(dataclasses.asdict(recipe), sort_keys=True)
