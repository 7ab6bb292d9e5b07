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

A damaged newest checkpoint is skipped for the one before it (`latest`), a damaged named one is an
error. Accelerate restores the RNG states only if it can and otherwise logs and carries on, so
they are checked here: a checkpoint whose RNG state is missing or unreadable cannot continue the
run exactly and is refused unless the recipe sets `resume_inexact: true`.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, gather_object
from accelerate.utils import load as accelerate_load
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import DoraUserError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
CONFIG_FILE = "dora_config.json"
RECIPE_FILE = "recipe.json"
RUN_STATE_FILE = "custom_checkpoint_0.pkl"
MANIFEST_FILE = "MANIFEST.json"
MANIFEST_FORMAT = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.bin"
_NAME = re.compile(r"^step_(\d+)$")
_RNG_FILE = re.compile(r"^random_states_(\d+)\.pkl$")
_RANK_FILE = re.compile(r"^rank_(\d+)\.pt$")
_CHUNK = 1 << 22


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


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


# --- verification ---------------------------------------------------------------------------


@dataclass
class CheckpointProblems:
    """What is wrong with a checkpoint folder, by consequence."""

    damaged: list[str] = field(default_factory=list)
    """A file the run needs is missing, altered or unreadable: the checkpoint cannot be loaded."""
    inexact: list[str] = field(default_factory=list)
    """Only RNG states are missing or unreadable: it loads, but the run would not continue exactly."""

    def refusal(self, exact: bool) -> str | None:
        """Why this checkpoint may not be resumed (None: it may)."""
        if self.damaged:
            return "is damaged: " + "; ".join(self.damaged)
        if exact and self.inexact:
            return (
                "cannot continue the run exactly: " + "; ".join(self.inexact)
                + " (set resume_inexact: true, or pass --resume_inexact true, to resume from it anyway)"
            )
        return None


