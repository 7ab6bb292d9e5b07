"""Ctrl-C during training: finish the step in flight, then checkpoint and stop.

Interrupting in the middle of a step (inside the optimiser update or the EMA) would leave the
weights half updated, so the first SIGINT only raises a flag that the loop reads between steps.
A second SIGINT stops at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class GracefulInterrupt:
    """Context manager; `requested` turns true after the first SIGINT inside it."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(
                "\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop without one)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
