"""Evaluation results as JSON, and their conversion to a model card's ``model-index`` metadata.

Every `dora-hf eval` command writes one JSON file:

    {"format": 1, "task": "knn" | "linear" | "davis",
     "task_type": "image-classification", "task_name": "k-NN classification (frozen features)",
     "model": "...", "model_revision": "...",
     "dataset": {"name": "...", "config": null, "split": "validation", "revision": "..."},
     "metrics": [{"type": "accuracy", "name": "k-NN top-1 (k=20)", "value": 0.74, "args": {...}}, ...],
     "settings": {...},   # the protocol's parameters
     "details": {...}}    # everything else (per k, per sequence, ...)

Metric values are fractions in [0, 1]. ``metrics`` holds what belongs in a model card's results
table; `results_to_model_index` turns one or more such files into the ``model-index`` list that
``huggingface_hub.ModelCardData(model_name=..., eval_results=...)`` writes, so the export/push
path can add them to the card:

    from dora_hf.evaluation import read_results, results_to_eval_results
    card_data = ModelCardData(model_name="dora-wt-vits16",
                              eval_results=results_to_eval_results(read_results("knn.json"), "ImageNet-1k"))
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult
from huggingface_hub.repocard_data import eval_results_to_model_index

RESULTS_FORMAT = 1


@dataclass(frozen=True)
class EvalTask:
    """What a results file says of its task; one per `dora-hf eval` task."""

    task: str
    task_type: str
    task_name: str


def metric(type_: str, name: str, value: float, args: dict) -> dict:
    """One row of ``metrics``: a model card's results-table entry (value a fraction in [0, 1])."""
    return {"type": type_, "name": name, "value": value, "args": args}


def task_results(
    task: EvalTask, backbone: Any, *, dataset: dict, metrics: list[dict], settings: dict, details: dict
) -> dict:
    """The results of `task` for the evaluated `backbone` (its ``name`` and ``revision``)."""
    return make_results(
        task=task.task,
        task_type=task.task_type,
        task_name=task.task_name,
        model=backbone.name,
        model_revision=backbone.revision,
        dataset=dataset,
        metrics=metrics,
        settings=settings,
        details=details,
    )


def make_results(
    *,
    task: str,
    task_type: str,
    task_name: str,
    model: str,
    model_revision: str,
    dataset: dict,
    metrics: list[dict],
    settings: dict,
    details: dict,
) -> dict:
    """One evaluation's results in the JSON layout above."""
    return {
        "format": RESULTS_FORMAT,
        "task": task,
        "task_type": task_type,
        "task_name": task_name,
        "model": model,
        "model_revision": model_revision,
        "dataset": dataset,
        "metrics": metrics,
        "settings": settings,
        "details": details,
    }


def add_output_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out``: where a task's results JSON goes."""
    parser.add_argument("--out", type=Path, default=Path(default), help=f"results JSON (default: {default})")


def write_results(results: dict, path: str | Path) -> Path:
    """Write under a temporary name, then rename: a results file is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)
    return path


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def results_to_eval_results(
    results: dict | list[dict], dataset_name: str, dataset_type: str | None = None
) -> list[EvalResult]:
    """`huggingface_hub.EvalResult`s of every card metric, for ``ModelCardData(eval_results=...)``.

    Args:
        results: one results dict (as written by `dora-hf eval`) or several.
        dataset_name: the dataset as the card's table shows it ("ImageNet-1k", "DAVIS 2017").
        dataset_type: its hub id; defaults to the evaluated dataset's name when that is not a
            local path, else to ``dataset_name``.
    """
    records = [results] if isinstance(results, dict) else list(results)
    out = []
    for record in records:
        dataset = record.get("dataset", {})
        hub_type = dataset_type or (dataset.get("name") if not Path(str(dataset.get("name", ""))).exists() else None)
        for metric in record.get("metrics", []):
            out.append(
                EvalResult(
                    task_type=record["task_type"],
                    task_name=record.get("task_name"),
                    dataset_type=hub_type or dataset_name,
                    dataset_name=dataset_name,
                    dataset_config=dataset.get("config"),
                    dataset_split=dataset.get("split"),
                    dataset_revision=dataset.get("revision"),
                    metric_type=metric["type"],
                    metric_name=metric.get("name"),
                    metric_value=metric["value"],
                    metric_args=metric.get("args") or None,
                )
            )
    return out


def results_to_model_index(results: dict | list[dict], model_name: str, dataset_name: str) -> list[dict]:
    """The ``model-index`` metadata (a list with one model entry) holding the card metrics of ``results``.

    The structure is huggingface_hub's (``eval_results_to_model_index``), so it round-trips
    through ``ModelCardData`` and shows as the results table on the Hub.
    """
    return eval_results_to_model_index(model_name, results_to_eval_results(results, dataset_name))
