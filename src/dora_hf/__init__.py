"""dora-hf: DoRA self-supervised pretraining from one long video, native to the Hugging Face stack.

Importing the package registers DoRA with transformers' Auto classes: at once if transformers is
already imported, otherwise as soon as it is (`auto_registration.py`), so that `dora-hf` and its
subcommands that need neither torch nor transformers start without importing them. The model
classes below are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _moved, _threads
from .auto_registration import register_when_transformers_loads

__version__ = "0.1.0"

_MODELING_EXPORTS = (
    "DoraBackbone",
    "DoraConfig",
    "DoraForImageClassification",
    "DoraForPreTraining",
    "DoraImageProcessor",
    "DoraModel",
    "DoraTrackingOutput",
)

__all__ = [*_MODELING_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .modeling import (
        DoraBackbone,
        DoraConfig,
        DoraForImageClassification,
        DoraForPreTraining,
        DoraImageProcessor,
        DoraModel,
        DoraTrackingOutput,
    )

_threads.choose_wait_policy()  # before anything imports torch
register_when_transformers_loads()
_moved.install()


def __getattr__(name: str) -> Any:
    if name in _MODELING_EXPORTS:
        return getattr(importlib.import_module(".modeling", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
