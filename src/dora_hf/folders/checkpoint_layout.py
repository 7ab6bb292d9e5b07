"""The layout of a training checkpoint and its checks: read by training (resume) and by
publishing (export), so that neither imports the other.

Layout of `OUTPUT_DIR/checkpoints/step_000500/`: accelerate's files (student weights, optimiser,
grad scaler, every process's RNG states, and the run state: teacher, loss centre, step), one
`rank_R.pt` per process (its view and head generators and its clip reader position), the model
configuration, the recipe, the `COMPLETE` marker and, written last, `MANIFEST.json`: every other
file's name, size and SHA-256 (`training/checkpoints.py` writes them). Only renamed folders holding
the `COMPLETE` marker are ever resumed or exported, and only after their files match the manifest.

When the nodes of a multi-node run each have their own output folder (a disk per node, no shared
file system), each node's folder holds the shared files and the `rank_R.pt` and RNG states of
that node's processes only; its manifest says so (`node`, and `ranks_by_node`: the processes of
every node), and verification asks for the files of those processes alone.

A damaged newest checkpoint is skipped for the one before it (`latest`), a damaged named one is an
error. Accelerate restores the RNG states only if it can and otherwise logs and carries on, so
they are checked here: a checkpoint whose RNG state is missing or unreadable cannot continue the
run exactly and is refused unless the recipe sets `resume_inexact: true`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import load as accelerate_load
from safetensors import SafetensorError, safe_open

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
        ranks = _manifest_ranks(manifest)
        if not all(isinstance(e, dict) and isinstance(e.get("size"), int) and e.get("sha256") for e in listed.values()):
            raise ValueError("an entry lacks its size or sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        problems.damaged.append(f"{MANIFEST_FILE} cannot be read ({type(err).__name__}: {err})")
        return problems
    for name in sorted(set(listed) | set(_required_files(ranks))):
        path = checkpoint / name
        entry = listed.get(name)
        if entry is None:
            problem = f"{name} is not in its {MANIFEST_FILE}"
        elif not path.is_file():
            problem = f"{name} is missing"
        elif path.stat().st_size != entry["size"]:
            problem = f"{name} holds {path.stat().st_size} bytes, its {MANIFEST_FILE} says {entry['size']}"
        elif sha256_of(path) != entry["sha256"]:
            problem = f"{name} differs from the file written (SHA-256 mismatch)"
        else:
            problem = _rng_state_problem(path) if _RNG_FILE.match(name) else None
        if problem is not None:
            (problems.inexact if _RNG_FILE.match(name) else problems.damaged).append(problem)
    return problems


def _manifest_ranks(manifest: dict) -> list[int]:
    """The processes whose own files the folder holds: every process of the run, or with one
    folder per node (`node` and `ranks_by_node` in the manifest) the processes of its node."""
    processes = int(manifest["processes"])
    if "ranks_by_node" not in manifest:
        return list(range(processes))
    by_node, node = manifest["ranks_by_node"], manifest["node"]
    if not (isinstance(by_node, list) and all(isinstance(r, list) and all(isinstance(i, int) for i in r) for r in by_node)):
        raise ValueError("ranks_by_node is not a list of lists of process numbers")
    if sorted(i for r in by_node for i in r) != list(range(processes)):
        raise ValueError(f"ranks_by_node does not name each of the {processes} processes once")
    if not isinstance(node, int) or not 0 <= node < len(by_node):
        raise ValueError(f"node {node!r} is not one of the {len(by_node)} nodes")
    return by_node[node]


def _required_files(ranks: list[int]) -> list[str]:
    shared = [MODEL_FILE, OPTIMIZER_FILE, RUN_STATE_FILE, CONFIG_FILE, RECIPE_FILE, COMPLETE_MARKER]
    per_rank = [name for r in ranks for name in (f"rank_{r}.pt", f"random_states_{r}.pkl")]
    return shared + per_rank


def ranks_held(checkpoint: Path) -> set[int]:
    """The processes whose `rank_R.pt` and RNG states this (verified) checkpoint folder holds."""
    try:
        return set(_manifest_ranks(json.loads((checkpoint / MANIFEST_FILE).read_text())))
    except FileNotFoundError:
        return set(_rank_files(checkpoint))


def _rank_files(checkpoint: Path) -> list[int]:
    return [int(m.group(1)) for p in checkpoint.iterdir() if (m := _RANK_FILE.match(p.name))]


def checkpoint_step(checkpoint: Path) -> int:
    """The step in a checkpoint folder's name (`step_0000500`: 500)."""
    match = _NAME.match(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint.name} is not a checkpoint name")
    return int(match.group(1))


def _verify_without_manifest(checkpoint: Path) -> CheckpointProblems:
    """A checkpoint from before manifests: the files are present and structurally whole."""
    problems = CheckpointProblems()
    processes = 1 + max(_rank_files(checkpoint), default=0)
    for name in _required_files(list(range(processes))):
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


def sha256_of(path: Path, flush: bool = False) -> str:
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


def _not_a_checkpoint(path: Path) -> str:
    """Why a folder without the COMPLETE marker is not a checkpoint, as far as its contents tell."""
    names = {p.name for p in path.iterdir()} if path.is_dir() else set()
    if not names:
        return "is an empty folder, not a training checkpoint"
    if "prepare_info.json" in names:
        return "holds a prepared dataset (prepare_info.json), not a training checkpoint"
    if "config.json" in names and (names & {"model.safetensors", "pytorch_model.bin"}):
        return "holds a saved model, not a training checkpoint"
    if names & {RUN_STATE_FILE, MODEL_FILE, MANIFEST_FILE}:
        return f"is not a complete checkpoint (no {COMPLETE_MARKER} marker): it was interrupted while being written"
    return f"is not a training checkpoint (none of its files is a checkpoint's: {', '.join(sorted(names)[:4])})"


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
        raise DoraUserError(f"{path} {_not_a_checkpoint(path)}")
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
