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
"""DAVIS-2017 frames (480p) are resized to this short side (DINO's ``read_frame(scale_size=[480])``)."""

DAVIS_PROTOCOLS: dict[str, dict[str, float]] = {
    "dino": {"context_frames": 7, "top_k": 5, "radius": 12, "temperature": 0.1, "short_side": DAVIS_SHORT_SIDE},
    "paper-text": {"context_frames": 20, "top_k": 7, "radius": 12, "temperature": 0.7, "short_side": DAVIS_SHORT_SIDE},
}
"""Each DAVIS label-propagation protocol's parameter values.

``dino``: facebookresearch/dino ``eval_video_segmentation.py`` as released (``--n_last_frames 7``,
``--topk 5``, ``--size_mask_neighborhood 12``, the ``/ 0.1`` in its affinity,
``read_frame(scale_size=[480])``), with its frame preparation and decoding (`davis/`).
``paper-text``: the values of the protocol's text description (a queue of 20 frames, top-7,
temperature 0.7), with the project's own frame preparation and decoding; not DINO's code.
"""


@dataclass(frozen=True)
class PropagationSettings:
    """A DAVIS protocol and its parameters; a value left ``None`` is the protocol's own.

    ``PropagationSettings()`` is DINO's released protocol; ``PropagationSettings("paper-text")``
    the text-description variant; ``PropagationSettings("dino", top_k=7)`` DINO's with one
    value overridden (`overridden` names it).
    """

    protocol: str = "dino"
    context_frames: int | None = None
    """Previous frames kept in the queue, besides the first frame."""
    top_k: int | None = None
    """Source patches each target patch takes its label from."""
    radius: int | None = None
    """Sources must lie within this many patches of the target, on both axes; 0: anywhere."""
    temperature: float | None = None
    short_side: int | None = None
    """Frames are resized to this short side."""
    target_chunk: int = 1024
    """``paper-text``: target patches per similarity matrix, to bound memory on large grids
    (``dino`` computes the whole affinity at once, as its reference does)."""

    def __post_init__(self) -> None:
        if self.protocol not in DAVIS_PROTOCOLS:
            raise ValueError(f"unknown DAVIS protocol {self.protocol!r}; choose from {', '.join(DAVIS_PROTOCOLS)}")
        for name, value in DAVIS_PROTOCOLS[self.protocol].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if (self.context_frames < 0 or self.top_k < 1 or self.radius < 0 or not self.temperature > 0
                or self.short_side < 1 or self.target_chunk < 1):
            raise ValueError(f"invalid propagation settings: {self}")

    @property
    def overridden(self) -> list[str]:
        """The parameters that differ from the protocol's own values."""
        return [name for name, value in DAVIS_PROTOCOLS[self.protocol].items() if getattr(self, name) != value]

    def as_dict(self) -> dict:
        """The protocol, its parameters and which of them were overridden (for results files)."""
        values = {name: getattr(self, name) for name in DAVIS_PROTOCOLS[self.protocol]}
        return {"protocol": self.protocol, **values, "overridden": self.overridden}


@dataclass(frozen=True)
class LinearProbeSettings:
    """`dora-hf eval linear --protocol fast`: a probe on cached, un-augmented features."""

    epochs: int = 100
    batch_size: int = 256
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0


FAST_LINEAR_N_LAST_BLOCKS = 1
"""`--protocol fast`: the [CLS] token of the last block."""
FAST_LINEAR_FEATURE_BATCH_SIZE = 64
"""`--protocol fast`: images per forward pass when the features are extracted."""

# `dora-hf eval linear --protocol dino`: the defaults of facebookresearch/dino `eval_linear.py`.
DINO_LINEAR_EPOCHS = 100
"""``--epochs`` default 100."""
DINO_LINEAR_LR = 0.001
"""``--lr`` default 0.001, for a reference batch of 256 images (linear scaling rule)."""
DINO_LINEAR_LR_REFERENCE_BATCH = 256
"""``args.lr * (batch_size_per_gpu * world_size) / 256.``"""
DINO_LINEAR_BATCH_SIZE = 128
"""``--batch_size_per_gpu`` default 128 (training and validation loaders)."""
DINO_LINEAR_N_LAST_BLOCKS = 4
"""``--n_last_blocks`` default 4, the README's choice for ViT-S (``avgpool_patchtokens`` False)."""
DINO_LINEAR_VAL_FREQ = 1
"""``--val_freq`` default 1: validate after every epoch (and always after the last)."""
DINO_LINEAR_MOMENTUM = 0.9
"""SGD momentum 0.9, weight decay 0."""
DINO_LINEAR_NUM_WORKERS = 10
"""``--num_workers`` default 10 data-loading processes."""
DINO_LINEAR_CROP_SIZE = 224
"""``RandomResizedCrop(224)`` for training, ``CenterCrop(224)`` for validation."""
DINO_LINEAR_RESIZE_SIZE = 256
"""``Resize(256, interpolation=3)``: the validation images' shorter side, bicubic."""
DINO_LINEAR_CROP_SCALE = (0.08, 1.0)
"""torchvision ``RandomResizedCrop``'s default area fraction."""
DINO_LINEAR_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
"""torchvision ``RandomResizedCrop``'s default aspect-ratio range."""
DINO_LINEAR_MEAN = (0.485, 0.456, 0.406)
"""``Normalize`` mean (ImageNet's)."""
DINO_LINEAR_STD = (0.229, 0.224, 0.225)
"""``Normalize`` std (ImageNet's)."""


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
