#!/usr/bin/env bash
# Set up (first time) and run every check: ruff, mypy, then the whole pytest suite,
# including the tests against a real Label Studio server (installed into a cached
# virtualenv outside the checkout by scripts/labelstudio-venv.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
LYONCAM_LABEL_STUDIO="$(bash scripts/labelstudio-venv.sh)"
export LYONCAM_LABEL_STUDIO
# `report --html` is rendered in headless Chromium by the tests (Debian's package, no download).
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
