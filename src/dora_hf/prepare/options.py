"""The settings of one `prepare-data` run, and the kept-frame spacing they imply."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DoraUserError
from .blank_frozen import MIN_STRETCH_SECONDS
from .frame_images import IMAGE_FORMATS

TARGET_KEPT_PER_STEP = 6
"""Default density: about 6 kept frames per clip step (6 fps for a 60-frame step at 60 fps)."""


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one ``prepare-data`` run (the defaults follow DORA_SPEC.md section 1)."""

    clip_step: int = 60
    """Source frames between a clip's frames (used unless ``clip_step_seconds`` is set)."""
    clip_step_seconds: float | None = None
    """The clip step in seconds, turned into frames per video with its frame rate."""
    keep_every: int | None = None
    """Keep every n-th frame; must divide the clip step. None: about 6 per clip step."""
    frames_per_clip: int = 8
    short_side: int = 384
    image_format: str = "jpeg"
    quality: int = 90
    frames_per_shard: int = 2000
    license: str = "cc-by-4.0"
    pretty_name: str | None = None
    keep_blank: bool = False
    """Keep blank and frozen stretches in the dataset (they are still reported)."""
    min_gap_seconds: float = MIN_STRETCH_SECONDS
    """Shortest blank or frozen stretch that is reported and left out."""
    blur_faces: bool = False
    """Blur detected faces in every kept frame before encoding (the ``faces`` extra, see `faces`)."""

    def validate(self) -> None:
        """Reject impossible values before any video is opened."""
        checks = [
            (self.clip_step >= 1, f"--clip-step must be at least 1 (got {self.clip_step})"),
            (
                self.clip_step_seconds is None or self.clip_step_seconds > 0,
                f"--clip-step-seconds must be positive (got {self.clip_step_seconds})",
            ),
            (self.keep_every is None or self.keep_every >= 1, f"--keep-every must be at least 1 (got {self.keep_every})"),
            (self.frames_per_clip >= 1, f"--frames-per-clip must be at least 1 (got {self.frames_per_clip})"),
            (self.short_side >= 8, f"--short-side must be at least 8 pixels (got {self.short_side})"),
            (
                self.image_format in IMAGE_FORMATS,
                f"--format must be one of {', '.join(IMAGE_FORMATS)} (got {self.image_format!r})",
            ),
            (1 <= self.quality <= 100, f"--quality must be within 1..100 (got {self.quality})"),
            (self.frames_per_shard >= 1, f"--frames-per-shard must be at least 1 (got {self.frames_per_shard})"),
            (self.min_gap_seconds > 0, f"--min-gap-seconds must be positive (got {self.min_gap_seconds})"),
        ]
        for ok, message in checks:
            if not ok:
                raise DoraUserError(message)


def choose_keep_every(clip_step: int, keep_every: int | None = None) -> int:
    """The kept-frame spacing n for a clip step: the given one if it divides the step, else the
    divisor of the step closest to ``clip_step / TARGET_KEPT_PER_STEP`` (ties: the smaller)."""
    if keep_every is not None:
        if clip_step % keep_every:
            raise DoraUserError(
                f"--keep-every {keep_every} does not divide the clip step of {clip_step} frames, so clips "
                f"could not keep their step exactly; divisors of {clip_step}: {', '.join(map(str, _divisors(clip_step)))}"
            )
        return keep_every
    target = clip_step / TARGET_KEPT_PER_STEP
    return min(_divisors(clip_step), key=lambda d: (abs(d - target), d))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
