"""Output folders: nothing dora-hf did not write is deleted, and a folder has one writer at a time.

The concurrent cases use two real processes: this one and a child started while the other holds
the folder (a pretrain or prepare-data in flight here, or a child holding a claim).
"""

from __future__ import annotations

import errno
import json
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from accelerate import Accelerator
from test_pretrain import tiny_recipe

from dora_hf.cli import main as cli_main
from dora_hf.prepare import pipeline as prepare
from dora_hf.dataset.manifest import HashingFile
from dora_hf.prepare.pipeline import PrepareOptions, prepare_dataset
from dora_hf.errors import DoraUserError
from dora_hf.folders.output_folder import (
    MARKER_FILE,
    FolderInUse,
    check_replaceable,
    claim_folder,
    lock_path_for,
    marker_kind,
    write_marker,
)
from dora_hf.training.checkpoints import complete_checkpoints
from dora_hf.pretrain import pretrain
from dora_hf.training.step import DoraTrainingStep

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_SCRIPT = REPO_ROOT / "training_scripts" / "pretrain.py"
DEMO_RECIPE = REPO_ROOT / "training_scripts" / "configs" / "demo_cpu.yaml"


def demo_command(dataset: Path) -> list[str]:
    """The issue's `T`: the shipped demo recipe (overwrite: true), 2 steps, a checkpoint at step 2."""
    return ["--config", str(DEMO_RECIPE), "--cpu", "--dataset", str(dataset), "--max_steps", "2", "--checkpointing_steps", "2"]


@pytest.fixture(scope="module")
def pretrain_main() -> Callable[[list[str]], int]:
    """`training_scripts/pretrain.py`'s main(argv), run in this process."""
    return runpy.run_path(str(PRETRAIN_SCRIPT))["main"]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what must come out of a refused command unchanged."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def trained_run(dataset: Path, out: Path, **overrides) -> Path:
    """A finished 2-step tiny run at `out` (checkpoint step 2, export in out/export unless told)."""
    pretrain(tiny_recipe(dataset, out, max_steps=2, **overrides), Accelerator(cpu=True))
    assert [p.name for p in complete_checkpoints(out)] == ["step_0000002"]
    return out


# --- the claim ---------------------------------------------------------------------------------

HOLD_CLAIM = textwrap.dedent(
    """
    import sys
    from dora_hf.folders.output_folder import claim_folder
    claim_folder(sys.argv[1], "holder")
    print("held", flush=True)
    sys.stdin.read()
    """
)


@contextmanager
def claimed_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    child = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_claim_held_by_another_process_is_refused_and_dies_with_it(tmp_path):
    folder = tmp_path / "out"
    with claimed_by_another_process(folder) as child:
        with pytest.raises(FolderInUse, match=rf"output folder {folder} is in use by another run \(pid {child.pid}, holder\)"):
            claim_folder(folder, "second")
        child.kill()  # SIGKILL: no clean-up code runs in the holder
        child.wait()
    assert lock_path_for(folder).exists()  # the holder could not remove its lock file ...
    with claim_folder(folder, "after the crash") as claim:  # ... but its lock died with it
        assert claim.held
    assert list(tmp_path.iterdir()) == []  # a released claim leaves nothing beside the folder


def test_prepare_data_and_export_fail_at_once_on_a_claimed_folder(tiny_frames_dataset, synthetic_video, tmp_path, capsys):
    run = trained_run(tiny_frames_dataset, tmp_path / "run")
    for argv in (["prepare-data", str(synthetic_video), "--out", str(tmp_path / "busy"), "--clip-step", "20"],
                 ["export", str(run), "--out", str(tmp_path / "busy")]):
        with claimed_by_another_process(tmp_path / "busy") as child:
            assert cli_main(argv) == 2
            assert f"is in use by another run (pid {child.pid}, holder)" in capsys.readouterr().err
    assert not (tmp_path / "busy").exists()


# --- case 1: exports never replace a run folder or a folder dora-hf did not write --------------------


def test_the_final_export_never_replaces_a_foreign_folder(tiny_frames_dataset, tmp_path, pretrain_main, capsys):
    mine = tmp_path / "u"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x\n")
    for overwrite in ("false", "true"):
        code = pretrain_main(demo_command(tiny_frames_dataset) + ["--output_dir", str(tmp_path / "r1"),
                                                                  "--export_dir", str(mine), "--overwrite", overwrite])
        err = capsys.readouterr().err
        assert code == 2 and f"{mine} has no {MARKER_FILE}" in err and "Traceback" not in err
    assert tree(mine) == {"thesis.tex": b"x\n"}
    assert not (tmp_path / "r1").exists()  # refused before anything was trained or created


