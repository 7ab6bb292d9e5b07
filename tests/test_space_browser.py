"""The demo page in a real browser: Debian's Chromium, headless, driven by Playwright.

`dora-hf space` runs as its own process on 127.0.0.1 with a tiny DoRA model (4 heads). The browser
uploads a synthetic clip, runs it, waits for the result, and reads the served animation and strip
back: both must show the 3 objects' colours. Then a text file renamed .mp4, an empty file and a
4-hour video (4 frames an hour, 1.6 kB) must each put a clear line in the page, and a good clip
must still run after them. Skips, saying why, where Chromium, Playwright or gradio is missing
(`.ci/run` installs Chromium with apt-get; the `browser` extra brings the rest).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import dora_hf
from dora_hf.evaluation.visualize.overlays import object_colours

pytestmark = pytest.mark.integration

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
OBJECTS = 3
START_TIMEOUT_S = 180
RUN_TIMEOUT_MS = 180_000
STATUS = '#status [data-testid="markdown"]'
"""The status line's text (without the timer gradio overlays while a request runs)."""


def colour_pixels(image, colour: np.ndarray, tolerance: float = 2.0) -> int:
    """Pixels of the picture (all frames of an animation) within ``tolerance`` of ``colour`` in every channel."""
    from PIL import ImageSequence

    pixels = np.concatenate([np.asarray(frame.convert("RGB")).reshape(-1, 3) for frame in ImageSequence.Iterator(image)])
    return int((np.abs(pixels.astype(np.float32) - colour).max(axis=1) <= tolerance).sum())


def long_video(path: Path, hours: int = 4) -> Path:
    """A video of ``hours`` hours in a few kB: 16x16 frames, one an hour."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(1, 3600))
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for hour in range(hours):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * hour, np.uint8), format="rgb24")
            frame.pts, frame.time_base = hour, Fraction(3600)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dora-hf space` with a tiny DoRA model, served on a free port of 127.0.0.1."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does it where it can)")
    pytest.importorskip("playwright", reason="the browser test needs playwright (pip install 'dora-hf[browser]')")
    pytest.importorskip("gradio", reason="the page needs gradio (pip install 'dora-hf[space]')")
    from dora_tiny import save_tiny_dora

    root = tmp_path_factory.mktemp("space")
    model = save_tiny_dora(root / "tiny-dora")
    port = free_port()
    package_root = str(Path(dora_hf.__file__).resolve().parents[1])  # the dora_hf this test imports, from any cwd
    env = {
        **os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "TMPDIR": str(root),
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "dora_hf.cli", "space", "--model", str(model), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, (root / "server.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the page did not come up:\n" + (root / "server.log").read_text()[-4000:]
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser_page(page_url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_url)
        page.wait_for_selector("#run")
        yield page
        browser.close()


def run_with(page, video: Path, static: bool = False) -> str:
    """Upload ``video`` (replacing any earlier one), press the button, and return the new status line.

    A run is over when the status line has changed to a result; the tests alternate good and bad
    uploads, so each run's line differs from the one before.
    """
    before = page.inner_text(STATUS)
    clear = page.locator("#video button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.set_input_files("#video input[type=file]", str(video))
    page.wait_for_selector(f'#video [aria-label="{video.name}"]', timeout=30_000)  # uploaded and listed
    box = page.locator("#static input[type=checkbox]")
    if box.is_checked() != static:
        box.click()
    page.click("#run")
    try:
        page.wait_for_function(
            """([selector, before]) => {
                const text = document.querySelector(selector).innerText;
                return text !== before && ['Done:', 'Could not run:'].some(word => text.includes(word));
            }""",
            arg=[STATUS, before], timeout=RUN_TIMEOUT_MS,
        )
    except Exception:
        page.screenshot(path=str(Path(os.environ.get("TMPDIR", "/tmp")) / "space-browser-failure.png"), full_page=True)
        raise
    return page.inner_text(STATUS)


def served_image(page, selector: str):
    from PIL import Image

    source = page.get_attribute(f"{selector} img", "src")
    assert source, f"{selector}: no picture shown"
    response = page.request.get(source)
    assert response.ok, source
    return Image.open(io.BytesIO(response.body()))


def test_a_clip_gives_the_tracked_objects_in_their_colours(browser_page, video_factory):
    page = browser_page
    status = run_with(page, video_factory(), static=True)
    assert status.startswith("Done:") and f"{OBJECTS} objects" in status and "8 frames" in status, status
    animation, strip = served_image(page, "#animation"), served_image(page, "#strip")
    assert animation.format == "GIF" and animation.n_frames == 8
    assert strip.format == "PNG"
    assert served_image(page, "#attention").format == "PNG"
    for picture in (animation, strip):  # each object's colour is drawn (the strip's key: a 10x10 swatch), no fourth's
        counts = [colour_pixels(picture, colour) for colour in object_colours(OBJECTS + 1)]
        assert min(counts[:OBJECTS]) >= 100 and counts[OBJECTS] == 0, counts
    table = page.inner_text("#discovery")
    assert "precision" in table and "temporal_iou" in table


@pytest.mark.parametrize(
    "case, message",
    [
        ("text renamed .mp4", "notes.mp4: not a readable video"),
        ("empty file", "empty.mp4: the file is empty (0 bytes)"),
        ("4-hour video", "tour.mp4: 4:00:00 long; this demo takes clips up to 60 s"),
    ],
)
def test_a_bad_upload_gets_one_clear_line_and_the_page_keeps_serving(case, message, browser_page, tmp_path, video_factory):
    page = browser_page
    if case == "text renamed .mp4":
        upload = tmp_path / "notes.mp4"
        upload.write_text("these are my notes, not a video\n" * 20)
    elif case == "empty file":
        upload = tmp_path / "empty.mp4"
        upload.write_bytes(b"")
    else:
        upload = long_video(tmp_path / "tour.mp4")
    status = run_with(page, upload)
    assert status.startswith("Could not run:") and message in status, status
    assert "Traceback" not in page.content()
    assert run_with(page, video_factory()).startswith("Done:")  # still serving
