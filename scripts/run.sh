#!/usr/bin/env bash
# Set up (first time) and run the capture daemon on ./cameras.yaml; extra arguments go to `run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m lyoncam_daemon run --config cameras.yaml "$@"
