"""DAVIS-2017 semi-supervised video object segmentation by label propagation (DINO's protocol).

For each sequence: patch features of every frame (the backbone's last-layer patch tokens at a
short side of 480 pixels), the first frame's mask propagated frame by frame
(`label_propagation.py`), decoded to label maps at the frame's size and scored with the shipped
`jaccard_f` evaluate module: J, F and J&F per sequence and over all objects.

The feature function is a parameter, so the protocol can be checked with features whose
behaviour is known (colours) and used with any backbone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ...errors import DoraUserError
from ..encoder import FrozenEncoder
from ..metric_modules import JACCARD_F, load_metric
from ..protocols import DAVIS_SHORT_SIDE
from .folder import DavisSequence, read_label_map
from .label_propagation import (
    PropagationSettings,
    first_frame_labels,
    labels_to_mask,
    propagate_labels,
)
from .region_boundary import VOID_LABEL

FeatureFunction = Callable[[np.ndarray], torch.Tensor]
"""`(H, W, 3)` uint8 RGB frame -> `(h, w, d)` patch features on a grid of the frame's aspect."""


class BackbonePatchFeatures:
    """Last-layer patch tokens of a backbone for a frame resized to a short side of ``short_side``.

    Both sides are rounded down to a multiple of the patch size (DINO floors the long side to a
    multiple of 64); the position embeddings are interpolated to the frame's grid.
    """

    def __init__(self, backbone: FrozenEncoder, short_side: int = DAVIS_SHORT_SIDE):
        self.backbone = backbone
        self.short_side = short_side
        self.mean, self.std = backbone.pixel_mean_std()

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        patch = self.backbone.patch_size
        scale = self.short_side / min(height, width)
        return max(patch, int(height * scale) // patch * patch), max(patch, int(width * scale) // patch * patch)

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        size = self.input_size(*frame.shape[:2])
        resized = np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)
        pixels = (torch.from_numpy(resized).permute(2, 0, 1) / 255.0 - self.mean) / self.std
        tokens = self.backbone.model(
            pixel_values=pixels[None].to(self.backbone.device), interpolate_pos_encoding=True
        ).last_hidden_state[0]
        grid = (size[0] // self.backbone.patch_size, size[1] // self.backbone.patch_size)
        # Patch tokens are the last h*w tokens, after [CLS] (and any register tokens).
        return tokens[-grid[0] * grid[1] :].reshape(*grid, -1)


def segment_sequence(
    sequence: DavisSequence, features: FeatureFunction, settings: PropagationSettings = PropagationSettings()
) -> Iterator[np.ndarray]:
    """Label maps `(H, W)` of every frame: the given first mask, then the propagated ones."""
    first = sequence.first_annotation()
    num_objects = int(first[first != VOID_LABEL].max(initial=0))
    yield first
    shapes: list[tuple[int, int]] = []

    def frame_features() -> Iterator[torch.Tensor]:
        for path in sequence.frames:
            with Image.open(path) as image:
                frame = np.asarray(image.convert("RGB"))
            shapes.append(frame.shape[:2])
            yield features(frame)

    stream = frame_features()
    first_features = next(stream)
    labels = first_frame_labels(first, tuple(first_features.shape[:2]), num_objects)
    for soft in propagate_labels(itertools.chain([first_features], stream), labels, settings):
        yield labels_to_mask(soft, shapes[-1])


def evaluate_davis(
    sequences: list[DavisSequence],
    features: FeatureFunction,
    settings: PropagationSettings = PropagationSettings(),
    save_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Segment every sequence and score it; returns the `jaccard_f` metric's output.

    ``save_dir``: also write the predicted masks as DAVIS-style palette PNGs,
    ``save_dir/<sequence>/<frame>.png``, for the official toolkit.
    """
    metric = load_metric(JACCARD_F)
    frame_sequence: list[str] = []
    total = sum(len(s.frames) for s in sequences)
    with tqdm(total=total, unit="frame", desc="DAVIS", disable=not progress) as bar:
        for sequence in sequences:
            bar.set_postfix_str(sequence.name)
            palette = sequence.palette()
            predictions, references = [], []
            for frame_path, annotation, predicted in zip(
                sequence.frames, sequence.annotations, segment_sequence(sequence, features, settings)
            ):
                if save_dir is not None:
                    _save_mask(predicted, Path(save_dir) / sequence.name / f"{frame_path.stem}.png", palette)
                if annotation is not None:
                    predictions.append(predicted)
                    references.append(read_label_map(annotation))
                bar.update(1)
            metric.add_batch(predictions=predictions, references=references)
            frame_sequence += [sequence.name] * len(references)
    try:
        return metric.compute(sequences=frame_sequence)
    except ValueError as err:  # e.g. every sequence too short or without objects to score
        raise DoraUserError(f"DAVIS: {err}") from err


def _save_mask(labels: np.ndarray, path: Path, palette: list[int] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels)  # greyscale "L"; a palette turns it into DAVIS's "P" PNG
    if palette:
        image.putpalette(palette)
    image.save(path)
