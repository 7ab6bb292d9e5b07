"""Import paths of the flat layout still work after the move to one folder per stage.

`tests/fixtures/flat_layout_names.json` lists every public top-level name of every module that
moved or lost names (read from git d857b96, the last flat layout). Each is still importable from
its old path and is the very object the new module holds, with a DeprecationWarning that names
the new place; `pretrain`, which moved above training/, and a constant whose meaning changed are an ImportError
naming what to import instead.
Old `python -m` entry points run.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dora_hf import _moved

FLAT_NAMES = json.loads((Path(__file__).resolve().parent / "fixtures" / "flat_layout_names.json").read_text())
CASES = [(module, name) for module, names in sorted(FLAT_NAMES.items()) for name in names]


def test_the_fixture_covers_every_moved_module():
    assert set(_moved.MOVED) - {"dora_hf.data", "dora_hf.demo"} <= set(FLAT_NAMES)
    assert len(CASES) > 400


@pytest.mark.parametrize(("module", "name"), CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_old_name_imports_from_its_old_path(module, name):
    if (module, name) in _moved.RAISED:
        message = _moved.RAISED[module, name]
        with pytest.raises(ImportError, match=re.escape(message)):
            exec(f"from {module} import {name}", {})
        new_module, new_name = re.fullmatch(r".*from (\S+) import (\w+)", message).groups()
        assert getattr(importlib.import_module(new_module), new_name) is not None
        return
    namespace: dict = {}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        exec(f"from {module} import {name} as value", namespace)
    value = namespace["value"]
    # It is the object of the module that holds it now, not a copy.
    new_name = _moved.RENAMED.get((module, name), name)
    holders = [importlib.import_module(t) for t in _moved.MOVED.get(module, ())]
    if (module, name) in _moved.MOVED_NAMES:
        holders = [importlib.import_module(_moved.MOVED_NAMES[module, name])]
    if not holders:  # a module that is still there and kept the name
        holders = [importlib.import_module(module)]
    assert any(getattr(h, new_name, None) is value for h in holders), (module, name)


def test_old_path_warns_with_the_new_one():
    with pytest.warns(DeprecationWarning, match=r"dora_hf\.data\.prepare moved: import PrepareOptions from dora_hf\.prepare\.options"):
        from dora_hf.data.prepare import PrepareOptions  # noqa: F401
    with pytest.warns(DeprecationWarning, match=r"import decode_video_frames from dora_hf\.prepare\.video_decode"):
        from dora_hf.data.video_source import decode_frames  # noqa: F401
    with pytest.warns(DeprecationWarning, match=r"import build_views from dora_hf\.training\.builders"):
        from dora_hf.training.loop import build_views  # noqa: F401


def test_unknown_name_on_an_old_path_is_an_import_error():
    with pytest.raises(ImportError, match="no_such_name"):
        exec("from dora_hf.data.prepare import no_such_name", {})
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("dora_hf.data.no_such_module")


def test_old_python_m_entry_points_run():
    for old in ("dora_hf.data.sample_video", "dora_hf.demo"):
        done = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (old, done.stderr)
        assert "usage:" in done.stdout


def test_old_package_paths_serve_their_old_names():
    from dora_hf.data import prepare_dataset
    from dora_hf.evaluation.davis import evaluate_davis
    from dora_hf.evaluation.discovery import METRIC_NAMES
    from dora_hf.prepare.pipeline import prepare_dataset as new
    from dora_hf.evaluation.davis.evaluate import evaluate_davis as new_davis
    from dora_hf.evaluation.discovery.scoring import METRIC_NAMES as new_names

    assert prepare_dataset is new and evaluate_davis is new_davis and METRIC_NAMES is new_names
