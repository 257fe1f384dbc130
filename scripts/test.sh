#!/usr/bin/env bash
# Set up (first time) and run every check: ruff, mypy, the docs build, then the whole pytest suite,
# including the tests against a real Label Studio server (installed into a cached
# virtualenv outside the checkout by scripts/labelstudio-venv.sh), the status page and the
# report in headless Chromium, and the Docker and systemd tests (a private Docker daemon
# started and stopped here by scripts/docker-env.sh; as root it installs docker.io and
# debootstrap; LYONCAM_SKIP_DOCKER=1 opts out). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
# The status page is tested in a real headless browser: Debian's chromium (installed as root,
# as CI runs; elsewhere install it first). The test fails, never skips, without it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
LYONCAM_LABEL_STUDIO="$(bash scripts/labelstudio-venv.sh)"
export LYONCAM_LABEL_STUDIO
# `report --html` is rendered in headless Chromium by the tests (Debian's package, no download).
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
# The alert rules are checked by promtool and loaded into a real Prometheus on loopback
# (Debian's prometheus package); the tests fail, never skip, without them.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || { echo "error: promtool/prometheus missing: install Debian's prometheus package" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/mypy
# The docs site (mkdocs.yml): strict, so a broken link or anchor, or a page left out of the
# navigation, fails here; the configuration reference is generated from the config model.
docs_site="$(mktemp -d)"
.venv/bin/mkdocs build --strict --site-dir "$docs_site"
rm -rf "$docs_site"
if [ "${LYONCAM_SKIP_DOCKER:-}" != 1 ]; then
  docker_env="$(bash scripts/docker-env.sh start)"  # on failure: one line saying what to do
  eval "$docker_env"
  trap 'bash scripts/docker-env.sh stop "$LYONCAM_DOCKER_RUNDIR"' EXIT
fi
.venv/bin/python -m pytest "$@"
