"""A Space folder as `dora-hf push --repo-type space` checks it, with dora-hf pinned to this version.

The Hub builds a Space from its README's YAML header (`sdk`, `app_file`, ...) and installs its
`requirements.txt`; a header that does not parse, an `app_file` that is not there or a Space that
does not install dora-hf fails on the Hub minutes after the push. Those are checked here first.
The pushed `requirements.txt` pins dora-hf to the version doing the push, so the Space runs the code
it was tried with locally (the folder itself is left as it is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from huggingface_hub import SpaceCard

from ..errors import DoraUserError

SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
REQUIREMENTS = "requirements.txt"
_DORA_LINE = re.compile(r"^(?P<name>dora[-_]hf)(?P<extras>\[[^\]]*\])?(?P<spec>[^;#]*)(?P<rest>.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class PinnedRequirements:
    """The Space's requirements.txt as pushed, and the line it replaces."""

    text: str
    was: str
    version: str

    def line(self) -> str:
        return f"{REQUIREMENTS}: dora-hf pinned to =={self.version}, the version pushing it (the folder has `{self.was}`)"


def looks_like_space(folder: Path) -> bool:
    """Whether the folder's README has a Space header (an `sdk:` key in its YAML block)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8", errors="replace")
    header = text.split("\n---", 1)[0] if text.startswith("---") else ""
    return re.search(r"^sdk\s*:", header, flags=re.MULTILINE) is not None


def dora_hf_version() -> str:
    """The installed dora-hf's version (what the Space gets pinned to)."""
    try:
        return metadata.version("dora-hf")
    except metadata.PackageNotFoundError as err:
        raise DoraUserError("dora-hf is not installed as a package (pip install -e .), so its version is unknown") from err


def check_space_folder(folder: Path) -> PinnedRequirements:
    """Refuse a folder the Hub could not build as a Space running dora-hf; return its pinned requirements."""
    readme = folder / "README.md"
    if not readme.is_file():
        raise DoraUserError(f"{folder} is not a Space folder: missing README.md with the Space's YAML header (sdk, app_file)")
    try:
        card = SpaceCard.load(readme, ignore_metadata_errors=False)
    except Exception as err:
        raise DoraUserError(f"{readme}: the Space's metadata does not parse: {err}") from err
    meta = card.data.to_dict()
    sdk = meta.get("sdk")
    if sdk not in SPACE_SDKS:
        raise DoraUserError(f"{readme}: `sdk: {sdk}` is not one of {', '.join(SPACE_SDKS)}")
    app_file = meta.get("app_file") or ("app.py" if sdk == "gradio" else None)
    if app_file and not (folder / app_file).is_file():
        raise DoraUserError(f"{readme}: `app_file: {app_file}` is not in {folder}")
    return pin_requirements(folder / REQUIREMENTS, dora_hf_version())


def pin_requirements(path: Path, version: str) -> PinnedRequirements:
    """``path`` with its dora-hf line pinned to ``version`` (extras and environment markers kept)."""
    if not path.is_file():
        raise DoraUserError(f"{path.parent} has no {REQUIREMENTS}: the Space would not install dora-hf")
    lines = path.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        found = _DORA_LINE.match(line.strip())
        if found and (not found["spec"].strip() or found["spec"].strip()[0] in "=<>!~@ "):
            lines[index] = f"dora-hf{found['extras'] or ''}=={version}{' ' + found['rest'].strip() if found['rest'].strip() else ''}"
            return PinnedRequirements(text="\n".join(lines) + "\n", was=line.strip(), version=version)
    raise DoraUserError(f"{path}: no dora-hf line, so the Space would not install dora-hf (add `dora-hf[space]`)")
