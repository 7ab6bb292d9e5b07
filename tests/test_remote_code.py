"""A saved folder loads with trust_remote_code=True in a fresh process where dora_hf cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from blocked_import import BLOCK_DORA_HF
from dora_tiny import tiny_config

from dora_hf import DoraForPreTraining, DoraImageProcessor

FRESH_PROCESS = BLOCK_DORA_HF + textwrap.dedent(
    """
    import sys

    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining

    folder, reference = sys.argv[1], sys.argv[2]
    expected = torch.load(reference)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__name__ == "DoraModel", type(model)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        assert torch.equal(model(expected["pixels"]).pooler_output, expected["pooler_output"])
    full = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(full(expected["pixels"]).logits, expected["logits"])
        tracks = full.discover_and_track(expected["pixels"][None], head_indices=[0, 1, 2])
    assert tracks.masks.shape == (1, 3, 2, 32, 32)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__name__ == "DoraImageProcessor"
    image = Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8))
    assert tuple(processor(image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 32, 32)
    print("REMOTE-CODE-OK")
    """
)


def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    torch.manual_seed(0)
    model = DoraForPreTraining(tiny_config()).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    DoraImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixels)
    torch.save({"pixels": pixels, "pooler_output": out.pooler_output, "logits": out.logits}, tmp_path / "ref.pt")
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "ref.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REMOTE-CODE-OK" in result.stdout