def verify_checkpoint(checkpoint: Path) -> CheckpointProblems:
    """Check every file against the manifest and that accelerate will be able to read the RNG states."""
    problems = CheckpointProblems()
    manifest_path = checkpoint / MANIFEST_FILE
    if not manifest_path.is_file():
        return _verify_without_manifest(checkpoint)
    try:
        manifest = json.loads(manifest_path.read_text())
        listed: dict[str, dict] = manifest["files"]
        processes = int(manifest["processes"])
        if not all(isinstance(e, dict) and isinstance(e.get("size"), int) and e.get("sha256") for e in listed.values()):
            raise ValueError("an entry lacks its size or sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        problems.damaged.append(f"{MANIFEST_FILE} cannot be read ({type(err).__name__}: {err})")
        return problems
    for name in sorted(set(listed) | set(_required_files(processes))):
        path = checkpoint / name
        entry = listed.get(name)
        if entry is None:
            problem = f"{name} is not in its {MANIFEST_FILE}"
        elif not path.is_file():
            problem = f"{name} is missing"
        elif path.stat().st_size != entry["size"]:
            problem = f"{name} holds {path.stat().st_size} bytes, its {MANIFEST_FILE} says {entry['size']}"
        elif _sha256(path) != entry["sha256"]:
            problem = f"{name} differs from the file written (SHA-256 mismatch)"
        else:
            problem = _rng_state_problem(path) if _RNG_FILE.match(name) else None
        if problem is not None:
            (problems.inexact if _RNG_FILE.match(name) else problems.damaged).append(problem)
    return problems


def _required_files(processes: int) -> list[str]:
    shared = [MODEL_FILE, OPTIMIZER_FILE, RUN_STATE_FILE, CONFIG_FILE, RECIPE_FILE, COMPLETE_MARKER]
    per_rank = [name for r in range(processes) for name in (f"rank_{r}.pt", f"random_states_{r}.pkl")]
    return shared + per_rank


def _verify_without_manifest(checkpoint: Path) -> CheckpointProblems:
    """A checkpoint from before manifests: the files are present and structurally whole."""
    problems = CheckpointProblems()
    processes = 1 + max((int(m.group(1)) for p in checkpoint.iterdir() if (m := _RANK_FILE.match(p.name))), default=0)
    for name in _required_files(processes):
        path = checkpoint / name
        rng = _RNG_FILE.match(name) is not None
        if not path.is_file():
            problem = f"{name} is missing"
        elif rng:
            problem = _rng_state_problem(path)
        else:
            problem = _structure_problem(path)
        if problem is not None:
            (problems.inexact if rng else problems.damaged).append(problem)
    return problems


def _structure_problem(path: Path) -> str | None:
    """Whether a file parses as what its name says; torch files are zip archives with CRCs."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt"):
                return None
        if path.suffix == ".json":
            json.loads(path.read_text())
            return None
        if path.suffix in (".bin", ".pt", ".pkl"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            return None if bad is None else f"{path.name} is corrupt (member {bad} fails its CRC)"
    except (OSError, ValueError, zipfile.BadZipFile, SafetensorError) as err:
        return f"{path.name} cannot be read ({type(err).__name__}: {err})"
    return None


def _rng_state_problem(path: Path) -> str | None:
    """Whether accelerate's `load_state` would restore these RNG states (it skips them silently if not)."""
    try:
        states = accelerate_load(path)
    except Exception as err:  # noqa: BLE001 - whatever accelerate's own load would swallow
        return f"{path.name} cannot be read ({type(err).__name__}: {err})"
    needed = ["random_state", "numpy_random_seed", "torch_manual_seed"]
    if torch.cuda.is_available():
        needed.append("torch_cuda_manual_seed")
    missing = [key for key in needed if not isinstance(states, dict) or key not in states]
    return f"{path.name} lacks {', '.join(missing)}" if missing else None


def _sha256(path: Path, flush: bool = False) -> str:
    """The file's SHA-256; `flush` also waits until its data is on disk (it is read anyway)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        if flush:
            os.fsync(handle.fileno())
    return digest.hexdigest()


@functools.cache
def _warn_once(message: str) -> None:
    """Checked at claim time and again at resume: say each finding once."""
    logger.warning(message)


def resolve_checkpoint(spec: str, output_dir: str | Path, *, exact: bool = False) -> Path:
    """`latest` or a path to a checkpoint folder, verified; `exact` also refuses missing RNG states.

    `latest` takes the newest complete checkpoint that passes, warning about each newer one it
    skips; a named checkpoint that fails is an error naming the files at fault.
    """
    if spec == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            raise DoraUserError(f"--resume_from_checkpoint latest: no complete checkpoint under {checkpoint_root(output_dir)}")
        refused: list[tuple[Path, str]] = []
        for candidate in reversed(found):
            problems = verify_checkpoint(candidate)
            reason = problems.refusal(exact)
            if reason is None:
                for skipped, why in refused:
                    _warn_once(f"checkpoint {skipped} {why}; falling back to {candidate.name}")
                _warn_inexact(candidate, problems)
                return candidate
            refused.append((candidate, reason))
        raise DoraUserError(
            f"--resume_from_checkpoint latest: no usable checkpoint under {checkpoint_root(output_dir)}: "
            + "; ".join(f"{skipped.name} {why}" for skipped, why in refused)
        )
    path = Path(spec)
    if not path.is_dir():
        raise DoraUserError(f"checkpoint folder not found: {path}")
    if not (path / COMPLETE_MARKER).is_file():
        raise DoraUserError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} marker): it was interrupted")
    problems = verify_checkpoint(path)
    reason = problems.refusal(exact)
    if reason is not None:
        raise DoraUserError(f"checkpoint {path} {reason}")
    _warn_inexact(path, problems)
    return path


def _warn_inexact(checkpoint: Path, problems: CheckpointProblems) -> None:
    if problems.inexact:
        _warn_once(
            f"checkpoint {checkpoint}: {'; '.join(problems.inexact)}: a run resumed from it continues with "
            "fresh RNG states and will not repeat an uninterrupted run exactly"
        )


def agree_on_checkpoint(accelerator, spec: str, output_dir: str | Path, *, exact: bool) -> Path:
    """The checkpoint every process resumes from: chosen and verified once, by the main process."""
    choice, error = None, None
    if accelerator.is_main_process:
        try:
            choice = str(resolve_checkpoint(spec, output_dir, exact=exact))
        except DoraUserError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        choice, error = broadcast_object_list([choice, error])
    if error is not None:
        raise DoraUserError(error)
    return Path(choice)


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
    """Save on every process, publish on the main one, then drop all but the newest `keep`.

    A failure to write (disk full, read-only folder) on any process stops every process with one
    line naming the path; the partial folder is removed and the earlier checkpoints are untouched,
    since old ones are dropped only after the new one is published.
    """
    root = checkpoint_root(output_dir)
    final = root / checkpoint_name(step)
    staging = root / f"{final.name}.tmp"

    def prepare() -> None:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)

    def write_own_files() -> None:
        accelerator.save_state(str(staging))
        torch.save(rank_state, staging / f"rank_{accelerator.process_index}.pt")

    def publish() -> None:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (staging / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True))
        (staging / COMPLETE_MARKER).write_text(f"step {step}\n")
        write_manifest(staging, step, accelerator.num_processes)
        _replace_folder(staging, final)
        for old in complete_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    main = accelerator.is_main_process
    _on_all_processes(accelerator, prepare if main else None, staging, root)
    _on_all_processes(accelerator, write_own_files, staging, root)
    _on_all_processes(accelerator, publish if main else None, staging, root)
    return final


def write_manifest(folder: Path, step: int, processes: int) -> None:
    """Name, size and SHA-256 of every file, each flushed to disk first: a published checkpoint
    survives a power cut, so old ones can be dropped."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path, flush=True)}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "processes": processes, "hash": "sha256", "files": files}
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


def _on_all_processes(accelerator, action: Callable[[], None] | None, staging: Path, root: Path) -> None:
    """Run this process's part of the save, then agree with the others on whether all succeeded.

    A process that failed alone and raised would leave the others waiting at the next collective
    forever; so every failure is shared, the partial folder removed, and every process raises: a
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
    if accelerator.is_main_process:
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
