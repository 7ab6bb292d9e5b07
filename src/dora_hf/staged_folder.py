"""Write an output folder under a temporary sibling name and rename it only once it is complete.

An interrupted or failed write then leaves no folder that looks finished: the staging folder is
removed on any error (Ctrl-C included) and the final name appears in one rename.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DoraUserError


@contextmanager
def staged_folder(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final`."""
    final = Path(final)
    if final.exists() and not overwrite:
        raise DoraUserError(f"output folder already exists: {final} (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
