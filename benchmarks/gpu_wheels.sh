#!/usr/bin/env bash
# Wheels that the GPU machine's Python (3.12, with CUDA torch) lacks, at the versions this
# repository is tested with, into .whl/ (git-ignored) for run_gpu.sh to install there.
#
#   bash benchmarks/gpu_wheels.sh         # here, with network access to PyPI; about 56 MB
#
# Then carry `.whl` and `.cache/sample_videos` to the GPU machine and run
# `bash benchmarks/run_gpu.sh` there: it installs the wheels into a temporary folder first.
# The GPU image has torch, accelerate, safetensors, numpy, pandas, pyarrow, pillow, pyyaml, tqdm
# and tokenizers; its transformers and huggingface_hub are older than this project needs, and
# datasets and PyAV are missing. pyarrow (55 MB) does not fit beside PyAV in one carry, so the
# image's own is used: datasets needs pyarrow >= 24 (run_gpu.sh prints the version it finds).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-$REPO/.venv/bin/python}"
PACKAGES=(transformers huggingface_hub datasets dill multiprocess av httpx2 httpcore2 truststore anyio idna h11 hf-xet click regex fsspec)

# Pin each to the version installed in this environment, the one the tests ran with.
mapfile -t PINS < <("$PY" - "${PACKAGES[@]}" <<'PYEOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        sys.exit(f"{name} is not installed in {sys.executable}: run scripts/setup_env.sh first")
PYEOF
)

rm -rf .whl.partial
mkdir -p .whl.partial
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl.partial "${PINS[@]}"
rm -rf .whl
mv .whl.partial .whl
du -sh .whl
echo "wheels for the GPU machine in $REPO/.whl: ${PINS[*]}"
