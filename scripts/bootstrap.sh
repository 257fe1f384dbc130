#!/usr/bin/env bash
# Create ./.venv and install lyoncam into it (with dev tools when given "dev").
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PY="${PYTHON:-python3}"

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; install Python 3.11 or newer" >&2; exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: lyoncam needs Python >= 3.11, $PY is $("$PY" -V 2>&1)" >&2; exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  # Debian/Ubuntu ship venv separately.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  else
    echo "error: $PY has no venv module; install python3-venv" >&2; exit 1
  fi
fi

stamp_want="$(sha256sum pyproject.toml | cut -c1-16)-${extra:-base}"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.lyoncam-stamp 2>/dev/null)" != "$stamp_want" ]; then
  # Say what is happening: a silent minute looks like a hang to someone trying it out.
  echo "lyoncam: installing into .venv (first run or pyproject.toml changed; about a minute)..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null
  target="."
  [ -n "$extra" ] && target=".[$extra]"
  log="$(mktemp)"
  # pip and setuptools are chatty even with --quiet: show their output only when it fails.
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target" \
      >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "error: installing lyoncam into .venv failed (see above)" >&2; exit 1
  fi
  rm -f "$log"
  echo "$stamp_want" > .venv/.lyoncam-stamp
  echo "lyoncam: installed; run it with .venv/bin/python -m lyoncam_daemon ..." >&2
fi
