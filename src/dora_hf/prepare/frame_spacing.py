"""The time between kept frames against the nominal interval: variable-frame-rate sources are warned about."""

from __future__ import annotations

import math
from pathlib import Path

FRAME_INTERVAL_TOLERANCE = 0.01
"""Kept frames whose interval differs from the nominal ``keep_every / fps`` by more than this fraction
(or, if larger, one tick of the container's time base, the rounding of its timestamps) are unevenly
spaced: a variable-frame-rate source, which prepare-data warns about."""


class FrameSpacing:
    """Running check of the time between consecutive kept frames, against the nominal interval.

    A constant-frame-rate video keeps frames ``keep_every / fps`` apart (to the rounding of its
    timestamps); a variable-frame-rate one does not, so clips of a fixed frame step span uneven times.
    """

    def __init__(self, nominal_s: float) -> None:
        self.nominal_s = nominal_s
        self.tolerance_s = FRAME_INTERVAL_TOLERANCE * nominal_s
        self.intervals = 0
        self.uneven = 0
        self.shortest_s = math.inf
        self.longest_s = -math.inf
        self._previous: float | None = None

    def add(self, timestamp: float, tick_s: float) -> None:
        """Account for the next kept frame's timestamp; `tick_s` is its time base (timestamp rounding)."""
        if self._previous is not None:
            interval = timestamp - self._previous
            self.intervals += 1
            self.shortest_s = min(self.shortest_s, interval)
            self.longest_s = max(self.longest_s, interval)
            if abs(interval - self.nominal_s) > max(self.tolerance_s, tick_s):
                self.uneven += 1
        self._previous = timestamp

    @property
    def spread(self) -> float:
        """Largest difference from the nominal interval, as a fraction of it."""
        if not self.intervals:
            return 0.0
        worst = max(abs(self.shortest_s - self.nominal_s), abs(self.longest_s - self.nominal_s))
        return worst / self.nominal_s

    def warning(self, path: Path) -> str | None:
        """One line naming the file and the spread of its kept frames' intervals; None when even."""
        if not self.uneven:
            return None
        ms = 1000.0
        return (
            f"warning: {path}: variable frame rate: {self.uneven} of {self.intervals} intervals between kept frames "
            f"differ from the nominal {self.nominal_s * ms:.2f} ms by more than {FRAME_INTERVAL_TOLERANCE:.0%} "
            f"(they range {self.shortest_s * ms:.2f}-{self.longest_s * ms:.2f} ms, up to {self.spread:.0%} off), so "
            "a clip's frames are unevenly spaced in time; re-encode at a constant rate (ffmpeg -fps_mode cfr) to avoid it"
        )
