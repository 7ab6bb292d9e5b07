"""A folder being read is claimed for reading, so that it is not replaced under its reader.

A training run reads its prepared dataset for hours (a streaming run reads the shards as it goes),
while `prepare-data --overwrite` into the same folder would replace it at once. So a reader holds
a *shared* `flock` on the folder itself (:func:`claim_for_reading`): any number of runs may read
one dataset together. A writer about to replace a folder takes the *exclusive* lock on it without
waiting (:func:`hold_against_readers`, in `staged_folder`) and keeps it until the new folder is in
place: while any run reads the folder the writer refuses at once, naming the readers, and a run
starting while a writer replaces the folder refuses to read it. The kernel drops a lock when its
process ends, kill -9 included, so a crash leaves no stale claim. The lock is on the folder (not a
lock file beside it, which is the writer's own exclusive claim, `output_folder.claim_folder`):
a reader needs no write access, and a replaced folder is a new inode with no readers.

The readers are named from the kernel's table of locks (`/proc/locks`, Linux): their pid and
command line. Elsewhere the message says only that the folder is being read.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from .output_folder import FolderInUse

PROC_LOCKS = Path("/proc/locks")


class ReadClaim:
    """This process's shared claim on a folder it reads; :meth:`release` (or exiting a `with`) ends it."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder = folder
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ReadClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_for_reading(folder: str | Path, what: str = "dataset") -> ReadClaim | None:
    """A shared claim on `folder` (None if it is not a folder this process can open); raises
    :class:`FolderInUse` at once while a writer is replacing it."""
    folder = Path(os.path.abspath(folder))
    fd = _lock_folder(
        folder, fcntl.LOCK_SH,
        lambda holders: f"{what} {folder} is being replaced by another process ({holders or 'pid unknown'}); wait for it to finish",
    )
    return None if fd is None else ReadClaim(folder, fd)


def hold_against_readers(folder: Path, what: str) -> int | None:
    """The exclusive lock on an existing `folder` about to be replaced, as an fd to close once it
    is; None when there is no folder. Raises :class:`FolderInUse` at once while a process reads it."""
    return _lock_folder(
        folder, fcntl.LOCK_EX,
        lambda readers: f"{what} {folder} is being read by {readers or 'another process'}; refusing to replace it while "
        "it is read: wait for that run to end, or write to another folder",
    )


NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
"""A file system without `flock` (some network ones): the folder is used without a claim."""


def _lock_folder(folder: Path, operation: int, refusal: Callable[[str], str]) -> int | None:
    """`folder`'s fd holding `operation` (taken without waiting), or None with no folder or no flock;
    a lock held against it raises :class:`FolderInUse` with `refusal` of its holders."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        holders = lock_holders(fd)
        os.close(fd)
        raise FolderInUse(refusal(holders)) from None
    except OSError as err:
        os.close(fd)
        if err.errno in NO_FLOCK:
            return None
        raise
    return fd


def lock_holders(fd: int) -> str:
    """'pid N (COMMAND LINE), ...' of the processes holding a `flock` on `fd`'s file ('' if unknown)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        table = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return ""
    pids = []
    for line in table:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            pids.append(int(fields[4]))
    return ", ".join(f"pid {pid}{_command_line(pid)}" for pid in dict.fromkeys(pids))


def _command_line(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    text = " ".join(" ".join(os.fsdecode(w).split()) for w in words if w)  # one line, whatever the arguments hold
    return f": {text[:200]}" if text else ""
