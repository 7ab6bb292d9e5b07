"""One request of the demo Space: a clip in, the package's own pictures and scores out.

Everything here is the package's code that `dora-hf visualize` and `dora-hf eval discovery` run:
`track_clip` finds and follows the objects, `draw_animation_frames` / `draw_tracking_grid` /
`draw_attention_grid` draw them, and `evaluate_discovery` scores the same masks against the moving
foreground when the camera is static. The Gradio page only collects the inputs and shows the files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DoraUserError
from .limits import SpaceLimits, check_video

Progress = Callable[[float, str], None]
"""Called with the share of the request done (0-1) and what is being done."""

DISCOVERY_ROWS = (
    ("precision", "share of the masks on moving pixels"),
    ("chance", "share of the frame that moves (what random masks score)"),
    ("best_iou", "IoU with the best-matching moving region"),
    ("mutual_iou", "overlap between the objects (lower: more distinct)"),
    ("temporal_iou", "overlap of a mask with itself one frame later (stability)"),
)
"""The discovery scores shown, in order, with a plain reading of each."""


@dataclass
class SpaceResult:
    """What the page shows for one request."""

    animation: Path
    """GIF: each frame with every object tinted and outlined, and each object on its own."""
    strip: Path
    """PNG: the frames in a row, one row per object, then all objects."""
    attention: Path
    """PNG: the last block's [CLS] attention of every head, per frame."""
    heads: list[int]
    """The head that discovered each object."""
    num_frames: int
    discovery: list[tuple[str, str, str, str]] = field(default_factory=list)
    """Rows (score, this model, random masks, meaning) when scored against a static camera's foreground."""
    summary: str = ""


class ModelCache:
    """Loaded encoders by name, the last few kept: a Space serves one model to many requests."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def get(self, name: str):  # -> FrozenEncoder
        from ..evaluation.encoder import load_encoder

        name = name.strip()
        if not name:
            raise DoraUserError("no model: give a hub id (ORG/NAME) or a local model folder")
        with self._lock:
            if name not in self._models:
                try:
                    model = load_encoder(name, progress=False)
                except (DoraUserError, OSError) as err:  # a typo, the Hub unreachable, a gated repo, ...
                    raise DoraUserError(
                        f"model {name!r} could not be loaded: {err}. Give a hub id (ORG/NAME) this machine can "
                        "reach, or a local model folder"
                    ) from err
                while len(self._models) >= self.keep:
                    self._models.pop(next(iter(self._models)))
                self._models[name] = model
            return self._models[name]


def run_request(
    model: str,
    video: str | Path | None,
    out_dir: str | Path,
    *,
    num_objects: int = 3,
    num_frames: int = 8,
    step: int = 4,
    static_camera: bool = False,
    limits: SpaceLimits = SpaceLimits(),
    cache: ModelCache | None = None,
    progress: Progress = lambda share, what: None,
    seed: int = 0,
) -> SpaceResult:
    """Track ``num_objects`` objects through ``num_frames`` frames (every ``step``-th) of ``video``.

    The upload is checked (`check_video`) before the model is loaded or a frame decoded; the three
    pictures are written to ``out_dir``. Raises `DoraUserError` with one line for the page.
    """
    from ..evaluation.frame_input import read_frames
    from ..evaluation.visualize.clip_tracks import track_clip
    from ..evaluation.visualize.mask_figure import draw_attention_grid, draw_tracking_grid
    from ..evaluation.visualize.track_animation import draw_animation_frames, save_gif

    _check_choices(num_objects, num_frames, step, limits)
    progress(0.05, "checking the video")
    info = check_video(video, limits)
    progress(0.1, "loading the model")
    backbone = (cache or ModelCache()).get(model)
    if num_objects > backbone.num_heads:
        raise DoraUserError(f"{num_objects} objects: this model has {backbone.num_heads} attention heads, one per object at most")
    progress(0.25, "decoding frames")
    frames = read_frames(info.path, num_frames, step)
    if frames.shape[0] < 2:
        raise DoraUserError(f"{info.path.name}: only {frames.shape[0]} frame taking 1 frame in {step}; pick a smaller step")
    progress(0.4, f"discovering and tracking {num_objects} objects through {frames.shape[0]} frames")
    clip = track_clip(backbone, frames, num_objects=num_objects, seed=seed, attention=True)
    progress(0.7, "drawing")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    animation = save_gif(
        draw_animation_frames(clip.frames, clip.masks, clip.heads, clip.scores, display=256, title=Path(model).name),
        out / "tracks.gif", fps=4.0,
    )
    strip = out / "strip.png"
    draw_tracking_grid(clip.frames, clip.masks, clip.heads, tile=96, scores=clip.scores).save(strip)
    attention = out / "attention.png"
    draw_attention_grid(clip.frames, clip.attention, tile=96).save(attention)  # type: ignore[arg-type]
    result = SpaceResult(animation=animation, strip=strip, attention=attention, heads=clip.heads, num_frames=frames.shape[0])
    if static_camera:
        progress(0.85, "scoring against the moving foreground")
        result.discovery = discovery_rows(frames, clip.masks, seed)
    result.summary = (
        f"{len(clip.heads)} objects (found by heads {', '.join(map(str, clip.heads))} in frame 1) tracked through "
        f"{frames.shape[0]} frames (1 in {step}) of {info.path.name} ({info.describe()})"
    )
    progress(1.0, "done")
    return result


def _check_choices(num_objects: int, num_frames: int, step: int, limits: SpaceLimits) -> None:
    """The sliders' values, checked again here: a request can be sent without the page."""
    for label, value, low, high in (
        ("objects", num_objects, 1, limits.max_objects), ("frames", num_frames, 2, limits.max_frames),
        ("frame step", step, 1, limits.max_step),
    ):
        if not low <= int(value) <= high:
            raise DoraUserError(f"{label} {value}: choose {low} to {high}")


def discovery_rows(frames, masks, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """`eval discovery`'s scores of the shown masks `(k, T, S, S)` as one clip against the frames' moving
    foreground (the median of all the frames is the background), beside random masks of the same area."""
    import torch

    from ..evaluation.discovery.scoring import evaluate_discovery
    from ..evaluation.protocols import DiscoverySettings

    count = int(frames.shape[0])
    settings = DiscoverySettings(clip_frames=count, clip_step=count, max_clips=1, window=max(3, count | 1))
    shown = torch.from_numpy(masks)
    scores = evaluate_discovery(frames, lambda clip: shown, settings, seed=seed)

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return [(name, number(scores["model"][name]), number(scores["random"][name]), meaning) for name, meaning in DISCOVERY_ROWS]
