"""`dora-hf --help`, every subcommand's `--help` and commands that need neither torch nor
transformers start without importing either (what makes the command line fast).

Each case runs in a fresh process: the test process itself has imported torch long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dora_hf.cli import SUBCOMMANDS, chosen_command

# Runs `dora-hf ARGS...` as the console script does (`from dora_hf.cli import main`), then
# reports the exit status and which heavy packages ended up in sys.modules.
RUN_CLI = textwrap.dedent(
    """
    import json, sys
    from dora_hf.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
    heavy = sorted(name for name in ("torch", "transformers", "accelerate", "evaluate", "gradio") if name in sys.modules)
    print("REPORT " + json.dumps({"code": code, "heavy": heavy}))
    """
)

HELP_CASES = [
    [], *([name] for name in SUBCOMMANDS), ["eval", "knn"], ["eval", "linear"], ["eval", "davis"], ["eval", "discovery"],
    ["eval", "corloc"], ["eval", "segmentation"],
]

# An option each subcommand's help must show: proof that its arguments were really added.
OPTION_SHOWN = {
    "convert-reference": "--which",
    "prepare-data": "--clip-step",
    "verify-data": "DIR",
    "export": "--eval-results",
    "eval": "knn",
    "visualize": "--num-frames",
    "push": "--repo-id",
    "space": "--model",
}


def run_cli(*args: str, cwd: Path | None = None) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"no report\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(lines[-1][len("REPORT "):]), result.stdout + result.stderr


@pytest.mark.parametrize("command", HELP_CASES, ids=lambda c: " ".join(c) or "top-level")
def test_help_imports_neither_torch_nor_transformers(command: list[str]) -> None:
    report, output = run_cli(*command, "--help")
    assert report["code"] == 0, output
    assert report["heavy"] == [], f"`dora-hf {' '.join(command)} --help` imported {report['heavy']}"
    if not command:
        assert all(name in output for name in SUBCOMMANDS), output
    else:
        assert f"usage: dora-hf {' '.join(command)}" in output, output
        if len(command) == 1:
            assert OPTION_SHOWN[command[0]] in output, output
        else:
            assert "--model" in output, output


def test_argument_errors_import_neither(tmp_path: Path) -> None:
    report, output = run_cli("convert-reference", "ckpt.pth", "--which", "neither", cwd=tmp_path)
    assert report["code"] == 2 and "invalid choice: 'neither'" in output, output
    assert report["heavy"] == []


def test_verify_data_runs_without_torch_or_transformers(tmp_path: Path) -> None:
    report, output = run_cli("verify-data", str(tmp_path / "missing"))
    assert report["code"] == 2 and "dora-hf verify-data: error:" in output, output
    assert report["heavy"] == []


def test_a_command_that_loads_models_does_import_them(tmp_path: Path) -> None:
    """The check above can see torch: a run of convert-reference imports it when it runs."""
    report, output = run_cli("convert-reference", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out"))
    assert report["code"] == 2 and "checkpoint not found" in output, output
    assert "torch" in report["heavy"] and "transformers" in report["heavy"]


def test_chosen_command_is_the_first_non_option() -> None:
    assert chosen_command(["--help"]) is None
    assert chosen_command(["eval", "knn", "--help"]) == "eval"
    assert chosen_command(["-h", "push", "x"]) == "push"
    assert chosen_command(["no-such-command"]) is None
