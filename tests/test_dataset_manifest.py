"""The shard manifest in prepare_info.json: prepare-data records it; training (both readers), push and
verify-data refuse a dataset whose shards differ from it, naming the shard and what differs."""

from __future__ import annotations

import hashlib
import json
import runpy
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_clips import make_rows, write_dataset

from dora_hf.cli import main as cli_main
from dora_hf.dataset.streaming import ClipStream
from dora_hf.dataset.manifest import UnverifiedDatasetWarning
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.dataset.random_access import open_random_access
from dora_hf.errors import DoraUserError

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_SCRIPT = REPO_ROOT / "training_scripts" / "pretrain.py"
DEMO_RECIPE = REPO_ROOT / "training_scripts" / "configs" / "demo_cpu.yaml"
SHARDS = [f"data/train-{i:05d}-of-00004.parquet" for i in range(4)]

pytest_plugins = ("hub_fixtures",)


@pytest.fixture(scope="module")
def dataset(synthetic_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic video prepared into 4 shards (30, 30, 30 and 10 rows): every 2nd frame, clip step 6."""
    out = tmp_path_factory.mktemp("manifest") / "ds"
    options = PrepareOptions(clip_step=6, keep_every=2, frames_per_clip=2, frames_per_shard=30)
    prepare_dataset([synthetic_video], out, options, progress=False, log=None)
    return out


def manifest(folder: Path) -> list[dict]:
    return json.loads((folder / "prepare_info.json").read_text())["shards"]


def edit_manifest(folder: Path, edit: Callable[[list[dict]], None]) -> None:
    info = json.loads((folder / "prepare_info.json").read_text())
    edit(info["shards"])
    (folder / "prepare_info.json").write_text(json.dumps(info))


def damage(dataset: Path, folder: Path, case: str) -> str:
    """Copy `dataset` to `folder`, damage it as `case` says; return what the error must say."""
    shutil.copytree(dataset, folder)
    size = {record["file"]: record["size_bytes"] for record in manifest(dataset)}
    if case == "first shard missing":
        (folder / SHARDS[0]).unlink()
        return f"shard {SHARDS[0]} is missing"
    if case == "last shard missing":
        (folder / SHARDS[3]).unlink()
        return f"shard {SHARDS[3]} is missing"
    if case == "truncated shard":
        data = (folder / SHARDS[1]).read_bytes()
        (folder / SHARDS[1]).write_bytes(data[: len(data) - 5000])
        return f"shard {SHARDS[1]} is {size[SHARDS[1]] - 5000} bytes, not the {size[SHARDS[1]]} recorded (truncated"
    if case == "extra shard":
        shutil.copyfile(folder / SHARDS[0], folder / "data" / "train-00004-of-00004.parquet")
        return "shard data/train-00004-of-00004.parquet is not in the manifest (an extra file)"
    if case == "row count differs":
        edit_manifest(folder, lambda shards: shards[2].update(rows=29))
        return f"shard {SHARDS[2]} holds 30 rows, not the 29 recorded"
    if case == "altered in place":  # same size, same rows: one byte of an image changed
        data = bytearray((folder / SHARDS[2]).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / SHARDS[2]).write_bytes(bytes(data))
        return f"shard {SHARDS[2]} has sha256 "
    raise AssertionError(case)


READ_TIME_CASES = ["first shard missing", "last shard missing", "truncated shard", "extra shard", "row count differs"]


def test_prepare_data_records_every_shard_with_rows_size_and_sha256(dataset: Path) -> None:
    records = manifest(dataset)
    assert [r["file"] for r in records] == SHARDS == sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.parquet"))
    for record in records:
        path = dataset / record["file"]
        assert record["rows"] == pq.read_metadata(path).num_rows
        assert record["size_bytes"] == path.stat().st_size
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [r["rows"] for r in records] == [30, 30, 30, 10]
    assert json.loads((dataset / "prepare_info.json").read_text())["format_version"] == 2


@pytest.mark.parametrize("case", READ_TIME_CASES)
@pytest.mark.parametrize("reader", ["random access", "streaming"])
def test_both_readers_refuse_a_dataset_that_differs_from_its_manifest(dataset, tmp_path, case, reader) -> None:
    folder = tmp_path / "ds"
    expected = damage(dataset, folder, case)
    with pytest.raises(DoraUserError) as refused:
        if reader == "random access":
            open_random_access(folder, frames_per_clip=2, clip_step=6, cache_dir=str(tmp_path / "cache"))
        else:
            ClipStream.from_source(folder, frames_per_clip=2, clip_step=6)
    message = str(refused.value)
    assert message.startswith(f"folder {folder} does not match its manifest (prepare_info.json, 4 shards): ")
    assert expected in message and "\n" not in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.arrow"))  # nothing converted


@pytest.fixture(scope="module")
def pretrain_main() -> Callable[[list[str]], int]:
    """`training_scripts/pretrain.py`'s main(argv), run in this process."""
    return runpy.run_path(str(PRETRAIN_SCRIPT))["main"]


@pytest.mark.parametrize("case", ["first shard missing", "last shard missing", "truncated shard"])
@pytest.mark.parametrize("streaming", ["false", "true"])
def test_training_refuses_a_missing_or_truncated_shard_before_it_trains(
    dataset, tmp_path, case, streaming, pretrain_main, capsys
) -> None:
    folder = tmp_path / "ds"
    expected = damage(dataset, folder, case)
    argv = ["--config", str(DEMO_RECIPE), "--cpu", "--dataset", str(folder), "--max_steps", "2", "--checkpointing_steps", "2",
            "--output_dir", str(tmp_path / "run"), "--export_dir", str(tmp_path / "export"), "--streaming", streaming,
            "--dataset_cache_dir", str(tmp_path / "cache")]
    assert pretrain_main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("pretrain: error:")]
    assert expected in line and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "export").exists()


