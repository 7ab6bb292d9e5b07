"""DAVIS-2017 semi-supervised video object segmentation by label propagation.

For each sequence: patch features of every frame, prepared as the protocol prepares frames
(``dino``: `dino_frames`, DINO's ``read_frame``; ``paper-text``: a PIL resize to the short side
with both sides floored to the patch size, and the model's own normalisation), the first
frame's mask propagated frame by frame (`label_propagation`), decoded to label maps at the
frame's size and scored with the shipped `jaccard_f` evaluate module: J, F and J&F per sequence
and over all objects.

The feature function is a parameter, so the protocol can be checked with features whose
behaviour is known (colours, or a stand-in model on the prepared pixels) and used with any
backbone.
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
from .dino_frames import (
    DINO_PIXEL_MEAN,
    DINO_PIXEL_STD,
    dino_first_frame_labels,
    prepare_dino_frame,
)
from .folder import DavisSequence, read_label_map
from .label_propagation import (
    PropagationSettings,
    dino_labels_to_mask,
    first_frame_labels,
    labels_to_mask,
    propagate_labels,
)
from .region_boundary import VOID_LABEL

FeatureFunction = Callable[[np.ndarray], torch.Tensor]
"""`(H, W, 3)` uint8 RGB frame -> `(h, w, d)` patch features on a grid of the frame's aspect."""

PixelFeatures = Callable[[torch.Tensor], torch.Tensor]
"""`(3, H, W)` prepared pixels (sides multiples of the patch size) -> `(H/p, W/p, d)` patch features."""


class ProtocolFrameFeatures:
    """Patch features of a frame prepared as the protocol prepares frames.

    ``dino``: DINO's ``read_frame`` (`dino_frames`); its prepared size need not be a multiple of
    the patch size (the short side is not floored), and DINO's patch embedding (a convolution
    with stride = kernel = patch) drops the last rows and columns that do not fill a patch, so
    they are cropped here. ``paper-text``: a PIL bilinear resize to the short side, both sides
    floored to a multiple of the patch size, normalised by ``pixel_mean_std``.
    """

    def __init__(
        self,
        pixel_features: PixelFeatures,
        patch_size: int,
        settings: PropagationSettings = PropagationSettings(),
        pixel_mean_std: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.pixel_features = pixel_features
        self.patch_size = patch_size
        self.settings = settings
        if pixel_mean_std is None:
            pixel_mean_std = (torch.tensor(DINO_PIXEL_MEAN).view(3, 1, 1), torch.tensor(DINO_PIXEL_STD).view(3, 1, 1))
        self.mean, self.std = pixel_mean_std

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """``paper-text``: the frame's size at the short side, both sides floored to the patch size."""
        patch = self.patch_size
        scale = self.settings.short_side / min(height, width)
        return max(patch, int(height * scale) // patch * patch), max(patch, int(width * scale) // patch * patch)

    def prepare(self, frame: np.ndarray) -> torch.Tensor:
        """`(3, H', W')` normalised pixels the model sees."""
        if self.settings.protocol == "dino":
            pixels = prepare_dino_frame(frame, self.settings.short_side)
            rows, cols = (side // self.patch_size * self.patch_size for side in pixels.shape[1:])
            if rows < 1 or cols < 1:
                raise DoraUserError(
                    f"--short-side {self.settings.short_side}: frames prepared to {tuple(pixels.shape[1:])} "
                    f"hold no {self.patch_size}-pixel patch"
                )
            return pixels[:, :rows, :cols]
        size = self.input_size(*frame.shape[:2])
        resized = np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)
        return (torch.from_numpy(resized).permute(2, 0, 1) / 255.0 - self.mean) / self.std

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        return self.pixel_features(self.prepare(frame))


class BackbonePatchFeatures(ProtocolFrameFeatures):
    """A backbone's last-layer patch tokens (after its final LayerNorm) for protocol-prepared frames.

    DINO's ``extract_feature`` reads ``get_intermediate_layers(frame, n=1)[0][:, 1:]``: the last
    block's output through the final norm, without [CLS]; here the last ``h*w`` tokens of
    ``last_hidden_state`` (after [CLS] and any register tokens), with the position embeddings
    interpolated to the frame's grid as the model does it.
    """

    def __init__(self, backbone: FrozenEncoder, settings: PropagationSettings = PropagationSettings()):
        mean_std = None if settings.protocol == "dino" else backbone.pixel_mean_std()
        super().__init__(self.patch_tokens, backbone.patch_size, settings, mean_std)
        self.backbone = backbone

    @torch.inference_mode()
    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.model(
            pixel_values=pixels[None].to(self.backbone.device), interpolate_pos_encoding=True
        ).last_hidden_state[0]
        grid = (pixels.shape[1] // self.patch_size, pixels.shape[2] // self.patch_size)
        return tokens[-grid[0] * grid[1] :].reshape(*grid, -1)


def segment_sequence(
    sequence: DavisSequence,
    features: FeatureFunction,
    settings: PropagationSettings = PropagationSettings(),
    patch_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Label maps `(H, W)` of every frame: the given first mask, then the propagated ones.

    ``patch_size``: needed by ``dino``, which puts the first mask on the patch grid by its own
    rule (``read_seg``) and upsamples the soft labels by the patch size; defaults to
    ``features.patch_size``.
    """
    first = sequence.first_annotation()
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
    grid = tuple(first_features.shape[:2])
    if settings.protocol == "dino":
        patch_size = patch_size or getattr(features, "patch_size", None)
        if not patch_size:
            raise ValueError("the dino protocol needs the patch size (pass patch_size)")
        labels = dino_first_frame_labels(first, settings.short_side, patch_size)
        if tuple(labels.shape[1:]) != grid:
            raise DoraUserError(
                f"{sequence.annotations[0]}: DINO's protocol puts this mask on a {tuple(labels.shape[1:])} patch grid "
                f"but its frame on {grid} (read_seg and read_frame size {first.shape[0]}x{first.shape[1]} images "
                "differently, e.g. square ones); use --protocol paper-text"
            )

        def decode(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
            return dino_labels_to_mask(soft, patch_size, size)
    else:
        num_objects = int(first[first != VOID_LABEL].max(initial=0))
        labels = first_frame_labels(first, grid, num_objects)
        decode = labels_to_mask
    for soft in propagate_labels(itertools.chain([first_features], stream), labels, settings):
        yield decode(soft, shapes[-1])


def evaluate_davis(
    sequences: list[DavisSequence],
    features: FeatureFunction,
    settings: PropagationSettings = PropagationSettings(),
    save_dir: Path | None = None,
    progress: bool = True,
    patch_size: int | None = None,
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
                sequence.frames, sequence.annotations, segment_sequence(sequence, features, settings, patch_size)
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
    """Write under a temporary name, then rename: an interrupted run leaves no truncated PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels)  # greyscale "L"; a palette turns it into DAVIS's "P" PNG
    if palette:
        image.putpalette(palette)
    partial = path.with_name(f".{path.name}.partial")
    image.save(partial, format="PNG")
    partial.replace(path)
