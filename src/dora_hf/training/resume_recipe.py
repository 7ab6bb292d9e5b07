"""A resume continues the run its checkpoint was part of, or says how it does not.

The checkpoint keeps the recipe it was trained with (`recipe.json`, with `mixed_precision` as
resolved), the model configuration (`dora_config.json`) and, in its manifest, the number of
processes. A resume compares them with the run being started, key by key:

- The method (DoRA or DINO) must be the same: the other method's student is another network.
- Keys that set what the run computes (:data:`COMPARED`), the `model:` and `views:` sections
  and the number of processes: steps per epoch come from the data and the global batch (batch
  size x accumulation x processes), and the learning-rate, weight-decay, momentum and teacher
  temperature schedules from those steps; the data keys set which clips are read in what order.
  A difference is refused on one line naming each key with both values, unless
  `resume_inexact: true`, with which the run goes on under the new values after one warning
  line. A model whose weights take other shapes (another size) cannot be loaded at all and is
  refused even then, on that one line rather than torch's list of size mismatches.
- The run's length (:data:`LENGTH`: `max_steps`, `epochs`) may change: continuing a finished
  run for longer, or stopping one earlier, is what resuming is for. The schedules then follow
  the new length from the checkpoint's step on, which one line says.
- Everything else (:data:`FREE`) changes where output goes, how often it is logged or saved and
  how the data is fetched, not what is computed: output and export folders, logging and
  checkpointing steps, trackers, `num_workers` (the streaming reader still asks for the same
  count mid-epoch), `compile`. `dataset` and `dataset_revision` are free too: a dataset may be
  moved or copied, so the path is not what identifies it; the clip reader's state in the
  checkpoint does (its videos in order and its clip count), and refuses other data itself.

A key that the checkpoint's recipe lacks was added after it was written; the code that wrote
it behaved as the key's default, so the default is what is compared. A checkpoint with no
readable recipe cannot be compared: one line says so and the resume goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import DoraUserError
from ..folders.checkpoint_layout import CONFIG_FILE, MANIFEST_FILE, RECIPE_FILE, ranks_held
from ..modeling import DoraConfig, DoraForPreTraining
from ..views.dora_views import ClipViewsConfig
from .recipe import FIELDS, PretrainRecipe, section_fields

logger = logging.getLogger(__name__)

COMPARED = (
    # the global batch and so steps per epoch and every schedule
    "batch_size_per_device", "gradient_accumulation_steps", "steps_per_epoch",
    # the schedules and the optimisation
    "base_learning_rate", "min_learning_rate", "warmup_epochs", "weight_decay", "weight_decay_end",
    "momentum_teacher", "clip_grad", "freeze_last_layer", "mixed_precision",
    # the loss and its teacher-temperature schedule
    "teacher_temp", "warmup_teacher_temp", "warmup_teacher_temp_epochs", "student_temp", "center_momentum",
    "reference_compat_loss",
    # which clips are read, in what order
    "frames_per_clip", "clip_step", "streaming", "shuffle_buffer", "seed",
)
"""Recipe keys that must match the checkpoint's (or be accepted with `resume_inexact`)."""

LENGTH = ("max_steps", "epochs")
"""Keys that set the run's length: free to change, with a line saying the schedules follow."""

FREE = (
    "dataset", "dataset_revision", "dataset_cache_dir", "num_workers", "compile", "output_dir", "overwrite",
    "checkpointing_steps", "checkpoints_total_limit", "resume_from_checkpoint", "resume_inexact", "report_to",
    "logging_steps", "export_dir", "push_to_hub", "hub_model_id",
)
"""Keys that change neither what is computed nor the model (see the module's docstring)."""

SECTIONS = ("model", "views")
"""Compared field by field, each resolved with its config's defaults."""


@dataclass(frozen=True)
class Change:
    key: str
    saved: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.key} {_shown(self.saved)} in the checkpoint, {_shown(self.now)} now"


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (str, type(None), bool)) else str(value)


