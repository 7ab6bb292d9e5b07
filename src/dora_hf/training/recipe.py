"""The pretraining recipe: one dataclass, read from YAML and overridden from the command line.

Unknown keys are an error that lists the valid ones, so a typo in a recipe never silently falls
back to a default; that holds for the `model:` and `views:` sections too, checked against the
fields of `DoraConfig` and `ClipViewsConfig`. Every value is converted to its field's type when
the recipe is built (`5e-4` in YAML and `--base_learning_rate 1e-4` are numbers), and
:meth:`PretrainRecipe.validate` checks ranges, so a wrong value fails at start on one line that
names the key. Defaults are the reference ViT-S/16 recipe (DORA_SPEC section 6).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import json
import math
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml
from accelerate.utils import LoggerType

from ..dataset.combined import dataset_sources, open_dataset_set
from ..errors import DoraUserError
from ..modeling import DoraConfig
from ..views.dora_views import ClipViewsConfig


class RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the scalars of YAML 1.2's core schema.

    PyYAML follows YAML 1.1, where `5e-4` (no dot) is a string and `no`, `on`, `off` are booleans;
    in a recipe `5e-4` must be a number and `mixed_precision: no` the string "no". A key given twice
    in one mapping is an error naming it and both lines (PyYAML would keep the last silently).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
RecipeLoader.add_implicit_resolver(  # after the int resolver, which keeps `16` an int
    _FLOAT_TAG,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """A recipe file or a command-line value, read with :class:`RecipeLoader`."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader


@dataclass(frozen=True)
class Bounds:
    """The range a numeric recipe key must lie in; `None` ends are open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """Exclude `low` itself (`> low` rather than `>= low`)."""

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


POSITIVE = Bounds(0, low_open=True)
NON_NEGATIVE = Bounds(0)
AT_LEAST_ONE = Bounds(1)
FRACTION = Bounds(0, 1)


@dataclass
class PretrainRecipe:
    method: str = "dora"
    """`dora`, or `dino`: the DINO baseline (Caron et al. 2021) on the same frames, each frame of
    each clip one image with DINO's two global and `views.num_local_views` local crops at the
    sizes of `views:`; the optimisation, checkpoints and export are the same."""
    # data
    dataset: str | list[str] = ""
    """A folder written by `prepare-data` or a hub dataset id; or several, read as one (a YAML list,
    `--dataset A B C`): the parts of a split preparation (`prepare-data --part I/N`), or any datasets
    with the same frame settings and no video in two of them (`dora_hf.dataset.combined`). One
    dataset is kept as a string."""
    dataset_revision: str | None = None
    frames_per_clip: int = 8
    clip_step: int = 60
    streaming: bool = False
    """Read a hub dataset without downloading it (row groups over readers, a shuffle buffer).
    Default: random access from a memory-mapped copy, uniform over the whole dataset every epoch."""
    dataset_cache_dir: str | None = None
    """Where `datasets` keeps the memory-mapped copy (default: its cache, HF_DATASETS_CACHE)."""
    shuffle_buffer: int = 2000
    """Clips mixed by the streaming reader (streaming mode only)."""
    num_workers: int = 4
    # model: DoraConfig fields (architecture, head, tracking), views: ClipViewsConfig fields
    model: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)
    # optimisation
    batch_size_per_device: int = 16
    gradient_accumulation_steps: int = 1
    """Micro-batches of `batch_size_per_device` clips per optimiser step (the global batch, and so
    the learning rate, counts them all); the centre and the EMA move once per optimiser step."""
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
    mixed_precision: str | None = None
    """bf16, fp16 or no; unset, the accelerate config's (`accelerate launch --mixed_precision`)."""
    compile: bool = False
    """`torch.compile` the student's and the teacher's backbones in place (parameter names, and so
    the EMA pairing and checkpoints, stay as they are). Pays off on GPUs; the first steps compile."""
    seed: int = 0
    output_dir: str = "outputs/dora"
    overwrite: bool = False
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 3
    resume_from_checkpoint: str | None = None
    resume_inexact: bool = False
    """Resume from a checkpoint whose RNG states are missing or unreadable, or with a recipe that
    changes what the checkpoint's run computed (the batch, the schedules, the data read, the model:
    `resume_recipe.py`), with a warning; the run then cannot repeat an uninterrupted one exactly (by
    default such a resume is refused)."""
    report_to: str = "none"
    logging_steps: int = 10
    export_dir: str | None = None
    push_to_hub: bool = False
    """Push the final export to the Hub model repo `hub_model_id` (checked before training starts)."""
    hub_model_id: str | None = None

    def __post_init__(self) -> None:
        """Give every key its field's type (a one-line error naming the key otherwise)."""
        for name, kind in FIELD_TYPES.items():
            setattr(self, name, typed(name, getattr(self, name), kind))
        for section in SECTIONS:
            values = getattr(self, section)
            check_section_keys(section, values, "the recipe")
            schema = section_fields(section)
            setattr(self, section, {key: typed(f"{section}.{key}", v, schema[key]) for key, v in values.items()})

    def validate(self) -> None:
        """Check what types alone cannot: the dataset is given, values in range, the model and views buildable."""
        if not self.dataset:
            raise DoraUserError("recipe key 'dataset' is required: a prepared folder or a hub dataset id")
        if isinstance(self.dataset, list):
            # Several datasets are checked against each other now, from their prepare_info.json alone,
            # so that a missing part or a mismatch stops the run before its folder is written.
            try:
                open_dataset_set(dataset_sources(self.dataset), self.dataset_revision)
            except DoraUserError as err:
                raise DoraUserError(f"recipe key 'dataset': {err}") from None
        for name, allowed in CHOICES.items():
            if getattr(self, name) is not None and getattr(self, name) not in allowed:
                listed = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
                raise DoraUserError(f"recipe key {name!r} must be {listed}, got {getattr(self, name)!r}")
        for name, bounds in BOUNDS.items():
            value = getattr(self, name)
            if value is not None and value not in bounds:
                raise DoraUserError(f"recipe key {name!r} must be {bounds.describe()}, got {value!r}")
        if self.method == "dino" and self.reference_compat_loss:
            raise DoraUserError("recipe key 'reference_compat_loss' applies to method dora only; DINO has one loss")
        self.model_config()
        self.views_config()

    def model_config(self) -> DoraConfig:
        """The `model:` section as a `DoraConfig` (which checks the architecture's own constraints)."""
        try:
            return DoraConfig(**self.model)
        except (TypeError, ValueError) as err:
            raise DoraUserError(f"recipe key 'model': {err}") from err

    def views_config(self) -> ClipViewsConfig:
        """The `views:` section as a `ClipViewsConfig` (which checks sizes and probabilities)."""
        try:
            return ClipViewsConfig.from_dict(self.views)
        except (TypeError, ValueError) as err:
            raise DoraUserError(f"recipe key 'views': {err}") from err

    @property
    def export_path(self) -> Path:
        """Where the final export goes: `export_dir`, or `output_dir/export` by default."""
        return Path(self.export_dir) if self.export_dir else Path(self.output_dir) / "export"

    @property
    def may_replace_export(self) -> bool:
        """An earlier export is replaced with `overwrite`; the run's own `output_dir/export` always is."""
        own = Path(os.path.abspath(Path(self.output_dir) / "export"))
        return self.overwrite or Path(os.path.abspath(self.export_path)) == own


