"""Frozen image features of a dataset split, extracted in batches and cached as safetensors.

k-NN and linear evaluation read the same features many times (every k, every epoch, every
re-run with other settings), while extracting them is the expensive part. The cache file is
named by a hash of everything the features depend on: the model's revision (hub commit or
weight-file hash), the image processor's settings, the dataset's fingerprint (hub commit or
local files), the split, the columns and the feature kind. Anything changing gives a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import PIL.Image
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ...errors import DoraUserError
from ..encoder import FrozenEncoder
from .image_dataset import ImageSplit

CACHE_ENV = "DORA_HF_CACHE"
"""Environment variable overriding the cache root (default ``~/.cache/dora-hf``)."""
CACHE_FORMAT = 1
"""Bumped whenever the meaning of cached tensors changes, so old files are not reused."""


@dataclass
class FeatureSet:
    """Features `(N, D)` with labels `(N,)` indexing ``class_names``."""

    features: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def relabelled(self, class_names: list[str]) -> FeatureSet:
        """The same examples with labels indexing another class list; unknown classes become -1."""
        return FeatureSet(self.features, relabel(self.labels, self.class_names, class_names), list(class_names))


def relabel(labels: torch.Tensor, names: list[str], class_names: list[str]) -> torch.Tensor:
    """``labels`` indexing ``names`` turned into indices of ``class_names``; unknown classes become -1."""
    position = {name: i for i, name in enumerate(class_names)}
    mapping = torch.tensor([position.get(name, -1) for name in names], dtype=torch.long)
    return mapping[labels]


def default_cache_dir() -> Path:
    """``$DORA_HF_CACHE/features``, else ``~/.cache/dora-hf/features``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dora-hf"
    return Path(root) / "features"


def image_features(
    backbone: FrozenEncoder, pixel_values: torch.Tensor, n_last_blocks: int = 1, interpolate_pos_encoding: bool = False
) -> torch.Tensor:
    """`(B, D * n_last_blocks)` [CLS] features after the final LayerNorm.

    ``n_last_blocks=1`` is the image feature of k-NN evaluation; DINO's linear evaluation of
    ViT-S concatenates the normalised [CLS] tokens of the last 4 blocks (its
    ``get_intermediate_layers``). The [CLS] token is read from ``last_hidden_state`` rather than
    ``pooler_output``, which transformers' ViT replaces by a trained dense+tanh pooler.
    ``interpolate_pos_encoding`` resamples the position embeddings for images of another size
    than the model's (passed only when set: not every ViT-style model takes it).
    """
    model = backbone.model
    pixel_values = pixel_values.to(backbone.device)
    resample = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
    if n_last_blocks == 1:
        return model(pixel_values=pixel_values, **resample).last_hidden_state[:, 0]
    output = model(pixel_values=pixel_values, output_hidden_states=True, **resample)
    blocks = output.hidden_states[1:]  # the embeddings come first
    if n_last_blocks > len(blocks):
        raise DoraUserError(f"--n-last-blocks {n_last_blocks}: the model has only {len(blocks)} blocks")
    norm = backbone.final_layernorm()
    return torch.cat([norm(hidden[:, 0]) for hidden in blocks[-n_last_blocks:]], dim=-1)


@torch.inference_mode()
def extract_features(
    backbone: FrozenEncoder, split: ImageSplit, n_last_blocks: int = 1, batch_size: int = 64, progress: bool = True
) -> FeatureSet:
    """Features of every row of ``split``, in dataset order, with a progress bar."""
    chunks: list[torch.Tensor] = []
    raw_labels: list = []
    # Undecoded, so that an image that cannot be read is named (`datasets` would raise PIL's error alone).
    rows = split.rows.select_columns([split.image_column, split.label_column])
    if rows.features is not None:  # streaming splits may not know their features
        rows = rows.cast_column(split.image_column, datasets.Image(decode=False))
    bar = tqdm(total=split.num_rows, unit="img", desc=f"features {split.describe()}", disable=not progress)
    try:
        for batch in rows.iter(batch_size=batch_size):
            first_row = len(raw_labels)
            images = [decode_image(value, first_row + i, split) for i, value in enumerate(batch[split.image_column])]
            pixels = backbone.processor(images=images, return_tensors="pt")["pixel_values"]
            chunks.append(image_features(backbone, pixels, n_last_blocks).float().cpu())
            raw_labels += batch[split.label_column]
            bar.update(len(images))
    finally:
        bar.close()
    if not chunks:
        raise DoraUserError(f"{split.describe()}: the split is empty")
    labels, class_names = encode_labels(raw_labels, split)
    return FeatureSet(torch.cat(chunks), labels, class_names)


