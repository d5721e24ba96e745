#!/usr/bin/env bash
# Install everything the tests need (virtual environment, the package with its test extra, and
# Debian's Chromium for the browser tests), then run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]   (the arguments go to pytest as they are)
#   bash scripts/test.sh -m "not slow and not browser"   the fast inner loop
#   bash scripts/test.sh tests/test_data_split.py -x      one file
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "==> installing image-classifier[test] into .venv"
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'

if ! command -v chromium >/dev/null 2>&1; then
    # The browser tests drive Debian's Chromium; a test tool's own browser download cannot work offline.
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
    if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing Debian's chromium for the browser tests"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    else
        echo "WARNING: chromium is not installed and cannot be installed here; browser tests will be skipped" >&2
    fi
fi

echo "==> running the tests"
exec .venv/bin/python -m pytest "$@"
