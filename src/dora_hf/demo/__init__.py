"""The main job (`python -m dora_hf.demo`, `scripts/main_job.sh`) and its sample videos.

`main_job` (prepare, pretrain, export, reload, score and draw), `sample_video` (the real videos it
and the tests use), `video_cut` (the held-out split, by stream copy).
"""

from __future__ import annotations

from .._lazy import lazy_names

# The main job's names, as `dora_hf.demo` had them when it was one module; imported on first use.
_EXPORTS = {
    "DEMO_DISCOVERY": ".main_job",
    "DEMO_RECIPE": ".main_job",
    "DemoSplit": ".main_job",
    "HELD_OUT_SECONDS": ".main_job",
    "REPO_ROOT": ".main_job",
    "format_discovery_table": ".main_job",
    "main": ".main_job",
    "random_init_backbone": ".main_job",
    "run_demo": ".main_job",
    "score_models": ".main_job",
    "split_demo_video": ".main_job",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_names(__name__, _EXPORTS)
