#!/usr/bin/env bash
# Install the project with what the demo uses (CPU torch first, then the `train` extra, which
# includes `data`) and run the main job: prepare-data, pretraining, export, reloading, discovery scores, drawing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh train
exec .venv/bin/python -m dora_hf.demo "$@"
