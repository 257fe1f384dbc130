#!/usr/bin/env bash
# Try lyoncam with no network: serve 4 simulated CriTer cameras on loopback (one showing the
# "Image indisponible" placeholder, one truncated like CWL5801), capture them with `run` for
# SECONDS (default 35), then list what was stored.
#   usage: scripts/demo.sh [SECONDS]        (env LYONCAM_DEMO_PORT, default 8090)
# Writes ./demo/cameras.yaml and ./demo-data/ (both meant to stay out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-35}"
port="${LYONCAM_DEMO_PORT:-8090}"
case "$seconds" in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2;; esac

bash scripts/bootstrap.sh
PY=.venv/bin/python
config=demo/cameras.yaml
data="$PWD/demo-data"   # absolute: a relative data_dir would be taken from demo/
mkdir -p demo
rm -f "$config"

"$PY" -m lyoncam_daemon simulate --cameras 4 --period 10 --port "$port" \
  --mode SIM002=placeholder --mode SIM003=truncated \
  --write-config "$config" --data-dir "$data" --interval 10 &
sim_pid=$!
stop_sim() {
  if kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
}
trap stop_sim EXIT

# The config appears (atomically) once the simulator listens and knows its URL.
for _ in $(seq 100); do
  [ -s "$config" ] && break
  if ! kill -0 "$sim_pid" 2>/dev/null; then
    echo "error: the simulator did not start (port $port taken? set LYONCAM_DEMO_PORT)" >&2
    exit 1
  fi
  sleep 0.1
done
[ -s "$config" ] || { echo "error: simulator wrote no $config within 10 s" >&2; exit 1; }

echo "== capturing for ${seconds}s with: $PY -m lyoncam_daemon run --config $config"
status=0
timeout -s TERM "$seconds" "$PY" -m lyoncam_daemon run --config "$config" || status=$?
# 124: `timeout` sent the SIGTERM we asked for, i.e. the normal end of the demo.
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then
  echo "warning: run exited with status $status" >&2
fi

stop_sim
trap - EXIT

echo "== files captured under $data"
if [ -d "$data" ]; then
  find "$data" -type f | sort
  echo "$(find "$data" -type f -iname '*.jpg' | wc -l) JPEG frames in total"
else
  echo "(none: $data was not created)"
fi
