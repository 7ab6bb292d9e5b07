"""The demo Space: a person's clip in, the objects a DoRA model discovers and tracks out, in a browser.

`limits` (what a request may ask of a small CPU machine, checked before decoding), `request` (one
request: the package's own tracking, drawing and discovery scores), `app` (the Gradio page),
`command` (`dora-hf space`, the same page run locally). `spaces/dora-tracks/app.py` is a few lines
that start `app`, so that the Hub's Space and the local command serve the same page.
"""

from __future__ import annotations

from .._lazy import lazy_names

# Imported on first use: `dora-hf space --help` imports neither gradio nor torch.
_EXPORTS = {
    "SpaceLimits": ".limits",
    "check_video": ".limits",
    "SpaceResult": ".request",
    "run_request": ".request",
    "build_app": ".app",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