def test_the_final_export_never_replaces_its_own_run_folder(tiny_frames_dataset, tmp_path, pretrain_main, capsys):
    fresh = tmp_path / "r2"
    assert pretrain_main(demo_command(tiny_frames_dataset) + ["--output_dir", str(fresh), "--export_dir", str(fresh)]) == 2
    assert f"that would replace {fresh}" in capsys.readouterr().err and not fresh.exists()

    run = trained_run(tiny_frames_dataset, tmp_path / "run")
    before = tree(run)
    for extra in (["--resume_from_checkpoint", "latest"], ["--overwrite", "true"]):
        assert pretrain_main(demo_command(tiny_frames_dataset) + ["--output_dir", str(run), "--export_dir", str(run), *extra]) == 2
        assert f"that would replace {run}" in capsys.readouterr().err
    assert tree(run) == before


def test_export_refuses_a_run_folder_a_checkpoint_and_a_dataset_even_with_overwrite(tiny_frames_dataset, tmp_path, capsys):
    run = trained_run(tiny_frames_dataset, tmp_path / "run")
    dataset = tmp_path / "dataset"
    shutil.copytree(tiny_frames_dataset, dataset)
    before = {folder: tree(folder) for folder in (run, dataset)}
    cases = {
        run: "that would replace",
        run / "checkpoints": "that would replace",
        complete_checkpoints(run)[0]: "that would replace",
        dataset: "holds a prepared dataset, not a model",
    }
    for out, message in cases.items():
        assert cli_main(["export", str(run), "--out", str(out), "--overwrite"]) == 2
        assert message in capsys.readouterr().err
    assert {folder: tree(folder) for folder in (run, dataset)} == before


def test_an_earlier_export_is_replaced_only_with_overwrite_and_the_runs_own_always(tiny_frames_dataset, tmp_path):
    run = trained_run(tiny_frames_dataset, tmp_path / "run")  # default export folder: run/export
    assert marker_kind(run) == "run" and marker_kind(run / "export") == "model"
    first_weights = (run / "export" / "model.safetensors").read_bytes()
    # the default export folder belongs to the run: a resumed run exports over it, overwrite false
    again = pretrain(tiny_recipe(tiny_frames_dataset, run, max_steps=4, resume_from_checkpoint="latest"), Accelerator(cpu=True))
    assert again.steps == 4 and again.export_dir == run / "export"
    assert (run / "export" / "model.safetensors").read_bytes() != first_weights

    elsewhere = tmp_path / "export"
    trained_run(tiny_frames_dataset, tmp_path / "a", export_dir=str(elsewhere))
    earlier = tree(elsewhere)
    with pytest.raises(DoraUserError, match=rf"output folder already exists: {elsewhere} holds a model"):
        pretrain(tiny_recipe(tiny_frames_dataset, tmp_path / "b", export_dir=str(elsewhere)), Accelerator(cpu=True))
    assert tree(elsewhere) == earlier and not (tmp_path / "b").exists()
    trained_run(tiny_frames_dataset, tmp_path / "c", export_dir=str(elsewhere), overwrite=True, seed=1)
    assert tree(elsewhere) != earlier and marker_kind(elsewhere) == "model"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock or staging left


# --- the rule --------------------------------------------------------------------------------------


