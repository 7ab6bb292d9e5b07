"""Training checkpoints: written through `accelerator.save_state`, verified on resume, last K kept.

Layout of `OUTPUT_DIR/checkpoints/step_000500/`: accelerate's files (student weights, optimiser,
grad scaler, every process's RNG states, and the run state: teacher, loss centre, step), one
`rank_R.pt` per process (its view and head generators and its clip reader position), the model
configuration, the recipe, the `COMPLETE` marker and, written last, `MANIFEST.json`: every other
file's name, size and SHA-256. A checkpoint is written under a temporary name and renamed once
every process has finished; only renamed folders holding the `COMPLETE` marker are ever resumed
or exported, and only after their files match the manifest.

SHA-256 (hashlib, no extra dependency) rather than a faster non-cryptographic hash: it runs at
about 1 GB/s, so a ViT-S/16 checkpoint (~650 MB) costs well under a second per save and per
resume, next to minutes of training between checkpoints; it catches any change, and it is the
digest the Hugging Face Hub shows for LFS files, so an uploaded checkpoint can be compared too.

With several nodes, the output folder is either shared by all of them (one file system) or one per
node (a disk each: `run_folder.prepare_output_dir` finds out, and records it as accelerate's
`save_on_each_node`). With one folder per node, every node's main process writes its own copy of
the shared files (accelerate's `save_on_each_node`), its node's `rank_R.pt` beside its processes'
RNG states, and a manifest naming the processes of every node; it verifies its own folder on
resume. A node drops old checkpoints only once every node has published the new one, so the
nodes always hold a checkpoint in common: when their newest usable ones differ (a node stopped
while publishing, or its copy is damaged) all resume from the older.

A damaged newest checkpoint is skipped for the one before it (`latest`), a damaged named one is an
error. Accelerate restores the RNG states only if it can and otherwise logs and carries on, so
they are checked here: a checkpoint whose RNG state is missing or unreadable cannot continue the
run exactly and is refused unless the recipe sets `resume_inexact: true`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from safetensors import SafetensorError
from torch import nn

from .._moved import moved_attribute
from ..errors import DoraUserError
from ..folders.checkpoint_layout import (
    COMPLETE_MARKER,
    CONFIG_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    RECIPE_FILE,
    RUN_STATE_FILE,
    checkpoint_name,
    checkpoint_root,
    checkpoint_step,
    complete_checkpoints,
    ranks_held,
    resolve_checkpoint,
    sha256_of,
)

# Names training code imports from here.
__all__ = [
    "CONFIG_FILE", "RECIPE_FILE", "RUN_STATE_FILE", "NodePlacement", "RunState", "complete_checkpoints",
    "folder_per_node", "load_rank_state", "node_placement", "resolve_checkpoint", "save_checkpoint",
]

logger = logging.getLogger(__name__)


class RunState:
    """The state shared by all processes, saved once by accelerate: teacher, loss centre, step."""

    def __init__(self, teacher: nn.Module, loss_fn: nn.Module):
        self.teacher = teacher
        self.loss_fn = loss_fn
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "loss": self.loss_fn.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.loss_fn.load_state_dict(state["loss"])
        self.step = int(state["step"])


# --- nodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePlacement:
    """Which processes run on which node: the files each node's own output folder holds."""

    node: int
    """This process's node, numbered in the order of the processes' ranks."""
    ranks_by_node: tuple[tuple[int, ...], ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        """The processes of this process's node; the first is the node's main process."""
        return self.ranks_by_node[self.node]


def node_placement(accelerator) -> NodePlacement:
    """Every process's node, from the processes' local ranks (a collective when there are several).

    Launchers number the processes of a node consecutively with local ranks 0, 1, ... (torchrun,
    hence `accelerate launch`, does); a node starts at each local rank 0.
    """
    if accelerator.num_processes == 1:
        return NodePlacement(0, ((0,),))
    local_ranks = gather_object([accelerator.local_process_index])
    nodes: list[list[int]] = []
    for rank, local in enumerate(local_ranks):
        if local == 0:
            nodes.append([])
        if not nodes or local != len(nodes[-1]):
            raise DoraUserError(
                f"cannot tell which processes share a node: local ranks by rank are {local_ranks}, not 0, 1, ... per node"
            )
        nodes[-1].append(rank)
    node = next(i for i, ranks in enumerate(nodes) if accelerator.process_index in ranks)
    return NodePlacement(node, tuple(tuple(ranks) for ranks in nodes))


def folder_per_node(accelerator) -> bool:
    """Whether each node writes its own output folder (set by `run_folder.prepare_output_dir`)."""
    return accelerator.num_processes > 1 and bool(accelerator.project_configuration.save_on_each_node)


def _on_folder_writers(accelerator, writer: bool, action: Callable[[], str], where: str = "") -> list[str | None]:
    """Run `action` on the processes that read or write a folder's shared files; every process gets
    all their answers (by rank, None for the others), or raises the first error, prefixed `where`."""
    value, error = None, None
    if writer:
        try:
            value = action()
        except DoraUserError as err:
            error = f"{where}{err}"
    results = gather_object([(value, error)]) if accelerator.num_processes > 1 else [(value, error)]
    first = next((e for _, e in results if e is not None), None)
    if first is not None:
        raise DoraUserError(first)
    return [v for v, _ in results]


# --- verification ---------------------------------------------------------------------------


def agree_on_checkpoint(accelerator, spec: str, output_dir: str | Path, *, exact: bool) -> Path:
    """The checkpoint every process resumes from, verified once per folder: by the main process, or
    with one folder per node by each node's main process in its own (see the module's docstring).

    The folder must hold the `rank_R.pt` of every process that will read it, so that a run with
    more processes (or other nodes) than the checkpoint's fails here, on every process at once.
    """
    placement = node_placement(accelerator) if folder_per_node(accelerator) else None
    if placement is None:
        writer, needed, where, mine = accelerator.is_main_process, set(range(accelerator.num_processes)), "", 0
    else:
        writer, needed, mine = accelerator.is_local_main_process, set(placement.ranks), placement.ranks[0]
        where = f"node {placement.node} (its own output folder): "

    def choose(wanted: str) -> str:
        checkpoint = resolve_checkpoint(wanted, output_dir, exact=exact)
        missing = sorted(needed - ranks_held(checkpoint))
        if missing:
            raise DoraUserError(
                f"checkpoint {checkpoint} holds no state for process(es) {', '.join(map(str, missing))}: it was "
                "saved by fewer processes, or with other processes on each node, than this run has"
            )
        return str(checkpoint)

    choices = _on_folder_writers(accelerator, writer, lambda: choose(spec), where)
    found = [Path(c) for c in choices if c is not None]
    if len({c.name for c in found}) > 1:  # only with one folder per node and `latest`
        oldest = min(found, key=checkpoint_step).name
        accelerator.print(f"the nodes' newest usable checkpoints differ ({', '.join(sorted({c.name for c in found}))}); "
                          f"every node resumes from {oldest}")
        choices = _on_folder_writers(accelerator, writer, lambda: choose(str(checkpoint_root(output_dir) / oldest)), where)
    return Path(choices[mine])


def load_checkpoint(accelerator, checkpoint: Path) -> None:
    """Load accelerate's state into the prepared objects, as one error naming the folder if it fails."""
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # noqa: BLE001 - any failure here is this folder's, and is named so
        raise DoraUserError(f"cannot load checkpoint {checkpoint}: {type(err).__name__}: {err}") from err


def load_rank_state(checkpoint: Path, rank: int) -> dict:
    path = checkpoint / f"rank_{rank}.pt"
    if not path.is_file():
        raise DoraUserError(
            f"{checkpoint} has no state for process {rank}: it was saved by fewer processes than this run uses"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for damaged files
        raise DoraUserError(f"cannot read {path}: {type(err).__name__}: {err}") from err


# --- writing ---------------------------------------------------------------------------------


def save_checkpoint(accelerator, output_dir: str | Path, step: int, rank_state: dict, config: dict, recipe: dict, keep: int) -> Path:
    """Save on every process, publish on the main one (with one folder per node: on each node's
    main one), then, once every folder has it, drop all but the newest `keep`.

    A failure to write (disk full, read-only folder) on any process stops every process with one
    line naming the path; the partial folder is removed and the earlier checkpoints are untouched,
    since old ones are dropped only after the new one is published.
    """
    root = checkpoint_root(output_dir)
    final = root / checkpoint_name(step)
    staging = root / f"{final.name}.tmp"
    placement = node_placement(accelerator) if folder_per_node(accelerator) else None
    writer = accelerator.is_local_main_process if placement is not None else accelerator.is_main_process

    def prepare() -> None:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)

    def write_own_files() -> None:
        accelerator.save_state(str(staging))  # with one folder per node, `save_on_each_node` is set
        torch.save(rank_state, staging / f"rank_{accelerator.process_index}.pt")

    def publish() -> None:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (staging / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True))
        (staging / COMPLETE_MARKER).write_text(f"step {step}\n")
        write_manifest(staging, step, accelerator.num_processes, placement)
        _replace_folder(staging, final)

    def drop_old() -> None:
        for old in complete_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    _on_all_processes(accelerator, prepare if writer else None, staging, root, writer)
    _on_all_processes(accelerator, write_own_files, staging, root, writer)
    _on_all_processes(accelerator, publish if writer else None, staging, root, writer)
    _on_all_processes(accelerator, drop_old if writer else None, staging, root, writer)
    return final


