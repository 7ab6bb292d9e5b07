"""The folders dora-hf writes: a marker proving a folder is ours, an exclusive claim, one replace rule.

Every folder the project creates (a training run, a model folder from `export` or
`convert-reference`, a prepared dataset) holds :data:`MARKER_FILE`, a small JSON record of what
wrote it. A folder is only ever deleted or replaced when it carries the marker of the same kind;
anything else is refused, `--overwrite` or not (:func:`check_replaceable`).

A process *claims* an output folder before it looks at or writes it (:func:`claim_folder`): an
exclusive `flock` on a lock file beside the folder, ``.NAME.lock`` in its parent. The kernel drops
the lock when the process ends, kill -9 included, so a crash leaves no stale claim; a second
process that wants the folder meanwhile fails at once, naming the holder's pid. The lock lives
beside the folder rather than in it because a staged output replaces the whole folder in one
rename and an overwritten run deletes it, and the claim must hold across both.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Literal

from ..errors import DoraUserError

MARKER_FILE = ".dora-hf.json"
"""Written into every folder dora-hf creates; its `kind` says what the folder holds."""

Kind = Literal["run", "model", "dataset"]
KIND_NAMES: dict[str, str] = {"run": "a training run", "model": "a model", "dataset": "a prepared dataset"}


WRITE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})
"""OS errors that mean "this folder cannot be written here" (read-only, no permission, disk full):
the user's to fix, so they are reported as one line rather than a traceback."""


class FolderInUse(DoraUserError):
    """Another live process holds the claim on the folder."""


def write_failure(err: BaseException, folder: Path) -> str | None:
    """``'read-only file system (PATH)'`` when `err` is a write failure (:data:`WRITE_ERRNOS`) at or
    beside `folder` (in its parent, where the lock file and staging folders live); else None, so
    that an error reading something elsewhere (an input file) is not mistaken for one."""
    if not isinstance(err, OSError) or err.errno not in WRITE_ERRNOS:
        return None
    filename = os.fsdecode(err.filename) if err.filename is not None else None
    if filename is not None:
        path = Path(os.path.abspath(filename))
        parents = {folder.parent, folder.parent.resolve()}  # the lock file lies in the resolved parent
        if not parents & {path, *path.parents}:
            return None
    reason = os.strerror(err.errno).lower()
    return f"{reason} ({filename})" if filename is not None and Path(filename) != folder else reason


@contextmanager
def write_errors_reported(folder: Path, what: str) -> Iterator[None]:
    """Turn a write failure at `folder` (see :func:`write_failure`) into one :class:`DoraUserError` line."""
    try:
        yield
    except OSError as err:
        reason = write_failure(err, folder)
        if reason is None:
            raise
        raise DoraUserError(f"cannot write {what} {folder}: {reason}") from err


