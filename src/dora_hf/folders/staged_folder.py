"""Write an output folder under a temporary sibling name and rename it only once it is complete.

An interrupted or failed write then leaves no folder that looks finished: the staging folder is
removed on any error (Ctrl-C included) and the final name appears in one rename. The final name
is claimed for the whole write, and what is there may only be replaced under the rule of
:func:`dora_hf.folders.output_folder.check_replaceable`, checked before the work and again before the
rename, so concurrent writers of one folder fail fast instead of replacing each other's output.

The same place handles what can go wrong around that:

- a process killed outright (kill -9, power loss) cannot remove its staging folder. The claim
  dies with it, so a staging folder found beside a folder this process has just claimed is
  stale: it is removed (and a folder set aside by an interrupted replace is put back or removed);
- a read-only folder, a missing permission or a full disk is one :class:`DoraUserError` line
  naming the folder, and what was there before is left as it was;
- the published folder and its files get the modes of any folder and file the user creates
  (0755 and 0644 under the usual umask), whatever the writers used: transformers writes
  ``model.safetensors`` through a temporary file, which is created 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DoraUserError
from .output_folder import (
    KIND_NAMES,
    Kind,
    check_replaceable,
    claim_folder,
    replace_folder,
    write_failure,
    write_marker,
)
from .read_claim import hold_against_readers


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


@contextmanager
def staged_folder(
    final: str | Path,
    overwrite: bool = False,
    *,
    kind: Kind = "model",
    command: str = "dora-hf",
    keep: tuple[Path, ...] = (),
    log: Callable[[str], None] = _to_stderr,
) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final`, marked as `kind`.

    `keep`: paths the caller reads from, which `final` must neither be nor contain. `log` gets the
    line saying which stale staging folders were removed, if any.
    """
    final = Path(os.path.abspath(final))
    held: list[int] = []  # the exclusive lock on `final` against readers, once taken
    with claim_folder(final, command), contextlib.ExitStack() as stack:
        stack.callback(lambda: [os.close(fd) for fd in held])
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            _clean_leftovers(final, log)
            check_replaceable(final, kind, overwrite=overwrite, keep=keep)
            _hold_against_readers(final, held)  # a folder a run reads is not replaced under it
            staging = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
            staging.mkdir()  # not mkdtemp: its 0700 mode would stay on the published folder
            try:
                yield staging
                _give_usual_modes(staging)
                write_marker(staging, kind, command)
                check_replaceable(final, kind, overwrite=overwrite, keep=keep)  # anything that appeared meanwhile
                _hold_against_readers(final, held)
                replace_folder(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        except OSError as err:
            reason = write_failure(err, final)
            if reason is None:
                raise
            left = f"the existing {final} is unchanged" if final.exists() else "nothing was written"
            raise DoraUserError(f"cannot write {KIND_NAMES[kind]} to {final}: {reason}; {left}") from err


def _hold_against_readers(final: Path, held: list[int]) -> None:
    """Hold `final` against readers until it is replaced (`read_claim.py`), if not held yet."""
    if not held:
        fd = hold_against_readers(final, "folder")
        if fd is not None:
            held.append(fd)


def _leftover_pattern(final: Path) -> re.Pattern[str]:
    """Names of the staging (``.NAME.tmp-PID-HEX``) and set-aside (``.NAME.old-PID``) folders of `final`."""
    return re.compile(rf"\.{re.escape(final.name)}\.(tmp-\d+-[0-9a-f]{{8}}|old-\d+)")


def _clean_leftovers(final: Path, log: Callable[[str], None]) -> None:
    """Remove what killed writers of `final` left beside it; the caller holds `final`'s claim.

    Every writer claims `final` first, and a claim ends with its process, so no live process
    writes these folders. A folder set aside by :func:`replace_folder` (``.old-PID``) holds the
    previous output: it is put back if the writer was killed before the new one was renamed into
    place, and removed if the new one is there.
    """
    pattern = _leftover_pattern(final)
    leftovers = sorted(
        path for path in final.parent.iterdir() if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink()
    )
    removed, restored = [], None
    for path in leftovers:
        if ".old-" in path.name and restored is None and not final.exists() and not final.is_symlink():
            path.rename(final)
            restored = path.name
            continue
        shutil.rmtree(path)
        removed.append(path.name)
    if removed or restored:
        done = [f"removed stale staging folder(s) {', '.join(removed)}"] if removed else []
        if restored:
            done.append(f"put back {final.name} from {restored}")
        log(f"{final.parent}: {'; '.join(done)} (left by a run of dora-hf that was killed before it finished)")


def _give_usual_modes(folder: Path) -> None:
    """Give every folder under `folder` its mode and every file 0666 (0777 if executable), less the umask.

    `folder` itself was made with ``mkdir`` (0777 less the umask), so its mode is the umask's
    answer, read without changing the process-wide umask.
    """
    folder_mode = stat.S_IMODE(folder.stat().st_mode)
    file_mode = folder_mode & 0o666
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, folder_mode if executable else file_mode)

