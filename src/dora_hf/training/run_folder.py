"""The run folder: claimed for one run at a time, continued or replaced only when asked, shared by
every node or one per node (what a checkpoint may be continued with: `resume_recipe.py`)."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from ..errors import DoraUserError
from ..folders.checkpoint_layout import (
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
from .checkpoints import NodePlacement, node_placement
from .recipe import PretrainRecipe

NODE_TOKEN_PREFIX = ".dora-hf-nodes-"
"""A file the main process leaves in the run folder for a moment, to see which nodes share it."""


def prepare_output_dir(recipe: PretrainRecipe, accelerator: Accelerator) -> Path:
    """Claim the run folder for this run and make it ready; check the export folder can be written.

    The main process claims the folder (see `dora_hf.folders.output_folder`) and keeps the claim until the
    run has exported (or until its process ends, if it stops earlier), so a second run, or a second
    resume, into the same folder fails here. A used folder is continued only with `resume_from_checkpoint` and replaced
    only with `overwrite` and only if it is a run folder; the export folder is checked now, under
    the rule the final export follows, so a run never trains only to fail at its end. Every process
    raises the main process's error, so none is left waiting. With several nodes, it then finds
    out whether they share the folder (see `_one_folder_per_node`).
    """
    output_dir = Path(recipe.output_dir)
    placement = node_placement(accelerator)
    several_nodes = len(placement.ranks_by_node) > 1
    error, token = None, None
    if accelerator.is_main_process:
        try:
            _claim_run_folder(recipe, output_dir)
            if several_nodes:
                token = f"{NODE_TOKEN_PREFIX}{secrets.token_hex(8)}"
                with write_errors_reported(output_dir, "output folder"):
                    (output_dir / token).touch()
        except DoraUserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        error, token = broadcast_object_list([error, token])
    if error is not None:
        raise DoraUserError(error)
    accelerator.project_configuration.save_on_each_node = several_nodes and _one_folder_per_node(
        recipe, accelerator, placement, output_dir, token
    )
    accelerator.wait_for_everyone()
    return output_dir


def _one_folder_per_node(
    recipe: PretrainRecipe, accelerator: Accelerator, placement: NodePlacement, output_dir: Path, token: str
) -> bool:
    """Whether every node has its own `output_dir` (a disk each) rather than one shared by all.

    The main process has left the file `token` in its folder: every node's main process looks for
    it in its own. Seen from every node: one shared folder. Seen from none but the first: a folder
    per node, and each other node's main process claims its own as the main process claimed the
    first (a folder shared by only some nodes is refused). Accelerate's `save_on_each_node` then
    records the answer (see `checkpoints.py`). Should a shared folder look unshared (a network file
    system's stale cache), the other nodes' claims fail: the main process holds it.
    """
    seen = accelerator.is_local_main_process and (output_dir / token).is_file()
    seen_by = gather_object([seen])
    if accelerator.is_main_process:
        (output_dir / token).unlink(missing_ok=True)
    nodes_seeing = [seen_by[ranks[0]] for ranks in placement.ranks_by_node]
    if all(nodes_seeing):
        return False
    if any(nodes_seeing[1:]):
        sharing = [str(n) for n, s in enumerate(nodes_seeing) if s]
        apart = [str(n) for n, s in enumerate(nodes_seeing) if not s]
        raise DoraUserError(
            f"output folder {output_dir} is shared by nodes {', '.join(sharing)} but not by nodes {', '.join(apart)}: "
            "give every node the same shared folder, or every node a disk of its own"
        )
    error = None
    if accelerator.is_local_main_process and not accelerator.is_main_process:
        try:
            _claim_run_folder(recipe, output_dir)
        except DoraUserError as err:
            error = f"node {placement.node} (its own output folder): {err}"
    first = next((e for e in gather_object([error]) if e is not None), None)
    if first is not None:
        raise DoraUserError(first)
    accelerator.print(f"output folder {output_dir}: one per node (not shared); each node keeps its own processes' checkpoint files")
    return True


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

