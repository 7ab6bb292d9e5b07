#!/usr/bin/env bash
# Install the project (CPU torch first) and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/python -m dora_hf.demo "$@"
