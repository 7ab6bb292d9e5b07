"""The DoRA demo Space: upload a short clip, see the objects a DoRA model discovers and tracks.

The page and all its work are the `dora-hf` package's (`dora_hf.space`), the same that
`dora-hf space` serves locally; this file only points it at the bundled example. The model is
`$DORA_SPACE_MODEL` if set, else `./dora-wt-vits16-demo` if present, else the published model.
"""

from pathlib import Path

from dora_hf.space.app import serve

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    serve(examples=sorted((HERE / "examples").glob("*.mp4")), host="0.0.0.0", port=7860)
