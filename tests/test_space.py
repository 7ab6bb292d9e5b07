"""The demo Space's work without a browser: the upload checks, one request, the default model.

The page itself is tested in Chromium (test_space_browser.py); here `run_request` runs in-process
with a tiny model, and every refusal is one line naming the file by its name.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from dora_tiny import save_tiny_dora
from PIL import Image

from dora_hf.errors import DoraUserError
from dora_hf.space.limits import SpaceLimits, check_video
from dora_hf.space.request import ModelCache, run_request


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_dora(tmp_path_factory.mktemp("space") / "tiny-dora")


def test_one_request_draws_the_pictures_and_scores_a_static_camera(tiny_model, synthetic_video, tmp_path):
    steps = []
    result = run_request(
        str(tiny_model), synthetic_video, tmp_path, num_objects=2, num_frames=6, step=3, static_camera=True,
        progress=lambda share, what: steps.append((share, what)),
    )
    with Image.open(result.animation) as animation:
        assert animation.format == "GIF" and animation.n_frames == 6
    for picture in (result.strip, result.attention):
        with Image.open(picture) as image:
            assert image.format == "PNG"
    with Image.open(result.attention) as attention, Image.open(result.strip) as strip:
        assert attention.height > strip.height - 96  # frames + 4 heads against frames + 2 objects + all objects
    assert len(result.heads) == 2 and result.num_frames == 6
    assert [row[0] for row in result.discovery] == ["precision", "chance", "best_iou", "mutual_iou", "temporal_iou"]
    assert all(row[1] != "n/a" for row in result.discovery[:2])
    assert result.summary.startswith("2 objects (found by heads") and "6 frames" in result.summary
    shares = [share for share, _ in steps]
    assert shares == sorted(shares) and shares[-1] == 1.0


def test_without_a_static_camera_there_are_no_discovery_scores(tiny_model, synthetic_video, tmp_path):
    result = run_request(str(tiny_model), synthetic_video, tmp_path, num_frames=3, step=1)
    assert result.discovery == [] and result.num_frames == 3


def write_video(path: Path, size: tuple[int, int], frames: int = 2) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("nothing", "no video: upload a short clip or pick an example"),
        ("text", "notes.mp4: not a readable video"),
        ("empty", "empty.mp4: the file is empty (0 bytes)"),
        ("too long", "long.mp4: 2.0 s long; this demo takes clips up to 1 s"),
        ("too large", "big.mp4: 64x48 frames; this demo takes up to"),
        ("too many bytes", "notes.mp4: 120 B, more than this demo takes (10 B)"),
    ],
)
def test_uploads_the_demo_cannot_take_are_refused_before_decoding(case, message, tmp_path):
    limits = SpaceLimits(max_seconds=1.0, max_pixels=32 * 32)
    path: Path | None = tmp_path / "notes.mp4"
    if case == "nothing":
        path = None
    elif case in ("text", "too many bytes"):
        path.write_text("not a video\n" * 10)
        if case == "too many bytes":
            limits = SpaceLimits(max_bytes=10)
    elif case == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
    elif case == "too long":
        path = write_video(tmp_path / "long.mp4", (16, 16), frames=20)
    else:
        path = write_video(tmp_path / "big.mp4", (64, 48))
    with pytest.raises(DoraUserError) as error:
        check_video(path, limits)
    assert message in str(error.value)
    assert str(tmp_path) not in str(error.value)  # the page names the upload, not the server's temporary path


def test_choices_out_of_range_and_models_that_cannot_serve_are_one_line(tiny_model, synthetic_video, tmp_path, monkeypatch):
    with pytest.raises(DoraUserError, match="frames 1: choose 2 to 24"):
        run_request(str(tiny_model), synthetic_video, tmp_path, num_frames=1)
    with pytest.raises(DoraUserError, match="5 objects: this model has 4 attention heads"):
        run_request(str(tiny_model), synthetic_video, tmp_path, num_objects=5)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DoraUserError, match="model 'nobody-here/no-such-model' could not be loaded: .*a local model folder"):
        run_request("nobody-here/no-such-model", synthetic_video, tmp_path)
    with pytest.raises(DoraUserError, match="no model"):
        ModelCache().get("  ")


def test_the_default_model_is_the_env_then_the_main_jobs_export_then_the_published_one(tmp_path, monkeypatch):
    from dora_hf.publish.hub_names import FLAGSHIP_MODEL_ID
    from dora_hf.space.app import MODEL_ENV, default_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert default_model() == FLAGSHIP_MODEL_ID
    save_tiny_dora(tmp_path / "dora-wt-vits16-demo")
    assert default_model() == "./dora-wt-vits16-demo"
    monkeypatch.setenv(MODEL_ENV, "me/other")
    assert default_model() == "me/other"