def replace_rule_cases(tmp_path: Path) -> dict[str, tuple[Path, bool, str | None]]:
    """name -> (folder, overwrite, error expected from check_replaceable(folder, 'model', ...))."""
    made = {name: tmp_path / name for name in ("empty", "model", "run", "foreign")}
    for folder in made.values():
        folder.mkdir()
    write_marker(made["model"], "model", "export")
    write_marker(made["run"], "run", "pretrain")
    (made["foreign"] / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("a file")
    (tmp_path / "link").symlink_to(made["model"])
    return {
        "absent": (tmp_path / "absent", False, None),
        "empty": (made["empty"], False, "already exists"),
        "empty, overwrite": (made["empty"], True, None),
        "model": (made["model"], False, "holds a model .pass --overwrite"),
        "model, overwrite": (made["model"], True, None),
        "run, overwrite": (made["run"], True, "holds a training run, not a model"),
        "foreign, overwrite": (made["foreign"], True, f"has no {MARKER_FILE}"),
        "file, overwrite": (tmp_path / "file", True, "is not a folder"),
        "link to a model, overwrite": (tmp_path / "link", True, "is not a folder"),
    }


def test_only_an_absent_or_empty_folder_or_one_of_the_same_kind_may_be_replaced(tmp_path):
    for name, (folder, overwrite, error) in replace_rule_cases(tmp_path).items():
        if error is None:
            check_replaceable(folder, "model", overwrite=overwrite)
        else:
            with pytest.raises(DoraUserError, match=error):
                check_replaceable(folder, "model", overwrite=overwrite)
    with pytest.raises(DoraUserError, match="that would replace"):
        check_replaceable(tmp_path / "model", "model", overwrite=True, keep=(tmp_path / "model" / "inside",))


def test_every_folder_dora_hf_writes_is_marked_with_what_it_holds(tiny_frames_dataset, tmp_path):
    run = trained_run(tiny_frames_dataset, tmp_path / "run")
    records = {kind: json.loads((folder / MARKER_FILE).read_text())
               for kind, folder in (("run", run), ("model", run / "export"), ("dataset", tiny_frames_dataset))}
    assert {kind: (r["kind"], r["written_by"]) for kind, r in records.items()} == {
        kind: (kind, "dora-hf") for kind in records
    }
    assert [records[k]["command"] for k in ("run", "model", "dataset")] == ["pretrain", "export", "prepare-data"]


# --- case 2: two writers of one folder ------------------------------------------------------------

SECOND_PRETRAINS = textwrap.dedent(
    """
    import runpy, sys
    main = runpy.run_path(sys.argv[1])["main"]
    command = sys.argv[2:]
    print(main(command), main(command + ["--resume_from_checkpoint", "latest"]))
    """
)


def test_a_second_run_or_resume_into_a_running_runs_folder_fails_at_start(tiny_frames_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    second: dict[str, subprocess.CompletedProcess] = {}
    original = DoraTrainingStep.__call__

    def step_while_a_second_process_starts(self, frames, step, return_tracks=False):
        if step == 3 and not second:  # step_0000002 is saved, so `latest` would find something
            command = demo_command(tiny_frames_dataset) + ["--output_dir", str(out)]
            second["run"] = subprocess.run([sys.executable, "-c", SECOND_PRETRAINS, str(PRETRAIN_SCRIPT), *command],
                                           capture_output=True, text=True, timeout=600, cwd=tmp_path,
                                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        return original(self, frames, step, return_tracks)

    monkeypatch.setattr(DoraTrainingStep, "__call__", step_while_a_second_process_starts)
    result = pretrain(tiny_recipe(tiny_frames_dataset, out, max_steps=4, overwrite=True), Accelerator(cpu=True))

    done = second["run"]
    assert done.returncode == 0 and done.stdout.split() == ["2", "2"], done.stdout + done.stderr[-3000:]
    refusal = f"pretrain: error: output folder {out} is in use by another run (pid {os.getpid()}, pretrain)"
    assert [line.split(";")[0] for line in done.stderr.splitlines() if line.startswith("pretrain:")] == [refusal] * 2
    assert "Traceback" not in done.stderr
    # the first run was not disturbed: all its checkpoints and its export are there
    assert result.steps == 4 and [p.name for p in complete_checkpoints(out)] == ["step_0000002", "step_0000004"]
    assert (out / "export" / "model.safetensors").is_file()


SECOND_PREPARES = textwrap.dedent(
    """
    import sys
    from dora_hf.cli import main
    argv = ["prepare-data", *sys.argv[1:]]
    print(main(argv), main(argv + ["--overwrite"]))
    """
)


def rows(dataset: Path) -> list[int]:
    return [i for shard in sorted((dataset / "data").glob("*.parquet")) for i in pq.read_table(shard)["frame_index"].to_pylist()]


def test_a_second_prepare_data_into_a_folder_being_prepared_fails_and_the_first_is_intact(
    synthetic_video, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "ds"
    second: dict[str, subprocess.CompletedProcess] = {}
    real_encode = prepare.encode_image

    def encode_while_a_second_process_starts(*args, **kwargs):
        if not second:  # the first is decoding: its folder is claimed but not there yet
            assert not out.exists()
            argv = [str(synthetic_video), "--out", str(out), "--clip-step", "20", "--keep-every", "10", "--no-progress"]
            second["run"] = subprocess.run([sys.executable, "-c", SECOND_PREPARES, *argv], capture_output=True,
                                           text=True, timeout=600, cwd=tmp_path)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(prepare, "encode_image", encode_while_a_second_process_starts)
    prepare_dataset([synthetic_video], out, PrepareOptions(clip_step=20, keep_every=4), progress=False, log=None)
    monkeypatch.undo()

    done = second["run"]
    assert done.returncode == 0 and done.stdout.split() == ["2", "2"], done.stdout + done.stderr[-3000:]
    refusal = f"dora-hf prepare-data: error: output folder {out} is in use by another run (pid {os.getpid()}, prepare-data)"
    assert [line.split(";")[0] for line in done.stderr.splitlines() if line.startswith("dora-hf")] == [refusal] * 2
    assert "Traceback" not in done.stderr
    assert rows(out) == list(range(0, 200, 4))  # the first's dataset (every 4th frame), whole
    first = tree(out)
    # once it is there, a later prepare-data without --overwrite is refused as well
    assert cli_main(["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err and tree(out) == first


# --- case 7: a folder that cannot be written, a full disk, modes, a killed prepare-data ------------


@contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """Make `folder` unwritable; yields the reason the error must give.

    As a normal user a chmod does it (permission denied). Root writes through any mode, so there
    `folder` behaves as a read-only mount instead: creating anything under it fails with EROFS,
    and access() and statvfs() say so.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "permission denied"
        finally:
            folder.chmod(0o755)
        return
    real_open, real_mkdir, real_access, real_statvfs = os.open, os.mkdir, os.access, os.statvfs

    def under(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def refuse_under_folder(real: Callable) -> Callable:
        def call(path, *args, **kwargs):
            if under(path):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
            return real(path, *args, **kwargs)

        return call

    def access(path, mode, **kwargs) -> bool:
        return not (under(path) and mode & os.W_OK) and real_access(path, mode, **kwargs)

    def statvfs(path):
        found = real_statvfs(path)
        if not under(path):
            return found
        fields = list(found)
        fields[8] |= os.ST_RDONLY  # f_flag
        return os.statvfs_result(fields)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "open", refuse_under_folder(real_open))
        patch.setattr(os, "mkdir", refuse_under_folder(real_mkdir))
        patch.setattr(os, "access", access)
        patch.setattr(os, "statvfs", statvfs)
        yield "read-only file system"


def one_error_line(captured: str, prefix: str) -> str:
    """The single `prefix: error: ...` line of a refused command (and no traceback)."""
    assert "Traceback" not in captured
    (line,) = [line for line in captured.splitlines() if line.startswith(f"{prefix}: error: ")]
    return line.removeprefix(f"{prefix}: error: ")


def test_a_read_only_folder_is_one_error_line_for_prepare_data_export_and_training(
    tiny_frames_dataset, synthetic_video, tmp_path, pretrain_main, capsys
):
    run = trained_run(tiny_frames_dataset, tmp_path / "run")
    locked = tmp_path / "locked"
    commands = {
        "prepare-data": lambda: cli_main(["prepare-data", str(synthetic_video), "--out", str(locked / "ds"), "--clip-step", "20",
                                          "--no-progress"]),
        "export": lambda: cli_main(["export", str(run), "--out", str(locked / "ds")]),
        "pretrain": lambda: pretrain_main(demo_command(tiny_frames_dataset) + ["--output_dir", str(locked / "ds")]),
    }
    for prefix, command in commands.items():
        with read_only(locked) as reason:
            code = command()
        err = capsys.readouterr().err
        assert code == 2, err
        assert one_error_line(err, prefix if prefix == "pretrain" else f"dora-hf {prefix}") == (
            f"cannot write output folder {locked / 'ds'}: {reason} ({locked / '.ds.lock'})"
        )
        assert list(locked.iterdir()) == []


def test_a_run_whose_export_folder_is_read_only_stops_before_training(tiny_frames_dataset, tmp_path, pretrain_main, capsys):
    locked = tmp_path / "locked"
    argv = demo_command(tiny_frames_dataset) + ["--output_dir", str(tmp_path / "run"), "--export_dir", str(locked / "export")]
    with read_only(locked) as reason:
        assert pretrain_main(argv) == 2
    assert one_error_line(capsys.readouterr().err, "pretrain") == (
        f"cannot write output folder {locked / 'export'}: {reason} ({locked})"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]  # no run folder, no checkpoint


def test_a_full_disk_during_prepare_data_is_one_error_line_and_the_earlier_dataset_is_intact(
    synthetic_video, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "ds"
    argv = ["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20", "--frames-per-shard", "10",
            "--no-progress"]
    assert cli_main(argv) == 0
    before = tree(out)
    capsys.readouterr()
    real_write = HashingFile.write

    def fill_up(self, data):
        if self.size > 20_000:  # part-way through the first shard
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as pyarrow raises it: no file name
        return real_write(self, data)

    monkeypatch.setattr(HashingFile, "write", fill_up)
    assert cli_main(argv + ["--overwrite", "--keep-every", "2"]) == 2
    assert one_error_line(capsys.readouterr().err, "dora-hf prepare-data") == (
        f"cannot write a prepared dataset to {out}: no space left on device; the existing {out} is unchanged"
    )
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging folder, no lock file


def test_a_full_disk_during_export_is_one_error_line(tiny_frames_dataset, tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    run = trained_run(tiny_frames_dataset, tmp_path / "run")

    def disk_full(*args, **kwargs):  # what safetensors raises when the disk fills up
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", disk_full)
    assert cli_main(["export", str(run), "--out", str(tmp_path / "model")]) == 2
    line = one_error_line(capsys.readouterr().err, "dora-hf export")
    assert line.startswith(f"cannot write a model to {tmp_path / 'model'}: no space left on device (")
    assert line.endswith("/model.safetensors); nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def modes(folder: Path) -> dict[str, set[int]]:
    """The permission bits of `folder` and everything under it, by kind."""
    found: dict[str, set[int]] = {"folders": {folder.stat().st_mode & 0o7777}, "files": set()}
    for path in folder.rglob("*"):
        found["folders" if path.is_dir() else "files"].add(path.stat().st_mode & 0o7777)
    return found


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_datasets_and_exported_models_get_the_modes_the_umask_gives(tiny_frames_dataset, synthetic_video, tmp_path, umask):
    run = trained_run(tiny_frames_dataset, tmp_path / "run")
    previous = os.umask(umask)
    try:
        assert cli_main(["prepare-data", str(synthetic_video), "--out", str(tmp_path / "ds"), "--clip-step", "20",
                         "--no-progress"]) == 0
        assert cli_main(["export", str(run), "--out", str(tmp_path / "model")]) == 0
    finally:
        os.umask(previous)
    usual = {"folders": {0o777 & ~umask}, "files": {0o666 & ~umask}}
    assert modes(tmp_path / "ds") == usual
    assert modes(tmp_path / "model") == usual  # model.safetensors included (transformers writes it 0600)


KILLED_WHILE_ENCODING = textwrap.dedent(
    """
    import sys, time
    from dora_hf.cli import main
    from dora_hf.prepare import pipeline as prepare

    def stop_here(*args, **kwargs):
        print("encoding", flush=True)
        time.sleep(600)

    prepare.encode_image = stop_here
    main(["prepare-data", *sys.argv[1:]])
    """
)


def test_a_staging_folder_left_by_a_killed_prepare_data_is_removed_by_the_next_run(synthetic_video, tmp_path, capsys):
    out = tmp_path / "ds"
    argv = [str(synthetic_video), "--out", str(out), "--clip-step", "20", "--no-progress"]
    child = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_ENCODING, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert "encoding" in (line.strip() for line in iter(child.stdout.readline, ""))  # it is decoding
    finally:
        child.kill()  # SIGKILL: it cannot clean up
        child.wait()
    (staging,) = [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.tmp-")]
    assert staging.startswith(f".ds.tmp-{child.pid}-")

    with claimed_by_another_process(out):  # a live claim holder's staging folder is never touched
        assert cli_main(["prepare-data", *argv]) == 2
    assert "in use by another run" in capsys.readouterr().err and (tmp_path / staging).is_dir()

    assert cli_main(["prepare-data", *argv]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "stale" in line]
    removed = f"{tmp_path}: removed stale staging folder(s) {staging}"
    assert said == [f"{removed} (left by a run of dora-hf that was killed before it finished)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert rows(out) == list(range(0, 200, 4))


def test_a_dataset_set_aside_by_a_killed_replace_is_put_back(synthetic_video, tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20", "--no-progress"]
    assert cli_main(argv) == 0
    before = tree(out)
    out.rename(tmp_path / ".ds.old-4242")  # killed between replace_folder's two renames
    capsys.readouterr()
    assert cli_main(argv) == 2  # put back, so the usual rule applies: it is there, no --overwrite
    captured = capsys.readouterr()
    assert f"{tmp_path}: put back ds from .ds.old-4242 (left by a run of dora-hf" in captured.out
    assert "output folder already exists" in captured.err
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
