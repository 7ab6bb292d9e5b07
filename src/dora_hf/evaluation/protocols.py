"""The evaluation protocols' published parameters, importable without torch.

`dora-hf eval --help` shows them as defaults, and the command line must not import torch to
parse its arguments; `knn.py`, `davis.py`, `label_propagation.py` and `linear_probe.py`, which
use them, re-export them under their old names. `discovery.py` uses `DiscoverySettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

DINO_K_VALUES = (10, 20, 100, 200)
"""Neighbour counts of DINO's k-NN evaluation."""
DINO_TEMPERATURE = 0.07
"""Vote weight ``exp(similarity / T)`` of DINO's k-NN evaluation."""

DAVIS_SHORT_SIDE = 480
"""DAVIS-2017 frames (480p) are resized to this short side."""


@dataclass(frozen=True)
class PropagationSettings:
    """The protocol's parameters.

    The defaults are the protocol as DINO describes it (a queue of 20 frames, top-7, radius
    12, temperature 0.7). DINO's released ``eval_video_segmentation.py`` defaults to 7 previous
    frames, top-5 and a temperature of 0.1: ``PropagationSettings(7, 5, 12, 0.1)``.
    """

    context_frames: int = 20
    """Previous frames kept in the queue, besides the first frame."""
    top_k: int = 7
    """Source patches each target patch takes its label from."""
    radius: int = 12
    """Sources must lie within this many patches of the target, on both axes; 0: anywhere."""
    temperature: float = 0.7
    target_chunk: int = 1024
    """Target patches per similarity matrix, to bound memory on large grids."""

    def __post_init__(self) -> None:
        if self.context_frames < 0 or self.top_k < 1 or self.radius < 0 or not self.temperature > 0:
            raise ValueError(f"invalid propagation settings: {self}")


@dataclass(frozen=True)
class LinearProbeSettings:
    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class DiscoverySettings:
    """Label-free object discovery (`discovery.py`): clips, and the moving-foreground reference."""

    clip_frames: int = 8
    """Frames per clip: objects are discovered in the first and tracked through the rest."""
    clip_step: int = 8
    """A clip starts every this many (sampled) frames."""
    max_clips: int = 32
    """Score at most this many clips; 0: all."""
    window: int = 31
    """Frames (centred) whose per-pixel median is a frame's background; wider than a mover's dwell."""
    threshold: float = 25.0
    """Largest channel difference from the median (0-255) that still counts as background."""
    opening: int = 1
    """Radius of the square opening that removes foreground specks."""
    closing: int = 2
    """Radius of the square closing that fills holes in the foreground."""
    side: int = 224
    """Frames with a longer short side are first downscaled (area averaging) to it: the foreground
    and the scores are computed at this resolution, plenty for patch-level masks and many
    times faster than full video resolution. 0: as decoded."""

    def __post_init__(self) -> None:
        if (self.clip_frames < 2 or self.clip_step < 1 or self.max_clips < 0 or self.window < 3
                or not self.threshold >= 0 or self.opening < 0 or self.closing < 0 or self.side < 0):
            raise ValueError(f"invalid discovery settings: {self}")