def check_resume_recipe(
    recipe: PretrainRecipe, checkpoint: Path, *, mixed_precision: str, processes: int, announce: bool
) -> list[Change]:
    """Refuse (or, with `resume_inexact`, warn about) a resume that would not continue the checkpoint's run.

    `mixed_precision` and `processes` are this run's as resolved by the accelerator. Returns the
    length changes (`max_steps`, `epochs`) after saying them when `announce` (the main process).
    """
    saved, saved_config = _read_json(checkpoint / RECIPE_FILE), _read_json(checkpoint / CONFIG_FILE)
    if isinstance(saved, str) or isinstance(saved_config, str):
        if announce:
            logger.warning(
                "checkpoint %s: cannot read the recipe it was trained with (%s), so this run's recipe cannot be "
                "compared with it; resuming as asked", checkpoint, saved if isinstance(saved, str) else saved_config
            )
        return []
    check_same_method(recipe, checkpoint)
    now = {**dataclasses.asdict(recipe), "mixed_precision": mixed_precision}
    changes = [Change(key, _saved_value(saved, key), now[key]) for key in COMPARED if _saved_value(saved, key) != now[key]]
    if saved.get("mixed_precision") is None:  # not recorded as resolved: unknown
        changes = [c for c in changes if c.key != "mixed_precision"]
    if not (now["streaming"] and _saved_value(saved, "streaming")):
        changes = [c for c in changes if c.key != "shuffle_buffer"]  # read by the streaming reader only
    saved_processes = _processes(checkpoint)
    if saved_processes is not None and saved_processes != processes:
        changes.append(Change("number of processes", saved_processes, processes))
    model = _section_changes("model", _config_values(saved_config), _config_values(recipe.model_config().to_dict()))
    changes += model
    changes += _section_changes("views", _views_values(saved.get("views", {})), _views_values(recipe.views))
    if model and not _same_shapes(saved_config, recipe.model_config()):
        raise DoraUserError(
            f"cannot resume from checkpoint {checkpoint}: its model has other sizes ({'; '.join(map(str, model))}), "
            "so its weights do not fit this model, even with --resume_inexact; resume with the checkpoint's model "
            "settings, or start a new run in another --output_dir"
        )
    if changes and not recipe.resume_inexact:
        raise DoraUserError(
            f"cannot resume from checkpoint {checkpoint} exactly: the recipe changed ({'; '.join(map(str, changes))}), "
            "which changes the steps per epoch, the schedules, the data read or the model; resume with the "
            "checkpoint's values, or pass --resume_inexact true to go on with the new ones"
        )
    if changes and announce:
        logger.warning(
            "resuming from checkpoint %s with a changed recipe (resume_inexact): %s; the run goes on with the new "
            "values and will not repeat an uninterrupted run of either recipe", checkpoint, "; ".join(map(str, changes))
        )
    length = [Change(key, _saved_value(saved, key), now[key]) for key in LENGTH if _saved_value(saved, key) != now[key]]
    if length and announce:
        print(
            f"run length changed ({'; '.join(map(str, length))}): the learning-rate, weight-decay, momentum and "
            "teacher-temperature schedules follow the new length from the checkpoint's step on",
            flush=True,
        )
    return length


def check_same_method(recipe: PretrainRecipe, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint of the other method (runs from before `method` were DoRA),
    even with `resume_inexact`: the other method's student is another network."""
    saved = _read_json(checkpoint / RECIPE_FILE)
    if isinstance(saved, str):
        return  # unreadable: `check_resume_recipe` says it could not compare
    trained = _saved_value(saved, "method")
    if trained != recipe.method:
        raise DoraUserError(
            f"recipe key 'method' is {recipe.method!r} but checkpoint {checkpoint} was trained with {trained!r}; "
            "resume it with the same method"
        )


def _read_json(path: Path) -> dict[str, Any] | str:
    """A checkpoint's JSON mapping, or why it cannot be read."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return f"{path.name}: {type(err).__name__}: {err}"
    return value if isinstance(value, dict) else f"{path.name} is not a mapping"


def _saved_value(saved: dict[str, Any], key: str) -> Any:
    """The checkpoint's value of `key`; a key it lacks did not exist yet, so its default applied."""
    if key in saved:
        return saved[key]
    default = FIELDS[key].default
    return None if default is dataclasses.MISSING else default


def _processes(checkpoint: Path) -> int | None:
    """How many processes wrote the checkpoint: its manifest says; before manifests, its `rank_R.pt` files."""
    try:
        return int(json.loads((checkpoint / MANIFEST_FILE).read_text())["processes"])
    except FileNotFoundError:
        held = ranks_held(checkpoint)
        return max(held) + 1 if held else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _section_changes(section: str, saved: dict[str, Any], now: dict[str, Any]) -> list[Change]:
    return [Change(f"{section}.{key}", saved.get(key), now.get(key)) for key in sorted(now) if saved.get(key) != now.get(key)]


def _json(value: Any) -> Any:
    """Tuples as lists, as the checkpoint's JSON holds them."""
    return json.loads(json.dumps(value))


def _config_values(config: dict[str, Any]) -> dict[str, Any]:
    """A model configuration's recipe fields, resolved with `DoraConfig`'s defaults."""
    resolved = DoraConfig.from_dict(config).to_dict()
    return _json({key: resolved.get(key) for key in section_fields("model")})


def _views_values(views: dict[str, Any]) -> dict[str, Any]:
    """A `views:` section resolved with `ClipViewsConfig`'s defaults (as given if it no longer parses)."""
    try:
        return _json(dataclasses.asdict(ClipViewsConfig.from_dict(dict(views))))
    except (TypeError, ValueError):
        return _json(dict(views))


def _same_shapes(saved_config: dict[str, Any], config: DoraConfig) -> bool:
    """Whether the checkpoint's model and this one have the same weights by name and shape.

    Both are built (only when a `model:` key changed): a few hundred MB for a ViT-B at most, once;
    torch's random state is put back, so the build draws nothing from the run's.
    """
    with torch.random.fork_rng(devices=[]):
        shapes = [
            {name: tuple(value.shape) for name, value in DoraForPreTraining(c).state_dict().items()}
            for c in (DoraConfig.from_dict(saved_config), config)
        ]
    return shapes[0] == shapes[1]