@pytest.mark.parametrize("case", [*READ_TIME_CASES, "altered in place"])
@pytest.mark.parametrize("command", ["push --dry-run", "verify-data"])
def test_push_and_verify_data_refuse_a_dataset_that_differs_from_its_manifest(dataset, tmp_path, case, command, capsys) -> None:
    folder = tmp_path / "ds"
    expected = damage(dataset, folder, case)
    if command == "verify-data":
        argv = ["verify-data", str(folder)]
    else:
        argv = ["push", str(folder), "--repo-id", "testorg/walking-tours-mini", "--repo-type", "dataset", "--dry-run"]
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"dora-hf {command.split()[0]}: error: prepared dataset folder {folder} does not match its manifest")
    assert expected in line
    assert "would upload" not in captured.out


def test_readers_do_not_hash_so_a_same_size_alteration_is_found_by_verify_data(dataset, tmp_path, capsys) -> None:
    """Training compares sizes and row counts only (no shard is read whole); the checksums are push's and verify-data's."""
    folder = tmp_path / "ds"
    damage(dataset, folder, "altered in place")
    ClipStream.from_source(folder, frames_per_clip=2, clip_step=6)  # accepted: sizes and rows match
    assert cli_main(["verify-data", str(folder), "--no-checksums"]) == 0
    assert "names, sizes and rows;" in capsys.readouterr().out
    assert cli_main(["verify-data", str(folder)]) == 2
    assert f"shard {SHARDS[2]} has sha256" in capsys.readouterr().err


def test_an_intact_dataset_verifies_and_push_says_so(dataset, capsys) -> None:
    assert cli_main(["verify-data", str(dataset)]) == 0
    out = capsys.readouterr().out
    total = sum((dataset / name).stat().st_size for name in SHARDS)
    assert out.startswith(f"{dataset}: 4 shard(s), 100 rows, {total / 1e6:.1f} MB match the manifest (")
    assert "(names, sizes, rows and sha256;" in out
    argv = ["push", str(dataset), "--repo-id", "testorg/walking-tours-mini", "--repo-type", "dataset", "--dry-run"]
    assert cli_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("would upload 6 files (")
    files = [line.split()[0] for line in lines[1:] if line.startswith(" ")]  # the indented file lines
    assert files == ["README.md", *SHARDS, "prepare_info.json"]
    assert any(line.startswith("4 shard(s) (100 rows) match the manifest: names, sizes, rows and sha256 checked")
               for line in lines)
    assert lines[-1].startswith("upload: ")  # how the files would go up


