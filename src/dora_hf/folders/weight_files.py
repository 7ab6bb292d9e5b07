"""A model folder's weight file that does not load, named in one line.

safetensors reports a cut or damaged file as ``SafetensorError: Error while deserializing header:
incomplete metadata, file not fully covered``, naming no file, and transformers passes it on
as a traceback. Every command that loads a saved model (`export`, `eval`, `visualize`) loads it
inside :func:`named_weight_errors`, which finds the file that fails and says what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import DoraUserError


@contextlib.contextmanager
def named_weight_errors(name_or_path: str | Path, revision: str | None = None) -> Iterator[None]:
    """Raise a safetensors failure while loading ``name_or_path`` (a folder or a hub id) as one
    :class:`DoraUserError` naming the weight file that fails to open."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        reason = str(err).strip() or type(err).__name__
        damaged = damaged_weight_file(name_or_path, revision)
        where = str(damaged) if damaged is not None else f"a .safetensors weight file of {name_or_path}"
        again = (
            "download it again (delete it from the Hugging Face cache)"
            if damaged is not None and not Path(name_or_path).exists()
            else "copy or download it again, or export the model again from its checkpoint"
        )
        raise DoraUserError(f"{where} is truncated or corrupt ({reason}); {again}") from err


def damaged_weight_file(name_or_path: str | Path, revision: str | None = None) -> Path | None:
    """The first ``.safetensors`` file of a local folder (or of a hub model's cached copy) that does
    not open as a whole safetensors file; None when all open or none is found."""
    folder = Path(name_or_path)
    if folder.is_dir():
        candidates = sorted(folder.glob("*.safetensors"))
    else:
        candidates = _cached_hub_weights(str(name_or_path), revision)
    return next((path for path in candidates if not opens(path)), None)


def opens(path: Path) -> bool:
    """Whether ``path`` opens as a safetensors file whose header is whole and whose data covers
    every tensor it lists (what a truncated file fails)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return True
    except (OSError, SafetensorError):
        return False


def _cached_hub_weights(repo_id: str, revision: str | None) -> list[Path]:
    """The hub model's ``model.safetensors`` as cached locally (nothing is downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    except Exception:  # not a valid repo id, or no cache: nothing to name
        return []
    return [Path(cached)] if isinstance(cached, str) else []
