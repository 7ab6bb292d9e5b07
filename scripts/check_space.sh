#!/usr/bin/env bash
# The demo Space started as the Hub starts it: a fresh virtual environment (no system or project
# site-packages), the CPU build of torch, gradio at the README's sdk_version, the Space's own
# requirements.txt with dora-hf from a wheel built from this checkout, then `python app.py` in a
# copy of the Space folder. Passes when the page serves and, through gradio's client, a request on
# the bundled example returns the animation, the strip and the attention picture.
# Usage: scripts/check_space.sh [MODEL]   (default: ./dora-wt-vits16-demo, the main job's export)
# Takes a few minutes (the installs); not part of the unit suite.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
model=$(realpath "${1:-dora-wt-vits16-demo}")
[ -f "$model/config.json" ] || { echo "check_space: $model is not a model folder (run scripts/main_job.sh or pass one)" >&2; exit 2; }
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
work=$(mktemp -d -t dora-space-check.XXXXXX)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
start=$(date +%s)

"$python" -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install --quiet --upgrade pip
$pip install --quiet "torch==2.13.0" || $pip install --quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
$pip wheel --quiet --no-deps -w "$work/wheels" "$root"
cp -r spaces/dora-tracks "$work/space"
sdk=$(sed -n 's/^sdk_version: *//p' "$work/space/README.md")
$pip install --quiet "gradio==$sdk" -r "$work/space/requirements.txt" --find-links "$work/wheels"
echo "installed in $(( $(date +%s) - start )) s: $($work/venv/bin/python -c 'import dora_hf, gradio, torch; from importlib.metadata import version; print("dora-hf", version("dora-hf"), "gradio", gradio.__version__, "torch", torch.__version__)')"

port=$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$work/space"
GRADIO_SERVER_NAME=127.0.0.1 GRADIO_SERVER_PORT=$port GRADIO_ANALYTICS_ENABLED=False DORA_SPACE_MODEL="$model" \
    "$work/venv/bin/python" app.py > "$work/app.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$server" 2>/dev/null || { cat "$work/app.log"; exit 1; }
    sleep 1
done
curl -sf -o /dev/null "http://127.0.0.1:$port/" || { echo "check_space: the page did not come up" >&2; cat "$work/app.log"; exit 1; }
echo "page served at http://127.0.0.1:$port/ ($(( $(date +%s) - start )) s after the start)"
"$work/venv/bin/python" - "$port" "$model" <<'PY'
import sys, time
from pathlib import Path
from gradio_client import Client, handle_file

port, model = sys.argv[1], sys.argv[2]
client = Client(f"http://127.0.0.1:{port}/", verbose=False)
started = time.monotonic()
animation, strip, attention, table, status = client.predict(
    handle_file(str(Path("examples/pedestrians.mp4").resolve())), model, 3, 8, 4, True, api_name="/track"
)
assert status.startswith("**Done:**"), status
for path, suffix in ((animation, ".gif"), (strip, ".png"), (attention, ".png")):
    assert path and Path(path).suffix == suffix and Path(path).stat().st_size > 0, (path, suffix)
print(f"request on the example: {time.monotonic() - started:.1f} s; {status}")
PY
echo "check_space: passed in $(( $(date +%s) - start )) s"
