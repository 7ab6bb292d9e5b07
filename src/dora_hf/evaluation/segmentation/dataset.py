"""One split of a Hugging Face semantic-segmentation dataset: images and their class-id maps.

A hub id, a local data folder (parquet, `imagefolder` with a `metadata.jsonl` naming each label
map in a `label_file_name` column, ...) or a `save_to_disk` folder, with one image column and one
label-map column (a single-channel image, or a 2-D array, of class ids). ADE20K's raw maps number
the classes from 1 and use 0 for "other": `reduce_labels` makes 0 the ignored 255 and subtracts
1 from the rest, as mmseg's `reduce_zero_label=True` and transformers' `do_reduce_labels` do.

Every label map is read once before any training (`scan_label_maps`), so that a label map of
another size than its image, or a class id the head cannot predict, stops the run at once, with
the row named, rather than hours into it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from datasets.exceptions import DatasetsError
from PIL import Image

from ...errors import DoraUserError
from ..classification.image_dataset import available_splits, choose_split
from .protocol import IGNORE_INDEX

LABEL_MODES = ("L", "P", "I", "I;16", "1")
"""PIL modes that hold one class id per pixel."""


@dataclass
class SegmentationSplit:
    """Rows of one split, with what names them and how their label maps are read."""

    dataset: str
    split: str
    image_column: str
    label_column: str
    rows: datasets.Dataset
    reduce_labels: bool
    fingerprint: str
    config: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self) -> str:
        return f"{self.dataset}" + (f" ({self.config})" if self.config else "") + f" [{self.split}]"

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `index` as an `(H, W, 3)` uint8 RGB image and its `(H, W)` int64 class ids (255: ignored)."""
        row = self.rows[index]
        image = np.asarray(row[self.image_column].convert("RGB"))
        label = self.label_map(row[self.label_column], index)
        if label.shape != image.shape[:2]:
            raise DoraUserError(self._size_error(index, image.shape[:2], label.shape))
        return image, label

    def label_map(self, value: object, index: int) -> np.ndarray:
        """A label-map cell as int64 class ids, reduced if asked."""
        if isinstance(value, Image.Image):
            if value.mode not in LABEL_MODES:
                raise DoraUserError(
                    f"{self.describe()} row {index}: column {self.label_column!r} holds a {value.mode} image; "
                    "a label map needs one class id per pixel (a single-channel or palette PNG)"
                )
            label = np.asarray(value)
        else:
            label = np.asarray(value)
            if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
                raise DoraUserError(
                    f"{self.describe()} row {index}: column {self.label_column!r} is not a label map "
                    f"(an image or a 2-D array of class ids), got {type(value).__name__} of shape {label.shape}"
                )
        label = label.astype(np.int64)
        return reduce_labels(label) if self.reduce_labels else label

    def _size_error(self, index: int, image_size: tuple[int, ...], label_size: tuple[int, ...]) -> str:
        return (
            f"{self.describe()} row {index}: the label map is {label_size[1]}x{label_size[0]} but its image is "
            f"{image_size[1]}x{image_size[0]} (width x height); each label map must match its image"
        )


def reduce_labels(label: np.ndarray) -> np.ndarray:
    """ADE20K's ids to the head's: 0 ("other") and 255 ignored, every other id minus 1."""
    reduced = label - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


def open_segmentation_split(
    dataset: str,
    split: str | None,
    image_column: str = "image",
    label_column: str = "label",
    config: str | None = None,
    data_dir: str | None = None,
    revision: str | None = None,
    max_samples: int | None = None,
    reduce_labels: bool = False,
) -> SegmentationSplit:
    """Open `split` of `dataset` (None: validation, else test) and check its columns."""
    rows_of, available, fingerprint = _source(dataset, config, data_dir, revision)
    split = choose_split(dataset, split, available)
    rows = rows_of(split)
    missing = [column for column in (image_column, label_column) if column not in rows.features]
    if missing:
        raise DoraUserError(
            f"dataset {dataset} [{split}]: no column {' or '.join(repr(c) for c in missing)}; "
            f"columns: {', '.join(rows.features)} (choose with --image-column / --label-column)"
        )
    if not isinstance(rows.features[image_column], datasets.Image):
        raise DoraUserError(
            f"dataset {dataset} [{split}]: column {image_column!r} holds {rows.features[image_column]}, not images"
        )
    if len(rows) == 0:
        raise DoraUserError(f"dataset {dataset}: split {split!r} is empty")
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    return SegmentationSplit(
        dataset=dataset,
        split=split,
        image_column=image_column,
        label_column=label_column,
        rows=rows,
        reduce_labels=reduce_labels,
        fingerprint=fingerprint + (f":first{max_samples}" if max_samples else ""),
        config=config,
    )