def decode_image(value: dict | PIL.Image.Image | None, row: int, split: ImageSplit) -> PIL.Image.Image:
    """One stored image as RGB; one that cannot be read is an error naming its row and file."""
    is_stored = isinstance(value, dict) and (value.get("bytes") is not None or value.get("path") is not None)
    if not is_stored and not isinstance(value, PIL.Image.Image):
        raise DoraUserError(f"{split.describe()}: column {split.image_column!r} holds values that are not images (row {row})")
    try:
        image = value if isinstance(value, PIL.Image.Image) else datasets.Image().decode_example(value)
        return image.convert("RGB")  # PIL reads the pixels only now: a truncated file fails here
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for unreadable files (SyntaxError: broken PNG)
        where = f" ({value['path']})" if isinstance(value, dict) and value.get("path") else ""
        raise DoraUserError(f"{split.describe()}: row {row}{where} is not a readable image: {err}") from err


def load_or_extract_features(
    backbone: FrozenEncoder,
    split: ImageSplit,
    n_last_blocks: int = 1,
    batch_size: int = 64,
    cache_dir: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FeatureSet:
    """Cached features when the cache has them, else extract and cache them (``cache_dir=None``: no cache)."""
    if cache_dir is None:
        return extract_features(backbone, split, n_last_blocks, batch_size, progress)
    identity = cache_identity(backbone, split, n_last_blocks)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        log(f"features of {split.describe()}: cached in {path}")
        return read_feature_file(path)
    features = extract_features(backbone, split, n_last_blocks, batch_size, progress)
    write_feature_file(path, features, identity)
    log(f"features of {split.describe()}: {tuple(features.features.shape)} cached in {path}")
    return features


def cache_identity(backbone: FrozenEncoder, split: ImageSplit, n_last_blocks: int) -> dict:
    """Everything the features depend on; its hash names the cache file."""
    processor = backbone.processor.to_dict() if hasattr(backbone.processor, "to_dict") else repr(backbone.processor)
    return {
        "format": CACHE_FORMAT,
        "model": backbone.name,
        "model_revision": backbone.revision,
        "processor": json.dumps(processor, sort_keys=True, default=str),
        "dataset": split.dataset,
        "dataset_config": split.config,
        "dataset_revision": split.fingerprint,
        "split": split.split,
        "image_column": split.image_column,
        "label_column": split.label_column,
        "n_last_blocks": n_last_blocks,
    }


def write_feature_file(path: Path, features: FeatureSet, identity: dict) -> None:
    """Save atomically (write a temporary file, then rename) so an interrupted run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"identity": json.dumps(identity, sort_keys=True), "class_names": json.dumps(features.class_names)}
    partial = path.with_suffix(f".partial-{os.getpid()}")
    save_file({"features": features.features.contiguous(), "labels": features.labels.contiguous()}, partial, metadata)
    partial.replace(path)


def read_feature_file(path: Path) -> FeatureSet:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        return FeatureSet(
            features=handle.get_tensor("features"),
            labels=handle.get_tensor("labels"),
            class_names=json.loads(metadata.get("class_names", "[]")),
        )


def encode_labels(values: list, split: ImageSplit) -> tuple[torch.Tensor, list[str]]:
    """Integer labels and their class names, from a `ClassLabel`, int or str label column."""
    if any(value is None or value == -1 for value in values):
        raise DoraUserError(
            f"{split.describe()}: column {split.label_column!r} has unlabelled examples (None or -1); "
            "evaluate on a labelled split"
        )
    if split.class_names is not None:
        return torch.tensor(values, dtype=torch.long), split.class_names
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        names = [str(value) for value in sorted(set(values))]
        values = [str(value) for value in values]
    elif all(isinstance(value, str) for value in values):
        names = sorted(set(values))
    else:
        kinds = sorted({type(value).__name__ for value in values})
        raise DoraUserError(
            f"{split.describe()}: column {split.label_column!r} holds {', '.join(kinds)} values; "
            "class labels must be ClassLabel, int or str"
        )
    position = {name: i for i, name in enumerate(names)}
    return torch.tensor([position[value] for value in values], dtype=torch.long), names
