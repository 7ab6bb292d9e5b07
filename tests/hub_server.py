"""A real Hugging Face Hub server for tests: olah serving git repositories from a local folder.

olah answers the real client libraries over HTTP (`HF_ENDPOINT=http://127.0.0.1:PORT`): repo info,
file listings, downloads, so `from_pretrained`, `snapshot_download` and `load_dataset(...,
streaming=True)` run their normal network code. It has no upload API: a repo is "published" by
committing the files into `mirrors/{models|datasets}/ORG/NAME` as a git repository.

olah lives in its own virtual environment (`.cache/venv-olah`, made on first use with
`pip install olah==0.5.4`), so its web stack never touches the project's pinned versions. Set
`DORA_HF_OLAH_PYTHON` to an interpreter that already has olah to skip that.

Quirks handled here: its settings `mirrors-path` and `offline` only work from its TOML file; a
served folder must be a git repository with a commit; a revision-less repo-info request answers
401 until `repos/api/{type}/{org}/{name}/revision/main/meta_head.json` holds the answer to
`/api/{type}/{org}/{name}/revision/main`; `/` answers 500, so readiness is polled on an `/api` path;
and ranged GETs are answered in full (see olah_with_ranges.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OLAH_REQUIREMENT = "olah==0.5.4"
OLAH_VENV = REPO_ROOT / ".cache" / "venv-olah"
LAUNCHER = Path(__file__).resolve().parent / "olah_with_ranges.py"
REPO_TYPES = {"model": "models", "dataset": "datasets"}


class HubServerError(RuntimeError):
    """olah could not be installed or started; the message carries its output."""


def olah_python() -> Path:
    """An interpreter that can import olah: `DORA_HF_OLAH_PYTHON`, or olah's own venv, made once."""
    override = os.environ.get("DORA_HF_OLAH_PYTHON")
    if override:
        return Path(override)
    python = OLAH_VENV / "bin" / "python"
    marker = OLAH_VENV / f".installed-{OLAH_REQUIREMENT}"
    OLAH_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(OLAH_VENV.parent / "venv-olah.lock", "w") as lock:  # one installer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and python.exists():
            return python
        shutil.rmtree(OLAH_VENV, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(OLAH_VENV)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", OLAH_REQUIREMENT],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise HubServerError(
                    f"could not install the test hub server ({' '.join(step)}), exit {done.returncode}:\n"
                    f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
                )
        marker.write_text("ok\n")
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalHub:
    """One olah process on 127.0.0.1 serving the repositories under `root/mirrors`.

    Several instances may share one `root` (the same repositories on different ports).
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.mirrors = self.root / "mirrors"
        self.repos = self.root / "repos"
        self.process: subprocess.Popen | None = None
        self.log_file = self.root / f"olah-{self.port}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LocalHub:
        """Start olah and wait until it answers on an `/api` path."""
        python = olah_python()
        self.mirrors.mkdir(parents=True, exist_ok=True)
        self.repos.mkdir(parents=True, exist_ok=True)
        config = self.root / f"olah-{self.port}.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f"repos-path = {json.dumps(str(self.repos))}\nmirrors-path = [{json.dumps(str(self.mirrors))}]\n"
            # offline: never ask huggingface.co; the upstream is pointed at a dead local port all the same
            'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'
            "[accessibility]\noffline = true\n"
        )
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            [str(python), str(LAUNCHER), "-c", str(config), "--log-path", str(self.root / "logs")],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HubServerError(f"olah exited with {self.process.returncode} at start:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise HubServerError(f"olah did not answer on {self.endpoint} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Shut olah down (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stop olah abruptly, as a crash or a pulled cable would: open transfers are cut."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not running"
        return self.process.pid

    def publish(self, repo_id: str, folder: Path, files: Iterable[str], repo_type: str = "model") -> str:
        """Commit `files` (paths relative to `folder`) as the repo `repo_id`; returns the commit sha.

        The server must be running: the revision metadata olah needs is fetched from it.
        """
        org, name = repo_id.split("/")
        target = self.mirrors / REPO_TYPES[repo_type] / org / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for relative in files:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(folder) / relative, target / relative)
        git = ["git", "-c", "user.name=dora-hf tests", "-c", "user.email=tests@dora-hf.invalid", "-c", "init.defaultBranch=main"]
        for args in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "--message", f"publish {repo_id}"]):
            subprocess.run(git + args, cwd=target, check=True, capture_output=True)
        sha = subprocess.run(git + ["rev-parse", "HEAD"], cwd=target, check=True, capture_output=True, text=True).stdout.strip()
        api = f"api/{REPO_TYPES[repo_type]}/{org}/{name}/revision/main"
        with urllib.request.urlopen(f"{self.endpoint}/{api}", timeout=30) as response:
            meta = response.read()
        seeded = self.repos / api / "meta_head.json"
        seeded.parent.mkdir(parents=True, exist_ok=True)
        seeded.write_bytes(meta)
        return sha

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.endpoint}/api/models/dora-hf/readiness-probe", timeout=2).close()
        except urllib.error.HTTPError:
            return True  # any HTTP status means the app is serving
        except OSError:
            return False
        return True

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
