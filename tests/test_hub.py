"""The Hub round trip over real HTTP: `dora-hf push`, then loading and training from a hub server.

The server is olah on 127.0.0.1 (hub_server.py) serving a tiny exported model as
`testorg/dora-wt-vits16` and a prepared dataset as `testorg/walking-tours-mini` (hub_fixtures.py).
Every client runs in its own process with `HF_ENDPOINT` pointing at the server and a fresh, empty
`HF_HOME`, so `from_pretrained`, `pipeline` and `load_dataset(..., streaming=True)` go through their
real network code. The loading snippets are the README's "Use from the Hub" section, run as written
with the README's repo ids replaced by the published ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import yaml
from blocked_import import BLOCK_DORA_HF
from hub_server import LocalHub
from recording_hub import RecordingHub

from dora_hf import cli
from dora_hf.errors import DoraUserError
from dora_hf.publish.push import plan_upload, push

if TYPE_CHECKING:
    from hub_fixtures import PublishedHub

pytest_plugins = ("hub_fixtures",)
pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
MODEL_REPO = "testorg/dora-wt-vits16"
DATASET_REPO = "testorg/walking-tours-mini"
README_REPO_IDS = {"me/dora-wt-vits16": MODEL_REPO, "me/walking-tours-venice": DATASET_REPO}
CLIENT_TIMEOUT = 300



def readme_snippets(language: str) -> list[str]:
    """The code blocks of one language in the README's "Use from the Hub" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Use from the Hub\n", 1)[1].split("\n## ", 1)[0]
    return [code for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S) if lang == language]


def on_local_hub(code: str) -> str:
    for readme_id, published in README_REPO_IDS.items():
        code = code.replace(readme_id, published)
    return code