def unverified_warnings(open_it: Callable[[], object]) -> list[str]:
    """The UnverifiedDatasetWarning messages raised while `open_it` runs (Python's own once-per-place filter off)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_it()
    return [str(w.message) for w in caught if issubclass(w.category, UnverifiedDatasetWarning)]


@pytest.mark.parametrize("reader", ["random access", "streaming"])
def test_a_dataset_without_a_manifest_loads_with_one_warning(tmp_path, reader) -> None:
    folder = write_dataset(tmp_path / "hand-made", make_rows({"a": 30}), 2)  # datasets.Dataset.to_parquet, no prepare_info

    def open_it() -> object:
        if reader == "random access":
            return open_random_access(folder, frames_per_clip=2, clip_step=20, cache_dir=str(tmp_path / "cache"))
        return ClipStream.from_source(folder, frames_per_clip=2, clip_step=20)

    (first,) = unverified_warnings(open_it)
    assert first.startswith(f"folder {folder} has no shard manifest") and "cannot be detected" in first
    assert unverified_warnings(open_it) == []  # once per dataset and process


def test_an_older_manifest_without_checksums_still_catches_a_truncated_shard(dataset, tmp_path, capsys) -> None:
    folder = tmp_path / "ds"
    damage(dataset, folder, "truncated shard")
    edit_manifest(folder, lambda shards: [record.pop("sha256") for record in shards])
    with pytest.raises(DoraUserError, match=rf"shard {SHARDS[1]} is \d+ bytes, not the \d+ recorded"):
        ClipStream.from_source(folder, frames_per_clip=2, clip_step=6)
    (folder / SHARDS[1]).write_bytes((dataset / SHARDS[1]).read_bytes())
    expected = (
        f"prepared dataset folder {folder}: its manifest records no sha256 (an older dora-hf prepare-data): "
        "checked shard names, sizes and rows only"
    )
    assert unverified_warnings(lambda: cli_main(["verify-data", str(folder)])) == [expected]
    assert "match the manifest (names, sizes and rows;" in capsys.readouterr().out


def test_a_malformed_manifest_is_a_clear_error(dataset, tmp_path) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(dataset, folder)
    edit_manifest(folder, lambda shards: shards[1].pop("file"))
    with pytest.raises(DoraUserError, match=r"^prepare_info.json: entry 1 of 'shards' is not a shard record \("):
        ClipStream.from_source(folder, frames_per_clip=2, clip_step=6)


STREAM_FROM_HUB = textwrap.dedent(
    """
    import sys
    from dora_hf.dataset.streaming import ClipStream
    from dora_hf.errors import DoraUserError
    try:
        ClipStream.from_source(sys.argv[1], frames_per_clip=2, clip_step=6)
    except DoraUserError as err:
        print("REFUSED", err)
    else:
        print("ACCEPTED")
    """
)


@pytest.mark.integration
def test_the_streaming_reader_refuses_a_truncated_shard_on_the_hub(published_hub, tmp_path) -> None:
    """Over HTTP the sizes come from the hub's file listing and the row counts from the footers."""
    folder = tmp_path / "truncated"
    shutil.copytree(published_hub.dataset_dir, folder)
    shard = sorted((folder / "data").glob("*.parquet"))[1]
    recorded = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:-3000])
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != ".dora-hf.json"]
    published_hub.server.publish("testorg/walking-tours-truncated", folder, files, repo_type="dataset")
    result = subprocess.run(
        [sys.executable, "-c", STREAM_FROM_HUB, "testorg/walking-tours-truncated"], check=False, capture_output=True, text=True,
        timeout=300, cwd=tmp_path, env=published_hub.client_env(tmp_path / "hf_home"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    relative = shard.relative_to(folder).as_posix()
    assert result.stdout.startswith("REFUSED hub dataset testorg/walking-tours-truncated does not match its manifest")
    assert f"shard {relative} is {recorded - 3000} bytes, not the {recorded} recorded (truncated" in result.stdout
