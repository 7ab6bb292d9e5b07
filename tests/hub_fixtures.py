"""Session fixtures: a tiny exported DoRA model, and a local Hub (olah, see hub_server.py) serving it and a dataset.

The model is the teacher of a 2-step tiny pretraining run, exported with `dora-hf export`'s code
path; the dataset is the `tiny_frames_dataset` prepared with `dora-hf prepare-data`'s code path. Each
repo holds exactly the files `dora-hf push` would upload (`dora_hf.publish.push.plan_upload`).
Register with `pytest_plugins = ("hub_fixtures",)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import LocalHub

MODEL_REPO = "testorg/dora-wt-vits16"
DATASET_REPO = "testorg/walking-tours-mini"

_HF_VARIABLES = (
    "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_MODULES_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE",
    "HF_ENDPOINT", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
    "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
)


@dataclass
class PublishedHub:
    """The running hub, where its repos came from, and how to point a client at it."""

    server: LocalHub
    model_dir: Path
    dataset_dir: Path
    model_repo: str = MODEL_REPO
    dataset_repo: str = DATASET_REPO

    def client_env(self, hf_home: Path, **extra: str) -> dict[str, str]:
        """Environment of a client process: this hub's endpoint and a fresh, empty HF_HOME."""
        env = {k: v for k, v in os.environ.items() if k not in _HF_VARIABLES}
        env.update(
            HF_HOME=str(hf_home), HF_ENDPOINT=self.server.endpoint, HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
        )
        env.update(extra)
        return env


def export_tiny_model(dataset: Path, work: Path, repo_id: str) -> Path:
    """Pretrain the tiny recipe for 2 steps on `dataset` and export the teacher for `repo_id`."""
    from accelerate import Accelerator
    from test_pretrain import tiny_recipe

    from dora_hf.publish.export import export_checkpoint
    from dora_hf.pretrain import pretrain

    recipe = tiny_recipe(dataset, work / "run", max_steps=2, checkpointing_steps=2, export_dir=str(work / "loop-export"))
    pretrain(recipe, Accelerator(cpu=True))
    return export_checkpoint(work / "run", work / repo_id.split("/")[1], repo_id=repo_id)


@pytest.fixture(scope="session")
def exported_model(tiny_frames_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `dora-hf export` folder of a 2-step tiny run, its card made for `testorg/dora-wt-vits16`."""
    return export_tiny_model(tiny_frames_dataset, tmp_path_factory.mktemp("hub-sources"), MODEL_REPO)


@pytest.fixture(scope="session")
def published_hub(
    exported_model: Path, tiny_frames_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PublishedHub]:
    """olah on a free port serving `testorg/dora-wt-vits16` and `testorg/walking-tours-mini`."""
    from dora_hf.publish.push import plan_upload

    server = LocalHub(tmp_path_factory.mktemp("hub")).start()
    try:
        for repo_id, folder, repo_type in ((MODEL_REPO, exported_model, "model"), (DATASET_REPO, tiny_frames_dataset, "dataset")):
            plan = plan_upload(folder, repo_id, repo_type)
            server.publish(repo_id, folder, [path for path, _ in plan.files], repo_type=repo_type)
        yield PublishedHub(server=server, model_dir=exported_model, dataset_dir=tiny_frames_dataset)
    finally:
        server.stop()
