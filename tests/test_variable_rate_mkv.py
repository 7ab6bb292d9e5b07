"""A complete variable-frame-rate Matroska file is read; only a cut one is called truncated
(docs/RELIABILITY.md, "Under load and under fire", 9).

Matroska states no frame count, so the count is estimated as duration x nominal rate, which a
variable rate makes wrong; completeness is judged by the time the frames reach instead.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import pytest
from conftest import synthetic_frame

from dora_hf.cli import main

FAST = ["--clip-step", "6", "--keep-every", "2", "--frames-per-clip", "2", "--no-progress"]
GAPS_MS = [33] * 30 + [200] * 30
"""1 s at 30 fps, then 6 s at 5 fps: duration x 30 fps says 205 frames where the file holds 60."""


def write_variable_rate_mkv(path: Path) -> Path:
    """A Matroska file whose frames are :data:`GAPS_MS` apart (millisecond timestamps)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast", "g": "30"}
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for index, gap in enumerate(GAPS_MS):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(index, 160, 96), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
            pts += gap
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def vfr_mkv(tmp_path_factory) -> Path:
    return write_variable_rate_mkv(tmp_path_factory.mktemp("vfr") / "tour.mkv")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_complete_variable_rate_mkv_is_read_whole(vfr_mkv, tmp_path, capsys, workers):
    with av.open(str(vfr_mkv)) as container:
        assert container.streams.video[0].frames == 0  # Matroska states no count: it is estimated
    assert main(["prepare-data", str(vfr_mkv), "--out", str(tmp_path / "o"), "--num-workers", workers, *FAST]) == 0
    assert "about 205 frames" in capsys.readouterr().out
    (video,) = json.loads((tmp_path / "o" / "prepare_info.json").read_text())["videos"]
    assert video["decoded_frames"] == 60 and video["kept_frames"] == 30


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_cut_variable_rate_mkv_is_still_truncated(vfr_mkv, tmp_path, capsys, workers):
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(vfr_mkv.read_bytes()[: vfr_mkv.stat().st_size // 2])
    with av.open(str(cut)) as container:
        times = [float(frame.time) for frame in container.decode(video=0)]
    assert main(["prepare-data", str(cut), "--out", str(tmp_path / "o"), "--num-workers", workers, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"stopped after frame {len(times) - 1} ({len(times)} frames, " in err[0]
    assert "the container states a duration of 6.8 s (about 205 frames at 30 fps): the file is truncated or corrupt" in err[0]
    assert not (tmp_path / "o").exists()