def scan_label_maps(split: SegmentationSplit, num_labels: int | None, progress: bool = True) -> int:
    """Check every row (label map as large as its image, ids below `num_labels`); the largest id + 1.

    Images are measured from their headers, without decoding their pixels.
    """
    from tqdm.auto import tqdm

    headers = split.rows.cast_column(split.image_column, datasets.Image(decode=False))
    largest = -1
    for index, row in enumerate(tqdm(headers, desc=f"checking {split.split} label maps", disable=not progress)):
        width, height = _image_size(row[split.image_column])
        label = split.label_map(row[split.label_column], index)
        if label.shape != (height, width):
            raise DoraUserError(split._size_error(index, (height, width), label.shape))
        ids = label[label != IGNORE_INDEX]
        if ids.size == 0:
            continue
        low, high = int(ids.min()), int(ids.max())
        if low < 0:
            raise DoraUserError(f"{split.describe()} row {index}: negative class id {low} in the label map")
        if num_labels is not None and high >= num_labels:
            hint = "" if split.reduce_labels else "; ADE20K's raw maps need --reduce-labels"
            raise DoraUserError(
                f"{split.describe()} row {index}: class id {high} is beyond the head's {num_labels} classes "
                f"(ids 0..{num_labels - 1}, {IGNORE_INDEX} ignored): raise --num-labels{hint}"
            )
        largest = max(largest, high)
    return largest + 1


def _image_size(cell: dict) -> tuple[int, int]:
    """(width, height) of an undecoded image cell, from its header."""
    source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
    with Image.open(source) as image:
        return image.size


def _source(
    dataset: str, config: str | None, data_dir: str | None, revision: str | None
) -> tuple[Callable[[str], datasets.Dataset], list[str], str]:
    """How to get a split's rows, the split names, and what identifies the data."""
    folder = Path(dataset)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        try:
            saved = datasets.load_from_disk(str(folder))
        except (OSError, ValueError, DatasetsError) as err:
            raise DoraUserError(f"dataset {dataset}: cannot read the saved dataset ({err})") from err
        splits = saved if isinstance(saved, datasets.DatasetDict) else datasets.DatasetDict({"train": saved})
        first = next(iter(splits.values()))
        return splits.__getitem__, list(splits), f"saved:{first._fingerprint}"
    try:
        builder = datasets.load_dataset_builder(dataset, name=config, data_dir=data_dir, revision=revision)
    except (FileNotFoundError, DatasetsError) as err:
        raise DoraUserError(f"dataset {dataset}: not found or has no data files ({err})") from err
    except (ValueError, OSError) as err:
        raise DoraUserError(f"dataset {dataset}: cannot be opened ({err})") from err

    def rows_of(split: str) -> datasets.Dataset:
        try:
            builder.download_and_prepare()
            return builder.as_dataset(split=split)
        except (ValueError, KeyError) as err:
            if "corresponds to no data" in str(err):
                raise DoraUserError(f"dataset {dataset}: split {split!r} is empty") from err
            raise DoraUserError(f"dataset {dataset}: cannot open split {split!r} ({err})") from err
        except (OSError, DatasetsError) as err:
            raise DoraUserError(f"dataset {dataset}: cannot read split {split!r} ({err})") from err

    return rows_of, available_splits(builder), f"{builder.config_id}:{builder.hash}"
