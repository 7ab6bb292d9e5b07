"""`dora-hf push --repo-type space`, and what no push sends: secrets, links out of the folder, leftovers.

The Space is the repository's own `spaces/dora-tracks`, copied; the upload calls go to the
recording stand-in of the Hub's write API, which lists the files `upload_folder` really selects
and keeps what each one holds as sent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from recording_hub import RecordingHub

from dora_hf import cli
from dora_hf.publish.space_folder import dora_hf_version, pin_requirements

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE_DIR = REPO_ROOT / "spaces" / "dora-tracks"
SPACE_REPO = "testorg/dora-tracks"


@pytest.fixture
def space(tmp_path: Path) -> Path:
    folder = tmp_path / "dora-tracks"
    shutil.copytree(SPACE_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def dry_run_listing(folder: Path, capsys, *extra: str) -> tuple[list[str], list[str]]:
    """(listed files, other lines) of a dry run."""
    assert cli.main(["push", str(folder), "--repo-id", SPACE_REPO, "--repo-type", "space", "--dry-run", *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [line.split()[0] for line in lines[1:] if line.startswith("  ")], [line for line in lines if not line.startswith("  ")]


def test_space_dry_run_lists_exactly_what_the_push_sends_with_dora_hf_pinned(space, capsys, monkeypatch):
    (space / "__pycache__").mkdir()
    (space / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
    listed, notes = dry_run_listing(space, capsys)
    assert listed == ["README.md", "app.py", "examples/pedestrians.mp4", "requirements.txt", "tracks.jpg"]
    assert notes[0].startswith("would upload 5 files") and f"to the space repo {SPACE_REPO}, branch main:" in notes[0]
    version = dora_hf_version()
    assert f"requirements.txt: dora-hf pinned to =={version}, the version pushing it" in "\n".join(notes)

    hub = RecordingHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert cli.main(["push", str(space), "--repo-id", SPACE_REPO, "--repo-type", "space"]) == 0
    (_, repo), (_, upload) = hub.calls
    assert repo == {"repo_id": SPACE_REPO, "repo_type": "space", "private": False, "exist_ok": True, "space_sdk": "gradio"}
    assert upload["files"] == listed and upload["repo_type"] == "space"
    sent = hub.contents["requirements.txt"].decode()
    assert f"dora-hf[space]=={version}\n" in sent and "torch" in sent
    assert hub.contents["app.py"] == (space / "app.py").read_bytes()
    assert (space / "requirements.txt").read_text() == (SPACE_DIR / "requirements.txt").read_text()  # the folder is left alone
    assert "pushed 5 files" in capsys.readouterr().out


def test_secrets_links_out_and_leftovers_are_left_out_with_a_line_each(space, tmp_path, capsys, monkeypatch):
    outside = tmp_path / "private.txt"
    outside.write_text("not for the Hub")
    (space / ".env").write_text("HF_TOKEN=hf_secret\n")
    (space / "keys").mkdir()
    (space / "keys" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (space / "app.py~").write_text("old")
    (space / ".app.py.swp").write_bytes(b"swap")
    os.symlink(outside, space / "notes.txt")
    os.symlink(tmp_path, space / "linked-dir")
    os.symlink(space / "app.py", space / "alias.py")  # inside the folder: uploaded
    os.symlink(tmp_path / "gone", space / "broken.py")
    listed, notes = dry_run_listing(space, capsys)
    assert listed == ["README.md", "alias.py", "app.py", "examples/pedestrians.mp4", "requirements.txt", "tracks.jpg"]
    left = {line.split()[2]: line for line in notes if line.startswith("left out: ")}
    assert set(left) == {".env", "keys/id_rsa", "app.py~", ".app.py.swp", "notes.txt", "linked-dir", "broken.py"}
    assert f"a link to {tmp_path}, outside the folder" in left["linked-dir"]
    assert "looks like secrets" in left[".env"] and "looks like secrets" in left["keys/id_rsa"]
    assert f"a link to {outside}, outside the folder" in left["notes.txt"]
    assert "leftover" in left["app.py~"] and "leftover" in left[".app.py.swp"] and "broken link" in left["broken.py"]

    hub = RecordingHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert cli.main(["push", str(space), "--repo-id", SPACE_REPO, "--repo-type", "space"]) == 0
    assert hub.calls[-1][1]["files"] == listed and b"hf_secret" not in b"".join(hub.contents.values())
    err = capsys.readouterr().err
    assert "warning: left out: .env (looks like secrets" in err and "warning: left out: notes.txt (a link to" in err


def test_a_model_folder_keeps_its_files_and_leaves_out_a_dot_env(tmp_path, capsys):
    from dora_tiny import save_tiny_dora
    from huggingface_hub import ModelCard

    folder = save_tiny_dora(tmp_path / "model")
    ModelCard("---\nlicense: apache-2.0\n---\n# tiny\n").save(folder / "README.md")
    (folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    assert cli.main(["push", str(folder), "--repo-id", "testorg/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ")]
    assert listed == sorted(p.name for p in folder.iterdir() if p.name != ".env")
    assert "left out: .env (looks like secrets" in out


@pytest.mark.parametrize(
    "case, message",
    [
        ("space as model", "is a space folder, not a model folder: pass --repo-type space"),
        ("unknown sdk", "`sdk: flask` is not one of gradio, streamlit, docker, static"),
        ("missing app", "`app_file: app.py` is not in"),
        ("no requirements", "has no requirements.txt: the Space would not install dora-hf"),
        ("no dora-hf line", "no dora-hf line, so the Space would not install dora-hf"),
        ("broken header", "the Space's metadata does not parse"),
    ],
)
def test_space_folders_the_hub_could_not_build_are_refused(case, message, space, capsys):
    repo_type = "space"
    readme = space / "README.md"
    if case == "space as model":
        repo_type = "model"
    elif case == "unknown sdk":
        readme.write_text(readme.read_text().replace("sdk: gradio", "sdk: flask"))
    elif case == "missing app":
        (space / "app.py").unlink()
    elif case == "no requirements":
        (space / "requirements.txt").unlink()
    elif case == "no dora-hf line":
        (space / "requirements.txt").write_text("gradio\n")
    elif case == "broken header":
        readme.write_text("---\nsdk: gradio\nlicense: [unclosed\n---\n# x\n")
    assert cli.main(["push", str(space), "--repo-id", SPACE_REPO, "--repo-type", repo_type, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_pinning_keeps_extras_and_markers(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("torch\nDora_HF[space] >= 0.0.1 ; python_version >= '3.11'\ndora-hfx\n")
    pinned = pin_requirements(path, "1.2.3")
    assert pinned.text == "torch\ndora-hf[space]==1.2.3 ; python_version >= '3.11'\ndora-hfx\n"
    assert pinned.was == "Dora_HF[space] >= 0.0.1 ; python_version >= '3.11'"