def run_client(hub: PublishedHub, tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh process against the hub, with an empty HF_HOME under tmp_path."""
    path = tmp_path / "client.py"
    path.write_text(script)
    result = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=tmp_path,
        env=hub.client_env(tmp_path / "hf_home", PYTHONPATH=str(TESTS_DIR)),
    )
    server_log = hub.server.log_tail()
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}\n--- server log ---\n{server_log}"
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_snapshot(hf_home: Path, repo_id: str, repo_type: str = "model") -> Path:
    """The one snapshot folder of a repo in an HF_HOME's hub cache."""
    folder = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    snapshots = list(folder.iterdir())
    assert len(snapshots) == 1, snapshots
    return snapshots[0]


@pytest.fixture(scope="module")
def reference(published_hub: PublishedHub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pixels and features of the first 4 frames, computed from the local folders with the package."""
    from datasets import load_dataset

    from dora_hf import DoraImageProcessor, DoraModel

    images = [row["image"] for row in load_dataset(str(published_hub.dataset_dir), split="train", streaming=True).take(4)]
    model = DoraModel.from_pretrained(published_hub.model_dir).eval()
    pixels = DoraImageProcessor.from_pretrained(published_hub.model_dir)(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model(pixels).pooler_output
    path = tmp_path_factory.mktemp("reference") / "reference.pt"
    torch.save({"pixel_values": pixels, "features": features}, path)
    return path


CHECK_FEATURES = textwrap.dedent(
    """
    import sys
    import torch
    expected = torch.load(sys.argv[1])
    with torch.no_grad():
        pixels = processor(images, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(pixels, expected["pixel_values"], rtol=0, atol=0)
        torch.testing.assert_close(model(pixel_values=pixels).pooler_output, expected["features"])
    pooled = torch.tensor(extractor(images, pool=True)).reshape(len(images), -1)
    torch.testing.assert_close(pooled, expected["features"], rtol=1e-4, atol=1e-5)
    tokens = torch.tensor(extractor(images[0]))
    patches = (model.config.image_size // model.config.patch_size) ** 2
    assert tokens.shape == (1, patches + 1, model.config.hidden_size), tokens.shape   # pool=False: every token
    print("MODEL", type(model).__module__, type(model).__name__, type(processor).__name__)
    """
)


def test_readme_snippet_with_the_package_loads_model_processor_pipeline_and_dataset(published_hub, reference, tmp_path):
    (snippet,) = [code for code in readme_snippets("python") if "import dora_hf" in code]
    checks = CHECK_FEATURES + "torch.testing.assert_close(features, expected['features'])\n"  # the snippet's own result
    result = run_client(published_hub, tmp_path, on_local_hub(snippet) + checks, str(reference))
    assert "MODEL dora_hf.modeling.modeling_dora DoraModel DoraImageProcessor" in result.stdout
    assert (published_hub.model_repo, published_hub.dataset_repo) == (MODEL_REPO, DATASET_REPO)
    # the bytes came over HTTP into the fresh cache, unchanged
    snapshot = cached_snapshot(tmp_path / "hf_home", MODEL_REPO)
    assert sha256(snapshot / "model.safetensors") == sha256(published_hub.model_dir / "model.safetensors")
    log = published_hub.server.log_tail(200_000)
    assert f"GET /{MODEL_REPO}/resolve/" in log and f"/api/datasets/{DATASET_REPO}" in log


def test_readme_snippet_without_the_package_uses_remote_code(published_hub, reference, tmp_path):
    (snippet,) = [code for code in readme_snippets("python") if "trust_remote_code=True" in code]
    images = (
        "from datasets import load_dataset\n"
        f"images = [r['image'] for r in load_dataset({DATASET_REPO!r}, split='train', streaming=True).take(4)]\n"
    )
    result = run_client(published_hub, tmp_path, BLOCK_DORA_HF + on_local_hub(snippet) + images + CHECK_FEATURES, str(reference))
    assert "MODEL transformers_modules." in result.stdout and "DoraModel DoraImageProcessor" in result.stdout
    modules = tmp_path / "hf_home" / "modules" / "transformers_modules"
    assert list(modules.rglob("modeling_dora.py")), "the modeling code was not fetched from the hub"


STREAM_INTO_TRAINING_STEP = textwrap.dedent(
    """
    import sys
    import torch
    from accelerate import Accelerator
    from datasets import load_dataset
    from test_pretrain import tiny_recipe, tiny_training_step

    from dora_hf.dataset.batches import collate_clips
    from dora_hf.dataset.streaming import ClipStream

    hub_id, local = sys.argv[1], sys.argv[2]
    columns = ["video_id", "frame_index"]
    streamed = [tuple(r.values()) for r in load_dataset(hub_id, split="train", streaming=True).select_columns(columns)]
    on_disk = [tuple(r.values()) for r in load_dataset(local, split="train", streaming=True).select_columns(columns)]
    assert streamed == on_disk and len(streamed) == 100, (len(streamed), len(on_disk))

    def batches(source):
        clips = ClipStream.from_source(source, frames_per_clip=2, clip_step=6, shuffle_buffer=8, seed=0)
        return torch.utils.data.DataLoader(clips, batch_size=2, collate_fn=collate_clips)

    step, student, _, _ = tiny_training_step(tiny_recipe(hub_id, "unused"), freeze_last_layer=0)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    for index, (hub_batch, local_batch) in enumerate(zip(batches(hub_id), batches(local))):
        assert hub_batch["video_id"] == local_batch["video_id"]
        assert torch.equal(hub_batch["frame_indices"], local_batch["frame_indices"])
        assert torch.equal(hub_batch["frames"], local_batch["frames"])
        out = step(hub_batch["frames"], index)
        assert torch.isfinite(out.loss), out.loss
        print("STEP", index, float(out.loss))
        if index == 2:
            break
    assert index == 2
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    """
)


def test_streamed_hub_dataset_feeds_the_training_step(published_hub, tmp_path):
    result = run_client(published_hub, tmp_path, STREAM_INTO_TRAINING_STEP, DATASET_REPO, str(published_hub.dataset_dir))
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("STEP")] == ["0", "1", "2"]
    assert f"/api/datasets/{DATASET_REPO}" in published_hub.server.log_tail(200_000)


def test_training_script_trains_on_a_hub_dataset(published_hub, tmp_path):
    from test_pretrain import TINY_MODEL, TINY_VIEWS

    (command,) = [code for code in readme_snippets("bash") if "pretrain.py" in code]
    argv = on_local_hub(command).replace("\\\n", " ").split()
    assert argv[:3] == ["accelerate", "launch", "training_scripts/pretrain.py"] and argv[-2:] == ["--dataset", DATASET_REPO]
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "frames_per_clip": 2, "clip_step": 6, "batch_size_per_device": 2, "num_workers": 0, "shuffle_buffer": 8,
        "mixed_precision": "no", "max_steps": 2, "steps_per_epoch": 2, "warmup_epochs": 1, "logging_steps": 1,
        "checkpointing_steps": 2, "model": TINY_MODEL, "views": TINY_VIEWS,
    }))
    # the README's command, one process (`accelerate launch` adds only the launcher), tiny recipe, on the CPU
    args = [str(REPO_ROOT / argv[2]), "--config", str(recipe), *argv[5:], "--output_dir", str(tmp_path / "run"), "--cpu"]
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=CLIENT_TIMEOUT, cwd=tmp_path,
        env=published_hub.client_env(tmp_path / "hf_home"),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert (tmp_path / "hf_home" / "hub" / f"datasets--{DATASET_REPO.replace('/', '--')}").is_dir()  # read over HTTP
    export = tmp_path / "run" / "export"
    assert (export / "model.safetensors").is_file()
    recipe_used = json.loads(next((tmp_path / "run" / "checkpoints").glob("*/recipe.json")).read_text())
    assert recipe_used["dataset"] == DATASET_REPO
    assert f"datasets:\n- {DATASET_REPO}" in (export / "README.md").read_text()


BIG_REPO = "testorg/dora-big-weights"

INTERRUPTED_DOWNLOAD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import torch
    from huggingface_hub import constants, file_download
    from safetensors.torch import load_file
    import dora_hf  # noqa: F401
    from transformers import AutoModelForPreTraining

    repo, server_pid, local, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    constants.DOWNLOAD_CHUNK_SIZE = 64 * 1024   # write to disk early, long before the file is complete
    real_http_get = file_download.http_get

    class CutAfterFirstChunk:
        def __init__(self, file):
            self.file, self.written = file, 0
        def write(self, chunk):
            if not self.written:
                os.kill(server_pid, signal.SIGKILL)   # the server dies mid-transfer
            self.written += len(chunk)
            return self.file.write(chunk)
        def __getattr__(self, name):
            return getattr(self.file, name)

    weights_files = []

    def http_get(url, temp_file, **kwargs):
        if url.endswith("model.safetensors") and not isinstance(temp_file, CutAfterFirstChunk):
            temp_file = CutAfterFirstChunk(temp_file)
            weights_files.append(temp_file)
        return real_http_get(url, temp_file, **kwargs)

    file_download.http_get = http_get
    try:
        AutoModelForPreTraining.from_pretrained(repo)
    except Exception as err:
        while err is not None:  # transformers' own message, then the network error it wraps
            print("FIRST-ERROR", type(err).__module__, type(err).__name__, str(err).replace(chr(10), " "), flush=True)
            err = err.__cause__ or err.__context__
    else:
        raise SystemExit("the load succeeded although the server died mid-download")
    print("RECEIVED", weights_files[0].written, "OF", (local / "model.safetensors").stat().st_size, flush=True)
    file_download.http_get = real_http_get
    try:  # nothing half-written may be used, online or offline
        AutoModelForPreTraining.from_pretrained(repo, local_files_only=True)
    except Exception as err:
        print("OFFLINE-ERROR", type(err).__name__, flush=True)
    else:
        raise SystemExit("a partial download was used as a complete file")

    go.with_suffix(".waiting").touch()
    while not go.exists():   # the test restarts the server
        time.sleep(0.1)
    model = AutoModelForPreTraining.from_pretrained(repo)
    expected = load_file(local / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in expected.items()), "weights differ"
    print("RELOADED", len(expected), flush=True)
    """
)


@pytest.fixture(scope="module")
def big_weights_repo(published_hub: PublishedHub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DoRA model whose weights file (about 34 MB) takes many chunks to download."""
    from dora_hf import DoraConfig, DoraForPreTraining, DoraImageProcessor

    folder = tmp_path_factory.mktemp("big") / "dora-big-weights"
    config = DoraConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
                        image_size=32, head_out_dim=131072, head_hidden_dim=64, head_bottleneck_dim=64, num_objects=2)
    torch.manual_seed(0)
    DoraForPreTraining(config).save_pretrained(folder)
    DoraImageProcessor.for_image_size(32).save_pretrained(folder)
    published_hub.server.publish(BIG_REPO, folder, [p.name for p in folder.iterdir()])
    assert (folder / "model.safetensors").stat().st_size > 30_000_000
    return folder


def test_server_stopped_mid_download_fails_clearly_and_leaves_no_corrupt_cache(published_hub, big_weights_repo, tmp_path):
    server = LocalHub(published_hub.server.root).start()  # a second server on the same repos: this one dies
    script = tmp_path / "client.py"
    script.write_text(INTERRUPTED_DOWNLOAD)
    go = tmp_path / "go"
    env = published_hub.client_env(tmp_path / "hf_home", HF_ENDPOINT=server.endpoint, PYTHONPATH=str(TESTS_DIR))
    client = subprocess.Popen(
        [sys.executable, str(script), BIG_REPO, str(server.pid), str(big_weights_repo), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )
    try:
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while not go.with_suffix(".waiting").exists():
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "the client never reported the failed download"
            time.sleep(0.2)
        assert server.process is not None and server.process.wait(timeout=10) == -9, "the server was not killed"
        server.process = None
        cache = tmp_path / "hf_home" / "hub" / f"models--{BIG_REPO.replace('/', '--')}"
        assert not list((cache / "snapshots").glob("*/model.safetensors")), "a partial weights file entered the cache"
        assert all(blob.stat().st_size < 100_000 for blob in (cache / "blobs").iterdir()), "a partial blob was kept"
        server.start()  # same port: the client's HF_ENDPOINT is unchanged
        go.touch()
        out, err = client.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        server.stop()
    assert client.returncode == 0, out + err
    errors = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("FIRST-ERROR")]
    # transformers names the repo, its cause says why: the connection, cut mid-body, is refused on retry
    assert errors[0].startswith("builtins OSError") and BIG_REPO in errors[0], errors
    assert "ConnectError [Errno 111] Connection refused" in errors[1], errors
    assert "peer closed connection without sending complete message body" in errors[-1], errors
    received, size = map(int, re.search(r"RECEIVED (\d+) OF (\d+)", out).groups())
    assert 0 < received < size, (received, size)  # the server died mid-file
    assert "OFFLINE-ERROR" in out and "RELOADED" in out, out
    snapshot = cached_snapshot(tmp_path / "hf_home", BIG_REPO)
    assert sha256(snapshot / "model.safetensors") == sha256(big_weights_repo / "model.safetensors")


# --- dora-hf push -------------------------------------------------------------------------------


def test_push_dry_run_lists_exactly_what_is_uploaded(exported_model, tmp_path, capsys, monkeypatch):
    (commands,) = [code for code in readme_snippets("bash") if "dora-hf push" in code]
    dry_run = on_local_hub(commands.splitlines()[0]).split()
    assert dry_run[:2] == ["dora-hf", "push"] and "--dry-run" in dry_run
    model = tmp_path / "dora-wt-venice-vits16"
    shutil.copytree(exported_model, model)
    (model / "__pycache__").mkdir()
    (model / "__pycache__" / "modeling_dora.cpython-311.pyc").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert cli.main(dry_run[1:]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("  ")]
    assert "README.md" in listed and "model.safetensors" in listed and not any("pycache" in p for p in listed)

    hub = RecordingHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert cli.main(dry_run[1:-1] + ["--private", "--revision", "v1", "--commit-message", "first"]) == 0
    (_, repo), (_, branch), (_, upload) = hub.calls
    assert repo == {"repo_id": MODEL_REPO, "repo_type": "model", "private": True, "exist_ok": True}
    assert branch == {"repo_id": MODEL_REPO, "branch": "v1", "repo_type": "model", "exist_ok": True}
    assert upload["files"] == listed and upload["revision"] == "v1" and upload["commit_message"] == "first"


def test_push_dataset_folder(tiny_frames_dataset, monkeypatch, capsys):
    hub = RecordingHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert cli.main(["push", str(tiny_frames_dataset), "--repo-id", DATASET_REPO, "--repo-type", "dataset"]) == 0
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    files = hub.calls[1][1]["files"]
    assert files == ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "prepare_info.json"]
    assert hub.calls[1][1]["repo_type"] == "dataset"
    assert "pushed 4 files" in capsys.readouterr().out


def test_push_dry_run_says_how_a_large_dataset_goes_up(tiny_frames_dataset, monkeypatch, capsys):
    argv = ["push", str(tiny_frames_dataset), "--repo-id", DATASET_REPO, "--repo-type", "dataset"]
    monkeypatch.setattr("dora_hf.publish.push.xet_available", lambda: True)
    assert cli.main(argv + ["--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "upload: streamed with hf_xet; running the same push again resumes an interrupted one"
    )
    monkeypatch.setattr("dora_hf.publish.push.LARGE_FOLDER_FILES", 3)  # the 4-file folder counts as large
    assert cli.main(argv + ["--dry-run"]) == 0
    assert "streamed with hf_xet, committed in batches (a large folder: 4 files," in capsys.readouterr().out

    monkeypatch.setattr("dora_hf.publish.push.xet_available", lambda: False)
    assert cli.main(argv + ["--dry-run"]) == 0
    assert "one commit of 4 files" in capsys.readouterr().out.splitlines()[-1]
    hub = RecordingHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert cli.main(argv) == 0
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    err = capsys.readouterr().err
    assert "warning: upload: one commit of 4 files" in err and "pip install hf_xet" in err

    monkeypatch.setattr("dora_hf.publish.push.LARGE_FOLDER_FILES", 100)  # small again: no warning
    assert cli.main(argv) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing folder", "folder not found"),
        ("empty folder", "not an exported DoRA model folder: missing config.json, preprocessor_config.json, README.md"),
        ("dataset as model", "is a dataset folder, not a model folder: pass --repo-type dataset"),
        ("model as dataset", "is a model folder, not a dataset folder"),
        ("other model", "holds a 'vit' model, not a DoRA model"),
        ("broken card", "card's metadata does not parse"),
        ("bad repo id", "--repo-id must be ORG/NAME"),
        ("no token", "no Hugging Face token"),
    ],
)
def test_push_refuses_before_any_network_call(case, message, exported_model, tiny_frames_dataset, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    def network(*args, **kwargs):
        raise AssertionError("network call")

    for name in ("create_repo", "create_branch", "upload_folder", "whoami"):
        monkeypatch.setattr(HfApi, name, network)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored token either
    monkeypatch.setattr("dora_hf.publish.push.get_token", lambda: None)
    folder, repo_id, repo_type = tmp_path / "model", MODEL_REPO, "model"
    shutil.copytree(exported_model, folder)
    if case == "missing folder":
        folder = tmp_path / "nope"
    elif case == "empty folder":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "dataset as model":
        folder = tiny_frames_dataset
    elif case == "model as dataset":
        repo_type = "dataset"
    elif case == "other model":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    elif case == "broken card":
        (folder / "README.md").write_text("---\nlicense: [unclosed\n---\n# card\n")
    elif case == "bad repo id":
        repo_id = "dora-wt-vits16"
    code = cli.main(["push", str(folder), "--repo-id", repo_id, "--repo-type", repo_type])
    assert code == 2
    assert message in capsys.readouterr().err


def test_push_without_token_raises_user_error(exported_model, monkeypatch):
    monkeypatch.setattr("dora_hf.publish.push.get_token", lambda: None)
    with pytest.raises(DoraUserError, match="HF_TOKEN"):
        push(plan_upload(exported_model, MODEL_REPO))
