"""A data error in the middle of training: the steps done are saved before the run stops.

A shard replaced under a streaming run (`prepare-data --overwrite`), a corrupt row group or an
unreadable frame is found only when its batch is read, possibly hours into a run. Reading a
batch changes nothing the checkpoint holds but the reader's position, so the loop keeps the
position of the last completed step and, on such an error, saves a checkpoint of that step
(exactly resumable, as after Ctrl-C) before it stops with one line naming the file at fault.
"""

from __future__ import annotations

from ..errors import DoraUserError


class DataErrorStop(DoraUserError):
    """The data could not be read mid-run; the last completed step was saved (or there was none)."""


def data_error_line(err: BaseException) -> str:
    """`err` on one line; an error raised in a DataLoader worker (re-raised here with the worker's
    traceback in its message) is reduced to the worker's own last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].strip()
        kind, sep, message = text.partition(": ")
        if sep and kind.rsplit(".", 1)[-1] == type(err).__name__ and isinstance(err, DoraUserError):
            return message  # our own error: its message names the shard, video and frame
        return text
    if isinstance(err, DoraUserError):
        return " ".join(text.splitlines()) or type(err).__name__
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
