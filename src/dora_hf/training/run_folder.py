"""The run folder: claimed for one run at a time, continued or replaced only when asked, and a
checkpoint continued only by the method that wrote it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..errors import DoraUserError
from ..folders.checkpoint_layout import (
    RECIPE_FILE,
    complete_checkpoints,
    resolve_checkpoint,
)
from ..folders.output_folder import (
    MARKER_FILE,
    check_replaceable,
    claim_folder,
    marker_kind,
    write_errors_reported,
    write_marker,
)
from .recipe import PretrainRecipe


def prepare_output_dir(recipe: PretrainRecipe, accelerator: Accelerator) -> Path:
    """Claim the run folder for this run and make it ready; check the export folder can be written.

    The main process claims the folder (see `dora_hf.folders.output_folder`) and keeps the claim until the
    run has exported (or until its process ends, if it stops earlier), so a second run, or a second
    resume, into the same folder fails here. A used folder is continued only with `resume_from_checkpoint` and replaced
    only with `overwrite` and only if it is a run folder; the export folder is checked now, under
    the rule the final export follows, so a run never trains only to fail at its end. Every process
    raises the main process's error, so none is left waiting.
    """
    output_dir = Path(recipe.output_dir)
    error = None
    if accelerator.is_main_process:
        try:
            _claim_run_folder(recipe, output_dir)
        except DoraUserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        error = broadcast_object_list([error])[0]
    if error is not None:
        raise DoraUserError(error)
    accelerator.wait_for_everyone()
    return output_dir


def _claim_run_folder(recipe: PretrainRecipe, output_dir: Path) -> None:
    """The main process's part of `prepare_output_dir`; the claim is released again on any error."""
    claim = claim_folder(output_dir, "pretrain")
    try:
        check_replaceable(recipe.export_path, "model", overwrite=recipe.may_replace_export, keep=(output_dir,))
        used = output_dir.is_dir() and any(output_dir.iterdir())
        if recipe.resume_from_checkpoint:
            resolve_checkpoint(recipe.resume_from_checkpoint, output_dir, exact=not recipe.resume_inexact)  # fails before the setup
            if used and marker_kind(output_dir) != "run" and not complete_checkpoints(output_dir):
                raise DoraUserError(
                    f"output folder {output_dir} holds files but no run (no checkpoints, no {MARKER_FILE}); "
                    "refusing to train into it: choose another --output_dir"
                )
        elif used:
            hint = "pass --resume_from_checkpoint latest to continue it or --overwrite to replace it"
            check_replaceable(output_dir, "run", overwrite=recipe.overwrite, hint=hint)
            with write_errors_reported(output_dir, "output folder"):
                shutil.rmtree(output_dir)
        with write_errors_reported(output_dir, "output folder"):
            output_dir.mkdir(parents=True, exist_ok=True)
        if marker_kind(output_dir) != "run":
            write_marker(output_dir, "run", "pretrain")
    except BaseException:
        claim.release()
        raise


def check_same_method(recipe: PretrainRecipe, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint of the other method (runs from before `method` were DoRA)."""
    try:
        trained = json.loads((checkpoint / RECIPE_FILE).read_text()).get("method", "dora")
    except (OSError, ValueError, AttributeError) as err:
        raise DoraUserError(f"cannot read the recipe of checkpoint {checkpoint}: {err}") from err
    if trained != recipe.method:
        raise DoraUserError(
            f"recipe key 'method' is {recipe.method!r} but checkpoint {checkpoint} was trained with {trained!r}; "
            "resume it with the same method"
        )
