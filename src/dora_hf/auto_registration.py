"""Registration of DoRA with transformers' Auto classes, done when transformers is imported.

Registering needs transformers and torch (seconds to import), but `import dora_hf` must stay
cheap: the `dora-hf` command imports the package for every subcommand, most of which need
neither. So `import dora_hf` registers at once only if transformers is already imported, and
otherwise installs a one-shot import hook that registers as soon as `transformers` itself has
been imported. Either way no code can reach `AutoModel` (or any transformers name) before
DoRA is registered, which is what `import dora_hf; AutoModel.from_pretrained(...)` relies on.

The hook waits for the top-level `transformers` package rather than its `models.auto`
subpackage: `transformers.modeling_utils` imports `models.auto` while it is itself half
initialised, and registering at that point would import `PreTrainedModel` from it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

TRIGGER = "transformers"
REGISTERING_MODULE = "dora_hf.modeling"  # registers on import


def register_now() -> None:
    """Register DoRA with the Auto classes (idempotent: `dora_hf.modeling` does it on import)."""
    importlib.import_module(REGISTERING_MODULE)


class _RegisterAfterLoad(importlib.abc.Loader):
    """Runs the real loader of `transformers`, then registers DoRA."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)  # resource readers, is_package, get_code, ...

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # The hook only wraps the loader, so importlib's spec must show the real one afterwards
        # (transformers and others inspect `__spec__.loader`, e.g. for resources).
        module.__spec__.loader = self._loader
        module.__loader__ = self._loader
        register_now()


class RegisterOnTransformersImport(importlib.abc.MetaPathFinder):
    """One-shot meta-path finder: wraps the loader of `transformers` and then removes itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TRIGGER:
            return None
        with self._lock:
            if self not in sys.meta_path:
                return None
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)  # the finders that would have found it
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisterAfterLoad(spec.loader)
        return spec


def register_when_transformers_loads() -> None:
    """Register now if transformers is imported, else as soon as it is."""
    if TRIGGER in sys.modules:
        register_now()
    elif not any(isinstance(finder, RegisterOnTransformersImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, RegisterOnTransformersImport())
