#!/usr/bin/env bash
# Install Label Studio into its own virtualenv, cached outside the checkout.
# Label Studio pins hundreds of packages (Django, ...) that would clash with lyoncam's own,
# and the install takes ~2 min / ~1 GB: so it lives apart and is reused across clones.
# Prints the path of the `label-studio` executable.
set -euo pipefail
LS_VERSION="${LYONCAM_LS_VERSION:-1.23.2}"
CACHE="${LYONCAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lyoncam}"
VENV="$CACHE/label-studio-$LS_VERSION"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/label-studio" ] || [ ! -f "$VENV/.complete" ]; then
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$PY" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "label-studio==$LS_VERSION" >&2
  touch "$VENV/.complete"
fi
echo "$VENV/bin/label-studio"
