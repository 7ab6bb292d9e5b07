"""How one video is sampled (its clip step and kept-frame spacing), checked before any is decoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DoraUserError
from .options import PrepareOptions, choose_keep_every
from .video_decode import VideoInfo, format_duration


@dataclass(frozen=True)
class VideoPlan:
    """How one video is sampled: its clip step in source frames and the kept-frame spacing."""

    info: VideoInfo
    clip_step: int
    keep_every: int
    keep_every_chosen: bool
    """True when keep_every was picked by default rather than given."""
    frames_per_clip: int

    @property
    def min_frames(self) -> int:
        """Source frames one clip needs: its first frame and (frames_per_clip - 1) steps after it."""
        return (self.frames_per_clip - 1) * self.clip_step + 1

    def describe(self) -> str:
        """The line printed before decoding, e.g. 'keeping every 10th frame: 6.0 of 60 fps; ...'."""
        every = "every frame" if self.keep_every == 1 else f"every {_ordinal(self.keep_every)} frame"
        line = (
            f"keeping {every}: {self.info.fps / self.keep_every:.1f} of {self.info.fps:g} fps; "
            f"clips keep a {self.clip_step}-frame step exactly"
        )
        if self.keep_every_chosen:
            line += f" ({self.clip_step // self.keep_every} kept frames per step; --keep-every to change)"
        return line


def plan_video(info: VideoInfo, options: PrepareOptions) -> VideoPlan:
    """Turn the options into this video's clip step and spacing; reject videos too short for a clip."""
    if options.clip_step_seconds is not None:
        step = round(options.clip_step_seconds * info.fps)
        if step < 1:
            raise DoraUserError(
                f"{info.path}: --clip-step-seconds {options.clip_step_seconds:g} is under one frame at {info.fps:g} fps"
            )
    else:
        step = options.clip_step
    try:
        keep_every = choose_keep_every(step, options.keep_every)
    except DoraUserError as err:
        raise DoraUserError(f"{info.path}: {err}") from None
    plan = VideoPlan(
        info=info,
        clip_step=step,
        keep_every=keep_every,
        keep_every_chosen=options.keep_every is None,
        frames_per_clip=options.frames_per_clip,
    )
    if info.num_frames is not None:
        check_long_enough(plan, info.num_frames)
    return plan


def check_long_enough(plan: VideoPlan, num_frames: int) -> None:
    """Raise unless ``num_frames`` source frames hold one clip of the plan."""
    if num_frames >= plan.min_frames:
        return
    fps = plan.info.fps
    raise DoraUserError(
        f"{plan.info.path}: too short for one clip: {num_frames} frames ({format_duration(num_frames / fps)} at "
        f"{fps:g} fps), but a clip of {plan.frames_per_clip} frames with a {plan.clip_step}-frame step needs "
        f"{plan.min_frames} frames ({format_duration(plan.min_frames / fps)}); lower --clip-step / "
        "--clip-step-seconds or --frames-per-clip"
    )


def check_unique_ids(plans: Sequence[VideoPlan]) -> None:
    """video_id (the file stem) must be unique: readers key clips on it."""
    seen: dict[str, Path] = {}
    for plan in plans:
        previous = seen.setdefault(plan.info.video_id, plan.info.path)
        if previous is plan.info.path:
            continue
        if previous.resolve() == plan.info.path.resolve():
            raise DoraUserError(f"{plan.info.path}: given twice")
        raise DoraUserError(
            f"{plan.info.path}: its video_id {plan.info.video_id!r} (the file name stem) is also that of "
            f"{previous}; rename one of them"
        )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
