"""OpenMP's wait policy is chosen before torch loads: passive beside other running processes,
libgomp's default on an idle machine, and never over the user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dora_hf._threads import choose_wait_policy, others_running


def loadavg(tmp_path: Path, running: int) -> Path:
    path = tmp_path / "loadavg"
    path.write_text(f"0.52 0.81 0.77 {running}/412 5531\n")
    return path


def test_others_running_reads_the_runnable_count_less_this_process(tmp_path):
    assert others_running(loadavg(tmp_path, 1)) == 0
    assert others_running(loadavg(tmp_path, 4)) == 3
    assert others_running(tmp_path / "missing") == 0  # not Linux: nothing known, nothing set


def test_passive_beside_running_processes_and_the_default_when_idle(tmp_path):
    environ: dict[str, str] = {}
    assert choose_wait_policy(environ, {}, loadavg(tmp_path, 1)) is None and environ == {}
    assert choose_wait_policy(environ, {}, loadavg(tmp_path, 3)) == "PASSIVE"
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_users_choice_and_a_loaded_torch_are_left_alone(tmp_path):
    busy = loadavg(tmp_path, 5)
    for environ in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "100"}):
        before = dict(environ)
        assert choose_wait_policy(environ, {}, busy) is None and environ == before
    environ = {}
    assert choose_wait_policy(environ, {"torch": object()}, busy) is None and environ == {}


def test_importing_dora_hf_chooses_before_torch_loads():
    probe = "import os, dora_hf, torch\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=clean, capture_output=True, text=True, timeout=120)
    finally:
        busy.kill()
        busy.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PASSIVE"  # a busy loop was running beside it