FIELDS = {f.name: f for f in dataclasses.fields(PretrainRecipe)}
FIELD_TYPES: dict[str, Any] = {name: get_type_hints(PretrainRecipe)[name] for name in FIELDS}
SECTIONS = ("model", "views")
"""Keys holding a mapping of `DoraConfig` / `ClipViewsConfig` fields."""

CHOICES: dict[str, tuple[str, ...]] = {
    "method": ("dora", "dino"),
    "mixed_precision": ("bf16", "fp16", "no"),
    "report_to": ("none", "all", *sorted(t.value for t in LoggerType if t.value != "all")),
}
BOUNDS: dict[str, Bounds] = {
    "frames_per_clip": AT_LEAST_ONE,
    "clip_step": AT_LEAST_ONE,
    "shuffle_buffer": NON_NEGATIVE,
    "num_workers": NON_NEGATIVE,
    "batch_size_per_device": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE,
    "epochs": POSITIVE,
    "steps_per_epoch": AT_LEAST_ONE,
    "max_steps": AT_LEAST_ONE,
    "base_learning_rate": POSITIVE,
    "min_learning_rate": NON_NEGATIVE,
    "warmup_epochs": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "weight_decay_end": NON_NEGATIVE,
    "momentum_teacher": FRACTION,
    "clip_grad": NON_NEGATIVE,
    "freeze_last_layer": NON_NEGATIVE,
    "teacher_temp": POSITIVE,
    "warmup_teacher_temp": POSITIVE,
    "warmup_teacher_temp_epochs": NON_NEGATIVE,
    "student_temp": POSITIVE,
    "center_momentum": FRACTION,
    "checkpointing_steps": AT_LEAST_ONE,
    "checkpoints_total_limit": NON_NEGATIVE,
    "logging_steps": AT_LEAST_ONE,
}
"""Ranges of the numeric keys; a key not listed takes any value of its type."""

_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


@functools.cache
def section_fields(section: str) -> dict[str, Any]:
    """The keys a `model:` or `views:` section may hold, with their types."""
    if section == "model":
        hints = get_type_hints(DoraConfig.__init__)
        parameters = inspect.signature(DoraConfig.__init__).parameters.values()
        return {p.name: hints.get(p.name, Any) for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
    hints = get_type_hints(ClipViewsConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ClipViewsConfig)}


