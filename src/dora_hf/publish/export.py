"""`dora-hf export SOURCE --format dora|vit|timm --out DIR`: a DoRA model as a folder to load elsewhere.

SOURCE is a training checkpoint (or a run's output folder, for its latest), a saved DoRA model
folder or a hub model id. `--format dora` (the default) writes the weights (`DoraForPreTraining`
for a checkpoint: backbone, projection head, tracking head), the configuration, the image
processor, the modeling code for `trust_remote_code` users and a model card. `vit` and `timm`
write the backbone alone in layouts that need no DoRA code (`export_formats`). The folder is
written under a temporary name and renamed only when complete; see `staged_folder` for what may
be replaced.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DoraUserError
from ..folders.staged_folder import staged_folder
from ..folders.weight_files import named_weight_errors

if TYPE_CHECKING:  # imported where used, so that `dora-hf export --help` imports neither torch nor transformers
    from ..modeling import DoraForPreTraining, DoraModel, DoraPreTrainedModel

FORMATS = ("dora", "vit", "timm")
"""`--format` values: DoRA's own classes (with their code), transformers' ViT, timm's ViT (`export_formats`)."""


def checkpoint_folder(checkpoint: Path) -> Path:
    """The complete checkpoint folder `checkpoint` names: itself, or a run folder's latest."""
    from ..folders.checkpoint_layout import resolve_checkpoint

    if (checkpoint / "checkpoints").is_dir():
        return resolve_checkpoint("latest", checkpoint)
    return resolve_checkpoint(str(checkpoint), checkpoint)


def load_teacher(checkpoint: Path) -> tuple[DoraForPreTraining, dict, int]:
    """The teacher network, the run's recipe and its step, from a complete checkpoint folder.

    A run's output folder stands for its latest complete checkpoint.
    """
    import torch

    from ..folders.checkpoint_layout import CONFIG_FILE, RECIPE_FILE, RUN_STATE_FILE
    from ..modeling import DoraConfig, DoraForPreTraining

    checkpoint = checkpoint_folder(checkpoint)
    missing = [name for name in (CONFIG_FILE, RECIPE_FILE, RUN_STATE_FILE) if not (checkpoint / name).is_file()]
    if missing:
        raise DoraUserError(f"{checkpoint} is not a DoRA training checkpoint: missing {', '.join(missing)}")
    config = DoraConfig.from_dict(json.loads((checkpoint / CONFIG_FILE).read_text()))
    recipe = json.loads((checkpoint / RECIPE_FILE).read_text())
    state = torch.load(checkpoint / RUN_STATE_FILE, map_location="cpu", weights_only=True)
    teacher = DoraForPreTraining(config)
    teacher.load_state_dict(state["teacher"])
    return teacher.eval(), recipe, int(state["step"])


@contextmanager
def safetensors_os_errors(folder: Path) -> Iterator[None]:
    """safetensors' I/O failures under `folder` raised as the `OSError` they are.

    safetensors reports a full disk or a read-only folder as a `SafetensorError` whose message
    ends in ``(os error N)``; as an `OSError` it gets the one-line report of every other write
    failure (see `staged_folder`).
    """
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None or int(code.group(1)) not in errno.errorcode:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(folder / "model.safetensors")) from err


def save_weights(model: DoraPreTrainedModel, folder: Path) -> None:
    """`save_pretrained`, with safetensors' I/O failures raised as `OSError` (`safetensors_os_errors`)."""
    with safetensors_os_errors(folder):
        model.save_pretrained(folder)


def dora_classes() -> dict[str, type[DoraPreTrainedModel]]:
    """The classes a saved DoRA folder's `architectures` may name; a folder is re-exported as the same class."""
    from ..modeling import (
        DoraBackbone,
        DoraForImageClassification,
        DoraForPreTraining,
        DoraModel,
    )

    return {cls.__name__: cls for cls in (DoraModel, DoraForPreTraining, DoraBackbone, DoraForImageClassification)}


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


@dataclass
class ExportSource:
    """What `SOURCE` resolved to: the folder to read, what must survive the write, and a card if any."""

    folder: Path
    keep: tuple[Path, ...]
    is_checkpoint: bool
    card_file: Path | None = None


def is_model_folder(path: Path) -> bool:
    """Whether `path` is a saved transformers model folder (a `config.json`), not a training checkpoint."""
    from ..folders.checkpoint_layout import RUN_STATE_FILE

    return (path / "config.json").is_file() and not (path / RUN_STATE_FILE).is_file() and not (path / "checkpoints").is_dir()


