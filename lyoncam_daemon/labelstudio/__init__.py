"""Label Studio: push frames to label, pull a labelled project back as a YOLO dataset.

Lives here: one async client (auth.py, ratelimit.py, client.py: pagination, rate limit,
retries), YOLO conversion and the leak-free train/val split (yolo.py, split.py), `pull`
(pull/), `push` (push.py) and both commands' arguments (commands.py).

Beside the capture path, not in it: it reads what curation chose, never the daemon.

May import: config, storage, observe, curation.
"""
