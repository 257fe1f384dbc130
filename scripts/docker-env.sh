#!/usr/bin/env bash
# A private Docker daemon for the deployment tests (tests/test_docker.py, tests/test_systemd.py).
#
#   eval "$(bash scripts/docker-env.sh start)"   # prints export lines: DOCKER_HOST, LYONCAM_DOCKER...
#   bash scripts/docker-env.sh stop "$LYONCAM_DOCKER_RUNDIR"   # stops the daemon `start` started
#
# `start` installs Debian's docker.io and debootstrap when missing (as root), starts its own
# dockerd (own data-root, exec-root, socket and pidfile: never the host's Docker), and makes
# sure the image `debian:bookworm-slim` exists. Docker Hub is out of reach here, so that base
# is built by debootstrap from Debian's mirror once and cached as a tarball.
# Cached under ${LYONCAM_CACHE:-~/.cache/lyoncam}: the base tarball, and the daemon's
# data-root (images, build cache) when no other run is using it.
# On failure: one line on stderr saying what to do, exit 1.
set -euo pipefail
CACHE="${LYONCAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lyoncam}"
BASE_TAR="$CACHE/debian-bookworm-minbase.tar"
MIRROR="${LYONCAM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Debian's client: the docker first on PATH may need buildx, which Debian does not package.
CLIENT=/usr/bin/docker

fail() { echo "error: docker set-up: $*" >&2; exit 1; }

install_packages() {
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x "$CLIENT" ] || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || fail "${missing[*]} missing and not root to install them (or set LYONCAM_SKIP_DOCKER=1)"
  command -v apt-get >/dev/null || fail "${missing[*]} missing and no apt-get (or set LYONCAM_SKIP_DOCKER=1)"
  # Other tools may hold the dpkg lock for a while: wait for it instead of failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 \
    && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
       --no-install-recommends "${missing[@]}" iptables >&2 \
    || fail "apt-get install ${missing[*]} failed (see above)"
}

start_daemon() {
  mkdir -p "$CACHE"
  RUNDIR="$(mktemp -d /tmp/lyoncam-docker.XXXXXX)"
  # One run at a time owns the cached data-root; the lock fd is inherited by dockerd, so it is
  # held exactly as long as our daemon lives. A concurrent run gets a throwaway data-root.
  exec 9>>"$CACHE/docker.lock"
  if flock -n 9; then DATA_ROOT="$CACHE/docker"; else DATA_ROOT="$RUNDIR/data-root"; fi
  mkdir -p "$DATA_ROOT"
  SOCK="$RUNDIR/docker.sock"
  /usr/sbin/dockerd --data-root "$DATA_ROOT" --exec-root "$RUNDIR/exec" \
    --host "unix://$SOCK" --pidfile "$RUNDIR/dockerd.pid" \
    --bridge=none --iptables=false </dev/null >"$RUNDIR/dockerd.log" 2>&1 &
  PID=$!
  exec 9>&-
  echo "$PID" >"$RUNDIR/pid"
  for _ in $(seq 1 120); do
    if DOCKER_HOST="unix://$SOCK" "$CLIENT" version >/dev/null 2>&1; then return 0; fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.5
  done
  tail -5 "$RUNDIR/dockerd.log" >&2 || true
  stop_daemon "$RUNDIR"
  fail "dockerd did not start (log above; or set LYONCAM_SKIP_DOCKER=1)"
}

ensure_base() {
  export DOCKER_HOST="unix://$SOCK"
  "$CLIENT" image inspect debian:bookworm-slim >/dev/null 2>&1 && return 0
  if [ ! -s "$BASE_TAR" ]; then
    local root
    root="$(mktemp -d /tmp/lyoncam-debootstrap.XXXXXX)"
    echo "building the debian:bookworm-slim base with debootstrap (once, ~1 min)" >&2
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
      || { tail -5 "$root.log" >&2; rm -rf "$root"; fail "debootstrap from $MIRROR failed (log above)"; }
    # Trim what a slim image leaves out: apt lists and caches (apt-get update refills them).
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -cf "$BASE_TAR.part" . && mv "$BASE_TAR.part" "$BASE_TAR"
    rm -rf "$root" "$root.log"
  fi
  "$CLIENT" import "$BASE_TAR" debian:bookworm-slim >/dev/null \
    || fail "docker import of $BASE_TAR failed"
}

stop_daemon() {
  local rundir="$1" pid
  case "$rundir" in /tmp/lyoncam-docker.*) ;; *) fail "stop: not a directory made by start: $rundir" ;; esac
  pid="$(cat "$rundir/pid" 2>/dev/null)" || return 0
  if kill -0 "$pid" 2>/dev/null; then
    # Keep the cached data-root from growing run after run: drop superseded test images and
    # all but the newest build cache.
    DOCKER_HOST="unix://$rundir/docker.sock" "$CLIENT" image prune -f >/dev/null 2>&1 || true
    DOCKER_HOST="unix://$rundir/docker.sock" "$CLIENT" builder prune -f --keep-storage 2GB \
      >/dev/null 2>&1 || true
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  # The exec-root holds mounts (network namespaces) dockerd may leave behind: unmount, then remove.
  awk -v d="$rundir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$rundir" 2>/dev/null || echo "warning: docker set-up: could not remove $rundir" >&2
}

case "${1:-}" in
  start)
    install_packages
    start_daemon
    ensure_base
    echo "export DOCKER_HOST=unix://$SOCK LYONCAM_DOCKER=$CLIENT LYONCAM_DOCKER_RUNDIR=$RUNDIR"
    ;;
  stop) stop_daemon "${2:?usage: $0 stop RUNDIR}" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
