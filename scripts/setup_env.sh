#!/usr/bin/env bash
# Create .venv with the CPU build of torch installed first (a bare `torch` requirement would
# otherwise pull a multi-GB CUDA build), then the project with the pinned stack.
# Usage: scripts/setup_env.sh [EXTRAS]   e.g. scripts/setup_env.sh train
# EXTRAS (comma-separated; none: the core install, enough to load and run saved models):
#   data (prepare-data, verify-data, visualize), train (pretraining, export; includes data),
#   eval (dora-hf eval; includes data), space (dora-hf space: gradio; includes data), all,
#   dev (all + faces + browser (playwright, for the page's test in Debian's chromium) + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0" \
        || .venv/bin/python -m pip install --quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install --quiet -c constraints.txt -e "$target"
