"""Ctrl-C or SIGTERM during training: finish the step in flight, then checkpoint and stop.

Interrupting in the middle of a step (inside the optimiser update or the EMA) would leave the
weights half updated, so the first SIGINT (Ctrl-C) or SIGTERM (what schedulers such as Slurm and
Kubernetes send before killing a job) only raises a flag that the loop reads between steps. A
second one of either stops at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class GracefulInterrupt:
    """Context manager; `requested` turns true after the first SIGINT or SIGTERM inside it."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(
                f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                "(Ctrl-C or SIGTERM again to stop without one)",
                file=sys.stderr,
                flush=True,
            )

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            fallback = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, previous if previous is not None else fallback)
        self._previous = {}

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in HANDLED}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers ignore SIGINT and SIGTERM.

    Ctrl-C in a terminal and a scheduler's SIGTERM reach the whole process group; a worker that died
    of them would end the run with a DataLoader error before the main process could finish its step
    and save. The main process decides when to stop; the loader shuts its workers down.
    """
    for signum in HANDLED:
        signal.signal(signum, signal.SIG_IGN)
