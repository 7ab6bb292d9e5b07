"""One split of a Hugging Face image-classification dataset, opened and checked before any work.

Works for hub datasets and local folders (`imagefolder`, parquet, ...), in memory-mapped or
streaming mode, through `datasets.load_dataset_builder`: the builder's hash identifies the data
(the hub commit or the local files), which is what the feature cache is keyed by. Wrong split
names, missing columns and empty splits are reported as user errors naming what exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import datasets
from datasets.exceptions import DatasetsError

from ...errors import DoraUserError


@dataclass
class ImageSplit:
    """Rows of one split plus what identifies them."""

    dataset: str
    split: str
    image_column: str
    label_column: str
    rows: datasets.Dataset | datasets.IterableDataset
    num_rows: int | None
    """Known length (always for memory-mapped splits; from the dataset info when streaming)."""
    fingerprint: str
    """Changes when the data changes: the builder's hash (hub commit or local files)."""
    class_names: list[str] | None
    """Names of a `ClassLabel` label column; None for plain int or str labels."""
    config: str | None = None

    def describe(self) -> str:
        return f"{self.dataset}" + (f" ({self.config})" if self.config else "") + f" [{self.split}]"


def open_image_split(
    dataset: str,
    split: str | None,
    image_column: str = "image",
    label_column: str = "label",
    config: str | None = None,
    data_dir: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    max_samples: int | None = None,
    cache_dir: str | None = None,
) -> ImageSplit:
    """Open ``split`` of ``dataset`` and check its columns and size; raise `DoraUserError` if unusable.

    ``split=None`` picks the evaluation split: validation, else test.
    """
    builder = _builder(dataset, config, data_dir, revision, cache_dir)
    available = available_splits(builder)
    split = choose_split(dataset, split, available)
    try:
        if streaming:
            rows = builder.as_streaming_dataset(split=split)
        else:
            builder.download_and_prepare()
            rows = builder.as_dataset(split=split)
    except (ValueError, KeyError) as err:
        if "corresponds to no data" in str(err):  # how `datasets` reports a split without rows
            raise DoraUserError(f"dataset {dataset}: split {split!r} is empty") from err
        raise DoraUserError(f"dataset {dataset}: cannot open split {split!r} ({err})") from err
    except (OSError, DatasetsError) as err:
        raise DoraUserError(f"dataset {dataset}: cannot read split {split!r} ({err})") from err

    features = rows.features
    if features is not None:
        missing = [c for c in (image_column, label_column) if c not in features]
        classes = class_folders(builder) if missing == [label_column] == ["label"] else None
        if classes is not None and len(classes) < 2:
            raise DoraUserError(
                f"dataset {dataset} [{split}]: k-NN and linear evaluation need at least two classes, but all images "
                f"are in one class folder ({', '.join(sorted(classes)) or 'none'}), so imagefolder gives them no "
                f"{label_column!r} column; put each class's images in a sub-folder of its own"
            )
        if missing:
            raise DoraUserError(
                f"dataset {dataset} [{split}]: no column {' or '.join(repr(c) for c in missing)}; "
                f"columns: {', '.join(features)} (choose with --image-column / --label-column)"
            )
        if not isinstance(features[image_column], datasets.Image):
            raise DoraUserError(
                f"dataset {dataset} [{split}]: column {image_column!r} holds {features[image_column]}, not images"
            )
    num_rows = _num_rows(rows, builder, split)
    if num_rows == 0:
        raise DoraUserError(f"dataset {dataset}: split {split!r} is empty")
    if max_samples is not None:
        rows = rows.take(max_samples) if streaming else rows.select(range(min(max_samples, num_rows or 0)))
        num_rows = min(max_samples, num_rows) if num_rows is not None else None
    label_feature = features[label_column] if features is not None else None
    return ImageSplit(
        dataset=dataset,
        split=split,
        image_column=image_column,
        label_column=label_column,
        rows=rows,
        num_rows=num_rows,
        fingerprint=f"{builder.config_id}:{builder.hash}" + (f":first{max_samples}" if max_samples else ""),
        class_names=list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None,
        config=config,
    )


def available_splits(builder: datasets.DatasetBuilder) -> list[str]:
    """Split names a builder knows without preparing it (data files, else the dataset info)."""
    data_files = getattr(builder.config, "data_files", None)
    if data_files:
        return [str(name) for name in data_files]
    return [str(name) for name in builder.info.splits or []]


def class_folders(builder: datasets.DatasetBuilder) -> set[str] | None:
    """The class folder names of a folder-based dataset (imagefolder), over all splits; None for
    other builders. `datasets` labels such a dataset only when it finds two or more of them."""
    if not hasattr(builder.config, "drop_labels"):
        return None
    data_files = builder.config.data_files or {}
    files = [PurePosixPath(str(f).replace("\\", "/")) for split_files in data_files.values() for f in split_files]
    extensions = {e.lower() for e in getattr(builder, "EXTENSIONS", [])}
    return {f.parent.name for f in files if not extensions or f.suffix.lower() in extensions}


def choose_split(dataset: str, split: str | None, available: list[str]) -> str:
    """`split` if the dataset has it; None picks the evaluation split (validation, else test)."""
    if split is None:
        split = default_eval_split(available)
        if split is None:
            raise DoraUserError(
                f"dataset {dataset}: no validation or test split to evaluate on; name one with --split "
                f"(available: {', '.join(available) or 'none found'})"
            )
    if available and split not in available:
        raise DoraUserError(f"dataset {dataset}: no split {split!r}; available splits: {', '.join(available)}")
    return split


def default_eval_split(splits: Iterable[str]) -> str | None:
    """The split DINO-style evaluations score on when none is named: validation, else test."""
    splits = list(splits)
    for name in ("validation", "val", "test"):
        if name in splits:
            return name
    return None


def _builder(
    dataset: str, config: str | None, data_dir: str | None, revision: str | None, cache_dir: str | None
) -> datasets.DatasetBuilder:
    try:
        return datasets.load_dataset_builder(
            dataset, name=config, data_dir=data_dir, revision=revision, cache_dir=cache_dir
        )
    except (FileNotFoundError, DatasetsError) as err:
        hint = " (for a local folder of class sub-folders use --dataset imagefolder --data-dir DIR)" if data_dir is None else ""
        raise DoraUserError(f"dataset {dataset}: not found or has no data files ({err}){hint}") from err
    except (ValueError, OSError) as err:
        raise DoraUserError(f"dataset {dataset}: cannot be opened ({err})") from err


def _num_rows(rows: datasets.Dataset | datasets.IterableDataset, builder: datasets.DatasetBuilder, split: str) -> int | None:
    if isinstance(rows, datasets.Dataset):
        return len(rows)
    info = (builder.info.splits or {}).get(split)
    return info.num_examples if info is not None and info.num_examples else None