def resolve_source(source: str | Path) -> ExportSource:
    """A training checkpoint or run folder, a saved model folder, or a hub model id downloaded to the cache.

    A path that exists is always read locally; only a name that is not a path on disk is looked
    up on the Hub, so a mistyped folder fails as not found rather than as a network error.
    """
    path = Path(source)
    if path.exists():
        if is_model_folder(path):
            card = path / "README.md"
            return ExportSource(path, (path,), False, card if card.is_file() else None)
        checkpoint = checkpoint_folder(path)
        return ExportSource(checkpoint, (path, checkpoint), True)
    name = str(source)
    if not HUB_ID.fullmatch(name):
        raise DoraUserError(f"export source not found: {name} (not a folder, and not a hub model id)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "README.md"]))
    except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise DoraUserError(
            f"export source {name} is not a local folder, and the Hub gave no model repo of that name: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    card = folder / "README.md"
    return ExportSource(folder, (folder,), False, card if card.is_file() else None)


def load_saved_model(folder: Path, backbone_only: bool) -> DoraPreTrainedModel:
    """A saved DoRA folder's model as its recorded class (or its backbone), refusing any missing weight."""
    from ..modeling import DoraConfig, DoraModel

    try:
        record = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise DoraUserError(f"cannot read {folder / 'config.json'}: {err}") from err
    if record.get("model_type") != DoraConfig.model_type:
        raise DoraUserError(
            f"{folder} holds a {record.get('model_type')!r} model, not a DoRA one; export reads DoRA models"
        )
    names = record.get("architectures") or ["DoraModel"]
    classes = dora_classes()
    cls = DoraModel if backbone_only else classes.get(names[0])
    if cls is None:
        raise DoraUserError(f"{folder}: architecture {names[0]!r} is not a DoRA class ({', '.join(classes)})")
    with named_weight_errors(folder):
        model, info = cls.from_pretrained(folder, output_loading_info=True)
    problems = {kind: sorted(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        found = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, keys))}" for kind, keys in problems.items() if keys)
        raise DoraUserError(f"{folder} does not load as {cls.__name__} without changes ({found})")
    return model.eval()


def backbone_of(model: DoraPreTrainedModel) -> DoraModel:
    """The `DoraModel` inside any DoRA class."""
    from ..modeling import DoraModel

    return model if isinstance(model, DoraModel) else model.dora


def load_eval_results(paths: list[str | Path]) -> list:
    """`dora-hf eval` result files as card `EvalResult`s; each is labelled with its dataset's name."""
    from ..evaluation.results import read_results, results_to_eval_results

    collected = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DoraUserError(f"evaluation results file not found: {path}")
        try:
            record = read_results(path)
            name = str(record.get("dataset", {}).get("name") or path.stem)
            collected.extend(results_to_eval_results(record, dataset_name=name))
        except (ValueError, KeyError, TypeError) as err:
            raise DoraUserError(f"{path} is not a `dora-hf eval` results file: {err}") from err
    return collected


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    repo_id: str | None = None,
    eval_results: list[str | Path] | None = None,
    format: str = "dora",
) -> Path:
    """Write the model of `checkpoint` (a training checkpoint, model folder or hub id) at `out_dir`.

    `format`: `"dora"` (DoRA's classes, a training checkpoint's teacher with its head), `"vit"`
    (transformers' `ViTModel`) or `"timm"` (timm's ViT safetensors). `eval_results`: result files
    of `dora-hf eval`, shown in the card's results table and its `model-index` metadata (DoRA
    format from a training checkpoint, whose recipe the card describes). Only an earlier model
    folder is ever replaced (with `overwrite`), never a run folder, a checkpoint, the source or a
    folder dora-hf did not write.
    """
    if format not in FORMATS:
        raise DoraUserError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    out_dir = Path(out_dir)
    source = resolve_source(checkpoint)
    if eval_results and not (source.is_checkpoint and format == "dora"):
        raise DoraUserError(
            "--eval-results goes into the card written from a training run's recipe: export a training "
            "checkpoint with --format dora to use it"
        )
    from ..modeling import DoraImageProcessor
    from .cards import render_model_card
    from .export_formats import write_timm, write_vit

    with staged_folder(out_dir, overwrite=overwrite, kind="model", command="export", keep=source.keep) as staging:
        results = load_eval_results(eval_results or [])
        if source.is_checkpoint:
            model, recipe, step = load_teacher(source.folder)
            processor = DoraImageProcessor.for_image_size(model.config.image_size)
        else:
            model = load_saved_model(source.folder, backbone_only=format != "dora")
            recipe, step = None, 0
            if (source.folder / "preprocessor_config.json").is_file():
                processor = DoraImageProcessor.from_pretrained(source.folder)
            else:
                processor = DoraImageProcessor.for_image_size(model.config.image_size)
        name = repo_id or out_dir.name
        if format in ("vit", "timm"):
            with safetensors_os_errors(staging):
                (write_vit if format == "vit" else write_timm)(backbone_of(model), processor, staging, name)
        else:
            save_weights(model, staging)
            processor.save_pretrained(staging)
            if recipe is not None:
                card = render_model_card(
                    model.config, recipe, step, repo_id=name, model_name=out_dir.name, eval_results=results or None
                )
                card.save(staging / "README.md")
            elif source.card_file is not None:  # a saved folder's card, written from its run's recipe
                shutil.copyfile(source.card_file, staging / "README.md")
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="SOURCE",
        help="a checkpoint folder (OUTPUT_DIR/checkpoints/step_N), OUTPUT_DIR for its latest, a saved DoRA "
        "model folder, or a hub model id",
    )
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="dora",
        help="dora: DoRA's classes and code (default); vit: a transformers ViTModel folder; timm: timm's "
        "vit_small_patch16_224 layout (both: the backbone alone, no DoRA code needed)",
    )
    parser.add_argument("--repo-id", default=None, help="hub id to show in the model card's snippets")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--eval-results", nargs="+", default=[], metavar="JSON", help="`dora-hf eval` results to show in the card"
    )


LOAD_HINTS = {
    "dora": "AutoModel.from_pretrained({out!r})",
    "vit": "transformers.ViTModel.from_pretrained({out!r})",
    "timm": "timm.create_model('local-dir:{out}', pretrained=True)",
}


def run(args: argparse.Namespace) -> int:
    out = export_checkpoint(
        args.checkpoint,
        args.out,
        overwrite=args.overwrite,
        repo_id=args.repo_id,
        eval_results=args.eval_results,
        format=args.format,
    )
    print(f"exported {out} ({args.format}); load it with {LOAD_HINTS[args.format].format(out=str(out))}")
    return 0
