"""Capturing: the daemon and everything that runs a camera.

Lives here: the wiring (daemon.py: one event loop, one HTTP session, the decode pool,
signals, reloads, shutdown; hangup.py holds a SIGHUP from the first line until ready),
the camera registry (registry.py), the per-camera task
(camera.py: fetch → judge → enrich → store → hooks, and the camera's reachability), one
conditional GET with request turns (fetch.py), when to poll (schedule.py), what a reload
changes (reload.py), sd_notify (notify.py), the catalogue → cameras.yaml tool
(discover.py) and the commands `run`, `check` and `discover` (commands.py).

This is the top floor of the capture path: it strings the lower floors together and holds
no rule of its own that another floor needs.

May import: config, frames, storage, enrich, observe, curation.
"""
