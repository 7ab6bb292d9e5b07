"""Names a package serves from its modules, imported on first use.

A package's ``__init__`` lists ``{name: ".module"}`` and sets ``__getattr__ = lazy_names(__name__,
EXPORTS)``: ``import dora_hf.prepare`` then costs nothing, and the heavy modules (PyAV, datasets,
torch) load only when a name from them is asked for, which keeps `dora-hf --help` fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The package's ``__getattr__``: `exports` maps each name to the module (relative) that holds it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    return __getattr__
