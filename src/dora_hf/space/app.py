"""The Gradio page of the demo Space: inputs, a progress bar, the pictures and scores of `request`.

A request that cannot run (an upload that is not a video, an empty file, a clip over the limits, a
model that cannot be loaded) shows one line in the status box and as a warning, and the page keeps
serving; only the inputs and the layout live here, the work is `run_request`'s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import DoraUserError
from ..publish.hub_names import FLAGSHIP_MODEL_ID, hub_url
from .limits import SpaceLimits
from .request import ModelCache, run_request

LOCAL_DEMO_MODEL = Path("dora-wt-vits16-demo")
"""The main job's export (`scripts/main_job.sh`), the default model where it exists."""
MODEL_ENV = "DORA_SPACE_MODEL"
"""Environment variable naming the default model (a Space's settings can set it)."""
KEEP_REQUESTS = 16
"""Output folders of the latest requests kept; older ones are removed."""

INTRO = f"""# DoRA: discover and track

[DoRA](https://arxiv.org/abs/2310.08584) learns an image encoder from one long walking-tour video.
Its teacher's attention heads each find an object in the first frame of a clip; the objects are then
followed through the later frames. Upload a short clip (up to {{seconds}}) or pick the example, choose a
model ([{FLAGSHIP_MODEL_ID}]({hub_url(FLAGSHIP_MODEL_ID)}) by default, or any DoRA or ViT model id or
folder), and see the objects it tracks, each head's [CLS] attention and, for a static camera, how
well the objects match what moves."""


def default_model() -> str:
    """`$DORA_SPACE_MODEL`, else the main job's export in the working folder, else the published model."""
    if os.environ.get(MODEL_ENV):
        return os.environ[MODEL_ENV]
    if (LOCAL_DEMO_MODEL / "config.json").is_file():
        return f"./{LOCAL_DEMO_MODEL}"
    return FLAGSHIP_MODEL_ID


def _fresh_folder(root: Path) -> Path:
    """A new folder for one request's pictures; the oldest beyond `KEEP_REQUESTS` are removed."""
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP_REQUESTS]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root))


def build_app(model: str | None = None, examples: list[str | Path] | None = None, limits: SpaceLimits = SpaceLimits()):
    """The page (a `gradio.Blocks`; call `.launch()`), with ``model`` filled in and ``examples`` to pick."""
    import gradio as gr

    cache = ModelCache()
    outputs_root = Path(tempfile.gettempdir()) / "dora-space"

    def track(video, model_name, objects, frames, step, static, progress=gr.Progress()):
        try:
            result = run_request(
                model_name, video, _fresh_folder(outputs_root), num_objects=int(objects), num_frames=int(frames),
                step=int(step), static_camera=bool(static), limits=limits, cache=cache,
                progress=lambda share, what: progress(share, desc=what),
            )
        except DoraUserError as err:
            gr.Warning(str(err))
            return None, None, None, gr.update(value=None, visible=False), f"**Could not run:** {err}"
        table = gr.update(value=[list(row) for row in result.discovery], visible=bool(result.discovery))
        return str(result.animation), str(result.strip), str(result.attention), table, f"**Done:** {result.summary}"

    with gr.Blocks(title="DoRA: discover and track") as app:
        gr.Markdown(INTRO.replace("{seconds}", f"{limits.max_seconds:g} s"))
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.File(label="video (mp4, webm, avi, mov, mkv)", type="filepath", elem_id="video")
                model_box = gr.Textbox(value=model or default_model(), label="model: hub id or local folder", elem_id="model")
                objects = gr.Slider(1, limits.max_objects, value=3, step=1, label="objects to discover", elem_id="objects")
                frames = gr.Slider(2, limits.max_frames, value=8, step=1, label="frames to track through", elem_id="frames")
                step = gr.Slider(1, limits.max_step, value=4, step=1, label="use every n-th frame", elem_id="step")
                static = gr.Checkbox(value=False, label="the camera is static: score the objects against what moves", elem_id="static")
                run = gr.Button("Discover and track", variant="primary", elem_id="run")
                status = gr.Markdown("Upload a clip or pick the example, then press the button.", elem_id="status")
                if examples:
                    gr.Examples([[str(path), True] for path in examples], inputs=[video, static], label="example")
            with gr.Column(scale=2):
                animation = gr.Image(label="tracked objects", type="filepath", format="gif", elem_id="animation")
                strip = gr.Image(label="frame strip: one row per object", type="filepath", elem_id="strip")
                attention = gr.Image(label="[CLS] attention of each head (last block)", type="filepath", elem_id="attention")
                discovery = gr.Dataframe(
                    headers=["score", "this model", "random masks", "meaning"], label="object discovery against the moving foreground",
                    visible=False, elem_id="discovery",
                )
        run.click(
            track, inputs=[video, model_box, objects, frames, step, static],
            outputs=[animation, strip, attention, discovery, status], concurrency_limit=1, api_name="track",
        )
    return app


def serve(
    model: str | None = None,
    examples: list[str | Path] | None = None,
    host: str | None = "127.0.0.1",
    port: int | None = None,
    limits: SpaceLimits = SpaceLimits(),
) -> None:
    """Build the page and serve it until interrupted (a Space runs this from `app.py`).

    ``host`` or ``port`` None: gradio's `$GRADIO_SERVER_NAME` / `$GRADIO_SERVER_PORT`, else
    127.0.0.1 and the first free port from 7860.
    """
    examples = [Path(path) for path in examples or []]
    missing = [str(path) for path in examples if not path.is_file()]
    if missing:
        raise DoraUserError(f"example video not found: {', '.join(missing)}")
    app = build_app(model, examples, limits)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, max_file_size=limits.max_bytes, show_error=True,
        allowed_paths=sorted({str(path.resolve().parent) for path in examples}),
    )