def check_section_keys(section: str, values: Any, where: str) -> None:
    """Refuse a `model:`/`views:` section that is not a mapping or has a key its config lacks."""
    if not isinstance(values, dict):
        raise DoraUserError(f"recipe key {section!r} must be a mapping, got {values!r}")
    valid = sorted(section_fields(section))
    for key in values:
        if key not in valid:
            raise _unknown_key_error(f"{section}.{key}", where, [f"{section}.{name}" for name in valid])


def typed(key: str, value: Any, kind: Any) -> Any:
    """`value` as type `kind`: bool, int, float, str, a tuple of numbers, a dict, or one of them or None.

    Numbers may be given as strings in any spelling Python reads (`5e-4`, `1_000`) and an int key
    takes a whole float (`1e3`); anything else is an error naming `key`.
    """
    if get_origin(kind) in (Union, types.UnionType):
        options = [a for a in get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(get_args(kind)):
            return None
        if options == [str, list[str]]:
            return _text_or_texts(key, value)
        (kind,) = options
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise _type_error(key, "true or false", value)
    if kind is int:
        number = _number(value)
        if number is None or not float(number).is_integer():
            raise _type_error(key, "a whole number", value)
        return int(number)
    if kind is float:
        number = _number(value)
        if number is None:
            raise _type_error(key, "a number", value)
        return number
    if kind is str:
        if not isinstance(value, str):
            raise _type_error(key, "a string", value)
        return value
    if get_origin(kind) is tuple:
        items = get_args(kind)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise _type_error(key, f"a list of {len(items)} numbers", value)
        return tuple(typed(f"{key}[{i}]", item, item_kind) for i, (item, item_kind) in enumerate(zip(value, items)))
    if get_origin(kind) is dict and not isinstance(value, dict):
        raise _type_error(key, "a mapping", value)
    return value


def _text_or_texts(key: str, value: Any) -> str | list[str]:
    """A string, or a list of two or more strings (a list of one is that string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) and item for item in value):
        return value[0] if len(value) == 1 else list(value)
    raise _type_error(key, "a string or a list of strings", value)


def _number(value: Any) -> int | float | None:
    """A finite int or float from a number or a numeric string; None for anything else (booleans included)."""
    if isinstance(value, str):
        for parse in (int, float):
            try:
                value = parse(value.strip())
                break
            except ValueError:
                continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _type_error(key: str, expected: str, value: Any) -> DoraUserError:
    return DoraUserError(f"recipe key {key!r} must be {expected}, got {value!r}")


def _unknown_key_error(key: str, where: str, valid: list[str]) -> DoraUserError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DoraUserError(f"unknown recipe key {key!r} in {where}{hint}; valid keys: {', '.join(valid)}")


def _coerce(name: str, raw: str | list[str]) -> Any:
    """A command-line string to a value (YAML syntax, so `null`, `true`, `1e-4` work); text for text keys.

    `--dataset A B C` gives a list: the values are taken as text, as a dataset is a path or a hub id.
    """
    if isinstance(raw, list):
        return raw
    value = parse_yaml(raw)
    text_key = FIELD_TYPES[name] in (str, str | None) or name == "dataset"
    if text_key and value is not None and not isinstance(value, (str, list)):
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
            loaded = parse_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise DoraUserError(f"recipe {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise DoraUserError(f"recipe {path} must be a mapping of keys to values")
        for key in loaded:
            if key not in FIELDS:
                raise _unknown_key_error(key, str(path), sorted(FIELDS))
            if key in SECTIONS:
                check_section_keys(key, loaded[key], str(path))
        values.update(loaded)
    for key, value in (overrides or {}).items():
        top, _, sub = key.partition(".")
        if top not in FIELDS:
            raise _unknown_key_error(top, "the command line", sorted(FIELDS))
        if sub:
            if top not in SECTIONS:
                raise DoraUserError(f"recipe key {top!r} has no sub-keys (got {key!r})")
            check_section_keys(top, {sub: value}, "the command line")
            values[top] = {**values.get(top, {}), sub: value}
        else:
            if top in SECTIONS:
                check_section_keys(top, value, "the command line")
            values[key] = value
    return PretrainRecipe(**values)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`, one `--KEY VALUE` flag per scalar recipe key, and `--set a.b=v` for the rest."""
    parser.add_argument("--config", help="YAML recipe (see training_scripts/configs/)")
    for name, spec in FIELDS.items():
        if name in ("model", "views"):
            continue
        if name == "dataset":  # one prepared folder or hub id, or several read as one
            parser.add_argument("--dataset", dest="recipe__dataset", default=None, nargs="+", metavar="DATASET")
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
        overrides[key] = _coerce(top, raw) if "." not in key and top in FIELDS else parse_yaml(raw)
    recipe = load_recipe(args.config, overrides)
    recipe.validate()
    return recipe


def recipe_summary(recipe: PretrainRecipe) -> str:
    return json.dumps(dataclasses.asdict(recipe), sort_keys=True)
