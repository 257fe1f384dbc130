"""Watching the daemon: counters, logs and the status endpoint.

Lives here: per-camera and daemon-wide counters and timings (stats.py, with the State,
Condition and ErrorKind vocabularies), structlog set-up for every command (logs.py), the
status endpoint on the daemon's loop (status.py: /healthz, the page, thumbnails), the
Prometheus exposition (metrics.py), the page's HTML (page.py), the frames of the last 24 h
(recent.py, a post-store hook) and the `health` command (health.py: the daemon's health
record in health.json and /healthz).

"health" means one thing: is the daemon doing its job. A camera's own up/down state is its
reachability (capture/camera.py).

May import: config, frames, storage.
"""
