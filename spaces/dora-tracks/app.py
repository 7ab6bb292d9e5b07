"""The DoRA demo Space: upload a short clip, see the objects a DoRA model discovers and tracks.

The page and all its work are the `dora-hf` package's (`dora_hf.space`), the same that
`dora-hf space` serves locally; this file only points it at the bundled example. The model is
`$DORA_SPACE_MODEL` if set, else `./dora-wt-vits16-demo` if present, else the published model.
Address and port are gradio's: `$GRADIO_SERVER_NAME` and `$GRADIO_SERVER_PORT` (a Space sets
them), else 127.0.0.1 and 7860.
"""

from pathlib import Path

from dora_hf.space.app import serve

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    serve(examples=sorted((HERE / "examples").glob("*.mp4")), host=None, port=None)
