"""Which files of a folder a push sends: what `upload_folder` would pick, less what must not go up.

`upload_folder` sends every file under the folder, following links. A careless folder then
publishes a `.env` or a private key, a link to a file elsewhere on the machine (its contents), or
an editor's swap file, and the dry run lists them without a word. Here such files are left out,
each with one line that says why (the dry run and the push print them), and the push is told to
send exactly the listed files (`allow_patterns`), so what is listed is what goes up.
"""

from __future__ import annotations

import fnmatch
import glob
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

SECRET_NAMES: tuple[str, ...] = (
    ".env", ".env.*", "*.env", ".envrc", ".netrc", ".git-credentials", ".pypirc", ".npmrc", "credentials",
    "credentials.json", "token", "*.token", "id_rsa", "id_rsa.*", "id_dsa", "id_ecdsa", "id_ed25519", "id_ed25519.*",
    "*.pem", "*.key", "*.p12", "*.pfx",
)
"""File names that hold secrets (environment files, credentials, tokens, private keys): never uploaded."""
STRAY_NAMES: tuple[str, ...] = (
    "*~", "*.swp", "*.swo", "*.bak", "*.orig", "*.tmp", "Thumbs.db", "desktop.ini", "nohup.out", ".ipynb_checkpoints",
)
"""Editor, notebook and system leftovers (matched on any part of the path): not part of what was made."""


@dataclass(frozen=True)
class LeftOut:
    """A file of the folder that is not uploaded, and why."""

    path: str
    reason: str

    def line(self) -> str:
        return f"left out: {self.path} ({self.reason})"


@dataclass(frozen=True)
class FolderFiles:
    """The files to upload (path in repo, bytes), in `upload_folder`'s order, and those left out."""

    files: tuple[tuple[str, int], ...]
    left_out: tuple[LeftOut, ...]

    def allow_patterns(self) -> list[str]:
        """`upload_folder`'s allowlist that selects exactly ``files`` (names escaped from globbing)."""
        return [glob.escape(name) for name, _ in self.files]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _reason_to_leave_out(folder: Path, path: Path, relative: str) -> str | None:
    """Why ``path`` must not be uploaded, or None."""
    if path.is_symlink() and not path.exists():
        return "a broken link"
    target = path.resolve()
    if not target.is_relative_to(folder):
        return f"a link to {target}, outside the folder: its contents would be published"
    parts = relative.split("/")
    if _matches(parts[-1], SECRET_NAMES):
        return "looks like secrets (environment file, credentials, token or key): never uploaded"
    if any(_matches(part, STRAY_NAMES) for part in parts):
        return "an editor, notebook or system leftover"
    return None


def list_upload_files(folder: Path, ignore_patterns: tuple[str, ...]) -> FolderFiles:
    """The files of ``folder`` that a push sends; those ``ignore_patterns`` (and huggingface_hub's own
    `.git`, `.cache/huggingface`) drop are not mentioned, the others left out are."""
    root = folder.expanduser().resolve()
    paths = {path.relative_to(root).as_posix(): path for path in sorted(root.glob("**/*")) if path.is_file() or path.is_symlink()}
    kept = list(filter_repo_objects(paths, ignore_patterns=list(ignore_patterns) + DEFAULT_IGNORE_PATTERNS))
    files, left_out = [], []
    for name in kept:
        reason = _reason_to_leave_out(root, paths[name], name)
        if reason:
            left_out.append(LeftOut(name, reason))
        elif paths[name].is_file():
            files.append((name, paths[name].stat().st_size))
    return FolderFiles(tuple(files), tuple(left_out))
