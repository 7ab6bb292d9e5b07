"""Command-line number types that refuse impossible values while the arguments are parsed.

``type=at_least(1)`` makes argparse itself answer ``argument --batch-size: must be at least 1,
got 0`` (exit 2) before a model, a dataset or a video is opened: a zero batch size used to loop
forever, a negative learning rate to fail after minutes of feature extraction.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def at_least(low: int) -> Callable[[str], int]:
    """An ``int`` type for argparse that must be ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _finite(text: str) -> float:
    """The number `text` names (any float, checked by the callers)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    return value


def positive_float(text: str) -> float:
    """A ``float`` type for argparse that must be finite and ``> 0``."""
    value = _finite(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A ``float`` type for argparse that must be finite and ``>= 0``."""
    value = _finite(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value
