"""`dora-hf export CHECKPOINT --out DIR`: a training checkpoint's teacher as a transformers folder.

The folder holds the weights (`DoraForPreTraining`: backbone, projection head, tracking head),
the configuration, the image processor, the modeling code for `trust_remote_code` users and a
model card. It is written under a temporary name and renamed only when complete; see
`staged_folder` for what may be replaced.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError

from .cards import render_model_card
from .errors import DoraUserError
from .modeling import DoraConfig, DoraForPreTraining, DoraImageProcessor
from .staged_folder import staged_folder
from .training.checkpoints import CONFIG_FILE, RECIPE_FILE, RUN_STATE_FILE, resolve_checkpoint


def checkpoint_folder(checkpoint: Path) -> Path:
    """The complete checkpoint folder `checkpoint` names: itself, or a run folder's latest."""
    if (checkpoint / "checkpoints").is_dir():
        return resolve_checkpoint("latest", checkpoint)
    return resolve_checkpoint(str(checkpoint), checkpoint)


def load_teacher(checkpoint: Path) -> tuple[DoraForPreTraining, dict, int]:
    """The teacher network, the run's recipe and its step, from a complete checkpoint folder.

    A run's output folder stands for its latest complete checkpoint.
    """
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


def save_weights(model: DoraForPreTraining, folder: Path) -> None:
    """`save_pretrained`, with safetensors' I/O failures raised as the `OSError` they are.

    safetensors reports a full disk or a read-only folder as a `SafetensorError` whose message
    ends in ``(os error N)``; as an `OSError` it gets the one-line report of every other write
    failure (see `staged_folder`).
    """
    try:
        model.save_pretrained(folder)
    except SafetensorError as err:
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None or int(code.group(1)) not in errno.errorcode:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(folder / "model.safetensors")) from err


def load_eval_results(paths: list[str | Path]) -> list:
    """`dora-hf eval` result files as card `EvalResult`s; each is labelled with its dataset's name."""
    from .evaluation.results import read_results, results_to_eval_results

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
) -> Path:
    """Write the teacher of `checkpoint` as a transformers model folder at `out_dir`.

    `eval_results`: result files of `dora-hf eval`, shown in the card's results table and its
    `model-index` metadata. Only an earlier model folder is ever replaced (with `overwrite`), never
    a run folder, a checkpoint or a folder dora-hf did not write.
    """
    out_dir = Path(out_dir)
    source = checkpoint_folder(Path(checkpoint))
    keep = (Path(checkpoint), source)  # what is read must survive: the run folder given and its checkpoint
    with staged_folder(out_dir, overwrite=overwrite, kind="model", command="export", keep=keep) as staging:
        results = load_eval_results(eval_results or [])
        teacher, recipe, step = load_teacher(source)
        save_weights(teacher, staging)
        DoraImageProcessor.for_image_size(teacher.config.image_size).save_pretrained(staging)
        card = render_model_card(
            teacher.config,
            recipe,
            step,
            repo_id=repo_id or out_dir.name,
            model_name=out_dir.name,
            eval_results=results or None,
        )
        card.save(staging / "README.md")
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint folder (OUTPUT_DIR/checkpoints/step_N), or OUTPUT_DIR for its latest")
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument("--repo-id", default=None, help="hub id to show in the model card's snippets")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--eval-results", nargs="+", default=[], metavar="JSON", help="`dora-hf eval` results to show in the card"
    )


def run(args: argparse.Namespace) -> int:
    out = export_checkpoint(
        args.checkpoint, args.out, overwrite=args.overwrite, repo_id=args.repo_id, eval_results=args.eval_results
    )
    print(f"exported {out}; load it with AutoModel.from_pretrained({str(out)!r})")
    return 0
