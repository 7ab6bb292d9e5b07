#!/usr/bin/env bash
# Debian's Chromium, which the browser test of the demo page (tests/test_space_browser.py) drives
# headless through Playwright. Installed with apt-get when it is missing and this machine can (root,
# apt-get present); otherwise nothing is installed and that test skips, saying why. Never fails.
set -uo pipefail
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: not root or no apt-get: the browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; then
    echo "install_chromium: apt-get install chromium failed: the browser test will skip" >&2
fi
exit 0
