"""The package's floors: no module imports from a floor above its own, even inside a function.

Data flows up the floors (a video is prepared, read, viewed, trained on, evaluated, published);
a module that imported upwards would tie a lower stage to a higher one (training must not need
publishing, for example). Read from the source with `ast`, so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dora_hf"

# Each top-level part of the package and its floor; a module may import from its own floor and below.
FLOORS = {
    "errors": 0, "hub_tags": 0, "_lazy": 0, "_moved": 0, "_arguments": 0, "_threads": 0, "auto_registration": 0,
    "modeling": 1,
    "folders": 2,
    "dataset": 3, "views": 3, "losses": 3,
    "prepare": 4,
    "training": 5, "evaluation": 5,
    "publish": 6,
    "pretrain": 7,
    "demo": 8, "space": 8,
    "cli": 9, "__init__": 9,
}
# Parts on one floor that must not import each other all the same.
APART = {("training", "evaluation"), ("evaluation", "training"), ("views", "dataset"), ("dataset", "views"),
         ("losses", "views"), ("views", "losses"), ("losses", "dataset"), ("dataset", "losses")}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    return "dora_hf." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imports_of(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of a dora_hf module in `path` (module `module`)."""
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("dora_hf"):
                if node.module is None or target == "dora_hf":  # `from . import x`: x is a submodule
                    found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
                else:
                    found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("dora_hf.")]
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "metrics" not in p.parts)


def test_every_part_has_a_floor():
    parts = {part_of("dora_hf." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in SOURCES}
    assert parts <= set(FLOORS), parts - set(FLOORS)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_no_import_runs_up_a_floor(path):
    source = part_of("dora_hf." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    for line, target in imports_of(path):
        dest = part_of(target)
        assert FLOORS[dest] <= FLOORS[source], f"{path.relative_to(PACKAGE)}:{line} imports {target} (floor {FLOORS[dest]} > {FLOORS[source]})"
        assert (source, dest) not in APART, f"{path.relative_to(PACKAGE)}:{line}: {source} must not import {dest}"


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """A function-level relative import of publishing from training is found and is a violation."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\n\ndef finish():\n    from ..publish.export import export_checkpoint\n    from . import step\n")
    found = imports_of(probe, "dora_hf.training.probe")
    assert found == [(5, "dora_hf.publish.export"), (6, "dora_hf.training.step")]
    assert FLOORS[part_of(found[0][1])] > FLOORS["training"]