def write_manifest(folder: Path, step: int, processes: int, placement: NodePlacement | None = None) -> None:
    """Name, size and SHA-256 of every file, each flushed to disk first: a published checkpoint
    survives a power cut, so old ones can be dropped. With one folder per node (`placement`), also
    this folder's node and the processes of every node."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_of(path, flush=True)}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "processes": processes, "hash": "sha256", "files": files}
    if placement is not None:
        manifest.update(node=placement.node, ranks_by_node=[list(ranks) for ranks in placement.ranks_by_node])
    with (folder / MANIFEST_FILE).open("w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_folder(folder)


def _replace_folder(staging: Path, final: Path) -> None:
    """Rename `staging` to `final`; a checkpoint already there (same step) goes only once replaced."""
    previous = final.with_name(f"{final.name}.old")
    if previous.exists():
        shutil.rmtree(previous)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    _fsync_folder(final.parent)
    shutil.rmtree(previous, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename or new file in `folder` durable (POSIX; Windows has no folder handles)."""
    if os.name == "nt":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _on_all_processes(
    accelerator, action: Callable[[], None] | None, staging: Path, root: Path, writer: bool
) -> None:
    """Run this process's part of the save, then agree with the others on whether all succeeded.

    A process that failed alone and raised would leave the others waiting at the next collective
    forever; so every failure is shared, the partial folder removed (by the `writer` of each
    folder), and every process raises: a
    one-line `DoraUserError` for a file-system error, the error itself (or a RuntimeError naming
    the process, on the others) for anything else.
    """
    failure: tuple[bool, str] | None = None
    original: Exception | None = None
    if action is not None:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - shared below, then raised on every process
            original = err
            line = _write_failure(err, staging, root)
            failure = (True, line) if line else (False, f"process {accelerator.process_index}: {type(err).__name__}: {err}")
    failures = gather_object([failure]) if accelerator.num_processes > 1 else [failure]
    first = next((f for f in failures if f is not None), None)
    if first is None:
        return
    if writer:
        shutil.rmtree(staging, ignore_errors=True)
    file_system, line = first
    if file_system:
        raise DoraUserError(line) from original
    if original is not None:
        raise original
    raise RuntimeError(f"checkpoint {staging} not written: {line}")


def _write_failure(err: Exception, staging: Path, root: Path) -> str | None:
    """One line for an error of the file system (None if `err` is something else: a bug).

    Besides OSError: torch's zip writer reports a full disk as a RuntimeError from
    inline_container.cc, safetensors as a SafetensorError mentioning an I/O error.
    """
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, OSError):
        where = err.filename or staging
        reason = err.strerror or text
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = f"{reason} ({_free_space(root)})"
    elif isinstance(err, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text):
        where, reason = staging, f"torch.save failed ({text.strip(' .')}; {_free_space(root)})"
    elif isinstance(err, SafetensorError) and ("I/O error" in text or "os error" in text):
        where, reason = staging, f"{text} ({_free_space(root)})"
    else:
        return None
    return f"cannot write checkpoint {where}: {reason}; the earlier checkpoints are untouched"


def _free_space(root: Path) -> str:
    try:
        free = shutil.disk_usage(root if root.exists() else root.parent).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.0f} MiB free there"


def __getattr__(name: str) -> Any:
    # The layout's names live in `folders/checkpoint_layout.py` now.
    return moved_attribute(__name__, name)