def write_marker(folder: Path, kind: Kind, command: str) -> None:
    """Record in `folder` that dora-hf `command` wrote it and what it holds."""
    try:
        version = metadata.version("dora-hf")
    except metadata.PackageNotFoundError:
        version = "unknown"
    record = {
        "written_by": "dora-hf",
        "version": version,
        "kind": kind,
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with write_errors_reported(folder, "output folder"):
        (folder / MARKER_FILE).write_text(json.dumps(record, indent=2) + "\n")


def marker_kind(folder: Path) -> str | None:
    """The kind recorded in `folder`'s marker; None when it has none (or an unreadable one)."""
    try:
        record = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    kind = record.get("kind") if isinstance(record, dict) else None
    return kind if kind in KIND_NAMES else None


def check_replaceable(
    folder: Path,
    kind: Kind,
    *,
    overwrite: bool,
    hint: str = "pass --overwrite to replace it",
    keep: tuple[Path, ...] = (),
) -> None:
    """The one rule for replacing an output folder: raise unless dora-hf may put `kind` at `folder`.

    Allowed: nothing there; or, with `overwrite`, an empty folder or one whose marker says it
    holds `kind`. Never: a file, a link, a folder without our marker or with another kind's, or a
    folder that is or contains one of `keep` (what the caller reads from, e.g. the checkpoint
    being exported). `hint` is the advice when only `overwrite` is missing.
    """
    folder = Path(os.path.abspath(folder))
    for path in keep:
        path = Path(os.path.abspath(path))
        if path == folder or folder in path.parents:
            raise DoraUserError(
                f"refusing to write {KIND_NAMES[kind]} to {folder}: that would replace {path}, which this command uses"
            )
    if not folder.exists() and not folder.is_symlink():
        _check_writable(folder)
        return
    if folder.is_symlink() or not folder.is_dir():
        raise DoraUserError(f"{folder} exists and is not a folder; refusing to replace it")
    if not any(folder.iterdir()):
        if not overwrite:
            raise DoraUserError(f"output folder already exists: {folder} ({hint})")
        _check_writable(folder)
        return
    found = marker_kind(folder)
    if found is None:
        raise DoraUserError(
            f"{folder} has no {MARKER_FILE}, so nothing says dora-hf wrote it; refusing to replace it even with "
            "--overwrite: remove it yourself or choose another folder"
        )
    if found != kind:
        raise DoraUserError(
            f"{folder} holds {KIND_NAMES[found]}, not {KIND_NAMES[kind]}; refusing to replace it even with "
            "--overwrite: choose another folder"
        )
    if not overwrite:
        raise DoraUserError(f"output folder already exists: {folder} holds {KIND_NAMES[kind]} ({hint})")
    _check_writable(folder)


def _check_writable(folder: Path) -> None:
    """Raise unless `folder` can be created or replaced: its nearest existing parent must be writable.

    Checked with the rule, so a run whose export folder lies on a read-only disk fails at its start
    rather than after training. (A full disk cannot be foreseen; see `staged_folder`.)
    """
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if os.access(parent, os.W_OK | os.X_OK):
        return
    read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    reason = os.strerror(errno.EROFS if read_only else errno.EACCES).lower()
    raise DoraUserError(f"cannot write output folder {folder}: {reason} ({parent})")


def replace_folder(staging: Path, final: Path) -> None:
    """Rename the finished `staging` to `final`; an old `final` is set aside first, removed after.

    At every moment `final` is either the old folder or the new one, never a half-deleted one.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class FolderClaim:
    """This process's exclusive claim on an output folder; :meth:`release` (or exiting a `with`) ends it."""

    def __init__(self, folder: Path, lock_path: Path, fd: int) -> None:
        self.folder = folder
        self.lock_path = lock_path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see :func:`claim_folder`)."""
        if self._fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
            _HELD.pop(self.lock_path, None)

    def __enter__(self) -> FolderClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[Path, FolderClaim] = {}
"""Claims this process holds, by lock file: a folder is claimed at most once per process."""


def lock_path_for(folder: str | Path) -> Path:
    """The lock file of `folder`: ``.NAME.lock`` in its parent (symbolic links in the parent resolved)."""
    folder = Path(os.path.abspath(folder))
    return folder.parent.resolve() / f".{folder.name}.lock"


def claim_folder(folder: str | Path, command: str) -> FolderClaim:
    """Claim `folder` for this process, or raise :class:`FolderInUse` naming the process holding it.

    The claim is held until released or until the process ends. Claiming a folder this process
    already holds returns that claim. The lock file is removed on release; a process that opened
    it just before then finds it unlinked once it gets the lock, and tries again on a fresh one.
    """
    folder = Path(os.path.abspath(folder))
    lock_path = lock_path_for(folder)
    if lock_path in _HELD:
        return _HELD[lock_path]
    with write_errors_reported(folder, "output folder"):
        return _claim(folder, lock_path, command)


def _claim(folder: Path, lock_path: Path, command: str) -> FolderClaim:
    """:func:`claim_folder`'s work: lock `lock_path` and record this process in it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderInUse(f"output folder {folder} is in use by another run ({holder}); wait for it to end") from None
        except BaseException:
            os.close(fd)
            raise
        if os.fstat(fd).st_nlink == 0:  # released and removed between our open and our lock
            os.close(fd)
            continue
        break
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command}).encode())
    except BaseException:  # e.g. a full disk: give the claim up as release() does
        lock_path.unlink(missing_ok=True)
        os.close(fd)
        raise
    claim = FolderClaim(folder, lock_path, fd)
    _HELD[lock_path] = claim
    return claim


def release_folder(folder: str | Path) -> None:
    """Release this process's claim on `folder`, if it holds one."""
    claim = _HELD.get(lock_path_for(folder))
    if claim is not None:
        claim.release()


def _read_holder(fd: int) -> str:
    """'pid N, COMMAND' from a held lock file (written right after locking, so possibly still empty)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(record['pid'])}, {record.get('command', 'dora-hf')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"
