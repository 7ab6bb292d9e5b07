#!/usr/bin/env bash
# Install the project with every extra and pytest (`dev`) and run the whole test suite.
# pytest's own exit status is returned unchanged (5 = no tests collected is a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh dev
exec .venv/bin/python -m pytest "$@"
